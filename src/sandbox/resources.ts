import type { ValidJob } from './job.js';
import type { OciDeviceRule, OciResources } from './oci-spec.js';

/**
 * The cgroup layer as written into the bundle (DESIGN §4): memory (= memory+swap, so no
 * swap), pids, CPU quota, and a device allowlist. cgroup.ts applies the same limits again
 * on Airlock's own parent cgroup, so they hold whichever runtime runs the job.
 */

export const CPU_PERIOD_US = 100_000;

/** Character devices a job may open: null, zero, full, random, urandom, tty. */
export const ALLOWED_DEVICES: readonly { name: string; major: number; minor: number }[] = [
  { name: 'null', major: 1, minor: 3 },
  { name: 'zero', major: 1, minor: 5 },
  { name: 'full', major: 1, minor: 7 },
  { name: 'random', major: 1, minor: 8 },
  { name: 'urandom', major: 1, minor: 9 },
  { name: 'tty', major: 5, minor: 0 },
];

export function deviceRules(): OciDeviceRule[] {
  // Deny everything first (block devices: raw disks; /dev/mem, /dev/kmsg, tun...), then allow the few above.
  const rules: OciDeviceRule[] = [{ allow: false, access: 'rwm' }];
  for (const device of ALLOWED_DEVICES) {
    rules.push({ allow: true, type: 'c', major: device.major, minor: device.minor, access: 'rw' });
  }
  return rules;
}

export function cpuQuotaUs(cpus: number): number {
  return Math.max(1000, Math.round(cpus * CPU_PERIOD_US));
}

export function resourcesSection(job: ValidJob, cgroupVersion: 1 | 2): OciResources {
  const { resources } = job;
  const section: OciResources = {
    devices: deviceRules(),
    // swap = limit: memory+swap equals memory, so a job cannot push the host into swap.
    memory: { limit: resources.memoryBytes, swap: resources.memoryBytes },
    cpu: { quota: cpuQuotaUs(resources.cpus), period: CPU_PERIOD_US },
    // Fork bombs stop here.
    pids: { limit: resources.pids },
  };
  if (cgroupVersion === 1) {
    // cgroup v1 has no oom.group: instead of letting the kernel kill one process and the
    // rest carry on, a job that reaches its limit is paused and Airlock kills all of it
    // (see cgroup.ts) and reports it as a memory kill.
    section.memory.disableOOMKiller = true;
  } else {
    // cgroup v2: an OOM kill takes every process of the job, not just the largest.
    section.unified = { 'memory.oom.group': '1' };
  }
  return section;
}

import { EGRESS_MOUNT } from './egress.js';
import type { OciMount } from './oci-spec.js';
import { TMP_PATH, WORKSPACE_PATH } from './process.js';

/**
 * The mount layer (DESIGN §4): a read-only root, the host's userland bound read-only,
 * a minimal /dev, and the job's own size-capped disk for /workspace and /tmp.
 */

export interface MountPlan {
  /** Host directories bound read-only at the same path (/usr, and /bin etc. where they are not links). */
  readonly imageBinds: readonly string[];
  /** Host directory (on the job's own disk) bound at /workspace. */
  readonly workspaceDir: string;
  /** Host directory (on the same disk) bound at /tmp. */
  readonly tmpDir: string;
  /** Size cap of /dev/shm in bytes (memory-backed: counts against the job's memory). */
  readonly shmBytes: number;
  /** Host directory with the job's egress socket and forwarder (egress.ts); absent = no egress. */
  readonly egressDir?: string;
  /** Host files bound read-only over the image's (a pinned image's /etc/passwd, hosts…). */
  readonly fileBinds?: readonly { readonly source: string; readonly destination: string }[];
}

/** /proc and /sys entries replaced by an empty file or directory: OCI defaults plus DESIGN §4 additions. */
export const MASKED_PATHS: readonly string[] = [
  '/proc/acpi', // ACPI tables and event interfaces of the host
  '/proc/asound', // host sound devices
  '/proc/interrupts', // per-CPU interrupt counts: a side channel on host activity (DESIGN §4)
  '/proc/kcore', // image of kernel memory
  '/proc/keys', // the kernel keyrings of every user
  '/proc/latency_stats', // kernel latency tracing
  '/proc/sched_debug', // scheduler state of all host tasks
  '/proc/scsi', // host SCSI devices
  '/proc/timer_list', // timers of all host tasks
  '/proc/timer_stats', // ditto (older kernels)
  '/sys/devices/virtual/powercap', // RAPL energy counters: a power side channel (PLATYPUS)
  '/sys/firmware', // ACPI/DMI/EFI tables: host identity and firmware interfaces
];

/** /proc entries that stay visible but read-only. */
export const READONLY_PATHS: readonly string[] = [
  '/proc/bus', // PCI and USB configuration space
  '/proc/fs', // filesystem driver knobs
  '/proc/irq', // interrupt affinity
  '/proc/sys', // sysctls, including kernel/core_pattern and kernel/modprobe
  '/proc/sysrq-trigger', // magic SysRq: reboot or crash the host
];

export function mounts(plan: MountPlan): OciMount[] {
  const list: OciMount[] = [
    // A fresh procfs for the job's pid namespace: it lists only the job's processes.
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    // /dev is a small tmpfs; the runtime creates only null, zero, full, random, urandom, tty in it.
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'noexec', 'strictatime', 'mode=755', 'size=64k', 'nr_inodes=64'],
    },
    // POSIX shared memory, capped; nothing executable.
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', `size=${plan.shmBytes}`],
    },
    // Read-only sysfs of the job's own network namespace (programs read CPU topology from it).
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
  ];
  for (const dir of plan.imageBinds) {
    // The host's userland, read-only; nosuid so set-id programs (su, passwd, mount) grant nothing; nodev.
    // "bind", not "rbind": a mount below /usr on the host would not inherit the read-only flag.
    list.push({ destination: dir, type: 'bind', source: dir, options: ['bind', 'ro', 'nosuid', 'nodev'] });
  }
  for (const file of plan.fileBinds ?? []) {
    // Airlock's own passwd, group, hosts… over a pinned image's: read-only, nothing to run.
    list.push({
      destination: file.destination,
      type: 'bind',
      source: file.source,
      options: ['bind', 'ro', 'nosuid', 'nodev', 'noexec'],
    });
  }
  // The job's own disk (a per-job ext4 image, see workspace.ts): size-capped, no set-id, no devices.
  list.push({
    destination: WORKSPACE_PATH,
    type: 'bind',
    source: plan.workspaceDir,
    options: ['bind', 'rw', 'nosuid', 'nodev'],
  });
  list.push({
    destination: TMP_PATH,
    type: 'bind',
    source: plan.tmpDir,
    options: ['bind', 'rw', 'nosuid', 'nodev'],
  });
  if (plan.egressDir !== undefined) {
    // The egress socket and the forwarder script: read-only (the socket is still connectable;
    // the job can neither replace it nor add files), nothing executable, no set-id, no devices.
    list.push({
      destination: EGRESS_MOUNT,
      type: 'bind',
      source: plan.egressDir,
      options: ['bind', 'ro', 'nosuid', 'nodev', 'noexec'],
    });
  }
  return list;
}

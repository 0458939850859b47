import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ValidJob } from './job.js';
import { MASKED_PATHS, type MountPlan, mounts, READONLY_PATHS } from './mounts.js';
import { type IdRange, idMappings, namespaces } from './namespaces.js';
import type { OciSeccomp, OciSpec } from './oci-spec.js';
import { processSection } from './process.js';
import { resourcesSection } from './resources.js';

/**
 * One declarative description of a job (SandboxPlan) becomes one OCI bundle that runc,
 * crun and runsc all run unchanged. Each layer lives in its own module; this file only
 * puts them together.
 */

export const OCI_VERSION = '1.0.2';
export const SANDBOX_HOSTNAME = 'sandbox';

export interface SandboxPlan {
  readonly job: ValidJob;
  /** The read-only root directory (see rootfs.ts). */
  readonly rootfsPath: string;
  readonly mounts: MountPlan;
  readonly ids: IdRange;
  /** cgroup path of the container, below Airlock's per-job parent cgroup. */
  readonly cgroupsPath: string;
  readonly cgroupVersion: 1 | 2;
  readonly seccomp: OciSeccomp;
}

export function buildOciSpec(plan: SandboxPlan): OciSpec {
  return {
    ociVersion: OCI_VERSION,
    process: processSection(plan.job),
    // Read-only root: a job can write only its workspace and /tmp.
    root: { path: plan.rootfsPath, readonly: true },
    hostname: SANDBOX_HOSTNAME,
    mounts: mounts(plan.mounts),
    linux: {
      namespaces: namespaces(),
      uidMappings: idMappings(plan.ids),
      gidMappings: idMappings(plan.ids),
      cgroupsPath: plan.cgroupsPath,
      resources: resourcesSection(plan.job, plan.cgroupVersion),
      // Mount events on the host never propagate into the job, nor the other way.
      rootfsPropagation: 'private',
      seccomp: plan.seccomp,
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
    },
  };
}

export const CONFIG_FILE = 'config.json';

/** Writes config.json; answers the SHA-256 (hex) of its bytes, for the audit trail. */
export async function writeBundleConfig(bundleDir: string, spec: OciSpec): Promise<string> {
  // 0600: the config names host paths and ID ranges; only root reads it. Compact: it is
  // written for every job (`--print-config` shows it indented).
  const text = JSON.stringify(spec);
  writeFileSync(join(bundleDir, CONFIG_FILE), text, { mode: 0o600, flag: 'wx' });
  return createHash('sha256').update(text).digest('hex');
}

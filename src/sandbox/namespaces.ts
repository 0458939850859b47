import type { OciIdMapping } from './oci-spec.js';

/**
 * The namespace layer (DESIGN §4): every job gets its own user, pid, mount, ipc, uts,
 * cgroup and network namespace. None is ever shared with the host or another job.
 */

/** The seven namespaces of every job; a `path` (joining an existing one) is never written. */
export const JOB_NAMESPACES = ['user', 'pid', 'mount', 'ipc', 'uts', 'cgroup', 'network'] as const;

export function namespaces(): { type: string }[] {
  // user: root inside is an unprivileged host UID; pid: the job sees only its own processes;
  // mount: its own filesystem view; ipc: no shared memory or semaphores with the host;
  // uts: its own hostname; cgroup: /proc/self/cgroup reveals no host layout; network:
  // loopback only, so no route to the host, the LAN or the cloud metadata service.
  return JOB_NAMESPACES.map((type) => ({ type }));
}

/** The host ID range of one job (see idmap.ts): container IDs 0..size-1 map to base..base+size-1. */
export interface IdRange {
  readonly base: number;
  readonly size: number;
}

export function idMappings(range: IdRange): OciIdMapping[] {
  return [{ containerID: 0, hostID: range.base, size: range.size }];
}

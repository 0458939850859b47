import { egressArgs, egressEnv } from './egress.js';
import type { ValidJob } from './job.js';
import type { OciProcess } from './oci-spec.js';

/**
 * The process layer: who the job runs as and what it may do (DESIGN §4).
 */

/** UID and GID of the job inside its user namespace: never root. */
export const JOB_UID = 1000;
export const JOB_GID = 1000;
/** The working directory is chosen by Airlock, never by the request. */
export const WORKSPACE_PATH = '/workspace';
export const TMP_PATH = '/tmp';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Open files per process: enough for compilers and bundlers, bounded for the kernel. */
export const NOFILE_LIMIT = 4096;
/** Signals queued to the job's processes at once. */
export const SIGPENDING_LIMIT = 1024;

export function jobEnv(job: ValidJob): string[] {
  const env: Record<string, string> = {
    PATH: DEFAULT_PATH,
    HOME: TMP_PATH,
    TMPDIR: TMP_PATH,
    USER: 'job',
    LOGNAME: 'job',
    LANG: 'C.UTF-8',
    AIRLOCK: '1',
    ...job.env,
    // A job granted egress reaches it through the forwarder only: these name it, whatever the job set.
    ...(job.egress.length > 0 ? egressEnv() : {}),
  };
  return Object.entries(env).map(([name, value]) => `${name}=${value}`);
}

export function processSection(job: ValidJob): OciProcess {
  const { resources } = job;
  return {
    // No terminal: a job can neither read the caller's keystrokes nor inject any (TIOCSTI).
    terminal: false,
    // Non-root inside; supplementary groups empty so no host group leaks in.
    user: { uid: JOB_UID, gid: JOB_GID, additionalGids: [], umask: 0o022 },
    // A job granted egress starts through the forwarder, which then execs the command.
    args: job.egress.length > 0 ? egressArgs(job.command) : [...job.command],
    env: jobEnv(job),
    cwd: WORKSPACE_PATH,
    // All five sets empty: no CAP_SYS_ADMIN, CAP_NET_RAW, CAP_DAC_OVERRIDE... even inside the user namespace.
    capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
    rlimits: [
      // Bounded file descriptors per process.
      { type: 'RLIMIT_NOFILE', hard: NOFILE_LIMIT, soft: NOFILE_LIMIT },
      // No core dumps: they would fill the disk and can carry secrets out of memory.
      { type: 'RLIMIT_CORE', hard: 0, soft: 0 },
      // No single file larger than the job's disk.
      { type: 'RLIMIT_FSIZE', hard: resources.diskBytes, soft: resources.diskBytes },
      // Processes of this (unique) UID: a second fork-bomb stop beside the pids cgroup.
      { type: 'RLIMIT_NPROC', hard: resources.pids, soft: resources.pids },
      // Queued signals and locked memory are counted for the host user that created the
      // job's user namespace (root) as well as for the job: bounded per job, so that one job
      // cannot use up root's allowance. Builds lock no memory.
      { type: 'RLIMIT_SIGPENDING', hard: SIGPENDING_LIMIT, soft: SIGPENDING_LIMIT },
      { type: 'RLIMIT_MEMLOCK', hard: 0, soft: 0 },
    ],
    // setuid binaries and file capabilities grant nothing.
    noNewPrivileges: true,
    // Under host memory pressure the kernel kills jobs before Airlock or the host's services.
    oomScoreAdj: 1000,
  };
}

import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { CgroupLayout } from './cgroup.js';
import type { RuntimeName } from './job.js';
import type { OciSpec } from './oci-spec.js';

/**
 * The three OCI runtimes, driven through their command-line interface (the same bundle for
 * all). Each driver says how to run, signal and delete a container, how to read a start
 * failure out of the runtime's log, and which known quirks of its version it needs.
 */

export interface RuntimeDriver {
  readonly name: RuntimeName;
  /** Executable name looked up in PATH, unless configured as an absolute path. */
  readonly binary: string;
  /** Arguments before the subcommand: Airlock's own state directory, JSON logs. */
  /**
   * Flags before the subcommand. `hostSockets`: the job connects to a host Unix socket
   * bind-mounted into it (its egress socket); only gVisor needs to be told.
   */
  globalArgs(stateRoot: string, logFile: string | null, hostSockets?: boolean): string[];
  runArgs(bundleDir: string, containerId: string): string[];
  killArgs(containerId: string, signal: 'TERM' | 'KILL'): string[];
  deleteArgs(containerId: string): string[];
  /** Adjusts the bundle for a documented limitation of this runtime's version (returns a copy). */
  adaptSpec(spec: OciSpec): OciSpec;
  /**
   * The host pids limit for a job allowed `pids` processes. Under runc and crun the job's
   * processes are host processes, so the two are equal; gVisor needs host threads of its own.
   */
  hostPids(pids: number): number;
  /**
   * Why this runtime cannot run on this host, judged without starting it (null: it should).
   * The selftest and the first job confirm it for real.
   */
  hostIncompatibility(layout: CgroupLayout): string | null;
}

const runc: RuntimeDriver = {
  name: 'runc',
  binary: 'runc',
  globalArgs: (stateRoot, logFile) => [
    '--root',
    stateRoot,
    ...(logFile ? ['--log', logFile, '--log-format', 'json'] : []),
  ],
  runArgs: (bundleDir, id) => ['run', '--bundle', bundleDir, id],
  killArgs: (id, signal) => ['kill', '--all', id, signal],
  deleteArgs: (id) => ['delete', '--force', id],
  adaptSpec: (spec) => spec,
  hostPids: (pids) => pids,
  hostIncompatibility: () => null,
};

const crun: RuntimeDriver = {
  name: 'crun',
  binary: 'crun',
  globalArgs: (stateRoot, logFile) => [
    `--root=${stateRoot}`,
    ...(logFile ? [`--log=file:${logFile}`, '--log-format=json'] : []),
  ],
  runArgs: (bundleDir, id) => ['run', '--bundle', bundleDir, id],
  killArgs: (id, signal) => ['kill', '--all', id, signal],
  deleteArgs: (id) => ['delete', '--force', id],
  adaptSpec: (spec) => spec,
  hostPids: (pids) => pids,
  hostIncompatibility: (layout) => {
    // crun 1.8 refuses hybrid hosts whose v2 hierarchy has controllers enabled
    // ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2").
    if (layout.version === 1 && layout.unified !== null && layout.unified.controllers.length > 0) {
      return (
        `crun cannot run on this host: cgroups are in the hybrid v1+v2 layout and the v2 hierarchy at ` +
        `${layout.unified.mount} has controllers enabled (${layout.unified.controllers.join(' ')}); crun refuses ` +
        `that layout ("cgroups in hybrid mode not supported"). Use runc or gvisor here, or boot the host with ` +
        `the unified cgroup v2 hierarchy (systemd.unified_cgroup_hierarchy=1).`
      );
    }
    return null;
  },
};

/** Host threads gVisor needs for a job of `pids` processes (measured: ~6 per process, plus its own). */
function gvisorHostPids(pids: number): number {
  return pids * 8 + 256;
}

const gvisor: RuntimeDriver = {
  name: 'gvisor',
  binary: 'runsc',
  globalArgs: (stateRoot, logFile, hostSockets = false) => [
    '--root',
    stateRoot,
    // Apply the bundle's seccomp profile inside the sandbox too (runsc ignores it otherwise).
    '--oci-seccomp',
    // Loopback only, as under runc: no network stack reaches the host.
    '--network=none',
    // A job granted egress connects to its proxy's socket, bind-mounted from the host: gVisor
    // lets a sandbox open (connect to) host sockets only when told. `open`, not `create`: the
    // job cannot make host sockets. Its mounts show it no host socket but that one.
    ...(hostSockets ? ['--host-uds=open'] : []),
    ...(logFile ? ['--log', logFile, '--log-format', 'json'] : []),
  ],
  runArgs: (bundleDir, id) => ['run', '--bundle', bundleDir, id],
  killArgs: (id, signal) => ['kill', '--all', id, signal],
  deleteArgs: (id) => ['delete', '--force', id],
  adaptSpec: (spec) => {
    const copy = structuredClone(spec);
    // runsc (Debian's 2022 snapshot) ignores `errnoRet` and answers every refused call with
    // EPERM. For clone3 that breaks threads: glibc falls back to clone only on ENOSYS. gVisor's
    // own kernel does not implement clone3 and answers ENOSYS itself, so the filter runsc
    // loads lets clone3 through to it; clone stays filtered by its flags.
    copy.linux.seccomp.syscalls = copy.linux.seccomp.syscalls.filter(
      (rule) => !rule.names.includes('clone3'),
    );
    copy.linux.seccomp.syscalls.push({ names: ['clone3'], action: 'SCMP_ACT_ALLOW' });
    // gVisor's kernel counts the job's processes against RLIMIT_NPROC (set to the job's pids
    // limit in the process section); the host cgroup counts gVisor's own threads, about six
    // per job process with the ptrace platform, and its kernel panics when it cannot make one.
    copy.linux.resources.pids.limit = gvisorHostPids(spec.linux.resources.pids.limit);
    return copy;
  },
  hostPids: (pids) => gvisorHostPids(pids),
  hostIncompatibility: () => null,
};

export const RUNTIME_DRIVERS: Readonly<Record<RuntimeName, RuntimeDriver>> = Object.freeze({
  runc,
  crun,
  gvisor,
});

/** Resolves an executable name through PATH (or checks an absolute path); null if absent. */
export function findExecutable(binary: string, path = process.env.PATH ?? ''): string | null {
  const candidates = binary.includes('/')
    ? [binary]
    : path
        .split(delimiter)
        .filter(Boolean)
        .map((dir) => join(dir, binary));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  return null;
}

export type StartFailure =
  | { readonly kind: 'command-not-found'; readonly message: string }
  | { readonly kind: 'not-executable'; readonly message: string }
  | { readonly kind: 'runtime-unavailable'; readonly message: string }
  | { readonly kind: 'runtime-error'; readonly message: string };

/** Error-level messages of a runtime's JSON log (runc, crun and runsc all write {"level","msg"}). */
export function runtimeLogErrors(logText: string): string[] {
  const errors: string[] = [];
  for (const line of logText.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const entry = JSON.parse(line) as { level?: unknown; msg?: unknown };
      if ((entry.level === 'error' || entry.level === 'fatal') && typeof entry.msg === 'string')
        errors.push(entry.msg);
    } catch {
      // Not JSON: only crun's refusal of hybrid cgroup hosts, which it may print as plain text.
      if (/cgroups in hybrid mode not supported/.test(line)) errors.push(line.trim());
    }
  }
  return errors;
}

/**
 * What a runtime's error means for the job. The patterns name the exec step, so that "no
 * such file" from, say, a mount is not mistaken for a missing command.
 */
export function classifyStartFailure(message: string): StartFailure {
  if (/cgroups in hybrid mode not supported/.test(message)) return { kind: 'runtime-unavailable', message };
  const execStep =
    /exec: "[^"]*":|error finding executable|failed to load \S+:|executable file `[^`]*` not found|open executable/;
  if (execStep.test(message)) {
    if (/permission denied|exec format error/i.test(message)) return { kind: 'not-executable', message };
    if (/not found|no such file or directory|not a directory/i.test(message))
      return { kind: 'command-not-found', message };
  }
  return { kind: 'runtime-error', message };
}

import { readFileSync } from 'node:fs';
import type { JobCgroup } from './cgroup.js';
import { runHostCommand } from './host-command.js';
import { HostHelper } from './host-helper.js';
import { OutputLimiter, type OutputListener } from './output.js';
import type { RuntimeDriver } from './runtimes.js';

/**
 * Runs one prepared bundle under its runtime and watches it: streams output through the
 * cap, enforces the wall-clock limit, notices a job at its memory limit, honours
 * cancellation — and in every one of those cases kills all of the job, not just its first
 * process: a polite SIGTERM through the runtime, then SIGKILL to every process in the job's
 * cgroup from the host (which also catches processes that ignore SIGTERM, double-fork or
 * call setsid: they cannot leave the cgroup).
 */

export interface SuperviseInput {
  readonly driver: RuntimeDriver;
  readonly binaryPath: string;
  readonly stateRoot: string;
  readonly logFile: string;
  readonly bundleDir: string;
  readonly containerId: string;
  readonly cgroup: JobCgroup;
  readonly timeoutMs: number;
  readonly outputLimitBytes: number;
  readonly killGraceMs: number;
  /** How often to look for a job paused at its memory limit (cgroup v1). */
  readonly memoryPollMs: number;
  readonly onOutput: OutputListener;
  readonly signal: AbortSignal | undefined;
  /** Called once the runtime process has been started. */
  readonly onSpawn?: () => void;
  /** The job connects to a host Unix socket (its egress socket): see RuntimeDriver.globalArgs. */
  readonly hostSockets?: boolean;
}

export type EndReason = 'exited' | 'timeout' | 'memory' | 'cancelled';

export interface SuperviseOutcome {
  /** Exit code of the runtime process (runc/runsc report the job's, or 128+N for signal N). */
  readonly runtimeCode: number | null;
  /** Set when the runtime process itself died of a signal (only if Airlock had to kill it). */
  readonly runtimeSignal: NodeJS.Signals | null;
  readonly reason: EndReason;
  readonly wallMs: number;
  readonly outputBytes: number;
  readonly outputTruncated: boolean;
  /** The runtime could not be started at all (binary vanished, EACCES). */
  readonly spawnError: NodeJS.ErrnoException | null;
}

/** After the job is killed, how long the runtime gets to notice and exit before it is killed too. */
const RUNTIME_EXIT_GRACE_MS = 10_000;

/** Resolves once `pid` has ended (or is a zombie), or after `timeoutMs`. */
async function processGone(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let state: string;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    } catch {
      return;
    }
    if (state === 'Z') return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export function superviseContainer(input: SuperviseInput): Promise<SuperviseOutcome> {
  return new Promise((resolve) => {
    const started = performance.now();
    const limiter = new OutputLimiter(input.outputLimitBytes, input.onOutput);
    const child = HostHelper.shared().spawn(
      input.binaryPath,
      [
        ...input.driver.globalArgs(input.stateRoot, input.logFile, input.hostSockets === true),
        ...input.driver.runArgs(input.bundleDir, input.containerId),
      ],
      {
        // No stdin (/dev/null), no terminal. Own session and process group: a Ctrl-C at the
        // caller's terminal reaches Airlock, which then stops the job properly, not the runtime.
        setsid: true,
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
      },
    );
    input.onSpawn?.();
    let reason: EndReason = 'exited';
    let spawnError: NodeJS.ErrnoException | null = null;
    let exited = false;
    const timers: NodeJS.Timeout[] = [];

    const killEverything = async (): Promise<void> => {
      await input.cgroup.killAll();
      if (exited) return;
      // The runtime normally exits as soon as its container's processes are gone.
      timers.push(
        setTimeout(() => {
          if (!exited) child.kill('KILL', true);
        }, RUNTIME_EXIT_GRACE_MS),
      );
    };

    let stopping = false;
    let killing = false;
    const stop = (why: EndReason, graceful: boolean): void => {
      if (exited || killing) return;
      if (!stopping) reason = why;
      if (!graceful) {
        // Also escalates a graceful stop already under way (a job paused at its memory limit
        // during the SIGTERM grace cannot act on SIGTERM).
        stopping = true;
        killing = true;
        void killEverything();
        return;
      }
      if (stopping) return;
      stopping = true;
      // SIGTERM to every process through the runtime (gVisor's processes are not host processes).
      void runHostCommand(
        input.binaryPath,
        [
          ...input.driver.globalArgs(input.stateRoot, null),
          ...input.driver.killArgs(input.containerId, 'TERM'),
        ],
        { timeoutMs: Math.max(1000, input.killGraceMs) },
      );
      timers.push(
        setTimeout(() => {
          if (killing) return;
          killing = true;
          void killEverything();
        }, input.killGraceMs),
      );
    };

    timers.push(setTimeout(() => stop('timeout', true), input.timeoutMs));
    if (input.memoryPollMs > 0) {
      const poll = setInterval(() => {
        void input.cgroup.atMemoryLimit().then((atLimit) => {
          if (atLimit) stop('memory', false);
        });
      }, input.memoryPollMs);
      timers.push(poll);
    }
    const onAbort = (): void => stop('cancelled', true);
    if (input.signal !== undefined) {
      if (input.signal.aborted) onAbort();
      else input.signal.addEventListener('abort', onAbort, { once: true });
    }

    child.onData((stream, chunk) => limiter.write(stream, chunk));
    let runtimePid: number | null = null;
    child.started.then(
      (pid) => {
        runtimePid = pid;
      },
      () => undefined,
    );
    void child.closed.then(async ({ code, signal, error }) => {
      // The helper died: the runtime dies with it (PR_SET_PDEATHSIG). Wait until it is gone,
      // so that what the engine removes next (the job's cgroup, the runtime's state) is not
      // made again behind it.
      if (error?.code === 'EHOSTHELPER' && runtimePid !== null) await processGone(runtimePid, 5000);
      exited = true;
      spawnError = error;
      const wallMs = performance.now() - started;
      for (const timer of timers) clearTimeout(timer);
      input.signal?.removeEventListener('abort', onAbort);
      resolve({
        runtimeCode: code,
        runtimeSignal: signal,
        reason,
        wallMs,
        outputBytes: limiter.totalBytes,
        outputTruncated: limiter.truncated,
        spawnError,
      });
    });
  });
}

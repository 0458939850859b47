import { spawn } from 'node:child_process';

/**
 * A job's deadline, kept by a process that does not depend on Airlock: a detached shell,
 * started with the job's slot (off the job's critical path), that waits to be told the
 * deadline, sleeps until then and SIGKILLs every process in the job's cgroup. Normally
 * Airlock ends the job first and stops its watchdog; if Airlock dies (SIGKILL, OOM, a crash),
 * the job still ends on time, and the next start's sweep removes what is left. A watchdog
 * whose Airlock dies before arming it exits: its job never started.
 */

// $1 the job's cgroup directory (the pids hierarchy on v1), $2 the job id (only so that the
// sweep can find this process). Reads the seconds to wait from stdin, then kills until the
// cgroup is empty.
const SCRIPT = `
read seconds || exit 0
sleep "$seconds" || exit 0
dir=$1
[ -e "$dir/cgroup.kill" ] && echo 1 > "$dir/cgroup.kill" 2>/dev/null
n=0
while [ "$n" -lt 100 ]; do
  pids=$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null)
  [ -n "$pids" ] || exit 0
  kill -KILL $pids 2>/dev/null
  n=$((n + 1))
  sleep 0.1
done
`;

export interface Watchdog {
  /** Starts the countdown: the job is killed `afterMs` from now unless stop() comes first. */
  arm(afterMs: number): void;
  stop(): void;
}

export function startWatchdog(cgroupDir: string, jobId: string): Watchdog {
  const child = spawn('sh', ['-c', SCRIPT, 'airlock-watchdog', cgroupDir, jobId], {
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  });
  child.on('error', () => undefined);
  child.stdin.on('error', () => undefined);
  child.unref();
  // The pipe must not keep Airlock's event loop alive either.
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  let stopped = false;
  return {
    arm: (afterMs) => {
      if (!stopped) child.stdin.write(`${Math.ceil(afterMs / 1000)}\n`);
    },
    stop: () => {
      if (stopped || child.pid === undefined) return;
      stopped = true;
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    },
  };
}

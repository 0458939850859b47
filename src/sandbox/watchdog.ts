import { spawn } from 'node:child_process';

/**
 * A job's deadline, kept by a process that does not depend on Airlock: a detached shell that
 * sleeps until the deadline and then SIGKILLs every process in the job's cgroup. Normally
 * Airlock ends the job first and stops its watchdog; if Airlock dies (SIGKILL, OOM, a crash)
 * the job still ends on time, and the next start's sweep removes what is left.
 */

// $1 seconds to wait, $2 the job's cgroup directory (the pids hierarchy on v1), $3 the job id
// (only so that the sweep can find this process). Kills until the cgroup is empty.
const SCRIPT = `
sleep "$1" || exit 0
dir=$2
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
  stop(): void;
}

export function startWatchdog(cgroupDir: string, jobId: string, afterMs: number): Watchdog {
  const seconds = Math.ceil(afterMs / 1000);
  const child = spawn('sh', ['-c', SCRIPT, 'airlock-watchdog', String(seconds), cgroupDir, jobId], {
    detached: true,
    stdio: 'ignore',
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  });
  child.on('error', () => undefined);
  child.unref();
  let stopped = false;
  return {
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

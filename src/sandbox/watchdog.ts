import { HostHelper } from './host-helper.js';

/**
 * A job's deadline, kept by a process that does not depend on Airlock's Node.js process: the
 * host helper (host-helper.pl), which holds every armed deadline until it has struck, even
 * after the Node.js process is gone (SIGKILL, OOM, a crash). When a deadline comes it kills
 * every process in the job's cgroup (cgroup.kill where there is one, then SIGKILL to each
 * process until none is left). Normally Airlock ends the job first and disarms it; the next
 * start's sweep removes what a dead Airlock left.
 */

export interface Watchdog {
  /** Starts the countdown: the job is killed `afterMs` from now unless stop() comes first. */
  arm(afterMs: number): Promise<void>;
  stop(): void;
}

/** `cgroupDir`: the job's cgroup directory (the pids hierarchy on v1). */
export function startWatchdog(cgroupDir: string): Watchdog {
  let armed: { helper: HostHelper; watch: number } | null = null;
  let stopped = false;
  return {
    arm: async (afterMs) => {
      if (stopped) return;
      // Disarmed on the helper that armed it, never on a successor (whose own watchdogs
      // could otherwise be taken for this one).
      const helper = HostHelper.shared();
      armed = { helper, watch: await helper.arm(cgroupDir, afterMs) };
      if (stopped) armed.helper.disarm(armed.watch);
    },
    stop: () => {
      if (stopped) return;
      stopped = true;
      if (armed !== null) armed.helper.disarm(armed.watch);
    },
  };
}

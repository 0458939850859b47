import { constants } from 'node:os';

/**
 * The exit code of `airlock sandbox` and `airlock run` for a job's result (DESIGN §6): the
 * job's own exit code; 124 timed out; 125 refused by Airlock or Airlock's own failure; 126
 * command not executable; 127 command not found; 128+N killed by signal N (137 for a memory
 * kill).
 */
export const EXIT = Object.freeze({
  TIMED_OUT: 124,
  AIRLOCK_ERROR: 125,
  NOT_EXECUTABLE: 126,
  NOT_FOUND: 127,
  SIGNAL_BASE: 128,
  MEMORY_KILL: 137,
});

export interface ExitFacts {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  readonly oomKilled: boolean;
  readonly startFailure: { readonly kind: 'command-not-found' | 'not-executable' } | null;
}

export function exitStatusOf(result: ExitFacts): number {
  if (result.timedOut) return EXIT.TIMED_OUT;
  if (result.oomKilled) return EXIT.MEMORY_KILL;
  if (result.startFailure?.kind === 'command-not-found') return EXIT.NOT_FOUND;
  if (result.startFailure?.kind === 'not-executable') return EXIT.NOT_EXECUTABLE;
  if (result.signal !== null) {
    // A name Node.js knows ("SIGTERM"), or "SIG<n>" for a number it has no name for.
    const number =
      constants.signals[result.signal as NodeJS.Signals] ?? Number(/^SIG(\d+)$/.exec(result.signal)?.[1]);
    if (!Number.isInteger(number)) return EXIT.AIRLOCK_ERROR;
    return EXIT.SIGNAL_BASE + number;
  }
  const code = result.exitCode;
  return code !== null && Number.isInteger(code) && code >= 0 && code <= 255 ? code : EXIT.AIRLOCK_ERROR;
}

import type { JobRunResult, JobState } from '../api/types.js';
import { TERMINAL_STATES } from '../api/types.js';
import { AirlockError } from '../errors.js';
import { EXIT, exitStatusOf } from './exit-status.js';

/**
 * The job state machine (DESIGN §3). Every move goes through `checkMove`; a move not listed
 * here is a bug and stops the transaction. `lost` is not a resting state: a lost lease moves
 * the job back to queued (attempts left) or to failed, and the audit event says "lost".
 */

const MOVES: Readonly<Record<JobState, readonly JobState[]>> = {
  queued: ['leased', 'cancelled'],
  leased: ['running', 'queued', 'failed', 'cancelled', 'succeeded', 'timed_out', 'killed'],
  running: ['queued', 'succeeded', 'failed', 'timed_out', 'cancelled', 'killed'],
  succeeded: [],
  failed: [],
  timed_out: [],
  cancelled: [],
  killed: [],
};

export function isTerminal(state: JobState): boolean {
  return TERMINAL_STATES.includes(state);
}

export function checkMove(from: JobState, to: JobState): void {
  if (!MOVES[from].includes(to))
    throw new AirlockError('INTERNAL', `job state cannot move from ${from} to ${to}`);
}

export interface Outcome {
  readonly state: JobState;
  readonly exitStatus: number;
  readonly reason: string | null;
}

/** The terminal state, exit status and reason a worker's completed result stands for. */
export function outcomeOf(result: JobRunResult): Outcome {
  const exitStatus = exitStatusOf(result);
  if (result.cancelled) return { state: 'cancelled', exitStatus, reason: 'cancelled on request' };
  if (result.timedOut)
    return { state: 'timed_out', exitStatus, reason: 'the job ran past its timeout and was killed' };
  if (result.oomKilled)
    return { state: 'killed', exitStatus, reason: 'the job reached its memory limit and was killed' };
  if (result.startFailure !== null)
    return { state: 'failed', exitStatus, reason: result.startFailure.message };
  if (result.signal !== null)
    return { state: 'killed', exitStatus, reason: `the job was ended by ${result.signal}` };
  if (exitStatus === 0) return { state: 'succeeded', exitStatus, reason: null };
  return { state: 'failed', exitStatus, reason: `the job exited with code ${exitStatus}` };
}

export const AIRLOCK_FAILURE_EXIT = EXIT.AIRLOCK_ERROR;

import { setTimeout as sleep } from 'node:timers/promises';
import type { LogEnd, LogLine } from '../api/types.js';
import { AirlockError, type AirlockErrorCode, isAirlockError } from '../errors.js';
import { type ApiClient, isLogEnd } from './api-client.js';

/**
 * Follows a job's log stream to its end, reconnecting when the stream breaks: it resumes
 * after the last seq it saw, so no line is lost or shown twice. The end comes from the
 * server's LogEnd line (no polling), so the caller learns of the end as soon as the server.
 */

/** What a broken stream may be: worth reconnecting. Anything else (401, 404…) is final. */
const RECONNECT_CODES: ReadonlySet<AirlockErrorCode> = new Set([
  'SERVER_UNREACHABLE',
  'SERVER_UNAVAILABLE',
  'STORE_FAILED',
  'INTERNAL',
]);

export interface FollowOptions {
  /** Resume after this seq (lines up to it are not shown again). */
  readonly after?: number;
  /** Stops following (the promise rejects with the signal's reason). */
  readonly signal?: AbortSignal;
  /** Each new line, once, in seq order. Awaited: a slow terminal slows the reading down. */
  readonly onLine: (line: LogLine) => void | Promise<void>;
  /** Reconnects in a row without a new line before giving up. Default 5. */
  readonly maxReconnects?: number;
  readonly baseDelayMs?: number;
  readonly idleTimeoutMs?: number;
  /** Told before each reconnect. */
  readonly onReconnect?: (error: AirlockError, attempt: number) => void;
  /** false: one pass (`airlock logs` without -f), whatever the job's state. Default true. */
  readonly follow?: boolean;
}

export async function followLogs(
  api: ApiClient,
  jobId: string,
  options: FollowOptions,
): Promise<LogEnd['end']> {
  const follow = options.follow ?? true;
  const maxReconnects = options.maxReconnects ?? 5;
  const baseDelayMs = options.baseDelayMs ?? 250;
  let after = options.after;
  let failures = 0;
  for (;;) {
    let failure: AirlockError;
    try {
      for await (const record of api.logs(jobId, {
        follow,
        ...(after !== undefined ? { after } : {}),
        ...(options.signal !== undefined ? { signal: options.signal } : {}),
        ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
      })) {
        if (isLogEnd(record)) {
          // Without follow, or once terminal, this is the end. A follow stream that ends on a
          // job still running (the server restarting, say) is picked up again.
          if (!follow || record.end.terminal) return record.end;
          break;
        }
        // A resumed stream may repeat what was seen; never show a line twice.
        if (after !== undefined && record.seq <= after) continue;
        after = record.seq;
        failures = 0;
        await options.onLine(record);
      }
      failure = new AirlockError('SERVER_UNREACHABLE', 'the log stream ended before the job did');
    } catch (error) {
      if (options.signal?.aborted === true) throw options.signal.reason ?? error;
      if (!isAirlockError(error) || !RECONNECT_CODES.has(error.code)) throw error;
      failure = error;
    }
    failures += 1;
    if (failures > maxReconnects)
      throw new AirlockError(
        failure.code,
        `${failure.message} (gave up after ${maxReconnects} reconnects; the job goes on: airlock logs -f ${jobId})`,
        { cause: failure },
      );
    options.onReconnect?.(failure, failures);
    await sleep(
      Math.min(5000, baseDelayMs * 2 ** (failures - 1)),
      undefined,
      options.signal !== undefined ? { signal: options.signal } : {},
    );
  }
}

/** Exit code when the user leaves a wait with Ctrl-C (128 + SIGINT). */
export const EXIT_INTERRUPTED = 130;

/** Exit code of `airlock run` from the log stream's end (DESIGN §6): the server's exitStatus. */
export function exitCodeOfEnd(end: LogEnd['end']): number {
  const status = end.exitStatus;
  // The server's number is used only when it can be an exit code at all.
  if (status !== null && Number.isInteger(status) && status >= 0 && status <= 255) return status;
  if (end.state === 'timed_out') return 124;
  if (end.state === 'succeeded') return 0;
  return 125;
}

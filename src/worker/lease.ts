import { AirlockError } from '../errors.js';

/**
 * Time-keeping of one lease, and the retry rule of calls made under it.
 *
 * The worker tracks the lease on its own monotonic clock, never from the server's
 * leaseExpiresAt (the two hosts' clocks may disagree): a lease granted by an answer is
 * assumed to last leaseTtlMs from when the request that renewed it was *sent* (the earliest
 * the server can have renewed it), so the worker's idea of the deadline is never later than
 * the server's. Transient failures (server unreachable, 5xx, rate limited) are retried with
 * backoff only while the lease would still hold; past that the server has requeued the job
 * (or is about to), and the worker gives the job up rather than keep running a job someone
 * else may already be running.
 */

export type Clock = () => number;

export const monotonicNow: Clock = () => performance.now();

export class Lease {
  readonly ttlMs: number;
  readonly #now: Clock;
  #deadline: number;

  constructor(ttlMs: number, grantedAt: number, now: Clock = monotonicNow) {
    this.ttlMs = ttlMs;
    this.#now = now;
    this.#deadline = grantedAt + ttlMs;
  }

  /** The server renewed the lease in answer to a request sent at `sentAt`. */
  renewed(sentAt: number): void {
    this.#deadline = Math.max(this.#deadline, sentAt + this.ttlMs);
  }

  remainingMs(): number {
    return Math.max(0, this.#deadline - this.#now());
  }

  get expired(): boolean {
    return this.remainingMs() === 0;
  }
}

/** Whether trying the same call again later can help: the server was unreachable or failed. */
export function isTransient(error: unknown): boolean {
  return error instanceof AirlockError && (error.retryable || error.httpStatus >= 500);
}

export interface Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = Object.freeze({ initialMs: 250, maxMs: 10_000 });

/**
 * The pause before retry number `failures` (1, 2, …): doubling from initialMs up to maxMs,
 * with jitter (half to all of it) so that many workers do not retry in step; at least the
 * server's Retry-After when it sent one.
 */
export function backoffDelay(backoff: Backoff, failures: number, error?: unknown): number {
  const exponent = Math.min(Math.max(failures - 1, 0), 30);
  const ceiling = Math.min(backoff.maxMs, backoff.initialMs * 2 ** exponent);
  const delay = ceiling * (0.5 + Math.random() / 2);
  const retryAfter = (error as { retryAfterSeconds?: unknown } | undefined)?.retryAfterSeconds;
  return typeof retryAfter === 'number' ? Math.max(delay, Math.min(retryAfter * 1000, backoff.maxMs)) : delay;
}

/** Waits `ms`, or less when `signal` is aborted (then resolves false). Leaves no timer behind. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface LeaseCallOptions {
  readonly lease: Lease;
  readonly backoff: Backoff;
  /** Ends the retries early (the job is over); the last error is thrown. */
  readonly signal?: AbortSignal;
  /** Told about each transient failure that will be retried. */
  readonly onRetry?: (error: unknown, failures: number, delayMs: number) => void;
  /** Longest single request; the lease's remaining time is used when shorter. */
  readonly maxRequestMs?: number;
}

/**
 * Makes a call under a lease: transient failures are retried until the lease would have
 * expired; then the last (transient) error is thrown — `isTransient(error)` tells the caller
 * it gave up. Other errors (LEASE_LOST, a refusal) are thrown at once.
 */
export async function callWithinLease<T>(
  call: (timeoutMs: number) => Promise<T>,
  options: LeaseCallOptions,
): Promise<T> {
  const { lease, backoff, signal } = options;
  const maxRequestMs = options.maxRequestMs ?? 30_000;
  for (let failures = 0; ; ) {
    // A request gets at most the lease's remaining time (and at least a second to try).
    // Whole milliseconds: AbortSignal.timeout() refuses fractions.
    const timeoutMs = Math.floor(Math.max(1000, Math.min(maxRequestMs, lease.remainingMs())));
    try {
      return await call(timeoutMs);
    } catch (error) {
      if (!isTransient(error)) throw error;
      failures += 1;
      const delay = backoffDelay(backoff, failures, error);
      if (signal?.aborted || lease.remainingMs() <= delay) throw error;
      options.onRetry?.(error, failures, delay);
      if (!(await sleep(delay, signal))) throw error;
    }
  }
}

/**
 * Failed-authentication limiter: after `maxFailures` failures within `windowMs` from one
 * source address, or against one token id, further requests from that source or for that
 * token are refused (429 with Retry-After) until the window ends — even with a correct
 * token, so the limit is not an oracle. Memory is bounded: at most `maxKeys` keys are
 * tracked and the oldest are dropped first.
 *
 * The counters live in this process: with several control-plane replicas each enforces its
 * own limit (docs/decisions/0006). They are a brake on guessing, not a record — the record
 * is the audit trail.
 */

export interface RateLimitOptions {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly maxKeys: number;
  readonly now?: () => number;
}

interface Window {
  start: number;
  failures: number;
  /** Whether the refusal of this window was audited already (one event per window). */
  reported: boolean;
}

export class FailureLimiter {
  readonly #options: RateLimitOptions;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();

  constructor(options: RateLimitOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Seconds until `key` may try again, or 0 when it is not blocked. */
  retryAfter(key: string): number {
    const window = this.#current(key);
    if (window === undefined || window.failures < this.#options.maxFailures) return 0;
    return Math.max(1, Math.ceil((window.start + this.#options.windowMs - this.#now()) / 1000));
  }

  /** Records a failure for `key`. */
  fail(key: string): void {
    let window = this.#current(key);
    if (window === undefined) {
      window = { start: this.#now(), failures: 0, reported: false };
      if (this.#windows.size >= this.#options.maxKeys) {
        const oldest = this.#windows.keys().next().value;
        if (oldest !== undefined) this.#windows.delete(oldest);
      }
      this.#windows.set(key, window);
    }
    window.failures += 1;
  }

  /** True the first time it is asked for a blocked key's window (to audit one refusal per window). */
  firstRefusal(key: string): boolean {
    const window = this.#current(key);
    if (window === undefined || window.reported) return false;
    window.reported = true;
    return true;
  }

  #current(key: string): Window | undefined {
    const window = this.#windows.get(key);
    if (window === undefined) return undefined;
    if (this.#now() - window.start >= this.#options.windowMs) {
      this.#windows.delete(key);
      return undefined;
    }
    return window;
  }
}

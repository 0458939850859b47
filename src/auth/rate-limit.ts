/**
 * Failed-authentication limiter: after `maxFailures` failures within `windowMs` from one
 * source address, or against one token id, further failures from that source or for that
 * token are answered 429 with Retry-After until the window ends. Memory is bounded: at most
 * `maxKeys` keys are tracked and the oldest are dropped first.
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

export interface RequestRateOptions {
  /** Requests per second a token may sustain. */
  readonly perSecond: number;
  /** Requests a token may make at once before the rate applies. */
  readonly burst: number;
  readonly maxKeys: number;
  readonly now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
  /** Start of the second in which a refusal was last audited. */
  reportedAt: number;
}

/**
 * Request rate per token (DESIGN §5.6): a token bucket per token id. Every request is
 * audited and read from the store, so an unbounded client could grow the audit trail and
 * starve others; past its rate a token is answered 429 with Retry-After. Bounded memory, like
 * the failure limiter.
 */
export class RequestLimiter {
  readonly #options: RequestRateOptions;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: RequestRateOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Takes one request for `key`: 0 when allowed, else the seconds to wait. */
  take(key: string): number {
    const now = this.#now();
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      if (this.#buckets.size >= this.#options.maxKeys) {
        const oldest = this.#buckets.keys().next().value;
        if (oldest !== undefined) this.#buckets.delete(oldest);
      }
      bucket = { tokens: this.#options.burst, at: now, reportedAt: 0 };
      this.#buckets.set(key, bucket);
    }
    bucket.tokens = Math.min(
      this.#options.burst,
      bucket.tokens + ((now - bucket.at) / 1000) * this.#options.perSecond,
    );
    bucket.at = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / this.#options.perSecond));
  }

  /** True once a second per key: only that refusal is audited (a flood must not fill the trail). */
  firstRefusal(key: string): boolean {
    const bucket = this.#buckets.get(key);
    const second = Math.floor(this.#now() / 1000) * 1000;
    if (bucket === undefined || bucket.reportedAt === second) return false;
    bucket.reportedAt = second;
    return true;
  }
}

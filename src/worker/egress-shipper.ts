import type { EgressBatch } from '../api/types.js';
import type { EgressRecord } from '../network/egress-proxy.js';

/**
 * Streams a job's egress attempts to the server while the job runs (one audit event each),
 * so that what a job did through its proxy is on record even if it later floods the proxy,
 * the worker dies, or the job's result never arrives. Bounded: past `maxPending` unsent
 * records, record() throws, and the proxy then refuses every later attempt (egress that
 * cannot be recorded does not happen). A send that fails stops shipping for good; the
 * caller's onFailure decides what becomes of the job.
 */

export interface EgressShipperOptions {
  /** Sends one batch; rejects when the server refused it or stayed unreachable. */
  readonly send: (attempts: EgressBatch['attempts']) => Promise<void>;
  readonly onFailure: (error: unknown) => void;
  /** Unsent records held at most (default 2000). */
  readonly maxPending?: number;
  /** Records per call (default 100, the server's bound). */
  readonly batchSize?: number;
  /** How long a record may wait for companions before it is sent (default 200 ms). */
  readonly delayMs?: number;
}

export class EgressShipper {
  readonly #options: Required<EgressShipperOptions>;
  #pending: EgressBatch['attempts'] = [];
  #seq = 0;
  #failure: unknown;
  #failed = false;
  #timer: NodeJS.Timeout | null = null;
  #sending: Promise<void> | null = null;

  constructor(options: EgressShipperOptions) {
    this.#options = { maxPending: 2000, batchSize: 100, delayMs: 200, ...options };
  }

  /** Called by the proxy with each record as its attempt ends. Throws when it cannot be kept. */
  readonly record = (record: EgressRecord): void => {
    if (this.#failed) throw new Error('egress records can no longer be shipped');
    if (this.#pending.length >= this.#options.maxPending)
      throw new Error(`more than ${this.#options.maxPending} egress records wait to be shipped`);
    this.#seq += 1;
    this.#pending.push({ ...record, seq: this.#seq });
    if (this.#pending.length >= this.#options.batchSize) this.#kick();
    else this.#timer ??= setTimeout(() => this.#kick(), this.#options.delayMs);
  };

  /** Sends everything recorded so far; rejects with the failure if shipping failed. */
  async flush(): Promise<void> {
    while (!this.#failed && (this.#pending.length > 0 || this.#sending !== null)) {
      this.#kick();
      await this.#sending;
    }
    if (this.#failed) throw this.#failure;
  }

  /** Stops the timer; nothing more is sent. */
  close(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#failed = true;
  }

  #kick(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#sending !== null || this.#failed || this.#pending.length === 0) return;
    const batch = this.#pending.slice(0, this.#options.batchSize);
    this.#sending = this.#options
      .send(batch)
      .then(() => {
        this.#pending = this.#pending.slice(batch.length);
        this.#sending = null;
        if (this.#pending.length > 0) this.#kick();
      })
      .catch((error: unknown) => {
        this.#sending = null;
        this.#failed = true;
        this.#failure = error;
        this.#options.onFailure(error);
      });
  }
}

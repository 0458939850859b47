import type { LogLine } from '../api/types.js';
import { AirlockError, describeError } from '../errors.js';
import type { StreamName } from '../sandbox/output.js';

/**
 * Ships one job's output to the server as it arrives: through a pipeline of stages, then
 * coalesced into numbered chunks (seq 1, 2, 3 … per attempt) and sent in order, with never
 * more than one request in flight, so the server sees the chunks exactly in seq order.
 *
 * Coalescing: output waits until 64 KiB are pending or ~100 ms have passed since it came (a
 * chatty job must not cost one request per write()); while a request is in flight, new
 * output waits for it. Consecutive writes to the same stream are merged into one chunk of
 * at most 64 KiB; stdout and stderr keep their interleaving.
 *
 * Memory: the engine caps a job's output (resources.outputBytes plus one truncation marker),
 * so what can be pending is bounded by that cap; `maxPendingBytes` asserts it. Going past it
 * means the cap was not applied: the shipper fails (and the worker stops the job) rather
 * than let a job grow the worker's memory.
 */

export interface LogChunk {
  readonly stream: StreamName;
  readonly data: Buffer;
}

/**
 * One stage of the log pipeline, applied to all output before it leaves the worker. push()
 * returns what may be shipped now (possibly nothing, possibly changed); end() returns what
 * the stage held back, when the output is over. Stages must keep the order of what they
 * are given.
 *
 * This is where secret redaction goes (DESIGN §10, a later issue): a redactor replaces
 * secret values (raw and encoded) and holds back the tail of a chunk that could be the
 * start of a secret cut by a write boundary, hence end(). A stage that throws fails the
 * shipper: output that could not be redacted is never sent.
 */
export interface LogStage {
  push(chunk: LogChunk): LogChunk[];
  end(): LogChunk[];
}

/** Ships everything as it is. The place-holder for the redaction stage. */
export function passThroughStage(): LogStage {
  return { push: (chunk) => [chunk], end: () => [] };
}

export interface LogShippingLimits {
  readonly maxChunksPerRequest: number;
  readonly maxBytesPerRequest: number;
  readonly maxChunkBytes: number;
  readonly flushBytes: number;
  readonly flushDelayMs: number;
}

export const LOG_SHIPPING: LogShippingLimits = Object.freeze({
  /** Protocol bounds of one logs request. */
  maxChunksPerRequest: 64,
  maxBytesPerRequest: 1024 * 1024,
  /** Largest single chunk (one seq). */
  maxChunkBytes: 64 * 1024,
  /** Send at once when this much is pending… */
  flushBytes: 64 * 1024,
  /** …or when output has waited this long. */
  flushDelayMs: 100,
});

export interface LogShipperOptions {
  /** Sends chunks; resolves when the server acknowledged them. A rejection is final (the caller retries transient failures). */
  readonly send: (chunks: LogLine[]) => Promise<void>;
  /** Bytes pending (queued and in flight) at most: the job's output cap plus its marker. */
  readonly maxPendingBytes: number;
  /** Applied in order; default: one pass-through stage. */
  readonly stages?: readonly LogStage[];
  /** Called once when shipping fails for good (send rejected, a stage threw, the bound was passed). */
  readonly onFailure?: (error: unknown) => void;
  readonly limits?: Partial<LogShippingLimits>;
}

interface Pending {
  readonly stream: StreamName;
  readonly parts: Buffer[];
  bytes: number;
}

type State = 'open' | 'ending' | 'closed' | 'failed';

export class LogShipper {
  readonly #send: (chunks: LogLine[]) => Promise<void>;
  readonly #stages: readonly LogStage[];
  readonly #maxPending: number;
  readonly #onFailure: ((error: unknown) => void) | undefined;
  readonly #limits: LogShippingLimits;
  readonly #queue: Pending[] = [];
  #queuedBytes = 0;
  #inFlightBytes = 0;
  #inFlight = false;
  #due = false;
  #timer: NodeJS.Timeout | undefined;
  #nextSeq = 1;
  #state: State = 'open';
  #failure: unknown;
  #waiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];

  constructor(options: LogShipperOptions) {
    this.#send = options.send;
    this.#stages = options.stages ?? [passThroughStage()];
    this.#maxPending = options.maxPendingBytes;
    this.#onFailure = options.onFailure;
    this.#limits = { ...LOG_SHIPPING, ...options.limits };
    if (this.#limits.maxChunkBytes > this.#limits.maxBytesPerRequest)
      throw new RangeError('maxChunkBytes must not exceed maxBytesPerRequest');
  }

  /** The next seq to be sent (1 before anything was). */
  get nextSeq(): number {
    return this.#nextSeq;
  }

  /** Takes output (an OutputListener). Dropped silently once the shipper is closed or failed. */
  readonly write = (stream: StreamName, data: Buffer): void => {
    if (this.#state === 'closed' || this.#state === 'failed') return;
    if (this.#state === 'ending') throw new TypeError('LogShipper: output written after flush()');
    let chunks: LogChunk[] = [{ stream, data }];
    try {
      for (const stage of this.#stages) chunks = chunks.flatMap((chunk) => stage.push(chunk));
    } catch (error) {
      this.#fail(
        new AirlockError('INTERNAL', `a log stage failed: ${describeError(error)}`, { cause: error }),
      );
      return;
    }
    this.#enqueue(chunks);
  };

  /**
   * Ends the output: drains the stages, sends everything, and resolves once the server has
   * acknowledged every chunk. Rejects if shipping failed or the shipper was closed meanwhile.
   */
  flush(): Promise<void> {
    if (this.#state === 'failed') return Promise.reject(this.#failure);
    if (this.#state === 'closed') return Promise.reject(new AirlockError('INTERNAL', 'log shipper closed'));
    if (this.#state === 'open') {
      this.#state = 'ending';
      try {
        this.#enqueue(this.#endStages());
      } catch (error) {
        this.#fail(
          new AirlockError('INTERNAL', `a log stage failed: ${describeError(error)}`, { cause: error }),
        );
      }
    }
    return new Promise((resolve, reject) => {
      if (this.#state === 'failed') {
        reject(this.#failure);
        return;
      }
      this.#waiters.push({ resolve, reject });
      this.#pump();
    });
  }

  /** Drops whatever was not sent (the lease is lost: it is no longer ours to ship). */
  close(reason: unknown = new AirlockError('INTERNAL', 'log shipper closed')): void {
    if (this.#state === 'closed' || this.#state === 'failed') return;
    this.#state = 'closed';
    this.#drop();
    for (const waiter of this.#waiters.splice(0)) waiter.reject(reason);
  }

  #endStages(): LogChunk[] {
    const out: LogChunk[] = [];
    for (const [index, stage] of this.#stages.entries()) {
      let held = stage.end();
      for (const later of this.#stages.slice(index + 1)) held = held.flatMap((chunk) => later.push(chunk));
      out.push(...held);
    }
    return out;
  }

  #enqueue(chunks: readonly LogChunk[]): void {
    const { maxChunkBytes, flushBytes, flushDelayMs } = this.#limits;
    for (const { stream, data } of chunks) {
      if (this.#state === 'failed' || this.#state === 'closed') return;
      if (data.length === 0) continue;
      if (this.#queuedBytes + this.#inFlightBytes + data.length > this.#maxPending) {
        this.#fail(
          new AirlockError(
            'INTERNAL',
            `more than ${this.#maxPending} bytes of output pending: the job's output cap was not applied`,
          ),
        );
        return;
      }
      for (let offset = 0; offset < data.length; ) {
        const last = this.#queue.at(-1);
        const room = last !== undefined && last.stream === stream ? maxChunkBytes - last.bytes : 0;
        const take = Math.min(data.length - offset, room > 0 ? room : maxChunkBytes);
        const piece = data.subarray(offset, offset + take);
        if (room > 0 && last !== undefined) {
          last.parts.push(piece);
          last.bytes += take;
        } else {
          this.#queue.push({ stream, parts: [piece], bytes: take });
        }
        offset += take;
        this.#queuedBytes += take;
      }
    }
    if (this.#queuedBytes >= flushBytes) this.#due = true;
    else if (!this.#due && this.#timer === undefined && this.#queue.length > 0) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#due = true;
        this.#pump();
      }, flushDelayMs);
    }
    this.#pump();
  }

  #pump(): void {
    if (this.#inFlight || this.#state === 'closed' || this.#state === 'failed') return;
    if (this.#queue.length === 0) {
      if (this.#state === 'ending') for (const waiter of this.#waiters.splice(0)) waiter.resolve();
      return;
    }
    if (!this.#due && this.#state !== 'ending') return;
    const { maxChunksPerRequest, maxBytesPerRequest } = this.#limits;
    const batch: Pending[] = [];
    let bytes = 0;
    for (let head = this.#queue[0]; head !== undefined; head = this.#queue[0]) {
      if (batch.length >= maxChunksPerRequest || bytes + head.bytes > maxBytesPerRequest) break;
      batch.push(head);
      bytes += head.bytes;
      this.#queue.shift();
    }
    // A backlog beyond one request goes out as soon as this one is acknowledged.
    this.#due = this.#queue.length > 0;
    if (this.#queue.length === 0) this.#clearTimer();
    const lines: LogLine[] = batch.map((pending) => ({
      seq: this.#nextSeq++,
      stream: pending.stream,
      data: Buffer.concat(pending.parts, pending.bytes).toString('base64'),
    }));
    this.#queuedBytes -= bytes;
    this.#inFlightBytes = bytes;
    this.#inFlight = true;
    let sent: Promise<void>;
    try {
      sent = this.#send(lines);
    } catch (error) {
      sent = Promise.reject(error);
    }
    sent.then(
      () => {
        this.#inFlight = false;
        this.#inFlightBytes = 0;
        this.#pump();
      },
      (error: unknown) => {
        this.#inFlight = false;
        this.#inFlightBytes = 0;
        this.#fail(error);
      },
    );
  }

  #fail(error: unknown): void {
    if (this.#state === 'closed' || this.#state === 'failed') return;
    this.#state = 'failed';
    this.#failure = error;
    this.#drop();
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
    this.#onFailure?.(error);
  }

  #drop(): void {
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#due = false;
    this.#clearTimer();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

import { describeError } from '../errors.js';
import type { RuntimeName } from '../sandbox/job.js';
import { ClaimGate } from './claim-gate.js';
import { JobRun } from './job-run.js';
import { type Backoff, backoffDelay, type Clock, DEFAULT_BACKOFF, monotonicNow, sleep } from './lease.js';
import type { LogShippingLimits, LogStage } from './log-shipper.js';
import type { Selftest, SelftestOutcome, WorkerEngine, WorkerLogger } from './ports.js';
import type { WorkerProtocol } from './protocol.js';

/**
 * `airlock worker`: takes jobs from the control plane and runs them in sandboxes. It owns
 * nothing durable and speaks only the worker protocol (DESIGN §2).
 *
 * - A selftest gates claiming: at start, then on a schedule (only when no job runs: claims
 *   pause, running jobs finish, the probes run, claims resume). While it fails nothing is
 *   claimed and it is retried every minute.
 * - `concurrency` claim loops, each: long-poll claim → run the job (job-run.ts) → again.
 *   A loop never throws: a failure is logged and the loop goes on (claims back off).
 * - stop(): no more claims (pending long polls are aborted); running jobs get `graceMs` to
 *   finish, then are stopped and their leases released; then the engine is closed.
 *   stop({ force: true }) stops and releases running jobs at once.
 */

export interface WorkerOptions {
  readonly client: WorkerProtocol;
  /** Owned by the worker from run() on: closed when the worker stops. */
  readonly engine: WorkerEngine;
  readonly logger: WorkerLogger;
  /** Names this worker to the server (1–128 characters). */
  readonly name: string;
  /** Jobs run at once, 1–64. */
  readonly concurrency: number;
  readonly selftest: Selftest;
  /** Time between scheduled selftests; 0 = only at start. */
  readonly selftestIntervalMs: number;
  /** Time between selftests while it fails. Default 60 s. */
  readonly selftestRetryMs?: number;
  /** How long one claim waits on the server for a job (long poll, at most 30 s). Default 25 s. */
  readonly claimWaitMs?: number;
  /** How long running jobs may go on after stop() before they are stopped and released. Default 30 s. */
  readonly graceMs?: number;
  /** Pauses between failed claims and retried calls. Default 250 ms doubling up to 10 s. */
  readonly backoff?: Backoff;
  /** The log pipeline of each job (redaction goes here); default: pass-through. */
  readonly logStages?: () => LogStage[];
  readonly logLimits?: Partial<LogShippingLimits>;
  /** Called when the worker starts taking jobs (after a passing selftest that follows none or a failure). */
  readonly onReady?: (runtimes: readonly RuntimeName[]) => void;
  readonly now?: Clock;
}

export const WORKER_DEFAULTS = Object.freeze({
  selftestRetryMs: 60_000,
  claimWaitMs: 25_000,
  graceMs: 30_000,
  maxConcurrency: 64,
});

export class Worker {
  readonly #options: WorkerOptions;
  readonly #gate = new ClaimGate();
  readonly #stop = new AbortController();
  readonly #jobs = new Set<JobRun>();
  readonly #now: Clock;
  #started = false;
  #graceTimer: NodeJS.Timeout | undefined;
  readonly #finished: Promise<void>;
  #finish: () => void = () => undefined;

  constructor(options: WorkerOptions) {
    const { concurrency, name, selftestIntervalMs } = options;
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > WORKER_DEFAULTS.maxConcurrency)
      throw new RangeError(`concurrency must be a whole number from 1 to ${WORKER_DEFAULTS.maxConcurrency}`);
    if (name.length < 1 || name.length > 128) throw new RangeError('name must have 1 to 128 characters');
    if (!Number.isFinite(selftestIntervalMs) || selftestIntervalMs < 0)
      throw new RangeError('selftestIntervalMs must be 0 or more');
    const waitMs = options.claimWaitMs ?? WORKER_DEFAULTS.claimWaitMs;
    if (!Number.isInteger(waitMs) || waitMs < 0 || waitMs > 30_000)
      throw new RangeError('claimWaitMs must be between 0 and 30000');
    this.#options = options;
    this.#now = options.now ?? monotonicNow;
    this.#finished = new Promise((resolve) => {
      this.#finish = resolve;
    });
  }

  /** Jobs claimed and not yet ended. */
  get activeJobs(): number {
    return this.#jobs.size;
  }

  /** Whether the claim loops may claim now (selftest passed, not stopping). */
  get takingJobs(): boolean {
    return this.#gate.isOpen;
  }

  /**
   * Runs until stop(): resolves once every claimed job has ended and the engine is closed;
   * rejects only when the engine could not remove a sandbox (SANDBOX_CLEANUP_FAILED).
   */
  async run(): Promise<void> {
    if (this.#started) throw new TypeError('Worker.run() was called before');
    this.#started = true;
    const { concurrency, engine, logger } = this.#options;
    try {
      await Promise.all([
        this.#supervise(),
        ...Array.from({ length: concurrency }, (_, index) => this.#claimLoop(index)),
      ]);
      if (this.#graceTimer !== undefined) clearTimeout(this.#graceTimer);
      logger.info({}, 'all jobs ended; closing the sandbox engine');
      await engine.close();
    } finally {
      this.#finish();
    }
  }

  /**
   * Stops claiming and ends the worker (see the module comment). Resolves when run() has
   * ended. Calling it again with `force` stops and releases the running jobs at once.
   */
  stop(options: { force?: boolean } = {}): Promise<void> {
    if (!this.#stop.signal.aborted) {
      const graceMs = this.#options.graceMs ?? WORKER_DEFAULTS.graceMs;
      this.#options.logger.info(
        { activeJobs: this.#jobs.size, graceMs },
        'stopping: no new jobs; running jobs may finish within the grace period',
      );
      this.#stop.abort();
      this.#gate.stop();
      if (this.#jobs.size > 0)
        this.#graceTimer = setTimeout(() => this.#interruptAll('grace period over'), graceMs);
    }
    if (options.force === true) this.#interruptAll('forced stop');
    return this.#started ? this.#finished : Promise.resolve();
  }

  #interruptAll(why: string): void {
    if (this.#jobs.size > 0)
      this.#options.logger.warn(
        { why, activeJobs: this.#jobs.size },
        'stopping running jobs and releasing them',
      );
    for (const job of this.#jobs) job.interrupt();
  }

  /** The selftest schedule, which opens and closes the claim gate. */
  async #supervise(): Promise<void> {
    const { logger, selftestIntervalMs, onReady } = this.#options;
    const retryMs = this.#options.selftestRetryMs ?? WORKER_DEFAULTS.selftestRetryMs;
    const signal = this.#stop.signal;
    let ready = false;
    while (!signal.aborted) {
      await this.#settleEngine();
      const outcome = await this.#selftest(signal);
      if (signal.aborted) return;
      if (!outcome.ok) {
        ready = false;
        logger.error(
          { failedProbes: outcome.failedProbes, retryMs },
          'selftest failed: taking no jobs until it passes',
        );
        if (!(await sleep(retryMs, signal))) return;
        continue;
      }
      if (outcome.failedProbes.length > 0)
        logger.warn(
          { failedProbes: outcome.failedProbes, runtimes: outcome.runtimes },
          'selftest failed for some runtimes; offering only those that passed',
        );
      this.#gate.open(outcome.runtimes);
      if (!ready) {
        ready = true;
        logger.info({ runtimes: outcome.runtimes }, 'selftest passed; taking jobs');
        onReady?.(outcome.runtimes);
      }
      if (selftestIntervalMs === 0) return;
      if (!(await sleep(selftestIntervalMs, signal))) return;
      // The probes measure the host (isolation between jobs, its responsiveness under a fork
      // bomb): they run only when no job does. Claims pause; running jobs finish first.
      this.#gate.close();
      logger.info(
        { activeJobs: this.#jobs.size },
        'scheduled selftest: pausing claims until running jobs end',
      );
      await this.#gate.idle();
    }
  }

  async #selftest(signal: AbortSignal): Promise<SelftestOutcome> {
    try {
      return await this.#options.selftest(signal);
    } catch (error) {
      return { ok: false, runtimes: [], failedProbes: [`selftest could not run: ${describeError(error)}`] };
    }
  }

  /** Reports sandboxes that could not be removed (the engine's sweep retries them at its next start). */
  async #settleEngine(): Promise<void> {
    try {
      await this.#options.engine.settle();
    } catch (error) {
      this.#options.logger.error({ err: error }, 'removing finished sandboxes failed');
    }
  }

  async #claimLoop(index: number): Promise<void> {
    const { backoff = DEFAULT_BACKOFF, logger } = this.#options;
    const signal = this.#stop.signal;
    let failures = 0;
    for (;;) {
      const runtimes = await this.#gate.enter();
      if (runtimes === null) return;
      let failure: unknown;
      try {
        failure = await this.#claimAndRun(runtimes);
      } catch (error) {
        failure = error;
      } finally {
        this.#gate.leave();
      }
      if (failure === undefined) {
        failures = 0;
        continue;
      }
      // Retried for as long as the worker runs: an unreachable server or a revoked token is
      // an operator's problem to fix, and the log says so at each attempt.
      failures += 1;
      const delayMs = backoffDelay(backoff, failures, failure);
      logger.warn(
        { loop: index, failures, delayMs: Math.round(delayMs), err: failure },
        'claiming failed; retrying',
      );
      await sleep(delayMs, signal);
    }
  }

  /** One claim and, if a job came, its run. Returns the claim's failure, if any. */
  async #claimAndRun(runtimes: readonly RuntimeName[]): Promise<unknown> {
    const { client, name, engine, logger, logStages, logLimits } = this.#options;
    const signal = this.#stop.signal;
    const waitMs = this.#options.claimWaitMs ?? WORKER_DEFAULTS.claimWaitMs;
    let claimed: Awaited<ReturnType<WorkerProtocol['claim']>>;
    try {
      // The job starts with its claim: one round trip fewer per job (decision 0014).
      claimed = await client.claim(
        { worker: name, runtimes: [...runtimes], waitMs, start: true },
        { signal },
      );
    } catch (error) {
      // An aborted long poll is the stop, not a failure. (A job the server leased to us in
      // that instant is requeued when its lease runs out.)
      return signal.aborted ? undefined : error;
    }
    if (claimed === null) return undefined;
    logger.info(
      {
        jobId: claimed.jobId,
        attempt: claimed.attempt,
        fence: claimed.fence,
        runtime: claimed.spec.runtime ?? 'runc',
      },
      'claimed a job',
    );
    const job = new JobRun(claimed, this.#now(), {
      client,
      engine,
      logger,
      backoff: this.#options.backoff ?? DEFAULT_BACKOFF,
      runtimes,
      now: this.#now,
      ...(logStages !== undefined ? { logStages } : {}),
      ...(logLimits !== undefined ? { logLimits } : {}),
    });
    this.#jobs.add(job);
    // Claimed while stopping: given back at once, never started.
    if (signal.aborted) job.interrupt();
    try {
      await job.execute();
    } finally {
      this.#jobs.delete(job);
    }
    return undefined;
  }
}

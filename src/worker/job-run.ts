import { MAX_EGRESS_ATTEMPTS } from '../api/schemas.js';
import type { ClaimedJob, EgressReport, JobRunResult, LeaseStatus, ResultReport } from '../api/types.js';
import { AirlockError, describeError, isAirlockError } from '../errors.js';
import type { EgressSummary } from '../sandbox/egress.js';
import type { SandboxResult } from '../sandbox/engine.js';
import { DEFAULT_RESOURCES, type RuntimeName } from '../sandbox/job.js';
import { truncationMarker } from '../sandbox/output.js';
import { EgressShipper } from './egress-shipper.js';
import {
  type Backoff,
  type Clock,
  callWithinLease,
  isTransient,
  Lease,
  monotonicNow,
  sleep,
} from './lease.js';
import { LogShipper, type LogShippingLimits, type LogStage, passThroughStage } from './log-shipper.js';
import { collectOutputs, type OutputFile } from './outputs.js';
import type { WorkerEngine, WorkerLogger } from './ports.js';
import type { CallOptions, WorkerProtocol } from './protocol.js';
import { type WorkerJob, workerJobOf } from './spec.js';

/**
 * One claimed job, from the claim to its end: start, run in a sandbox while heartbeating and
 * shipping its output, then report. See the critical section in #work().
 */

/** How a claimed job ended for this worker. */
export type JobEnding =
  /** The server acknowledged the report (outcome completed or error). */
  | 'reported'
  /** The server took the job back (the worker is stopping, or refused the report). */
  | 'released'
  /**
   * The lease is no longer ours: refused (409 LEASE_LOST, the job gone) or run out while the
   * server was unreachable. The job was stopped and nothing more was sent about it.
   */
  | 'lost';

export interface JobRunDeps {
  readonly client: WorkerProtocol;
  readonly engine: Pick<WorkerEngine, 'run'>;
  readonly logger: WorkerLogger;
  readonly backoff: Backoff;
  /** Runtimes this worker offered when it claimed (those whose selftest passed). */
  readonly runtimes: readonly RuntimeName[];
  /** The log pipeline of one job; default: one pass-through stage (redaction goes here). */
  readonly logStages?: () => LogStage[];
  readonly logLimits?: Partial<LogShippingLimits>;
  readonly now?: Clock;
}

/** Room in the log bound for the worker's own notes ("[airlock] outputs: …"). */
const NOTE_ALLOWANCE = 64 * 1024;
/** Longest error message sent to the server. */
const MAX_MESSAGE = 4096;

/** Errors that say the server no longer lets this worker act for the job. */
function leaseGone(error: unknown): boolean {
  return (
    isAirlockError(error, 'LEASE_LOST') ||
    isAirlockError(error, 'NOT_FOUND') ||
    isAirlockError(error, 'JOB_FINISHED')
  );
}

function errorOf(error: unknown): { code: string; message: string } {
  return {
    code: error instanceof AirlockError ? error.code : 'INTERNAL',
    message: describeError(error).slice(0, MAX_MESSAGE),
  };
}

export function jobRunResultOf(result: SandboxResult, outputs: OutputFile[]): JobRunResult {
  return {
    exitCode: result.exitCode,
    signal: result.signal,
    timedOut: result.timedOut,
    oomKilled: result.oomKilled,
    cancelled: result.cancelled,
    wallMs: result.wallMs,
    cpuMs: result.cpuMs,
    peakMemoryBytes: result.peakMemoryBytes,
    outputBytes: result.outputBytes,
    outputTruncated: result.outputTruncated,
    runtime: result.runtime,
    startFailure: result.startFailure === null ? null : { ...result.startFailure },
    outputs,
    sandbox: {
      configSha256: result.configSha256,
      seccompSha256: result.seccompSha256,
      ...(result.imageDigest !== undefined ? { imageDigest: result.imageDigest } : {}),
    },
    ...(result.egress !== null ? { egress: egressReportOf(result.egress) } : {}),
  };
}

/** What the server keeps of a job's egress: the last attempts within the report's bound, and the totals. */
export function egressReportOf(summary: EgressSummary): EgressReport {
  const kept = summary.attempts.slice(-MAX_EGRESS_ATTEMPTS);
  const { totals } = summary;
  return {
    allow: [...summary.allow],
    attempts: kept.map((record) => ({ ...record })),
    totals: {
      bytesUp: totals.bytesUp,
      bytesDown: totals.bytesDown,
      connections: totals.connections,
      refused: totals.refused,
      droppedRecords: totals.droppedRecords + (summary.attempts.length - kept.length),
      unrecorded: totals.unrecorded,
      exhausted: totals.exhausted,
    },
  };
}

export class JobRun {
  readonly #claimed: ClaimedJob;
  readonly #deps: JobRunDeps;
  readonly #now: Clock;
  readonly #lease: Lease;
  readonly #log: Record<string, unknown>;
  /** Stops the sandbox (cancel, lease lost, worker stopping). */
  readonly #sandboxAbort = new AbortController();
  /** Stops the heartbeats and any request about this job still in flight, once it has ended. */
  readonly #done = new AbortController();
  #phase: 'starting' | 'running' | 'reporting' = 'starting';
  #isLost = false;
  #cancelRequested = false;
  #interrupted = false;
  #shippingFailure: unknown;
  /** The result is on its way: its own answer decides the ending from here. */
  #reporting = false;
  #shipper: LogShipper | undefined;
  #egress: EgressShipper | undefined;
  #egressFailure: unknown;

  /** `claimedAt`: when the claim's answer arrived (on deps.now's clock). */
  constructor(claimed: ClaimedJob, claimedAt: number, deps: JobRunDeps) {
    this.#claimed = claimed;
    this.#deps = deps;
    this.#now = deps.now ?? monotonicNow;
    // The lease was granted no later than its answer arrived; the network trip is small
    // next to the TTL, and heartbeats renew it from their sending time on.
    this.#lease = new Lease(claimed.leaseTtlMs, claimedAt, this.#now);
    this.#log = { jobId: claimed.jobId, attempt: claimed.attempt, fence: claimed.fence };
  }

  get jobId(): string {
    return this.#claimed.jobId;
  }

  /**
   * The worker is stopping: a running sandbox is stopped and the job given back (released);
   * a job not started yet is given back; a finished one is still reported.
   */
  interrupt(): void {
    this.#interrupted = true;
    if (this.#phase === 'running') this.#sandboxAbort.abort();
  }

  /** Runs the job to one of its endings. Never rejects. */
  async execute(): Promise<JobEnding> {
    const heartbeats = this.#heartbeatLoop();
    let ending: JobEnding;
    try {
      ending = await this.#work();
    } catch (error) {
      // #work() handles every failure it knows; this is a bug. The heartbeats stop below, so
      // the lease runs out and the server requeues the job.
      this.#deps.logger.error({ ...this.#log, err: error }, 'job handling failed unexpectedly');
      ending = 'lost';
    } finally {
      this.#done.abort();
      this.#sandboxAbort.abort();
      this.#shipper?.close();
      this.#egress?.close();
    }
    await heartbeats;
    this.#deps.logger.info({ ...this.#log, ending }, `job ${ending}`);
    return ending;
  }

  async #work(): Promise<JobEnding> {
    // ═══════════════════════════════ CRITICAL SECTION ═══════════════════════════════
    // A claimed job MUST end in exactly one of: a result the server acknowledged, a
    // release, or a lost lease (LEASE_LOST, or the lease ran out while the server was
    // unreachable: then the job is stopped, its logs dropped, and nothing is reported).
    // Every return below is one of these, and nothing may throw out of this method;
    // otherwise a job stays leased to a worker that forgot it until its lease runs out.
    // ═════════════════════════════════════════════════════════════════════════════════
    const { client } = this.#deps;
    const { jobId, fence } = this.#claimed;
    if (this.#interrupted) return this.#release('the worker is stopping; the job was not run');
    // A claim that asked to start the job answers with it running (decision 0014); a job
    // still leased is started here.
    if (this.#claimed.state !== 'running') {
      try {
        this.#onStatus(await this.#renewingCall((options) => client.start(jobId, { fence }, options)));
      } catch (error) {
        if (leaseGone(error) || isTransient(error)) return this.#lostBy(error, 'start');
        this.#deps.logger.error({ ...this.#log, err: error }, 'the job could not be started');
        return this.#release(`the worker could not start the job: ${errorOf(error).code}`);
      }
    }
    if (this.#isLost) return 'lost';
    if (this.#interrupted) return this.#release('the worker is stopping; the job was not run');

    let job: WorkerJob;
    try {
      job = workerJobOf(this.#claimed.spec);
      const runtime = job.sandbox.runtime ?? 'runc';
      // Only runtimes whose selftest passed here are offered; a job for another one (a server
      // bug) is refused rather than run under an unchecked runtime.
      if (!this.#deps.runtimes.includes(runtime))
        throw new AirlockError('RUNTIME_UNAVAILABLE', `this worker does not offer the ${runtime} runtime`);
    } catch (error) {
      return this.#report({ outcome: 'error', result: null, error: errorOf(error) });
    }

    const shipper = this.#startShipper(job);
    const egress = this.#startEgressShipper();
    let result: SandboxResult | undefined;
    let runError: unknown;
    let outputs: OutputFile[] = [];
    this.#phase = 'running';
    try {
      result = await this.#deps.engine.run(job.sandbox, {
        onOutput: shipper.write,
        onEgress: egress.record,
        signal: this.#sandboxAbort.signal,
        inspect: async (workspace) => {
          if (this.#isLost) return;
          const note = (line: string): void => shipper.write('stderr', Buffer.from(`${line}\n`));
          outputs = await collectOutputs(workspace, job.outputs, note);
        },
      });
    } catch (error) {
      runError = error;
    }
    this.#phase = 'reporting';

    if (this.#isLost) return 'lost';
    if (
      this.#interrupted &&
      !this.#cancelRequested &&
      (runError !== undefined || result?.cancelled === true)
    ) {
      shipper.close();
      // What the job did through its proxy is recorded even though the job is given back.
      await egress.flush().catch(() => undefined);
      return this.#release('the worker stopped while the job ran');
    }
    // Every egress record and every chunk is acknowledged before the result.
    try {
      await egress.flush();
    } catch {
      // Recorded by the egress shipper's onFailure: a lost lease or a refused batch.
    }
    try {
      await shipper.flush();
    } catch {
      // Recorded by the shipper's onFailure: a lost lease or a refused log.
    }
    if (this.#isLost) return 'lost';
    if (this.#egressFailure !== undefined) {
      const { code, message } = errorOf(this.#egressFailure);
      return this.#report({
        outcome: 'error',
        result: null,
        error: { code, message: `the job's egress records could not be shipped: ${message}` },
      });
    }
    if (this.#shippingFailure !== undefined) {
      const { code, message } = errorOf(this.#shippingFailure);
      return this.#report({
        outcome: 'error',
        result: null,
        error: { code, message: `the job's output could not be shipped: ${message}` },
      });
    }
    if (result === undefined)
      return this.#report({ outcome: 'error', result: null, error: errorOf(runError) });
    return this.#report({ outcome: 'completed', result: jobRunResultOf(result, outputs), error: null });
  }

  #startEgressShipper(): EgressShipper {
    const { client } = this.#deps;
    const { jobId, fence } = this.#claimed;
    this.#egress = new EgressShipper({
      send: async (attempts) => {
        this.#onStatus(await this.#call((options) => client.egress(jobId, { fence, attempts }, options)));
      },
      onFailure: (error) => {
        if (leaseGone(error) || isTransient(error)) {
          this.#lose(error, 'egress');
          return;
        }
        // Refused for another reason: egress that cannot be recorded must not go on.
        this.#deps.logger.error(
          { ...this.#log, err: error },
          'egress records were refused; stopping the job',
        );
        this.#egressFailure = error;
        this.#sandboxAbort.abort();
      },
    });
    return this.#egress;
  }

  #startShipper(job: WorkerJob): LogShipper {
    const { client } = this.#deps;
    const { jobId, fence } = this.#claimed;
    const cap = job.sandbox.resources?.outputBytes ?? DEFAULT_RESOURCES.outputBytes;
    this.#shipper = new LogShipper({
      send: async (chunks) => {
        this.#onStatus(await this.#call((options) => client.logs(jobId, { fence, chunks }, options)));
      },
      maxPendingBytes: cap + Buffer.byteLength(truncationMarker(cap)) + NOTE_ALLOWANCE,
      stages: this.#deps.logStages?.() ?? [passThroughStage()],
      onFailure: (error) => {
        if (leaseGone(error) || isTransient(error)) {
          this.#lose(error, 'logs');
          return;
        }
        // Refused for another reason: the job is stopped and reported as an error.
        this.#deps.logger.error({ ...this.#log, err: error }, 'log shipping failed; stopping the job');
        this.#shippingFailure = error;
        this.#sandboxAbort.abort();
      },
      ...(this.#deps.logLimits !== undefined ? { limits: this.#deps.logLimits } : {}),
    });
    return this.#shipper;
  }

  async #report(body: Omit<ResultReport, 'fence'>): Promise<JobEnding> {
    const { jobId, fence } = this.#claimed;
    this.#reporting = true;
    try {
      await this.#call((options) => this.#deps.client.result(jobId, { fence, ...body }, options));
      return 'reported';
    } catch (error) {
      if (leaseGone(error) || isTransient(error)) return this.#lostBy(error, 'result');
      // The report itself was refused: give the job back rather than leave it leased.
      this.#deps.logger.error({ ...this.#log, err: error }, 'the server refused the result');
      return this.#release(`the server refused the worker's result: ${errorOf(error).code}`);
    }
  }

  async #release(reason: string): Promise<JobEnding> {
    const { jobId, fence } = this.#claimed;
    try {
      await this.#call((options) => this.#deps.client.release(jobId, { fence, reason }, options));
      return 'released';
    } catch (error) {
      return this.#lostBy(error, 'release');
    }
  }

  /** A call about the job: transient failures retried while the lease holds. */
  #call<T>(call: (options: CallOptions) => Promise<T>, signal: AbortSignal = this.#done.signal): Promise<T> {
    return callWithinLease((timeoutMs) => call({ signal, timeoutMs }), {
      lease: this.#lease,
      backoff: this.#deps.backoff,
      signal,
      onRetry: (error, failures, delayMs) =>
        this.#deps.logger.warn(
          { ...this.#log, code: errorOf(error).code, failures, delayMs: Math.round(delayMs) },
          'server call failed; retrying while the lease holds',
        ),
    });
  }

  /** start and heartbeat renew the lease from the moment they were sent. */
  async #renewingCall(
    call: (options: CallOptions) => Promise<LeaseStatus>,
    signal?: AbortSignal,
  ): Promise<LeaseStatus> {
    let sentAt = this.#now();
    const status = await this.#call((options) => {
      sentAt = this.#now();
      return call(options);
    }, signal);
    this.#lease.renewed(sentAt);
    return status;
  }

  async #heartbeatLoop(): Promise<void> {
    const { client } = this.#deps;
    const { jobId, fence, leaseTtlMs } = this.#claimed;
    const signal = this.#done.signal;
    while (await sleep(Math.max(100, Math.floor(leaseTtlMs / 3)), signal)) {
      try {
        this.#onStatus(
          await this.#renewingCall((options) => client.heartbeat(jobId, { fence }, options), signal),
        );
      } catch (error) {
        if (signal.aborted) return;
        this.#lose(error, 'heartbeat');
        return;
      }
    }
  }

  #onStatus(status: LeaseStatus): void {
    if (!status.cancel || this.#cancelRequested) return;
    this.#cancelRequested = true;
    this.#deps.logger.info(this.#log, 'the job was cancelled; stopping it');
    this.#sandboxAbort.abort();
  }

  /**
   * The lease is gone or cannot be renewed: stop the job now and send nothing more about it
   * (threat: two workers running, and reporting, the same job; the fence makes the server
   * refuse the stale one, and this makes the stale one stop).
   */
  #lose(error: unknown, during: string): void {
    if (this.#isLost) return;
    this.#isLost = true;
    this.#sandboxAbort.abort();
    this.#shipper?.close(error);
    // While the result is on its way its own answer decides (and #lostBy logs a loss).
    if (!this.#reporting) this.#logLoss(error, during);
  }

  #lostBy(error: unknown, during: string): JobEnding {
    this.#isLost = true;
    this.#logLoss(error, during);
    return 'lost';
  }

  #logLoss(error: unknown, during: string): void {
    const { code, message } = errorOf(error);
    if (isTransient(error))
      this.#deps.logger.error(
        { ...this.#log, during, code, message },
        'the server stayed unreachable until the lease ran out; giving the job up (the server requeues it)',
      );
    else if (leaseGone(error))
      this.#deps.logger.warn({ ...this.#log, during, code, message }, 'lease lost; the job was stopped');
    else
      this.#deps.logger.error(
        { ...this.#log, during, code, message },
        'the server refused a call about the job; giving the job up (the server requeues it when the lease runs out)',
      );
  }
}

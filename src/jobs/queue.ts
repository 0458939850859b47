import type {
  ClaimedJob,
  ClaimRequest,
  EgressBatch,
  JobSpecV1,
  JobState,
  LeaseStatus,
  LogLine,
  ResultReport,
} from '../api/types.js';
import type { AuditLog } from '../audit/audit-log.js';
import { type Principal, requireAction, visibleProjects } from '../auth/principal.js';
import { AirlockError } from '../errors.js';
import { egressOfNetwork } from '../network/allowlist.js';
import type { JobRow, Store, Tx } from '../store/store.js';
import type { JobEvents } from './events.js';
import { AIRLOCK_FAILURE_EXIT, checkMove, isTerminal, outcomeOf } from './lifecycle.js';
import { outputBytesOf } from './spec.js';

/**
 * The worker side of the job lifecycle: claim with a lease and a fencing token, start,
 * heartbeat, log chunks, result, release, and the expiry of lost leases. A worker is
 * trusted with exactly the jobs it holds: every call names the job and carries the fence of
 * its lease, and the lease is bound to the worker's token, so a stale or foreign report is
 * refused (LEASE_LOST) rather than applied. Execution is at-least-once; results are
 * accepted once.
 */

export interface JobQueueOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly events: JobEvents;
  readonly leaseTtlMs: number;
  readonly now?: () => number;
}

/** Room for Airlock's own markers on top of a job's output cap, per attempt. */
const LOG_MARGIN_BYTES = 64 * 1024;
/** A waiting claim re-reads the queue this often even without a wake-up (another replica's submit). */
const CLAIM_RECHECK_MS = 1000;

export class JobQueue {
  readonly #o: JobQueueOptions;
  readonly #now: () => number;

  constructor(options: JobQueueOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  get leaseTtlMs(): number {
    return this.#o.leaseTtlMs;
  }

  /** Long poll: the oldest queued job this worker can run, or null after `waitMs`. */
  async claim(who: Principal, request: ClaimRequest, stop: AbortSignal): Promise<ClaimedJob | null> {
    requireAction(who, 'worker.protocol');
    const deadline = this.#now() + request.waitMs;
    for (;;) {
      const claimed = await this.#tryClaim(who, request, stop);
      if (claimed !== null || stop.aborted) return claimed;
      const left = deadline - this.#now();
      if (left <= 0) return null;
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          unsubscribe();
          stop.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(left, CLAIM_RECHECK_MS));
        const unsubscribe = this.#o.events.onQueued(done);
        stop.addEventListener('abort', done, { once: true });
      });
    }
  }

  async #tryClaim(who: Principal, request: ClaimRequest, stop: AbortSignal): Promise<ClaimedJob | null> {
    // A worker token takes only jobs of its projects.
    const projects = visibleProjects(who);
    // Look first without the write lock: an idle worker's polls must not serialize writers.
    const candidate = await this.#o.store.read(async (tx) => tx.jobs.nextQueued(request.runtimes, projects));
    if (candidate === null) return null;
    return this.#o.store.transaction(async (tx) => {
      // A worker that went away while it waited gets nothing (the job would sit leased).
      if (stop.aborted) return null;
      const row = await tx.jobs.nextQueued(request.runtimes, projects);
      if (row === null) return null;
      const now = this.#now();
      checkMove(row.state, 'leased');
      Object.assign(row, {
        state: 'leased',
        attempts: row.attempts + 1,
        fence: row.fence + 1,
        worker: request.worker,
        leaseToken: who.tokenId,
        leaseExpiresAt: now + this.#o.leaseTtlMs,
        updatedAt: now,
        logBase: row.logSeq,
      } satisfies Partial<JobRow>);
      await this.#transitionEvent(tx, who, row, 'queued', { attempt: row.attempts, fence: row.fence });
      // Started with the claim (decision 0014): the second transition, with its own audit
      // event, in the same transaction; no separate start request.
      if (request.start === true) {
        checkMove(row.state, 'running');
        row.state = 'running';
        row.startedAt ??= now;
        await this.#transitionEvent(tx, who, row, 'leased', { attempt: row.attempts });
      }
      await tx.jobs.update(row);
      return {
        jobId: row.id,
        fence: row.fence,
        attempt: row.attempts,
        leaseTtlMs: this.#o.leaseTtlMs,
        leaseExpiresAt: new Date(row.leaseExpiresAt ?? now).toISOString(),
        state: row.state === 'running' ? 'running' : 'leased',
        // The worker runs the spec's runtime: the one admission chose is written into it (a
        // job that named none and was picked gvisor must never run under the worker's default).
        spec: { ...row.spec, runtime: row.runtime as NonNullable<JobSpecV1['runtime']> },
      };
    });
  }

  async start(who: Principal, jobId: string, fence: number): Promise<LeaseStatus> {
    const status = await this.#o.store.transaction(async (tx) => {
      const row = await this.#held(tx, who, jobId, fence);
      const from = row.state;
      if (row.state === 'leased') {
        checkMove(row.state, 'running');
        row.state = 'running';
        row.startedAt ??= this.#now();
      }
      this.#renew(row);
      await tx.jobs.update(row);
      if (from !== row.state) await this.#transitionEvent(tx, who, row, from, { attempt: row.attempts });
      return this.#status(row);
    });
    this.#o.events.changed(jobId);
    return status;
  }

  async heartbeat(who: Principal, jobId: string, fence: number): Promise<LeaseStatus> {
    return this.#o.store.transaction(async (tx) => {
      const row = await this.#held(tx, who, jobId, fence);
      this.#renew(row);
      await tx.jobs.update(row);
      return this.#status(row);
    });
  }

  /**
   * Records egress attempts of the running job as they end, one `job.egress` audit event
   * each, in one transaction per batch (a worker streams them while the job runs, so a job
   * cannot push an attempt out of a bounded list before it is recorded).
   */
  async recordEgress(
    who: Principal,
    jobId: string,
    fence: number,
    attempts: EgressBatch['attempts'],
  ): Promise<LeaseStatus> {
    return this.#o.store.transaction(async (tx) => {
      const row = await this.#held(tx, who, jobId, fence);
      for (const attempt of attempts) {
        await this.#o.audit.append(tx, {
          actor: who.name,
          action: 'job.egress',
          target: `job:${row.id}`,
          outcome: attempt.allowed ? 'succeeded' : 'denied',
          reason: attempt.allowed ? '' : attempt.reason,
          source: who.source,
          details: { attempt: row.attempts, ...attempt },
        });
      }
      this.#renew(row);
      await tx.jobs.update(row);
      return this.#status(row);
    });
  }

  /** Appends chunks numbered 1, 2, … per attempt; a chunk already stored (a retry) is skipped. */
  async appendLogs(
    who: Principal,
    jobId: string,
    fence: number,
    chunks: readonly LogLine[],
  ): Promise<LeaseStatus> {
    const status = await this.#o.store.transaction(async (tx) => {
      const row = await this.#held(tx, who, jobId, fence);
      const cap = (outputBytesOf(row.spec) + LOG_MARGIN_BYTES) * row.maxAttempts;
      const rows = [];
      for (const chunk of chunks) {
        const have = row.logSeq - row.logBase;
        if (chunk.seq <= have) continue;
        if (chunk.seq !== have + 1)
          throw new AirlockError(
            'INVALID_REQUEST',
            `log chunk ${chunk.seq} arrived before chunk ${have + 1}`,
          );
        const data = Buffer.from(chunk.data, 'base64');
        if (row.logBytes + data.length > cap)
          throw new AirlockError('INVALID_REQUEST', `the job's log would pass its bound of ${cap} bytes`);
        row.logSeq += 1;
        row.logBytes += data.length;
        rows.push({ jobId, seq: row.logSeq, stream: chunk.stream, data });
      }
      await tx.logs.append(rows);
      this.#renew(row);
      await tx.jobs.update(row);
      return this.#status(row);
    });
    this.#o.events.changed(jobId);
    return status;
  }

  async report(who: Principal, jobId: string, report: ResultReport): Promise<{ state: JobState }> {
    const state = await this.#o.store.transaction(async (tx) => {
      const row = await this.#held(tx, who, jobId, report.fence);
      const from = row.state;
      const now = this.#now();
      if (report.outcome === 'completed') {
        if (report.result === null)
          throw new AirlockError('INVALID_REQUEST', 'a completed report must carry the result');
        const outcome = outcomeOf(report.result);
        checkMove(row.state, outcome.state);
        Object.assign(row, {
          state: outcome.state,
          exitStatus: outcome.exitStatus,
          reason: outcome.reason,
          result: report.result,
        } satisfies Partial<JobRow>);
      } else {
        checkMove(row.state, 'failed');
        const error = report.error ?? {
          code: 'INTERNAL',
          message: 'the worker reported an error without details',
        };
        Object.assign(row, {
          state: 'failed',
          exitStatus: AIRLOCK_FAILURE_EXIT,
          reason: `${error.code}: ${error.message}`.slice(0, 4096),
          result: report.result,
        } satisfies Partial<JobRow>);
      }
      Object.assign(row, { finishedAt: now, updatedAt: now, leaseExpiresAt: null, leaseToken: null });
      await tx.jobs.update(row);
      const r = row.result;
      await this.#transitionEvent(tx, who, row, from, {
        attempt: row.attempts,
        exitStatus: row.exitStatus,
        ...(r !== null
          ? {
              runtime: r.runtime,
              wallMs: r.wallMs,
              cpuMs: r.cpuMs,
              peakMemoryBytes: r.peakMemoryBytes,
              outputBytes: r.outputBytes,
              outputs: r.outputs.slice(0, 100),
              ...(r.sandbox !== undefined ? { sandbox: r.sandbox } : {}),
              resources: row.spec.resources ?? {},
              // The grant as the server admitted it, not as the worker reports it.
              ...(r.egress !== undefined
                ? { egress: { allow: egressOfNetwork(row.spec.network), totals: r.egress.totals } }
                : {}),
            }
          : {}),
      });
      return row.state;
    });
    this.#o.events.changed(jobId);
    return { state };
  }

  /** The worker gives the job back (it is stopping): queued again, or failed when no attempt is left. */
  async release(who: Principal, jobId: string, fence: number, reason: string): Promise<{ state: JobState }> {
    const state = await this.#o.store.transaction(async (tx) => {
      const row = await this.#held(tx, who, jobId, fence);
      await this.#requeueOrFail(
        tx,
        who,
        row,
        `released by worker ${row.worker ?? '?'}: ${reason}`,
        'job.released',
      );
      return row.state;
    });
    this.#o.events.changed(jobId);
    if (state === 'queued') this.#o.events.queued();
    return { state };
  }

  /** Requeues (or fails) every job whose lease ran out; returns how many. Run on a timer. */
  async expireLeases(system: Principal, limit = 100): Promise<number> {
    const touched = await this.#o.store.transaction(async (tx) => {
      const rows = await tx.jobs.expiredLeases(this.#now(), limit);
      for (const row of rows) {
        const seconds = Math.round(this.#o.leaseTtlMs / 1000);
        await this.#requeueOrFail(
          tx,
          system,
          row,
          `attempt ${row.attempts} was lost: worker ${row.worker ?? '?'} stopped renewing its lease for ${seconds}s`,
          'job.lost',
        );
      }
      return rows;
    });
    for (const row of touched) this.#o.events.changed(row.id);
    if (touched.some((row) => row.state === 'queued')) this.#o.events.queued();
    return touched.length;
  }

  async #requeueOrFail(tx: Tx, who: Principal, row: JobRow, why: string, action: string): Promise<void> {
    const from = row.state;
    const now = this.#now();
    let to: JobState;
    let note: string;
    if (row.cancelRequested) {
      to = 'cancelled';
      note = `${why}; the job had been cancelled, so it ends`;
      Object.assign(row, { exitStatus: 130, finishedAt: now });
    } else if (row.attempts < row.maxAttempts) {
      to = 'queued';
      note = `${why}; the job is queued again (attempt ${row.attempts + 1} of ${row.maxAttempts} next)`;
    } else {
      to = 'failed';
      note = `${why}; no attempt is left (${row.attempts} of ${row.maxAttempts} used)`;
      Object.assign(row, { exitStatus: AIRLOCK_FAILURE_EXIT, finishedAt: now });
    }
    checkMove(from, to);
    // The job's own log says what happened, between the lost attempt's output and the next.
    row.logSeq += 1;
    const marker = Buffer.from(`\nairlock: ${note}\n`);
    row.logBytes += marker.length;
    await tx.logs.append([{ jobId: row.id, seq: row.logSeq, stream: 'stderr', data: marker }]);
    Object.assign(row, { state: to, reason: note, updatedAt: now, leaseExpiresAt: null, leaseToken: null });
    await tx.jobs.update(row);
    await this.#o.audit.append(tx, {
      actor: who.name,
      action,
      target: `job:${row.id}`,
      outcome: to === 'failed' ? 'failed' : 'succeeded',
      reason: note,
      source: who.source,
      details: { from, to, attempt: row.attempts, worker: row.worker },
    });
  }

  /** The job, if `who` holds its current lease with this fence; LEASE_LOST otherwise (audited). */
  async #held(tx: Tx, who: Principal, jobId: string, fence: number): Promise<JobRow> {
    requireAction(who, 'worker.protocol');
    const row = await tx.jobs.get(jobId);
    if (row === null) throw new AirlockError('NOT_FOUND', `no job ${jobId}`);
    const current =
      row.fence === fence &&
      row.leaseToken === who.tokenId &&
      !isTerminal(row.state) &&
      row.state !== 'queued';
    if (!current) {
      throw new AirlockError(
        'LEASE_LOST',
        `job ${jobId}: fencing token ${fence} is not the current lease of this worker (the lease expired or moved on); the report is refused`,
      );
    }
    return row;
  }

  #renew(row: JobRow): void {
    const now = this.#now();
    row.leaseExpiresAt = now + this.#o.leaseTtlMs;
    row.updatedAt = now;
  }

  #status(row: JobRow): LeaseStatus {
    return {
      leaseExpiresAt: new Date(row.leaseExpiresAt ?? this.#now()).toISOString(),
      cancel: row.cancelRequested,
    };
  }

  async #transitionEvent(
    tx: Tx,
    who: Principal,
    row: JobRow,
    from: JobState,
    details: Record<string, unknown>,
  ): Promise<void> {
    await this.#o.audit.append(tx, {
      actor: who.name,
      action: 'job.state',
      target: `job:${row.id}`,
      outcome: row.state === 'failed' ? 'failed' : 'succeeded',
      reason: row.reason ?? '',
      source: who.source,
      details: { from, to: row.state, worker: row.worker, ...details },
    });
  }
}

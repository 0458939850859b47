import type {
  ClaimedJob,
  ClaimRequest,
  EgressBatch,
  FencedRequest,
  JobSpecV1,
  LeaseStatus,
  LogChunks,
  ResultReport,
} from '../api/types.js';
import type { HttpClient } from '../client/http.js';
import { AirlockError } from '../errors.js';

/**
 * The worker's side of the worker protocol (DESIGN §2): the only way a worker talks to the
 * control plane — it never opens the database, also on one machine. An interface, so the
 * worker's loops are tested against a fake server; httpWorkerProtocol() is the real one.
 *
 * Answers are checked before use: a job id goes into URL paths (so it must be an id, not
 * "../tokens"), and fence, TTL and cancel drive the worker's decisions.
 */

export interface CallOptions {
  readonly signal?: AbortSignal;
  /** Per-request timeout (a long poll waits longer than the default). */
  readonly timeoutMs?: number;
}

export interface WorkerProtocol {
  /** Long poll: a job, or null when none came within request.waitMs. */
  claim(request: ClaimRequest, options?: CallOptions): Promise<ClaimedJob | null>;
  start(jobId: string, body: FencedRequest, options?: CallOptions): Promise<LeaseStatus>;
  heartbeat(jobId: string, body: FencedRequest, options?: CallOptions): Promise<LeaseStatus>;
  logs(jobId: string, body: LogChunks, options?: CallOptions): Promise<LeaseStatus>;
  /** Egress attempts of the running job, as they end (one audit event each). */
  egress(jobId: string, body: EgressBatch, options?: CallOptions): Promise<LeaseStatus>;
  result(jobId: string, body: ResultReport, options?: CallOptions): Promise<void>;
  release(jobId: string, body: FencedRequest, options?: CallOptions): Promise<void>;
}

/** Bounds on what a worker accepts as a lease: a TTL too short to heartbeat within is refused. */
export const LEASE_TTL_BOUNDS = Object.freeze({ minMs: 300, maxMs: 24 * 3600 * 1000 });

const JOB_ID = /^job_[a-z0-9]{26}$/;

function malformed(what: string): never {
  throw new AirlockError('INTERNAL', `the server sent a malformed ${what}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function parseClaimedJob(value: unknown): ClaimedJob {
  if (!isRecord(value)) malformed('claim answer');
  const { jobId, fence, attempt, leaseTtlMs, leaseExpiresAt, state, spec } = value;
  if (typeof jobId !== 'string' || !JOB_ID.test(jobId)) malformed('claim answer (jobId)');
  if (typeof fence !== 'number' || !Number.isSafeInteger(fence)) malformed('claim answer (fence)');
  if (typeof attempt !== 'number' || !Number.isSafeInteger(attempt) || attempt < 1)
    malformed('claim answer (attempt)');
  if (
    typeof leaseTtlMs !== 'number' ||
    !Number.isSafeInteger(leaseTtlMs) ||
    leaseTtlMs < LEASE_TTL_BOUNDS.minMs ||
    leaseTtlMs > LEASE_TTL_BOUNDS.maxMs
  )
    malformed('claim answer (leaseTtlMs)');
  if (typeof leaseExpiresAt !== 'string') malformed('claim answer (leaseExpiresAt)');
  if (state !== 'leased' && state !== 'running') malformed('claim answer (state)');
  // The spec's fields are checked where they are used (spec.ts); here only that it is one.
  if (!isRecord(spec)) malformed('claim answer (spec)');
  return { jobId, fence, attempt, leaseTtlMs, leaseExpiresAt, state, spec: spec as unknown as JobSpecV1 };
}

export function parseLeaseStatus(value: unknown): LeaseStatus {
  if (!isRecord(value) || typeof value.cancel !== 'boolean' || typeof value.leaseExpiresAt !== 'string')
    malformed('lease status');
  return { leaseExpiresAt: value.leaseExpiresAt, cancel: value.cancel };
}

/** The worker protocol over HTTP, with the worker's token (HttpClient sends it, never logs it). */
export function httpWorkerProtocol(client: HttpClient): WorkerProtocol {
  const jobPath = (jobId: string, action: string): string => {
    if (!JOB_ID.test(jobId)) throw new TypeError(`not a job id: ${jobId}`);
    return `/v1/worker/jobs/${jobId}/${action}`;
  };
  const post = (path: string, body: unknown, options: CallOptions = {}): Promise<unknown> =>
    client.json<unknown>(path, {
      method: 'POST',
      body,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    });
  return {
    async claim(request, options) {
      const answer = await post('/v1/worker/claim', request, {
        ...options,
        // A long poll: the server holds the request up to waitMs; the margin covers the trip.
        timeoutMs: options?.timeoutMs ?? request.waitMs + 10_000,
      });
      return answer === null ? null : parseClaimedJob(answer);
    },
    async start(jobId, body, options) {
      return parseLeaseStatus(await post(jobPath(jobId, 'start'), body, options));
    },
    async heartbeat(jobId, body, options) {
      return parseLeaseStatus(await post(jobPath(jobId, 'heartbeat'), body, options));
    },
    async logs(jobId, body, options) {
      return parseLeaseStatus(await post(jobPath(jobId, 'logs'), body, options));
    },
    async egress(jobId, body, options) {
      return parseLeaseStatus(await post(jobPath(jobId, 'egress'), body, options));
    },
    async result(jobId, body, options) {
      await post(jobPath(jobId, 'result'), body, options);
    },
    async release(jobId, body, options) {
      await post(jobPath(jobId, 'release'), body, options);
    },
  };
}

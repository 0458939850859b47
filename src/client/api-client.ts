import { setTimeout as sleep } from 'node:timers/promises';
import {
  type AuditCheckpoint,
  type AuditKeys,
  type AuditPage,
  type AuditVerification,
  type ConsistencyProof,
  type ImageApproval,
  type InclusionProof,
  JOB_STATES,
  type JobList,
  type JobRecord,
  type JobSpecV1,
  type JobState,
  type LogEnd,
  type LogLine,
  type SigningKeyAddRequest,
  type SigningKeyInfo,
  type TokenCreated,
  type TokenCreateRequest,
  type TokenInfo,
  type WhoAmI,
} from '../api/types.js';
import { AirlockError, type AirlockErrorCode, describeError, isAirlockError } from '../errors.js';
import { isSignedJob, type SignedJob } from '../signing/envelope.js';
import { type HttpClient, ndjsonLines } from './http.js';
import type {
  PolicyDocument,
  PolicyKind,
  PolicyProposal,
  PolicyStatus,
  PolicySummary,
  ProfileSuggestion,
} from './policy-types.js';

/**
 * Typed calls of the /v1 API over the one HttpClient. Answers are the server's, trusted for
 * their shape only as far as the CLI needs (log records are checked line by line: they are
 * written to the user's terminal).
 */

/** Idempotency-Key as the server accepts it. */
export const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{1,128}$/;

/** "job_" + lower-case base32; checked loosely here, exactly by the server. */
const JOB_ID = /^job_[a-z0-9]{1,64}$/;
const TOKEN_ID = /^tok_[a-z0-9]{1,64}$/;
const IMAGE_DIGEST = /^sha256:[0-9a-f]{64}$/;

export function checkJobId(id: string): string {
  if (!JOB_ID.test(id))
    throw new AirlockError('INVALID_OPTION', `"${id}" is not a job id (job_ followed by letters and digits)`);
  return id;
}

/** "" (the policy set), a project, or PROJECT@sha256:<64 hex> (one script's profile), as the server accepts. */
const POLICY_SCOPE = /^[a-z0-9][a-z0-9._-]{0,63}(@sha256:[0-9a-f]{64})?$/;
const PROJECT = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const MAX_POLICY_VERSION = 1_000_000_000;
/** The most runs a profile suggestion looks at (the server's MAX_SUGGEST_RUNS). */
export const MAX_SUGGEST_RUNS = 1000;

/** Checks a policy or profile reference before it is sent: the policy set has scope "", a profile a project's. */
export function checkPolicyScope(kind: PolicyKind, scope: string): string {
  if (kind === 'policy' && scope !== '')
    throw new AirlockError('INVALID_OPTION', 'the policy set has no scope (it applies to every project)');
  if (kind === 'profile' && !POLICY_SCOPE.test(scope))
    throw new AirlockError(
      'INVALID_OPTION',
      `"${scope.slice(0, 200)}" is not a profile scope: a project name, or PROJECT@sha256:<64 hex digits> for one script`,
    );
  return scope;
}

export function checkPolicyVersion(version: number): number {
  if (!Number.isSafeInteger(version) || version < 1 || version > MAX_POLICY_VERSION)
    throw new AirlockError('INVALID_OPTION', `${version} is not a version (a whole number from 1)`);
  return version;
}

export function checkTokenId(id: string): string {
  if (!TOKEN_ID.test(id))
    throw new AirlockError('INVALID_OPTION', `"${id}" is not a token id (tok_ followed by hex digits)`);
  return id;
}

/**
 * Submission is retried, with the same Idempotency-Key (so a retry never makes a second
 * job), on what a later try can fix: the server unreachable, starting or stopping
 * (SERVER_UNAVAILABLE), a store or audit failure, and answers that are not Airlock errors
 * (a proxy's 502/503/504 arrives as INTERNAL). 429s (QUEUE_FULL, RATE_LIMITED) are NOT
 * retried: the server is asking clients to back off, and a full queue is for the user to
 * see rather than to hammer; the error is shown at once.
 */
const SUBMIT_RETRY_CODES: ReadonlySet<AirlockErrorCode> = new Set([
  'SERVER_UNREACHABLE',
  'SERVER_UNAVAILABLE',
  'STORE_FAILED',
  'AUDIT_FAILED',
  'INTERNAL',
]);

export interface RetryPolicy {
  /** Tries in all, the first included. */
  readonly attempts: number;
  /** Delay before the second try; doubled each time, with jitter, capped at maxDelayMs. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
}

export const SUBMIT_RETRY: RetryPolicy = Object.freeze({ attempts: 5, baseDelayMs: 250, maxDelayMs: 4000 });

export interface SubmitOptions {
  readonly idempotencyKey?: string;
  /** Aborts the request in flight and any wait. */
  readonly signal?: AbortSignal;
  /**
   * When aborted, no further try is started (the one in flight completes): Ctrl-C during a
   * submission must not leave the user unsure whether a job was made.
   */
  readonly stopRetrying?: AbortSignal;
  /** Told before each retry (to say so on a terminal). */
  readonly onRetry?: (error: AirlockError, attempt: number, delayMs: number) => void;
}

export interface LogsOptions {
  /** Only lines with a larger seq. */
  readonly after?: number;
  readonly follow?: boolean;
  readonly signal?: AbortSignal;
  /**
   * A stream that brings no bytes (not even a keep-alive) for this long is taken as broken
   * (SERVER_UNREACHABLE): a half-open connection must not hang the CLI. Default 60 s.
   */
  readonly idleTimeoutMs?: number;
}

export interface ListJobsQuery {
  readonly project?: string;
  readonly state?: JobState;
  readonly limit?: number;
  readonly cursor?: string;
}

export type LogRecord = LogLine | LogEnd;

export function isLogEnd(record: LogRecord): record is LogEnd {
  return 'end' in record;
}

/** Checks one parsed line of a log stream: a LogLine or a LogEnd, else INTERNAL. */
export function parseLogRecord(value: unknown): LogRecord {
  const malformed = (): never => {
    throw new AirlockError('INTERNAL', 'the server sent a log record that is neither a log line nor the end');
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return malformed();
  const record = value as Record<string, unknown>;
  if ('end' in record) {
    const end = record.end as Record<string, unknown> | null;
    if (typeof end !== 'object' || end === null) return malformed();
    const { state, terminal, exitStatus } = end;
    if (typeof state !== 'string' || !(JOB_STATES as readonly string[]).includes(state)) return malformed();
    if (typeof terminal !== 'boolean') return malformed();
    if (exitStatus !== null && !(Number.isInteger(exitStatus) && typeof exitStatus === 'number'))
      return malformed();
    return { end: { state: state as JobState, terminal, exitStatus: exitStatus as number | null } };
  }
  const { seq, stream, data } = record;
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return malformed();
  if (stream !== 'stdout' && stream !== 'stderr') return malformed();
  if (typeof data !== 'string') return malformed();
  return { seq, stream, data };
}

function jitter(delayMs: number): number {
  return Math.round(delayMs * (0.75 + Math.random() * 0.5));
}

export class ApiClient {
  readonly #http: HttpClient;

  constructor(http: HttpClient) {
    this.#http = http;
  }

  get url(): string {
    return this.#http.url;
  }

  async #json<T>(path: string, options: Parameters<HttpClient['json']>[1] = {}): Promise<T> {
    const answer = await this.#http.json<T>(path, options);
    if (answer === null) throw new AirlockError('INTERNAL', `the server answered ${path} with no body`);
    return answer;
  }

  whoami(signal?: AbortSignal): Promise<WhoAmI> {
    return this.#json<WhoAmI>('/v1/whoami', signal === undefined ? {} : { signal });
  }

  /**
   * POST /v1/jobs, retried per SUBMIT_RETRY_CODES with the same Idempotency-Key. Without a
   * key a retry could make a second job, so none is tried.
   */
  /** A job spec, or a signed job (`airlock sign`): sent to /v1/jobs or /v1/jobs/signed. */
  async submit(
    spec: JobSpecV1 | SignedJob,
    options: SubmitOptions = {},
    policy: RetryPolicy = SUBMIT_RETRY,
  ): Promise<JobRecord> {
    const key = options.idempotencyKey;
    if (key !== undefined && !IDEMPOTENCY_KEY.test(key))
      throw new AirlockError(
        'INVALID_OPTION',
        '--idempotency-key: must be 1–128 characters of letters, digits and . _ : -',
      );
    const attempts = key === undefined ? 1 : policy.attempts;
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.#json<JobRecord>(isSignedJob(spec) ? '/v1/jobs/signed' : '/v1/jobs', {
          method: 'POST',
          body: spec,
          ...(key !== undefined ? { headers: { 'idempotency-key': key } } : {}),
          ...(options.signal !== undefined ? { signal: options.signal } : {}),
        });
      } catch (error) {
        if (!isAirlockError(error) || !SUBMIT_RETRY_CODES.has(error.code)) throw error;
        if (attempt >= attempts || options.stopRetrying?.aborted === true || options.signal?.aborted === true)
          throw error;
        const retryAfter = (error as { retryAfterSeconds?: unknown }).retryAfterSeconds;
        const delayMs = Math.min(
          policy.maxDelayMs,
          typeof retryAfter === 'number'
            ? retryAfter * 1000
            : jitter(policy.baseDelayMs * 2 ** (attempt - 1)),
        );
        options.onRetry?.(error, attempt, delayMs);
        const waitSignals = [options.signal, options.stopRetrying].filter(
          (signal): signal is AbortSignal => signal !== undefined,
        );
        try {
          await sleep(
            delayMs,
            undefined,
            waitSignals.length > 0 ? { signal: AbortSignal.any(waitSignals) } : {},
          );
        } catch {
          // interrupted while waiting: the last error stands
          throw error;
        }
      }
    }
  }

  getJob(id: string, signal?: AbortSignal): Promise<JobRecord> {
    return this.#json<JobRecord>(
      `/v1/jobs/${encodeURIComponent(checkJobId(id))}`,
      signal === undefined ? {} : { signal },
    );
  }

  listJobs(query: ListJobsQuery = {}, signal?: AbortSignal): Promise<JobList> {
    const params = new URLSearchParams();
    if (query.project !== undefined) params.set('project', query.project);
    if (query.state !== undefined) params.set('state', query.state);
    if (query.limit !== undefined) params.set('limit', String(query.limit));
    if (query.cursor !== undefined) params.set('cursor', query.cursor);
    const search = params.size > 0 ? `?${params}` : '';
    return this.#json<JobList>(`/v1/jobs${search}`, signal === undefined ? {} : { signal });
  }

  cancel(id: string, signal?: AbortSignal): Promise<JobRecord> {
    return this.#json<JobRecord>(`/v1/jobs/${encodeURIComponent(checkJobId(id))}/cancel`, {
      method: 'POST',
      ...(signal !== undefined ? { signal } : {}),
    });
  }

  /**
   * GET /v1/jobs/:id/logs: the log records in order, then (unless the stream broke) one
   * LogEnd. A broken stream throws SERVER_UNREACHABLE; the caller resumes with `after`.
   */
  async *logs(id: string, options: LogsOptions = {}): AsyncGenerator<LogRecord> {
    const params = new URLSearchParams();
    if (options.after !== undefined) params.set('after', String(options.after));
    params.set('follow', options.follow === true ? 'true' : 'false');
    const idle = new AbortController();
    const signals = [idle.signal];
    if (options.signal !== undefined) signals.push(options.signal);
    const signal = AbortSignal.any(signals);
    const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(
        () =>
          idle.abort(
            new AirlockError(
              'SERVER_UNREACHABLE',
              `the log stream from ${this.#http.url} brought nothing for ${Math.round(idleTimeoutMs / 1000)} s`,
            ),
          ),
        idleTimeoutMs,
      );
      timer.unref();
    };
    let lines: AsyncGenerator<unknown> | undefined;
    try {
      arm();
      const body = await this.#http.stream(`/v1/jobs/${encodeURIComponent(checkJobId(id))}/logs?${params}`, {
        signal,
        timeoutMs: 0,
      });
      // Every chunk, keep-alive lines included, proves the connection alive.
      const watched = async function* (): AsyncGenerator<Buffer> {
        for await (const chunk of body) {
          arm();
          yield chunk;
        }
      };
      lines = ndjsonLines(watched());
      for (;;) {
        let next: IteratorResult<unknown>;
        try {
          next = await lines.next();
        } catch (error) {
          if (isAirlockError(error)) throw error;
          if (error instanceof SyntaxError)
            throw new AirlockError('INTERNAL', 'the server sent a log stream line that is not JSON', {
              cause: error,
            });
          throw error;
        }
        if (next.done === true) return;
        yield parseLogRecord(next.value);
      }
    } catch (error) {
      if (idle.signal.aborted) throw idle.signal.reason;
      if (options.signal?.aborted === true) throw options.signal.reason ?? error;
      if (isAirlockError(error)) throw error;
      // A body that stopped mid-way ("terminated", a reset socket, bad UTF-8).
      throw new AirlockError('SERVER_UNREACHABLE', `the log stream broke: ${describeError(error)}`, {
        cause: error,
      });
    } finally {
      clearTimeout(timer);
      // Closes the body (and its connection) first: aborting the request of a body left
      // half-read makes its socket emit an error nobody listens to, and the process dies
      // (test/unit/client-http.test.ts).
      await lines?.return(undefined).catch(() => undefined);
      idle.abort();
    }
  }

  createToken(request: TokenCreateRequest): Promise<TokenCreated> {
    return this.#json<TokenCreated>('/v1/tokens', { method: 'POST', body: request });
  }

  async listTokens(): Promise<TokenInfo[]> {
    return (await this.#json<{ tokens: TokenInfo[] }>('/v1/tokens')).tokens;
  }

  addSigningKey(request: SigningKeyAddRequest): Promise<SigningKeyInfo> {
    return this.#json<SigningKeyInfo>('/v1/keys', { method: 'POST', body: request });
  }

  async listSigningKeys(project?: string): Promise<SigningKeyInfo[]> {
    const search = project === undefined ? '' : `?${new URLSearchParams({ project })}`;
    return (await this.#json<{ keys: SigningKeyInfo[] }>(`/v1/keys${search}`)).keys;
  }

  revokeSigningKey(id: string): Promise<SigningKeyInfo> {
    return this.#json<SigningKeyInfo>(`/v1/keys/${encodeURIComponent(id)}/revoke`, { method: 'POST' });
  }

  /** Approves a digest-pinned image `NAME@sha256:<64 hex>` (admin); the server checks the grammar. */
  approveImage(ref: string, reason: string, signal?: AbortSignal): Promise<ImageApproval> {
    return this.#json<ImageApproval>('/v1/images/approvals', {
      method: 'POST',
      body: { ref, reason },
      ...(signal !== undefined ? { signal } : {}),
    });
  }

  /** Image approvals, revoked ones included, newest first. */
  async listImageApprovals(signal?: AbortSignal): Promise<ImageApproval[]> {
    return (
      await this.#json<{ approvals: ImageApproval[] }>(
        '/v1/images/approvals',
        signal === undefined ? {} : { signal },
      )
    ).approvals;
  }

  /** Revokes the approval of a digest (`sha256:<64 hex>`). */
  revokeImageApproval(digest: string, reason: string, signal?: AbortSignal): Promise<ImageApproval> {
    if (!IMAGE_DIGEST.test(digest))
      throw new AirlockError('INVALID_OPTION', `"${digest.slice(0, 200)}" is not sha256:<64 hex>`);
    return this.#json<ImageApproval>(`/v1/images/approvals/${encodeURIComponent(digest)}`, {
      method: 'DELETE',
      body: { reason },
      ...(signal !== undefined ? { signal } : {}),
    });
  }

  revokeToken(id: string): Promise<TokenInfo> {
    return this.#json<TokenInfo>(`/v1/tokens/${encodeURIComponent(checkTokenId(id))}/revoke`, {
      method: 'POST',
    });
  }

  /** Oldest first from ?after=, or the newest `last` events. */
  auditEvents(
    query: { after?: number; limit?: number; last?: number } = {},
    signal?: AbortSignal,
  ): Promise<AuditPage> {
    const params = new URLSearchParams();
    if (query.last !== undefined) params.set('last', String(query.last));
    if (query.after !== undefined) params.set('after', String(query.after));
    if (query.limit !== undefined) params.set('limit', String(query.limit));
    const search = params.size > 0 ? `?${params}` : '';
    return this.#json<AuditPage>(`/v1/audit/events${search}`, signal === undefined ? {} : { signal });
  }

  /** against: an outside checkpoint the server compares its entries with. */
  auditVerify(against?: { treeSize: number; rootHash: string }): Promise<AuditVerification> {
    const search =
      against === undefined
        ? ''
        : `?${new URLSearchParams({ treeSize: String(against.treeSize), rootHash: against.rootHash })}`;
    // Verification walks the whole log on the server: give it longer than a plain call.
    return this.#json<AuditVerification>(`/v1/audit/verify${search}`, { timeoutMs: 10 * 60_000 });
  }

  latestCheckpoint(): Promise<AuditCheckpoint> {
    return this.#json<AuditCheckpoint>('/v1/audit/checkpoint');
  }

  makeCheckpoint(): Promise<AuditCheckpoint> {
    return this.#json<AuditCheckpoint>('/v1/audit/checkpoint', { method: 'POST' });
  }

  auditKeys(): Promise<AuditKeys> {
    return this.#json<AuditKeys>('/v1/audit/keys');
  }

  rotateAuditKey(): Promise<AuditCheckpoint> {
    return this.#json<AuditCheckpoint>('/v1/audit/keys/rotate', { method: 'POST' });
  }

  inclusionProof(seq: number, treeSize?: number): Promise<InclusionProof> {
    const params = new URLSearchParams({ seq: String(seq) });
    if (treeSize !== undefined) params.set('treeSize', String(treeSize));
    return this.#json<InclusionProof>(`/v1/audit/proof/inclusion?${params}`);
  }

  consistencyProof(from: number, to: number): Promise<ConsistencyProof> {
    return this.#json<ConsistencyProof>(
      `/v1/audit/proof/consistency?${new URLSearchParams({ from: String(from), to: String(to) })}`,
    );
  }

  async auditHash(value: string): Promise<string> {
    return (await this.#json<{ hmac: string }>('/v1/audit/hash', { method: 'POST', body: { value } })).hmac;
  }

  // ---- Policy and profile governance (src/api/routes/policies.ts)

  policyStatus(signal?: AbortSignal): Promise<PolicyStatus> {
    return this.#json<PolicyStatus>('/v1/policies/status', signal === undefined ? {} : { signal });
  }

  /** Every version of the policy set (scope "") or of one profile, newest first. */
  async policyHistory(kind: PolicyKind, scope: string, signal?: AbortSignal): Promise<PolicySummary[]> {
    const params = new URLSearchParams({ kind, scope: checkPolicyScope(kind, scope) });
    return (
      await this.#json<{ versions: PolicySummary[] }>(
        `/v1/policies/history?${params}`,
        signal === undefined ? {} : { signal },
      )
    ).versions;
  }

  /** One version with its content; without a version, the one in force (a profile never set: the default, version 0). */
  policyDocument(
    kind: PolicyKind,
    scope: string,
    version?: number,
    signal?: AbortSignal,
  ): Promise<PolicyDocument> {
    const params = new URLSearchParams({ kind, scope: checkPolicyScope(kind, scope) });
    if (version !== undefined) params.set('version', String(checkPolicyVersion(version)));
    return this.#json<PolicyDocument>(
      `/v1/policies/document?${params}`,
      signal === undefined ? {} : { signal },
    );
  }

  /** A new version, pending until an admin other than its author approves it. */
  proposePolicy(proposal: PolicyProposal, signal?: AbortSignal): Promise<PolicySummary> {
    checkPolicyScope(proposal.kind, proposal.scope);
    return this.#json<PolicySummary>('/v1/policies/proposals', {
      method: 'POST',
      body: {
        kind: proposal.kind,
        scope: proposal.scope,
        content: proposal.content,
        rationale: proposal.rationale,
        ...(proposal.mode !== undefined ? { mode: proposal.mode } : {}),
      },
      ...(signal !== undefined ? { signal } : {}),
    });
  }

  approvePolicy(
    kind: PolicyKind,
    scope: string,
    version: number,
    signal?: AbortSignal,
  ): Promise<PolicySummary> {
    return this.#json<PolicySummary>('/v1/policies/approve', {
      method: 'POST',
      body: { kind, scope: checkPolicyScope(kind, scope), version: checkPolicyVersion(version) },
      ...(signal !== undefined ? { signal } : {}),
    });
  }

  /** Rejects a pending proposal (its author may withdraw it). */
  rejectPolicy(
    kind: PolicyKind,
    scope: string,
    version: number,
    reason: string,
    signal?: AbortSignal,
  ): Promise<PolicySummary> {
    return this.#json<PolicySummary>('/v1/policies/reject', {
      method: 'POST',
      body: { kind, scope: checkPolicyScope(kind, scope), version: checkPolicyVersion(version), reason },
      ...(signal !== undefined ? { signal } : {}),
    });
  }

  /** Proposes an earlier approved version's content again: a proposal like any other. */
  rollbackPolicy(
    kind: PolicyKind,
    scope: string,
    version: number,
    rationale: string,
    signal?: AbortSignal,
  ): Promise<PolicySummary> {
    return this.#json<PolicySummary>('/v1/policies/rollback', {
      method: 'POST',
      body: { kind, scope: checkPolicyScope(kind, scope), version: checkPolicyVersion(version), rationale },
      ...(signal !== undefined ? { signal } : {}),
    });
  }

  /** Switches the policy version in audit mode to enforce. */
  enforcePolicy(version: number, signal?: AbortSignal): Promise<PolicySummary> {
    return this.#json<PolicySummary>('/v1/policies/enforce', {
      method: 'POST',
      body: { version: checkPolicyVersion(version) },
      ...(signal !== undefined ? { signal } : {}),
    });
  }

  /** The smallest profile covering the project's last `runs` jobs (server default 50), and unused grants. */
  suggestProfile(project: string, runs?: number, signal?: AbortSignal): Promise<ProfileSuggestion> {
    if (!PROJECT.test(project))
      throw new AirlockError('INVALID_OPTION', `"${project.slice(0, 200)}" is not a project name`);
    let search = '';
    if (runs !== undefined) {
      if (!Number.isSafeInteger(runs) || runs < 1 || runs > MAX_SUGGEST_RUNS)
        throw new AirlockError(
          'INVALID_OPTION',
          `runs: must be a whole number from 1 to ${MAX_SUGGEST_RUNS}`,
        );
      search = `?${new URLSearchParams({ runs: String(runs) })}`;
    }
    return this.#json<ProfileSuggestion>(
      `/v1/profiles/${encodeURIComponent(project)}/suggest${search}`,
      signal === undefined ? {} : { signal },
    );
  }
}

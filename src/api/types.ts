import type { Origin } from '../auth/principal.js';
/**
 * The wire contract of the HTTP API (/v1) and of the worker protocol: the JSON shapes that
 * cross the network. Types only — no runtime code — so that the CLI client and the worker
 * import them (`import type`) without pulling in Fastify. The schemas in src/api/schemas.ts
 * validate exactly these shapes; docs/api.md describes them.
 */

/** Job spec v1 (DESIGN §6), as submitted. Unknown fields are refused. */
export interface JobSpecV1 {
  version: 1;
  /** Lower-case name, 1–64 chars of [a-z0-9._-], starting with a letter or digit. */
  project: string;
  /** Same form as project; default "dev". */
  environment?: string;
  /** Default: runc, or gvisor when policy refuses runc for the job (docs/policy.md, "The runtime"). */
  runtime?: 'runc' | 'crun' | 'gvisor';
  /**
   * "host" (the worker's /usr, read-only), or a digest-pinned image `NAME@sha256:<64 hex>`
   * (src/images/reference.ts). Default "host".
   */
  image?: string;
  command: string[];
  env?: Record<string, string>;
  resources?: {
    cpus?: number;
    memoryMiB?: number;
    pids?: number;
    timeoutSeconds?: number;
    diskMiB?: number;
    outputKiB?: number;
  };
  /**
   * "none" (the default): loopback only. `{ egress: [...] }`: the destinations the job may
   * reach through its egress proxy (docs/network.md), within its profile and policy.
   */
  network?: 'none' | { egress: string[] };
  /** Files placed in the workspace before the run. Exactly one of content / contentBase64. */
  inputs?: Array<{ path: string; content?: string; contentBase64?: string; mode?: number }>;
  /** Workspace-relative glob patterns; the worker reports the matching files' SHA-256 digests. */
  outputs?: string[];
}

export const JOB_STATES = [
  'queued',
  'leased',
  'running',
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'killed',
] as const;
export type JobState = (typeof JOB_STATES)[number];
export const TERMINAL_STATES: readonly JobState[] = [
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'killed',
];

/** What a worker reports about a sandbox run (the sandbox engine's result, minus its local job id). */
export interface JobRunResult {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  oomKilled: boolean;
  cancelled: boolean;
  wallMs: number;
  cpuMs: number;
  peakMemoryBytes: number;
  outputBytes: number;
  outputTruncated: boolean;
  runtime: 'runc' | 'crun' | 'gvisor';
  startFailure: { kind: 'command-not-found' | 'not-executable'; message: string } | null;
  /** Files matched by spec.outputs, with their SHA-256 (hex) and size. */
  outputs: Array<{ path: string; sha256: string; size: number }>;
  /** SHA-256 (hex) of the sandbox's OCI config.json and of its seccomp profile (for the audit trail). */
  sandbox?: { configSha256: string; seccompSha256: string; imageDigest?: string };
  /** A job granted egress: every attempt through its proxy (the last 1000) and the totals. */
  egress?: EgressReport;
}

/** One connection a job made to its egress proxy (docs/network.md, "What is recorded"). */
export interface EgressAttemptReport {
  at: string;
  /** host:port asked for; null when no request could be read. Never a path, query or header. */
  destination: string | null;
  protocol: 'connect' | 'http' | null;
  /** The address connected to, or refused; null when none was reached. */
  resolved: string | null;
  allowed: boolean;
  /** Why it ended (`allowed`, `not-allowlisted`, `blocked-address`, `byte-cap`, …). */
  reason: string;
  detail: string | null;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
}

/**
 * Egress attempts streamed by a worker while its job runs, each numbered 1, 2, … per attempt
 * of the job (a batch retried after a lost answer may record an attempt twice, with its seq).
 */
export interface EgressBatch {
  fence: number;
  attempts: Array<EgressAttemptReport & { seq: number }>;
}

export interface EgressReport {
  /** The job's allowlist, normalised. */
  allow: string[];
  attempts: EgressAttemptReport[];
  totals: {
    bytesUp: number;
    bytesDown: number;
    connections: number;
    refused: number;
    /** Attempts beyond the 1000 kept (refused ones are dropped first; each was streamed to the audit log). */
    droppedRecords: number;
    /** Refusals counted but not recorded one by one (attempts after a job-wide cap). */
    unrecorded: number;
    /** A job-wide cap reached (or recording failed): every later attempt was refused. */
    exhausted: string | null;
  };
}

/** A job as the API returns it. */
export interface JobRecord {
  /** "job_" + 26 lower-case base32 characters. */
  id: string;
  project: string;
  environment: string;
  state: JobState;
  spec: JobSpecV1;
  /** Principal name of the submitting token. */
  submittedBy: string;
  /** ISO 8601 UTC timestamps. */
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  /** Attempts started so far (a lease counts as an attempt) and the most allowed. */
  attempts: number;
  maxAttempts: number;
  /** Name of the worker holding or last holding the job. */
  worker: string | null;
  cancelRequested: boolean;
  result: JobRunResult | null;
  /** Why the job failed, was cancelled or requeued, in words (null when it succeeded). */
  reason: string | null;
  /**
   * The exit code `airlock run` exits with (DESIGN §6), set once the job is terminal: the
   * job's own code; 124 timed out; 125 Airlock failure; 126/127; 128+N signal; 137 memory.
   */
  exitStatus: number | null;
  /** What the airlock found at submit (null for jobs from before policy). */
  trust: JobTrust | null;
}

export interface JobList {
  jobs: JobRecord[];
  /** Pass as ?cursor= to get the next page; null on the last page. */
  nextCursor: string | null;
}

/**
 * GET /v1/jobs/:id/logs is application/x-ndjson: one LogLine per line, in seq order, then
 * (once the job is terminal, or at once without ?follow=true) one LogEnd line.
 */
export interface LogLine {
  seq: number;
  stream: 'stdout' | 'stderr';
  /** The bytes, base64. */
  data: string;
}
export interface LogEnd {
  end: { state: JobState; terminal: boolean; exitStatus: number | null };
}

export type TokenRole = 'admin' | 'submitter' | 'viewer' | 'worker';
export const TOKEN_ROLES: readonly TokenRole[] = ['admin', 'submitter', 'viewer', 'worker'];

export interface TokenInfo {
  /** "tok_" + 16 hex characters; not secret. */
  id: string;
  principal: string;
  role: TokenRole;
  /** Projects the token may act on; ["*"] = all. */
  projects: string[];
  createdAt: string;
  createdBy: string;
  expiresAt: string | null;
  revokedAt: string | null;
  /** The public key its requests must be signed with, or null. */
  requestKey: string | null;
}

/** POST /v1/tokens body. */
export interface TokenCreateRequest {
  principal: string;
  role: TokenRole;
  projects: string[];
  /** Lifetime in seconds; omitted = does not expire. */
  expiresInSeconds?: number;
  /** An Ed25519 public key (OpenSSH line or PEM): every request with the token must then be signed with it (RFC 9421). */
  requestKey?: string;
}
/** POST /v1/tokens answer: the secret is shown this once and never again. */
export interface TokenCreated {
  token: TokenInfo;
  secret: string;
}

export interface WhoAmI {
  tokenId: string;
  principal: string;
  role: TokenRole;
  projects: string[];
}

export interface AuditEvent {
  seq: number;
  at: string;
  /** Principal name, "anonymous", or "system". */
  actor: string;
  /** e.g. "job.submit", "job.state", "auth.failed", "token.create". */
  action: string;
  /** What it acted on: "job:job_…", "token:tok_…", "" when nothing. */
  target: string;
  outcome: 'succeeded' | 'denied' | 'failed';
  reason: string;
  /** Source address of the request, "" for internal events. */
  source: string;
  details: Record<string, unknown>;
  prevHash: string;
  hash: string;
}
export interface AuditPage {
  events: AuditEvent[];
  /** Pass as ?after= for the next page; null when there is none. */
  nextAfter: number | null;
}
/** What a verification found wrong (firstBad.kind). */
export type AuditProblem =
  | 'entry-missing'
  | 'chain-broken'
  | 'entry-changed'
  | 'tree-changed'
  | 'tail-cut'
  | 'checkpoint-mismatch'
  | 'older-than-checkpoint';

export interface AuditVerification {
  ok: boolean;
  entries: number;
  /** The first entry that does not verify, what kind of change it shows, and why. */
  firstBad: { seq: number; kind: AuditProblem; reason: string } | null;
  head: { seq: number; hash: string } | null;
  /** Merkle tree size and root (base64) of the entries walked. */
  treeSize: number;
  rootHash: string;
  /** Checkpoints of the log's own history that were compared with the entries. */
  checkpointsChecked: number;
  /** The outside checkpoint compared (verify --against), or null. */
  against: { treeSize: number; rootHash: string; matched: boolean } | null;
}

/** A key registered to sign a project's jobs (GET /v1/keys). */
export interface SigningKeyInfo {
  id: string;
  project: string;
  owner: string;
  keyType: string;
  publicKey: string;
  fingerprint: string;
  release: boolean;
  createdAt: string;
  createdBy: string;
  revokedAt: string | null;
}

/** POST /v1/keys body. */
export interface SigningKeyAddRequest {
  project: string;
  owner: string;
  /** One-line OpenSSH public key, or an Ed25519 public key in PEM. */
  publicKey: string;
  release?: boolean;
}

/** A signed audit checkpoint (GET/POST /v1/audit/checkpoint). Hashes are standard base64. */
export interface AuditCheckpoint {
  treeSize: number;
  rootHash: string;
  madeAt: string;
  exportedAt: string | null;
  /** The signed note (C2SP tlog-checkpoint in a signed note), exactly as signed. */
  note: string;
}

/** GET /v1/audit/keys: the log's origin and its checkpoint keys, current and retired. */
export interface AuditKeys {
  origin: string;
  keys: Array<{ verifierKey: string; keyId: string; createdAt: string; retiredAt: string | null }>;
}

/** GET /v1/audit/proof/inclusion: RFC 9162 inclusion proof of one entry. */
export interface InclusionProof {
  seq: number;
  leafIndex: number;
  treeSize: number;
  /** The entry's bytes (base64): the leaf is SHA-256(0x00 || these). */
  entry: string;
  leafHash: string;
  rootHash: string;
  proof: string[];
}

/** GET /v1/audit/proof/consistency: RFC 9162 consistency proof between two tree sizes. */
export interface ConsistencyProof {
  from: number;
  to: number;
  fromRoot: string;
  toRoot: string;
  proof: string[];
}

// ---- worker protocol (role "worker" only) ----

/** POST /v1/worker/claim body. Answer: 200 ClaimedJob, or 204 when nothing came within waitMs. */
export interface ClaimRequest {
  /** Worker name (host name and process, say), 1–128 chars. */
  worker: string;
  /** Runtimes available on this worker: it is given only jobs it can run. */
  runtimes: Array<'runc' | 'crun' | 'gvisor'>;
  /** Long-poll: wait up to this long for a job (0–30000). */
  waitMs: number;
  /**
   * Start the job with the claim: the job moves queued → leased → running in the claim's
   * transaction (two audit events) and the worker sends no separate start (decision 0014).
   * Default false: the job stays leased until POST …/start.
   */
  start?: boolean;
}
export interface ClaimedJob {
  jobId: string;
  /** The fencing token: every later call about this job carries it; a stale one is refused (409 LEASE_LOST). */
  fence: number;
  attempt: number;
  leaseTtlMs: number;
  leaseExpiresAt: string;
  /** `running` when the claim asked to start the job, else `leased`. */
  state: 'leased' | 'running';
  spec: JobSpecV1;
}
/** Body of start, heartbeat and release. */
export interface FencedRequest {
  fence: number;
  /** release only: why the job is given back. */
  reason?: string;
}
/** Answer of start, heartbeat and logs. */
export interface LeaseStatus {
  leaseExpiresAt: string;
  /** The job was cancelled: stop it and report outcome "completed" with result.cancelled. */
  cancel: boolean;
}
/** POST /v1/worker/jobs/:id/logs body: chunks with consecutive seq numbers starting at the next expected. */
export interface LogChunks {
  fence: number;
  chunks: LogLine[];
}
/** POST /v1/worker/jobs/:id/result body. */
export interface ResultReport {
  fence: number;
  /** completed: the sandbox ran (whatever the exit); error: Airlock could not run it. */
  outcome: 'completed' | 'error';
  result: JobRunResult | null;
  error: { code: string; message: string } | null;
}

export interface ErrorBody {
  error: { code: string; message: string };
}

/** What the airlock found about a job when it was submitted (its record and the policy context). */
/** An approval of a digest-pinned image (GET/POST /v1/images/approvals). */
export interface ImageApproval {
  /** `sha256:<64 hex>`: what is approved. */
  digest: string;
  /** The name it was approved under, and `name@digest`. */
  name: string;
  ref: string;
  reason: string;
  approvedBy: string;
  approvedAt: string;
  /** Set once revoked (a revoked digest may be approved again, which clears these). */
  revokedBy: string | null;
  revokedAt: string | null;
  revokeReason: string | null;
}

export interface JobTrust {
  signer: { key: string; fingerprint: string; owner: string; release: boolean } | null;
  origin: Origin | null;
  risk: { score: number; factors: string[] };
  scriptDigest: string;
  /** The policy version that allowed it and the policies that decided. */
  policy: { version: number; hash: string; policies: string[] };
  /** The profile it was checked against (null: the default profile). */
  profile: { scope: string; version: number } | null;
  /**
   * The runtime it runs under and why: named by the spec (`spec`), the default runc
   * (`default`), or gvisor picked because policy refuses runc for it (`policy`). Absent on
   * jobs from before runtimes were picked.
   */
  runtime?: { name: 'runc' | 'crun' | 'gvisor'; source: 'spec' | 'default' | 'policy'; reason: string };
  /** A digest-pinned image and whether an approval of its digest was in force at submit. */
  image?: { ref: string; digest: string; approved: boolean } | null;
}

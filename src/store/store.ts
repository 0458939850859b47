import type { JobRunResult, JobSpecV1, JobState, JobTrust, TokenRole } from '../api/types.js';

/**
 * The repository layer: every read and write of durable state goes through these
 * interfaces, and nothing above them writes SQL. Methods may answer synchronously (SQLite)
 * or with a promise (PostgreSQL, a later issue); callers always `await` them. Times are
 * milliseconds since the epoch (UTC). The SQL under them is written to run on PostgreSQL
 * too; what is SQLite-only stays in src/store/sqlite/.
 */

export type { JobTrust };

export type Awaitable<T> = T | Promise<T>;

export interface TokenRow {
  id: string;
  /** SHA-256 (hex) of the secret part; the secret itself is never stored. */
  hash: string;
  principal: string;
  role: TokenRole;
  projects: string[];
  createdAt: number;
  createdBy: string;
  expiresAt: number | null;
  revokedAt: number | null;
  /** One-line Ed25519 public key ("ssh-ed25519 AAAA…"): every request must be signed with it. */
  requestKey: string | null;
}

export interface TokenRepo {
  insert(row: TokenRow): Awaitable<void>;
  get(id: string): Awaitable<TokenRow | null>;
  list(): Awaitable<TokenRow[]>;
  revoke(id: string, at: number): Awaitable<void>;
  count(): Awaitable<number>;
}

export interface JobRow {
  seq: number;
  id: string;
  project: string;
  environment: string;
  runtime: string;
  state: JobState;
  spec: JobSpecV1;
  submittedBy: string;
  idempotencyKey: string | null;
  requestHash: string;
  createdAt: number;
  updatedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  attempts: number;
  maxAttempts: number;
  fence: number;
  worker: string | null;
  /** Id of the worker token holding the lease: only it may report on the job. */
  leaseToken: string | null;
  leaseExpiresAt: number | null;
  cancelRequested: boolean;
  result: JobRunResult | null;
  reason: string | null;
  exitStatus: number | null;
  /** Highest log seq stored, and the seq the current attempt's chunk 1 follows. */
  logSeq: number;
  logBase: number;
  logBytes: number;
  /** Why the job was let in (null for jobs from before policy). */
  trust: JobTrust | null;
  /** SHA-256 of what it runs (src/policy/risk.ts), and where it came from: risk history. */
  scriptDigest: string | null;
  originKey: string | null;
  /** What it asked for, small (risk history, profile suggestions); null for jobs from before policy. */
  asked: JobAsked | null;
}

/** What a job asked for: the part of its spec that permissions are about. */
export interface JobAsked {
  runtime: string;
  resources: {
    cpus: number;
    memoryMiB: number;
    pids: number;
    timeoutSeconds: number;
    diskMiB: number;
    outputKiB: number;
  };
  egress: string[];
  secrets: string[];
}

export type NewJob = Omit<JobRow, 'seq'>;

export interface JobFilter {
  /** Only these projects; undefined = all. */
  projects?: readonly string[];
  project?: string;
  state?: JobState;
  /** Only jobs with seq below this (newest first paging). */
  beforeSeq?: number;
  limit: number;
}

export interface JobRepo {
  insert(job: NewJob): Awaitable<JobRow>;
  get(id: string): Awaitable<JobRow | null>;
  byIdempotencyKey(submittedBy: string, key: string): Awaitable<JobRow | null>;
  list(filter: JobFilter): Awaitable<JobRow[]>;
  countQueued(project: string): Awaitable<number>;
  countQueuedBy(submittedBy: string): Awaitable<number>;
  /** The oldest queued job whose runtime is one of `runtimes` (and project one of `projects`, when given). */
  nextQueued(runtimes: readonly string[], projects?: readonly string[]): Awaitable<JobRow | null>;
  /** Leased or running jobs whose lease ended before `now`. */
  expiredLeases(now: number, limit: number): Awaitable<JobRow[]>;
  /** Writes every mutable column of the row (state machine moves happen in the service). */
  update(job: JobRow): Awaitable<void>;
  /** What the project's newest jobs asked for, newest first (jobs from before policy left out). */
  recentAsked(project: string, limit: number): Awaitable<JobAsked[]>;
  /** Whether a job of the project ran this script before (risk: a first run). */
  scriptSeen(project: string, scriptDigest: string): Awaitable<boolean>;
  /** Whether a job of the project came from this origin before (risk: a new origin). */
  originSeen(project: string, originKey: string): Awaitable<boolean>;
}

export interface LogRow {
  jobId: string;
  seq: number;
  stream: 'stdout' | 'stderr';
  /** The bytes. */
  data: Buffer;
}

export interface LogRepo {
  append(rows: readonly LogRow[]): Awaitable<void>;
  after(jobId: string, afterSeq: number, limit: number): Awaitable<LogRow[]>;
}

export interface AuditRow {
  seq: number;
  at: number;
  actor: string;
  action: string;
  target: string;
  outcome: 'succeeded' | 'denied' | 'failed';
  reason: string;
  source: string;
  /** Canonical JSON text of the details object, exactly as hashed. */
  details: string;
  prevHash: string;
  hash: string;
}

export interface AuditRepo {
  /** The head of the log (the last appended entry), read under the transaction's lock. */
  head(): Awaitable<{ seq: number; hash: string } | null>;
  insert(row: AuditRow): Awaitable<void>;
  setHead(seq: number, hash: string): Awaitable<void>;
  /** Entries with seq > after, in seq order. */
  after(after: number, limit: number): Awaitable<AuditRow[]>;
  /** The last `count` entries, in seq order. */
  last(count: number): Awaitable<AuditRow[]>;
  /** One entry, or null. */
  get(seq: number): Awaitable<AuditRow | null>;
  /** A stored Merkle tree node (see src/audit/merkle.ts), or null. */
  node(level: number, index: number): Awaitable<Buffer | null>;
  /** Nodes of one level with first ≤ index < end, in index order. */
  nodes(level: number, first: number, end: number): Awaitable<Array<{ index: number; hash: Buffer }>>;
  insertNodes(nodes: ReadonlyArray<{ level: number; index: number; hash: Buffer }>): Awaitable<void>;
  /** How many leaves the stored tree has. */
  leafCount(): Awaitable<number>;
  insertCheckpoint(row: CheckpointRow): Awaitable<void>;
  /** The newest checkpoint (highest id), or null. */
  latestCheckpoint(): Awaitable<CheckpointRow | null>;
  /** Checkpoints with id > after, in id order. */
  checkpointsAfter(after: number, limit: number): Awaitable<CheckpointRow[]>;
  /** Checkpoints not yet exported, oldest first. */
  unexportedCheckpoints(limit: number): Awaitable<CheckpointRow[]>;
  markExported(id: number, at: number): Awaitable<void>;
  logInfo(): Awaitable<{ origin: string; createdAt: number; hmacKeyId: string | null } | null>;
  setLogInfo(origin: string, createdAt: number): Awaitable<void>;
  setHmacKeyId(id: string): Awaitable<void>;
  /** How many stored tree nodes cover leaves at or beyond `leaves` (none in an intact log). */
  nodesBeyond(leaves: number): Awaitable<number>;
  keys(): Awaitable<AuditKeyRow[]>;
  insertKey(row: AuditKeyRow): Awaitable<void>;
  retireKey(verifierKey: string, at: number): Awaitable<void>;
}

export interface CheckpointRow {
  id: number;
  treeSize: number;
  rootHash: Buffer;
  madeAt: number;
  /** The signed note, exactly as signed. */
  note: string;
  exportedAt: number | null;
}

export interface AuditKeyRow {
  /** C2SP verifier key: name+keyid+base64(0x01 || public key). */
  verifierKey: string;
  /** The key ID as 8 hex digits. */
  keyId: string;
  createdAt: number;
  retiredAt: number | null;
}

export interface SigningKeyRow {
  id: string;
  project: string;
  owner: string;
  keyType: string;
  /** One-line public key ("ssh-ed25519 AAAA…"). */
  publicKey: string;
  /** "SHA256:…" as ssh-keygen prints it. */
  fingerprint: string;
  /** A release key may sign for environments that require one (policy). */
  release: boolean;
  createdAt: number;
  createdBy: string;
  revokedAt: number | null;
  revokedBy: string | null;
}

export interface SigningKeyRepo {
  insert(row: SigningKeyRow): Awaitable<void>;
  get(id: string): Awaitable<SigningKeyRow | null>;
  byFingerprint(project: string, fingerprint: string): Awaitable<SigningKeyRow | null>;
  list(projects?: readonly string[]): Awaitable<SigningKeyRow[]>;
  revoke(id: string, at: number, by: string): Awaitable<void>;
}

export interface NonceRepo {
  /** Records a nonce; false when (fingerprint, nonce) was recorded before. */
  consume(fingerprint: string, nonce: string, expiresAt: number, at: number): Awaitable<boolean>;
  /** Forgets nonces whose envelopes expired before `before`. */
  purge(before: number): Awaitable<number>;
}

export type PolicyKind = 'policy' | 'profile';
export type PolicyMode = 'enforce' | 'audit';

export interface PolicyDocRow {
  kind: PolicyKind;
  /** "" for the policy set; the project (or PROJECT@sha256:…) of a profile. */
  scope: string;
  /** 1, 2, … per (kind, scope), given at proposal. */
  version: number;
  content: string;
  /** SHA-256 (hex) of content. */
  contentHash: string;
  author: string;
  rationale: string;
  mode: PolicyMode;
  /** The version in force when it was proposed: approval is refused if that changed. */
  baseVersion: number | null;
  /** Set when the proposal restores an earlier version. */
  rollbackOf: number | null;
  state: 'proposed' | 'approved' | 'rejected';
  proposedAt: number;
  decidedBy: string | null;
  decidedAt: number | null;
}

export interface PolicyActiveRow {
  kind: PolicyKind;
  scope: string;
  enforceVersion: number | null;
  auditVersion: number | null;
  changedAt: number;
}

export interface ShadowCountRow {
  action: string;
  evaluated: number;
  wouldDeny: number;
}

export interface PolicyRepo {
  insert(row: PolicyDocRow): Awaitable<void>;
  get(kind: PolicyKind, scope: string, version: number): Awaitable<PolicyDocRow | null>;
  /** Newest first. */
  history(kind: PolicyKind, scope: string, limit: number): Awaitable<PolicyDocRow[]>;
  nextVersion(kind: PolicyKind, scope: string): Awaitable<number>;
  /** Sets the decision of a pending proposal; false when it was not pending. */
  decide(
    kind: PolicyKind,
    scope: string,
    version: number,
    state: 'approved' | 'rejected',
    by: string,
    at: number,
  ): Awaitable<boolean>;
  /** Proposals awaiting a decision, oldest first. */
  pending(limit: number): Awaitable<PolicyDocRow[]>;
  active(kind: PolicyKind, scope: string): Awaitable<PolicyActiveRow | null>;
  /** Every active row of a kind (scopes in order). */
  activeAll(kind: PolicyKind): Awaitable<PolicyActiveRow[]>;
  setActive(row: PolicyActiveRow): Awaitable<void>;
  countShadow(
    kind: PolicyKind,
    scope: string,
    version: number,
    action: string,
    wouldDeny: boolean,
  ): Awaitable<void>;
  shadowCounts(kind: PolicyKind, scope: string, version: number): Awaitable<ShadowCountRow[]>;
}

/** An admin's approval of a digest-pinned image (policy: context.imageApproved). */
export interface ImageApprovalRow {
  /** `sha256:<64 hex>`: the image's manifest digest, what the approval is about. */
  digest: string;
  /** The name it was approved under (a label for people; the digest decides). */
  name: string;
  reason: string;
  approvedBy: string;
  approvedAt: number;
  /** Set once revoked: from then on the digest is not approved (until approved again). */
  revokedBy: string | null;
  revokedAt: number | null;
  revokeReason: string | null;
}

export interface ImageApprovalRepo {
  get(digest: string): Awaitable<ImageApprovalRow | null>;
  /** Inserts, or replaces a revoked approval of the same digest. */
  put(row: ImageApprovalRow): Awaitable<void>;
  /** Revokes an approval in force; false when there was none. */
  revoke(digest: string, by: string, at: number, reason: string): Awaitable<boolean>;
  /** Newest approvals first, at most `limit`. */
  list(limit: number): Awaitable<ImageApprovalRow[]>;
}

/** One transaction's view of the store. */
export interface Tx {
  readonly tokens: TokenRepo;
  readonly jobs: JobRepo;
  readonly logs: LogRepo;
  readonly audit: AuditRepo;
  readonly signingKeys: SigningKeyRepo;
  readonly nonces: NonceRepo;
  readonly policies: PolicyRepo;
  readonly imageApprovals: ImageApprovalRepo;
}

export interface Store {
  /**
   * Runs `work` in one serialized write transaction: all of it commits, or none of it
   * (a throw rolls back). The job change and its audit event are written in the same one.
   */
  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T>;
  /** Runs `work` on a consistent read-only view. */
  read<T>(work: (tx: Tx) => Promise<T>): Promise<T>;
  /** True when the database answers (readiness). */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

import { AsyncLocalStorage } from 'node:async_hooks';
import {
  chmodSync,
  closeSync,
  constants,
  existsSync,
  fchmodSync,
  fdatasync,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
} from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { JobState, TokenRole } from '../../api/types.js';
import { AirlockError, describeError } from '../../errors.js';
import type {
  AuditRepo,
  AuditRow,
  CheckpointRow,
  ImageApprovalRepo,
  ImageApprovalRow,
  JobAsked,
  JobFilter,
  JobRepo,
  JobRow,
  LogRepo,
  LogRow,
  NewJob,
  NonceRepo,
  PolicyActiveRow,
  PolicyDocRow,
  PolicyKind,
  PolicyMode,
  PolicyRepo,
  ShadowCountRow,
  SigningKeyRepo,
  SigningKeyRow,
  Store,
  TokenRepo,
  TokenRow,
  Tx,
} from '../store.js';
import { MIGRATIONS } from './migrations.js';

/**
 * The embedded store: one SQLite file through better-sqlite3 (synchronous, one connection).
 * A transaction that returned has reached the disk, so a job acknowledged with 201 survives
 * a kill -9 or a power cut, and so does its audit event. WAL mode with group commit
 * (decision 0013): SQLite commits without waiting for the disk (synchronous=NORMAL, which
 * keeps checkpoints ordered and synced), and the store then syncs the WAL file itself off the
 * event loop, one sync for every transaction committed meanwhile. transaction() resolves,
 * and read() hands out what it read, only once every commit it may have seen is on disk.
 *
 * better-sqlite3 is synchronous, but the Store interface is asynchronous (PostgreSQL later):
 * every transaction and read runs under one async lock, so no other request's statements
 * can land inside an open transaction on the shared connection.
 */

type Db = Database.Database;
type Params = Record<string, unknown>;

interface JobDbRow {
  seq: number;
  id: string;
  project: string;
  environment: string;
  runtime: string;
  state: string;
  spec: string;
  submitted_by: string;
  idempotency_key: string | null;
  request_hash: string;
  created_at: number;
  updated_at: number;
  started_at: number | null;
  finished_at: number | null;
  attempts: number;
  max_attempts: number;
  fence: number;
  worker: string | null;
  lease_token: string | null;
  lease_expires_at: number | null;
  cancel_requested: number;
  result: string | null;
  reason: string | null;
  exit_status: number | null;
  log_seq: number;
  log_base: number;
  log_bytes: number;
  trust: string | null;
  script_digest: string | null;
  origin_key: string | null;
  asked: string | null;
}

function jobFromDb(row: JobDbRow): JobRow {
  return {
    seq: row.seq,
    id: row.id,
    project: row.project,
    environment: row.environment,
    runtime: row.runtime,
    state: row.state as JobState,
    spec: JSON.parse(row.spec) as JobRow['spec'],
    submittedBy: row.submitted_by,
    idempotencyKey: row.idempotency_key,
    requestHash: row.request_hash,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    fence: row.fence,
    worker: row.worker,
    leaseToken: row.lease_token,
    leaseExpiresAt: row.lease_expires_at,
    cancelRequested: row.cancel_requested !== 0,
    result: row.result === null ? null : (JSON.parse(row.result) as JobRow['result']),
    reason: row.reason,
    exitStatus: row.exit_status,
    logSeq: row.log_seq,
    logBase: row.log_base,
    logBytes: row.log_bytes,
    trust: row.trust === null ? null : (JSON.parse(row.trust) as JobRow['trust']),
    scriptDigest: row.script_digest,
    originKey: row.origin_key,
    asked: row.asked === null ? null : (JSON.parse(row.asked) as JobRow['asked']),
  };
}

function jobToDb(job: NewJob & { seq?: number }): Params {
  return {
    id: job.id,
    project: job.project,
    environment: job.environment,
    runtime: job.runtime,
    state: job.state,
    spec: JSON.stringify(job.spec),
    submitted_by: job.submittedBy,
    idempotency_key: job.idempotencyKey,
    request_hash: job.requestHash,
    created_at: job.createdAt,
    updated_at: job.updatedAt,
    started_at: job.startedAt,
    finished_at: job.finishedAt,
    attempts: job.attempts,
    max_attempts: job.maxAttempts,
    fence: job.fence,
    worker: job.worker,
    lease_token: job.leaseToken,
    lease_expires_at: job.leaseExpiresAt,
    cancel_requested: job.cancelRequested ? 1 : 0,
    result: job.result === null ? null : JSON.stringify(job.result),
    reason: job.reason,
    exit_status: job.exitStatus,
    log_seq: job.logSeq,
    log_base: job.logBase,
    log_bytes: job.logBytes,
    trust: job.trust === null || job.trust === undefined ? null : JSON.stringify(job.trust),
    script_digest: job.scriptDigest ?? null,
    origin_key: job.originKey ?? null,
    asked: job.asked === null || job.asked === undefined ? null : JSON.stringify(job.asked),
  };
}

interface PolicyDocDbRow {
  kind: string;
  scope: string;
  version: number;
  content: string;
  content_hash: string;
  author: string;
  rationale: string;
  mode: string;
  base_version: number | null;
  rollback_of: number | null;
  state: string;
  proposed_at: number;
  decided_by: string | null;
  decided_at: number | null;
}

function policyDocFromDb(row: PolicyDocDbRow): PolicyDocRow {
  return {
    kind: row.kind as PolicyKind,
    scope: row.scope,
    version: row.version,
    content: row.content,
    contentHash: row.content_hash,
    author: row.author,
    rationale: row.rationale,
    mode: row.mode as PolicyMode,
    baseVersion: row.base_version,
    rollbackOf: row.rollback_of,
    state: row.state as PolicyDocRow['state'],
    proposedAt: row.proposed_at,
    decidedBy: row.decided_by,
    decidedAt: row.decided_at,
  };
}

interface PolicyActiveDbRow {
  kind: string;
  scope: string;
  enforce_version: number | null;
  audit_version: number | null;
  changed_at: number;
}

function policyActiveFromDb(row: PolicyActiveDbRow): PolicyActiveRow {
  return {
    kind: row.kind as PolicyKind,
    scope: row.scope,
    enforceVersion: row.enforce_version,
    auditVersion: row.audit_version,
    changedAt: row.changed_at,
  };
}

const JOB_COLUMNS = Object.keys(jobToDb({} as NewJob));

interface TokenDbRow {
  id: string;
  hash: string;
  principal: string;
  role: string;
  projects: string;
  created_at: number;
  created_by: string;
  expires_at: number | null;
  revoked_at: number | null;
  request_key: string | null;
}

function tokenFromDb(row: TokenDbRow): TokenRow {
  return {
    id: row.id,
    hash: row.hash,
    principal: row.principal,
    role: row.role as TokenRole,
    projects: JSON.parse(row.projects) as string[],
    createdAt: row.created_at,
    createdBy: row.created_by,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    requestKey: row.request_key,
  };
}

interface AuditDbRow {
  seq: number;
  at: number;
  actor: string;
  action: string;
  target: string;
  outcome: string;
  reason: string;
  source: string;
  details: string;
  prev_hash: string;
  hash: string;
}

interface SigningKeyDbRow {
  id: string;
  project: string;
  owner: string;
  key_type: string;
  public_key: string;
  fingerprint: string;
  release_key: number;
  created_at: number;
  created_by: string;
  revoked_at: number | null;
  revoked_by: string | null;
}

interface ImageApprovalDbRow {
  digest: string;
  name: string;
  reason: string;
  approved_by: string;
  approved_at: number;
  revoked_by: string | null;
  revoked_at: number | null;
  revoke_reason: string | null;
}

interface CheckpointDbRow {
  id: number;
  tree_size: number;
  root_hash: Buffer;
  made_at: number;
  note: string;
  exported_at: number | null;
}

function checkpointFromDb(row: CheckpointDbRow): CheckpointRow {
  return {
    id: row.id,
    treeSize: row.tree_size,
    rootHash: row.root_hash,
    madeAt: row.made_at,
    note: row.note,
    exportedAt: row.exported_at,
  };
}

export function auditFromDb(row: AuditDbRow): AuditRow {
  return {
    seq: row.seq,
    at: row.at,
    actor: row.actor,
    action: row.action,
    target: row.target,
    outcome: row.outcome as AuditRow['outcome'],
    reason: row.reason,
    source: row.source,
    details: row.details,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

/** Prepared statements, made once per connection. */
function statements(db: Db) {
  const placeholders = JOB_COLUMNS.map((column) => `@${column}`).join(', ');
  const assignments = JOB_COLUMNS.filter((column) => column !== 'id')
    .map((column) => `${column} = @${column}`)
    .join(', ');
  return {
    tokenInsert: db.prepare(
      `INSERT INTO tokens (id, hash, principal, role, projects, created_at, created_by, expires_at, revoked_at, request_key)
       VALUES (@id, @hash, @principal, @role, @projects, @created_at, @created_by, @expires_at, @revoked_at, @request_key)`,
    ),
    tokenGet: db.prepare('SELECT * FROM tokens WHERE id = ?'),
    tokenList: db.prepare('SELECT * FROM tokens ORDER BY created_at, id'),
    tokenRevoke: db.prepare('UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
    tokenCount: db.prepare('SELECT COUNT(*) AS n FROM tokens'),
    jobNextSeq: db.prepare('SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM jobs'),
    jobInsert: db.prepare(`INSERT INTO jobs (seq, ${JOB_COLUMNS.join(', ')}) VALUES (@seq, ${placeholders})`),
    jobGet: db.prepare('SELECT * FROM jobs WHERE id = ?'),
    jobByKey: db.prepare('SELECT * FROM jobs WHERE submitted_by = ? AND idempotency_key = ?'),
    jobCountQueued: db.prepare("SELECT COUNT(*) AS n FROM jobs WHERE project = ? AND state = 'queued'"),
    jobCountQueuedBy: db.prepare(
      "SELECT COUNT(*) AS n FROM jobs WHERE submitted_by = ? AND state = 'queued'",
    ),
    jobExpired: db.prepare(
      `SELECT * FROM jobs WHERE lease_expires_at < ? AND state IN ('leased', 'running')
       ORDER BY lease_expires_at LIMIT ?`,
    ),
    jobUpdate: db.prepare(`UPDATE jobs SET ${assignments} WHERE id = @id`),
    logInsert: db.prepare('INSERT INTO job_logs (job_id, seq, stream, data) VALUES (?, ?, ?, ?)'),
    logAfter: db.prepare(
      'SELECT job_id, seq, stream, data FROM job_logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?',
    ),
    auditHead: db.prepare('SELECT seq, hash FROM audit_head WHERE id = 1'),
    auditInsert: db.prepare(
      `INSERT INTO audit_events (seq, at, actor, action, target, outcome, reason, source, details, prev_hash, hash)
       VALUES (@seq, @at, @actor, @action, @target, @outcome, @reason, @source, @details, @prevHash, @hash)`,
    ),
    auditSetHead: db.prepare(
      `INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)
       ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`,
    ),
    auditAfter: db.prepare('SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?'),
    auditLast: db.prepare(
      'SELECT * FROM (SELECT * FROM audit_events ORDER BY seq DESC LIMIT ?) ORDER BY seq',
    ),
    auditGet: db.prepare('SELECT * FROM audit_events WHERE seq = ?'),
    treeNode: db.prepare('SELECT hash FROM audit_tree WHERE level = ? AND idx = ?').pluck(),
    treeNodes: db.prepare(
      'SELECT idx AS "index", hash FROM audit_tree WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx',
    ),
    treeInsert: db.prepare('INSERT INTO audit_tree (level, idx, hash) VALUES (?, ?, ?)'),
    treeLeaves: db.prepare('SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_tree WHERE level = 0').pluck(),
    checkpointInsert: db.prepare(
      `INSERT INTO audit_checkpoints (id, tree_size, root_hash, made_at, note, exported_at)
       VALUES (@id, @treeSize, @rootHash, @madeAt, @note, @exportedAt)`,
    ),
    checkpointLatest: db.prepare('SELECT * FROM audit_checkpoints ORDER BY id DESC LIMIT 1'),
    checkpointsAfter: db.prepare('SELECT * FROM audit_checkpoints WHERE id > ? ORDER BY id LIMIT ?'),
    checkpointsUnexported: db.prepare(
      'SELECT * FROM audit_checkpoints WHERE exported_at IS NULL ORDER BY id LIMIT ?',
    ),
    checkpointExported: db.prepare('UPDATE audit_checkpoints SET exported_at = ? WHERE id = ?'),
    logInfo: db.prepare('SELECT origin, created_at, hmac_key_id FROM audit_log_info WHERE id = 1'),
    setHmacKeyId: db.prepare('UPDATE audit_log_info SET hmac_key_id = ? WHERE id = 1'),
    nodesBeyond: db.prepare('SELECT COUNT(*) FROM audit_tree WHERE (idx + 1) * (1 << level) > ?').pluck(),
    setLogInfo: db.prepare('INSERT INTO audit_log_info (id, origin, created_at) VALUES (1, ?, ?)'),
    keys: db.prepare('SELECT * FROM audit_keys ORDER BY created_at, verifier_key'),
    keyInsert: db.prepare(
      'INSERT INTO audit_keys (verifier_key, key_id, created_at, retired_at) VALUES (?, ?, ?, ?)',
    ),
    signingKeyInsert: db.prepare(
      `INSERT INTO signing_keys (id, project, owner, key_type, public_key, fingerprint, release_key, created_at, created_by, revoked_at, revoked_by)
       VALUES (@id, @project, @owner, @keyType, @publicKey, @fingerprint, @release, @createdAt, @createdBy, @revokedAt, @revokedBy)`,
    ),
    signingKeyGet: db.prepare('SELECT * FROM signing_keys WHERE id = ?'),
    signingKeyByFingerprint: db.prepare('SELECT * FROM signing_keys WHERE project = ? AND fingerprint = ?'),
    signingKeyList: db.prepare('SELECT * FROM signing_keys ORDER BY project, created_at, id'),
    signingKeyRevoke: db.prepare(
      'UPDATE signing_keys SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL',
    ),
    nonceConsume: db.prepare(
      `INSERT INTO consumed_nonces (fingerprint, nonce, expires_at, consumed_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (fingerprint, nonce) DO NOTHING`,
    ),
    noncePurge: db.prepare('DELETE FROM consumed_nonces WHERE expires_at < ?'),
    jobRecentAsked: db
      .prepare('SELECT asked FROM jobs WHERE project = ? AND asked IS NOT NULL ORDER BY seq DESC LIMIT ?')
      .pluck(),
    jobScriptSeen: db.prepare('SELECT 1 FROM jobs WHERE project = ? AND script_digest = ? LIMIT 1').pluck(),
    jobOriginSeen: db.prepare('SELECT 1 FROM jobs WHERE project = ? AND origin_key = ? LIMIT 1').pluck(),
    policyInsert: db.prepare(
      `INSERT INTO policy_documents (kind, scope, version, content, content_hash, author, rationale, mode, base_version, rollback_of, state, proposed_at, decided_by, decided_at)
       VALUES (@kind, @scope, @version, @content, @contentHash, @author, @rationale, @mode, @baseVersion, @rollbackOf, @state, @proposedAt, @decidedBy, @decidedAt)`,
    ),
    policyGet: db.prepare('SELECT * FROM policy_documents WHERE kind = ? AND scope = ? AND version = ?'),
    policyHistory: db.prepare(
      'SELECT * FROM policy_documents WHERE kind = ? AND scope = ? ORDER BY version DESC LIMIT ?',
    ),
    policyNextVersion: db
      .prepare('SELECT COALESCE(MAX(version), 0) + 1 FROM policy_documents WHERE kind = ? AND scope = ?')
      .pluck(),
    policyDecide: db.prepare(
      `UPDATE policy_documents SET state = ?, decided_by = ?, decided_at = ?
       WHERE kind = ? AND scope = ? AND version = ? AND state = 'proposed'`,
    ),
    policyPending: db.prepare(
      "SELECT * FROM policy_documents WHERE state = 'proposed' ORDER BY proposed_at, kind, scope, version LIMIT ?",
    ),
    policyActive: db.prepare('SELECT * FROM policy_active WHERE kind = ? AND scope = ?'),
    policyActiveAll: db.prepare('SELECT * FROM policy_active WHERE kind = ? ORDER BY scope'),
    policySetActive: db.prepare(
      `INSERT INTO policy_active (kind, scope, enforce_version, audit_version, changed_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (kind, scope) DO UPDATE SET enforce_version = excluded.enforce_version,
         audit_version = excluded.audit_version, changed_at = excluded.changed_at`,
    ),
    policyCountShadow: db.prepare(
      `INSERT INTO policy_shadow_counts (kind, scope, version, action, evaluated, would_deny) VALUES (?, ?, ?, ?, 1, ?)
       ON CONFLICT (kind, scope, version, action) DO UPDATE SET evaluated = evaluated + 1,
         would_deny = would_deny + excluded.would_deny`,
    ),
    policyShadowCounts: db.prepare(
      `SELECT action, evaluated, would_deny AS "wouldDeny" FROM policy_shadow_counts
       WHERE kind = ? AND scope = ? AND version = ? ORDER BY action`,
    ),
    imageApprovalGet: db.prepare('SELECT * FROM image_approvals WHERE digest = ?'),
    imageApprovalPut: db.prepare(
      `INSERT INTO image_approvals (digest, name, reason, approved_by, approved_at, revoked_by, revoked_at, revoke_reason)
       VALUES (@digest, @name, @reason, @approvedBy, @approvedAt, @revokedBy, @revokedAt, @revokeReason)
       ON CONFLICT (digest) DO UPDATE SET name = excluded.name, reason = excluded.reason,
         approved_by = excluded.approved_by, approved_at = excluded.approved_at, revoked_by = excluded.revoked_by,
         revoked_at = excluded.revoked_at, revoke_reason = excluded.revoke_reason`,
    ),
    imageApprovalRevoke: db.prepare(
      `UPDATE image_approvals SET revoked_by = ?, revoked_at = ?, revoke_reason = ?
       WHERE digest = ? AND revoked_at IS NULL`,
    ),
    imageApprovalList: db.prepare('SELECT * FROM image_approvals ORDER BY approved_at DESC, digest LIMIT ?'),
    keyRetire: db.prepare(
      'UPDATE audit_keys SET retired_at = ? WHERE verifier_key = ? AND retired_at IS NULL',
    ),
  };
}

type Statements = ReturnType<typeof statements>;

class SqliteTx implements Tx {
  readonly tokens: TokenRepo;
  readonly jobs: JobRepo;
  readonly logs: LogRepo;
  readonly audit: AuditRepo;
  readonly signingKeys: SigningKeyRepo;
  readonly nonces: NonceRepo;
  readonly policies: PolicyRepo;
  readonly imageApprovals: ImageApprovalRepo;

  constructor(db: Db, s: Statements) {
    const approval = (row: ImageApprovalDbRow | undefined): ImageApprovalRow | null =>
      row === undefined
        ? null
        : {
            digest: row.digest,
            name: row.name,
            reason: row.reason,
            approvedBy: row.approved_by,
            approvedAt: row.approved_at,
            revokedBy: row.revoked_by,
            revokedAt: row.revoked_at,
            revokeReason: row.revoke_reason,
          };
    this.imageApprovals = {
      get: (digest) => approval(s.imageApprovalGet.get(digest) as ImageApprovalDbRow | undefined),
      put: (row) => {
        s.imageApprovalPut.run(row);
      },
      revoke: (digest, by, at, reason) => s.imageApprovalRevoke.run(by, at, reason, digest).changes === 1,
      list: (limit) =>
        (s.imageApprovalList.all(limit) as ImageApprovalDbRow[]).map(
          (row) => approval(row) as ImageApprovalRow,
        ),
    };
    this.policies = {
      insert: (row) => {
        s.policyInsert.run(row);
      },
      get: (kind, scope, version) => {
        const row = s.policyGet.get(kind, scope, version) as PolicyDocDbRow | undefined;
        return row === undefined ? null : policyDocFromDb(row);
      },
      history: (kind, scope, limit) =>
        (s.policyHistory.all(kind, scope, limit) as PolicyDocDbRow[]).map(policyDocFromDb),
      nextVersion: (kind, scope) => s.policyNextVersion.get(kind, scope) as number,
      decide: (kind, scope, version, state, by, at) =>
        s.policyDecide.run(state, by, at, kind, scope, version).changes === 1,
      pending: (limit) => (s.policyPending.all(limit) as PolicyDocDbRow[]).map(policyDocFromDb),
      active: (kind, scope) => {
        const row = s.policyActive.get(kind, scope) as PolicyActiveDbRow | undefined;
        return row === undefined ? null : policyActiveFromDb(row);
      },
      activeAll: (kind) => (s.policyActiveAll.all(kind) as PolicyActiveDbRow[]).map(policyActiveFromDb),
      setActive: (row) => {
        s.policySetActive.run(row.kind, row.scope, row.enforceVersion, row.auditVersion, row.changedAt);
      },
      countShadow: (kind, scope, version, action, wouldDeny) => {
        s.policyCountShadow.run(kind, scope, version, action, wouldDeny ? 1 : 0);
      },
      shadowCounts: (kind, scope, version) =>
        s.policyShadowCounts.all(kind, scope, version) as ShadowCountRow[],
    };
    const signingKey = (row: SigningKeyDbRow | undefined): SigningKeyRow | null =>
      row === undefined
        ? null
        : {
            id: row.id,
            project: row.project,
            owner: row.owner,
            keyType: row.key_type,
            publicKey: row.public_key,
            fingerprint: row.fingerprint,
            release: row.release_key === 1,
            createdAt: row.created_at,
            createdBy: row.created_by,
            revokedAt: row.revoked_at,
            revokedBy: row.revoked_by,
          };
    this.signingKeys = {
      insert: (row) => {
        s.signingKeyInsert.run({ ...row, release: row.release ? 1 : 0 });
      },
      get: (id) => signingKey(s.signingKeyGet.get(id) as SigningKeyDbRow | undefined),
      byFingerprint: (project, fingerprint) =>
        signingKey(s.signingKeyByFingerprint.get(project, fingerprint) as SigningKeyDbRow | undefined),
      list: (projects) =>
        (s.signingKeyList.all() as SigningKeyDbRow[])
          .map((row) => signingKey(row) as SigningKeyRow)
          .filter(
            (row) => projects === undefined || projects.includes('*') || projects.includes(row.project),
          ),
      revoke: (id, at, by) => {
        s.signingKeyRevoke.run(at, by, id);
      },
    };
    this.nonces = {
      consume: (fingerprint, nonce, expiresAt, at) =>
        s.nonceConsume.run(fingerprint, nonce, expiresAt, at).changes === 1,
      purge: (before) => s.noncePurge.run(before).changes,
    };
    this.tokens = {
      insert: (row) => {
        s.tokenInsert.run({
          id: row.id,
          hash: row.hash,
          principal: row.principal,
          role: row.role,
          projects: JSON.stringify(row.projects),
          created_at: row.createdAt,
          created_by: row.createdBy,
          expires_at: row.expiresAt,
          revoked_at: row.revokedAt,
          request_key: row.requestKey,
        });
      },
      get: (id) => {
        const row = s.tokenGet.get(id) as TokenDbRow | undefined;
        return row === undefined ? null : tokenFromDb(row);
      },
      list: () => (s.tokenList.all() as TokenDbRow[]).map(tokenFromDb),
      revoke: (id, at) => {
        s.tokenRevoke.run(at, id);
      },
      count: () => (s.tokenCount.get() as { n: number }).n,
    };
    this.jobs = {
      insert: (job) => {
        const { seq } = s.jobNextSeq.get() as { seq: number };
        s.jobInsert.run({ seq, ...jobToDb(job) });
        return { seq, ...job };
      },
      get: (id) => {
        const row = s.jobGet.get(id) as JobDbRow | undefined;
        return row === undefined ? null : jobFromDb(row);
      },
      byIdempotencyKey: (submittedBy, key) => {
        const row = s.jobByKey.get(submittedBy, key) as JobDbRow | undefined;
        return row === undefined ? null : jobFromDb(row);
      },
      list: (filter: JobFilter) => {
        const where: string[] = [];
        const params: unknown[] = [];
        if (filter.projects !== undefined) {
          if (filter.projects.length === 0) return [];
          where.push(`project IN (${filter.projects.map(() => '?').join(', ')})`);
          params.push(...filter.projects);
        }
        if (filter.project !== undefined) {
          where.push('project = ?');
          params.push(filter.project);
        }
        if (filter.state !== undefined) {
          where.push('state = ?');
          params.push(filter.state);
        }
        if (filter.beforeSeq !== undefined) {
          where.push('seq < ?');
          params.push(filter.beforeSeq);
        }
        const sql = `SELECT * FROM jobs ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT ?`;
        return (db.prepare(sql).all(...params, filter.limit) as JobDbRow[]).map(jobFromDb);
      },
      countQueued: (project) => (s.jobCountQueued.get(project) as { n: number }).n,
      countQueuedBy: (submittedBy) => (s.jobCountQueuedBy.get(submittedBy) as { n: number }).n,
      nextQueued: (runtimes, projects) => {
        if (runtimes.length === 0 || projects?.length === 0) return null;
        const inList = (values: readonly string[]): string => values.map(() => '?').join(', ');
        const byProject = projects === undefined ? '' : ` AND project IN (${inList(projects)})`;
        const sql = `SELECT * FROM jobs WHERE state = 'queued' AND runtime IN (${inList(runtimes)})${byProject} ORDER BY seq LIMIT 1`;
        const row = db.prepare(sql).get(...runtimes, ...(projects ?? [])) as JobDbRow | undefined;
        return row === undefined ? null : jobFromDb(row);
      },
      expiredLeases: (now, limit) => (s.jobExpired.all(now, limit) as JobDbRow[]).map(jobFromDb),
      recentAsked: (project, limit) =>
        (s.jobRecentAsked.all(project, limit) as string[]).map((asked) => JSON.parse(asked) as JobAsked),
      scriptSeen: (project, digest) => s.jobScriptSeen.get(project, digest) !== undefined,
      originSeen: (project, key) => s.jobOriginSeen.get(project, key) !== undefined,
      update: (job) => {
        s.jobUpdate.run(jobToDb(job));
      },
    };
    this.logs = {
      append: (rows) => {
        for (const row of rows) s.logInsert.run(row.jobId, row.seq, row.stream, row.data);
      },
      after: (jobId, afterSeq, limit) =>
        (
          s.logAfter.all(jobId, afterSeq, limit) as Array<{
            job_id: string;
            seq: number;
            stream: string;
            data: Buffer;
          }>
        ).map((row) => ({
          jobId: row.job_id,
          seq: row.seq,
          stream: row.stream as LogRow['stream'],
          data: row.data,
        })),
    };
    this.audit = {
      head: () => (s.auditHead.get() as { seq: number; hash: string } | undefined) ?? null,
      insert: (row: AuditRow) => {
        s.auditInsert.run(row);
      },
      setHead: (seq, hash) => {
        s.auditSetHead.run(seq, hash);
      },
      after: (after, limit) => (s.auditAfter.all(after, limit) as AuditDbRow[]).map(auditFromDb),
      last: (count) => (s.auditLast.all(count) as AuditDbRow[]).map(auditFromDb),
      get: (seq) => {
        const row = s.auditGet.get(seq) as AuditDbRow | undefined;
        return row === undefined ? null : auditFromDb(row);
      },
      node: (level, index) => (s.treeNode.get(level, index) as Buffer | undefined) ?? null,
      nodes: (level, first, end) =>
        s.treeNodes.all(level, first, end) as Array<{ index: number; hash: Buffer }>,
      insertNodes: (nodes) => {
        for (const node of nodes) s.treeInsert.run(node.level, node.index, node.hash);
      },
      leafCount: () => s.treeLeaves.get() as number,
      insertCheckpoint: (row) => {
        s.checkpointInsert.run(row);
      },
      latestCheckpoint: () => {
        const row = s.checkpointLatest.get() as CheckpointDbRow | undefined;
        return row === undefined ? null : checkpointFromDb(row);
      },
      checkpointsAfter: (after, limit) =>
        (s.checkpointsAfter.all(after, limit) as CheckpointDbRow[]).map(checkpointFromDb),
      unexportedCheckpoints: (limit) =>
        (s.checkpointsUnexported.all(limit) as CheckpointDbRow[]).map(checkpointFromDb),
      markExported: (id, at) => {
        s.checkpointExported.run(at, id);
      },
      logInfo: () => {
        const row = s.logInfo.get() as
          | { origin: string; created_at: number; hmac_key_id: string | null }
          | undefined;
        return row === undefined
          ? null
          : { origin: row.origin, createdAt: row.created_at, hmacKeyId: row.hmac_key_id };
      },
      setHmacKeyId: (id) => {
        s.setHmacKeyId.run(id);
      },
      nodesBeyond: (leaves) => s.nodesBeyond.get(leaves) as number,
      setLogInfo: (origin, createdAt) => {
        s.setLogInfo.run(origin, createdAt);
      },
      keys: () =>
        (
          s.keys.all() as Array<{
            verifier_key: string;
            key_id: string;
            created_at: number;
            retired_at: number | null;
          }>
        ).map((row) => ({
          verifierKey: row.verifier_key,
          keyId: row.key_id,
          createdAt: row.created_at,
          retiredAt: row.retired_at,
        })),
      insertKey: (row) => {
        s.keyInsert.run(row.verifierKey, row.keyId, row.createdAt, row.retiredAt);
      },
      retireKey: (verifierKey, at) => {
        s.keyRetire.run(at, verifierKey);
      },
    };
  }
}

export interface SqliteStoreOptions {
  /** Path of the database file; created (mode 0600) with its directory (0700) if missing. */
  readonly path: string;
  /** Open read-only, without migrating (offline audit verification). */
  readonly readonly?: boolean;
  /** How the WAL file is synced after commits (tests hold or fail it); default fdatasync. */
  readonly syncWal?: (fd: number, done: (error: NodeJS.ErrnoException | null) => void) => void;
}

export class SqliteStore implements Store {
  readonly #db: Db;
  readonly #tx: SqliteTx;
  readonly #begin: Database.Statement;
  readonly #commit: Database.Statement;
  readonly #rollback: Database.Statement;
  readonly #changes: Database.Statement;
  #lock: Promise<unknown> = Promise.resolve();
  #closed = false;
  /** The WAL file, synced after commits (group commit); null: every commit syncs itself (FULL). */
  readonly #wal: number | null;
  /** Commits made, and how many of them are known to be on disk. */
  #committed = 0;
  #synced = 0;
  #syncing: Promise<void> | null = null;
  /** A sync failed: what was committed may be lost, so nothing more is answered. */
  #broken: AirlockError | null = null;

  readonly #syncWal: NonNullable<SqliteStoreOptions['syncWal']>;

  private constructor(db: Db, wal: number | null, syncWal: SqliteStoreOptions['syncWal'] = fdatasync) {
    this.#db = db;
    this.#wal = wal;
    this.#syncWal = syncWal;
    this.#tx = new SqliteTx(db, statements(db));
    this.#begin = db.prepare('BEGIN IMMEDIATE');
    this.#commit = db.prepare('COMMIT');
    this.#rollback = db.prepare('ROLLBACK');
    this.#changes = db.prepare('SELECT total_changes() AS n');
  }

  static open(options: SqliteStoreOptions): SqliteStore {
    let db: Db;
    try {
      if (options.readonly === true) {
        db = new Database(options.path, { readonly: true, fileMustExist: true });
      } else {
        // The database holds token hashes, job specs and the audit trail: its directory must be
        // a real directory no one else can write (else the file could be swapped under us), and
        // the file is opened without following a link and made 0600.
        const dir = dirname(options.path);
        // Only the data directory itself is closed (0700); directories made above it are
        // 0755 like any system directory. A closed /var/lib/airlock would shut out the jobs'
        // user namespaces, which must traverse it to the sandbox directory beside.
        const parent = dirname(dir);
        if (!existsSync(parent)) {
          mkdirSync(parent, { recursive: true, mode: 0o755 });
          chmodSync(parent, 0o755); // whatever the umask
        }
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        const info = lstatSync(dir);
        if (!info.isDirectory())
          throw new AirlockError(
            'STORE_FAILED',
            `the data directory ${dir} is a symbolic link or not a directory`,
          );
        if ((info.mode & 0o022) !== 0 || info.uid !== process.getuid?.())
          throw new AirlockError(
            'STORE_FAILED',
            `the data directory ${dir} must belong to this user and not be writable by group or others (chmod 700 ${dir})`,
          );
        const fd = openSync(options.path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
        try {
          fchmodSync(fd, 0o600);
        } finally {
          closeSync(fd);
        }
        db = new Database(options.path);
        db.pragma('journal_mode = WAL');
        // FULL while migrating: each commit syncs itself. openWal() then switches to group
        // commit (NORMAL, the store syncing the WAL before anything is answered).
        db.pragma('synchronous = FULL');
        db.pragma('foreign_keys = ON');
        db.pragma('busy_timeout = 5000');
      }
    } catch (error) {
      if (error instanceof AirlockError) throw error;
      throw new AirlockError(
        'STORE_FAILED',
        `cannot open the database ${options.path}: ${describeError(error)}`,
        {
          cause: error,
        },
      );
    }
    if (options.readonly === true) return new SqliteStore(db, null);
    migrate(db, options.path);
    return new SqliteStore(db, openWal(db, options.path), options.syncWal);
  }

  /** Set while a read or transaction runs: nested store access is refused, not deadlocked. */
  readonly #inside = new AsyncLocalStorage<boolean>();

  async transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    const { result, commit } = await this.#exclusive(async () => {
      this.#begin.run();
      try {
        const changes = this.#changes.get() as { n: number };
        const result = await work(this.#tx);
        // A transaction that changed nothing (a claim that found the job taken) needs no sync
        // of its own; like a read, it waits for the commits it may have seen.
        const wrote = (this.#changes.get() as { n: number }).n !== changes.n;
        this.#commit.run();
        if (wrote) this.#committed += 1;
        return { result, commit: this.#committed };
      } catch (error) {
        if (this.#db.inTransaction) this.#rollback.run();
        throw wrapStoreError(error);
      }
    });
    // The connection is free for the next transaction while this one waits for the disk.
    await this.#durable(commit);
    return result;
  }

  async read<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    const { result, seen } = await this.#exclusive(async () => {
      const changes = this.#changes.get() as { n: number };
      let result: T;
      try {
        result = await work(this.#tx);
      } catch (error) {
        throw wrapStoreError(error);
      } finally {
        // A write made outside a transaction (autocommit) counts as a commit of its own, also
        // when the work failed after it.
        if ((this.#changes.get() as { n: number }).n !== changes.n) this.#committed += 1;
      }
      return { result, seen: this.#committed };
    });
    // Nothing read leaves the store before the commits it may have seen are on disk.
    await this.#durable(seen);
    return result;
  }

  /** Resolves once commit number `commit` (and every one before it) is on disk. */
  async #durable(commit: number): Promise<void> {
    while (this.#wal !== null && this.#synced < commit) {
      if (this.#broken !== null) throw this.#broken;
      if (this.#syncing === null) {
        // One sync covers every commit made before it starts: the WAL is appended in order.
        const target = this.#committed;
        const wal = this.#wal;
        this.#syncing = new Promise<void>((resolve) => {
          this.#syncWal(wal, (error) => {
            if (error === null) this.#synced = Math.max(this.#synced, target);
            else
              this.#broken = new AirlockError(
                'STORE_FAILED',
                `the database's write-ahead log could not be synced to disk (${error.code ?? error.message}); committed changes may be lost: restart the server`,
                { cause: error },
              );
            this.#syncing = null;
            resolve();
          });
        });
      }
      await this.#syncing;
    }
    if (this.#broken !== null && this.#synced < commit) throw this.#broken;
  }

  async ping(): Promise<boolean> {
    if (this.#closed) return false;
    try {
      return await this.#exclusive(async () => this.#db.prepare('SELECT 1 AS one').get() !== undefined);
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await this.#exclusive(async () => {
      if (this.#closed) return;
      this.#closed = true;
      this.#db.close();
    }).catch((error) => {
      if (this.#broken === null) throw error;
      this.#closed = true;
      this.#db.close();
    });
    while (this.#syncing !== null) await this.#syncing;
    if (this.#wal !== null) closeSync(this.#wal);
  }

  /** Runs `work` alone on the connection (one transaction or read at a time). */
  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new AirlockError('STORE_FAILED', 'the database is closed'));
    if (this.#broken !== null) return Promise.reject(this.#broken);
    // A read or transaction opened from inside another would wait for itself, and every
    // request after it would wait behind it: a programming error, refused loudly instead.
    if (this.#inside.getStore() === true)
      return Promise.reject(
        new RangeError(
          'store: a read or transaction was opened inside another one (it would wait for itself)',
        ),
      );
    const inside = () => this.#inside.run(true, work);
    const run = this.#lock.then(inside, inside);
    this.#lock = run.catch(() => undefined);
    return run;
  }
}

/**
 * Switches a writable database to group commit: the WAL file is opened for syncing and SQLite
 * stops syncing each commit itself (synchronous=NORMAL: it still syncs around checkpoints).
 * Where the WAL file cannot be opened, every commit keeps syncing itself (FULL).
 */
function openWal(db: Db, path: string): number | null {
  let fd: number;
  try {
    fd = openSync(`${path}-wal`, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return null;
  }
  const info = fstatSync(fd);
  if (!info.isFile() || db.pragma('journal_mode', { simple: true }) !== 'wal') {
    closeSync(fd);
    return null;
  }
  db.pragma('synchronous = NORMAL');
  return fd;
}

/** better-sqlite3's errors become STORE_FAILED; Airlock's own errors pass through. */
function wrapStoreError(error: unknown): unknown {
  if (error instanceof AirlockError || error instanceof TypeError || error instanceof RangeError)
    return error;
  if (error instanceof Database.SqliteError)
    return new AirlockError('STORE_FAILED', `database error: ${error.message}`, { cause: error });
  return error;
}

function migrate(db: Db, path: string): void {
  db.exec(
    'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)',
  );
  const applied = new Set(
    (db.prepare('SELECT version FROM schema_migrations').all() as Array<{ version: number }>).map(
      (r) => r.version,
    ),
  );
  const newest = Math.max(0, ...applied);
  const known = Math.max(0, ...MIGRATIONS.map((m) => m.version));
  if (newest > known) {
    throw new AirlockError(
      'STORE_FAILED',
      `the database ${path} has schema version ${newest}, newer than this Airlock knows (${known}): upgrade Airlock, or restore a backup made by this version`,
    );
  }
  for (const migration of MIGRATIONS) {
    if (applied.has(migration.version)) continue;
    db.transaction(() => {
      db.exec(migration.sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
        migration.version,
        migration.name,
        Date.now(),
      );
    }).immediate();
  }
}

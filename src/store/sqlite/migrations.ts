/**
 * Versioned migrations, applied in order at start inside one transaction each; the
 * applied versions are recorded in schema_migrations. A database newer than this code is
 * refused (no silent downgrade). Never edit a shipped migration: add the next one.
 */

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
-- Airlock schema version 1. Types and statements are kept to what PostgreSQL also runs,
-- except where marked SQLite-only (the PostgreSQL migrations, a later issue, replace those).

CREATE TABLE tokens (
  id TEXT PRIMARY KEY,
  hash TEXT NOT NULL,
  principal TEXT NOT NULL,
  role TEXT NOT NULL,
  projects TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL,
  expires_at BIGINT,
  revoked_at BIGINT
);

CREATE TABLE jobs (
  seq BIGINT PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  project TEXT NOT NULL,
  environment TEXT NOT NULL,
  runtime TEXT NOT NULL,
  state TEXT NOT NULL,
  spec TEXT NOT NULL,
  submitted_by TEXT NOT NULL,
  idempotency_key TEXT,
  request_hash TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  started_at BIGINT,
  finished_at BIGINT,
  attempts INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  fence BIGINT NOT NULL,
  worker TEXT,
  lease_token TEXT,
  lease_expires_at BIGINT,
  cancel_requested INTEGER NOT NULL,
  result TEXT,
  reason TEXT,
  exit_status INTEGER,
  log_seq BIGINT NOT NULL,
  log_base BIGINT NOT NULL,
  log_bytes BIGINT NOT NULL
);
-- A retried submit with the same key finds its job; NULL keys never collide.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (submitted_by, idempotency_key);
CREATE INDEX jobs_queue ON jobs (state, seq);
CREATE INDEX jobs_project ON jobs (project, seq);
CREATE INDEX jobs_lease ON jobs (lease_expires_at);

CREATE TABLE job_logs (
  job_id TEXT NOT NULL,
  seq BIGINT NOT NULL,
  stream TEXT NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)
);

CREATE TABLE audit_events (
  seq BIGINT PRIMARY KEY,
  at BIGINT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  outcome TEXT NOT NULL,
  reason TEXT NOT NULL,
  source TEXT NOT NULL,
  details TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);

-- The head of the audit chain: one row, updated in every append's transaction. It is the
-- serialization point of appends (PostgreSQL: SELECT … FOR UPDATE) and lets verify notice a
-- cut-off tail.
CREATE TABLE audit_head (
  id INTEGER PRIMARY KEY,
  seq BIGINT NOT NULL,
  hash TEXT NOT NULL
);

-- SQLite-only: the audit trail is append-only for anyone using Airlock's connection. Whoever
-- holds the file can drop these; the hash chain is what catches that (audit verify).
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
`,
  },
  {
    version: 2,
    name: 'audit merkle log',
    sql: `
-- The audit log as a Merkle tree (RFC 6962): every perfect subtree, level L and index i
-- covering leaves [i*2^L, (i+1)*2^L), written once. Leaf i is audit event seq i+1. Entries
-- of version 1 get their nodes when the server first starts on this version.
CREATE TABLE audit_tree (
  level INTEGER NOT NULL,
  idx BIGINT NOT NULL,
  hash BLOB NOT NULL,
  PRIMARY KEY (level, idx)
);

-- Signed checkpoints (C2SP tlog-checkpoint notes) made by the control plane, and when each
-- reached the configured sink.
CREATE TABLE audit_checkpoints (
  id BIGINT PRIMARY KEY,
  tree_size BIGINT NOT NULL,
  root_hash BLOB NOT NULL,
  made_at BIGINT NOT NULL,
  note TEXT NOT NULL,
  exported_at BIGINT
);
CREATE INDEX audit_checkpoints_size ON audit_checkpoints (tree_size);
CREATE INDEX audit_checkpoints_export ON audit_checkpoints (exported_at, id);

-- The log's identity (the checkpoints' origin line) and its checkpoint keys, public parts
-- only: the private key lives in a file of the data directory, never in the database, so a
-- copy of the database cannot sign.
CREATE TABLE audit_log_info (
  id INTEGER PRIMARY KEY,
  origin TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE audit_keys (
  verifier_key TEXT PRIMARY KEY,
  key_id TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  retired_at BIGINT
);

-- SQLite-only: stored nodes never change (the tree of a size is fixed once signed).
CREATE TRIGGER audit_tree_no_update BEFORE UPDATE ON audit_tree
BEGIN SELECT RAISE(ABORT, 'audit tree nodes are append-only'); END;
CREATE TRIGGER audit_tree_no_delete BEFORE DELETE ON audit_tree
BEGIN SELECT RAISE(ABORT, 'audit tree nodes are append-only'); END;
`,
  },
  {
    version: 3,
    name: 'audit hmac key id',
    sql: `
-- A fingerprint of the audit log's HMAC key: a replaced key (whose HMACs would no longer
-- match the log's) is noticed at start instead of silently used.
ALTER TABLE audit_log_info ADD COLUMN hmac_key_id TEXT;
`,
  },
  {
    version: 4,
    name: 'job signing keys and nonces',
    sql: `
-- Keys trusted to sign a project's jobs (public parts only). A revoked key stays, so its
-- fingerprint can never be registered for the project again.
CREATE TABLE signing_keys (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  owner TEXT NOT NULL,
  key_type TEXT NOT NULL,
  public_key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  release_key INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL,
  revoked_at BIGINT,
  revoked_by TEXT
);
CREATE UNIQUE INDEX signing_keys_project ON signing_keys (project, fingerprint);

-- Nonces of signed jobs already accepted, kept until their envelope expires: a replay is
-- refused, also after a restart.
CREATE TABLE consumed_nonces (
  fingerprint TEXT NOT NULL,
  nonce TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  consumed_at BIGINT NOT NULL,
  PRIMARY KEY (fingerprint, nonce)
);
CREATE INDEX consumed_nonces_expiry ON consumed_nonces (expires_at);
`,
  },
  {
    version: 5,
    name: 'request signing keys of tokens',
    sql: `
-- A token with a request key must sign every request (HTTP Message Signatures, RFC 9421):
-- the bearer secret alone is then not enough to use it.
ALTER TABLE tokens ADD COLUMN request_key TEXT;
`,
  },
  {
    version: 6,
    name: 'policies, profiles and job trust',
    sql: `
-- Policy sets and permission profiles as versioned documents (src/policy/documents.ts):
-- proposed, then approved by another admin, never edited or deleted afterwards.
CREATE TABLE policy_documents (
  kind TEXT NOT NULL,
  scope TEXT NOT NULL,
  version INTEGER NOT NULL,
  content TEXT NOT NULL,
  content_hash TEXT NOT NULL,
  author TEXT NOT NULL,
  rationale TEXT NOT NULL,
  mode TEXT NOT NULL,
  base_version INTEGER,
  rollback_of INTEGER,
  state TEXT NOT NULL,
  proposed_at BIGINT NOT NULL,
  decided_by TEXT,
  decided_at BIGINT,
  PRIMARY KEY (kind, scope, version)
);
CREATE INDEX policy_documents_state ON policy_documents (state, proposed_at);
-- What a document says and who wrote it is fixed once proposed; only its decision is set, once.
CREATE TRIGGER policy_documents_no_delete BEFORE DELETE ON policy_documents
BEGIN SELECT RAISE(ABORT, 'policy documents are kept for ever'); END;
CREATE TRIGGER policy_documents_fixed BEFORE UPDATE OF kind, scope, version, content, content_hash, author, rationale, mode, base_version, rollback_of, proposed_at ON policy_documents
BEGIN SELECT RAISE(ABORT, 'a policy document cannot be changed once proposed'); END;

-- The version in force for each policy set / profile, and the one rolled out in audit mode.
CREATE TABLE policy_active (
  kind TEXT NOT NULL,
  scope TEXT NOT NULL,
  enforce_version INTEGER,
  audit_version INTEGER,
  changed_at BIGINT NOT NULL,
  PRIMARY KEY (kind, scope)
);

-- Decisions of a version in audit mode: evaluated, and how many it would have denied.
CREATE TABLE policy_shadow_counts (
  kind TEXT NOT NULL,
  scope TEXT NOT NULL,
  version INTEGER NOT NULL,
  action TEXT NOT NULL,
  evaluated BIGINT NOT NULL,
  would_deny BIGINT NOT NULL,
  PRIMARY KEY (kind, scope, version, action)
);

-- Why a job was let in: signer, origin, risk, policy decision (JSON), and what the risk
-- score compares against (first run of a script, first job from an origin).
ALTER TABLE jobs ADD COLUMN trust TEXT;
ALTER TABLE jobs ADD COLUMN script_digest TEXT;
ALTER TABLE jobs ADD COLUMN origin_key TEXT;
-- What the job asked for (runtime, resources, egress, secrets) in a few bytes: risk history
-- and profile suggestions read this, never the specs (which may be megabytes each).
ALTER TABLE jobs ADD COLUMN asked TEXT;
CREATE INDEX jobs_script ON jobs (project, script_digest);
CREATE INDEX jobs_origin ON jobs (project, origin_key);
`,
  },
  {
    version: 7,
    name: 'image approvals',
    sql: `
-- Digest-pinned images an admin approved (src/policy/image-approvals.ts): policy reads
-- context.imageApproved from here at admission. A revocation keeps the row (who, when, why);
-- approving the digest again later replaces the decision (the audit log keeps every one).
CREATE TABLE image_approvals (
  digest TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  reason TEXT NOT NULL,
  approved_by TEXT NOT NULL,
  approved_at BIGINT NOT NULL,
  revoked_by TEXT,
  revoked_at BIGINT,
  revoke_reason TEXT
);
CREATE INDEX image_approvals_time ON image_approvals (approved_at);
`,
  },
];

import { createHash, createHmac } from 'node:crypto';
import type { AuditProblem, AuditVerification } from '../api/types.js';
import { AirlockError, describeError } from '../errors.js';
import type { AuditRow, CheckpointRow, Store, Tx } from '../store/store.js';
import { canonicalJson, toWellFormedText } from './canonical.js';
import { CompactRange, leafHash, nodesForAppend } from './merkle.js';
import { type NoteVerifier, openNote, parseCheckpoint, parseVerifierKey } from './note.js';

/**
 * The audit trail: an append-only log of events (who, what, when, on what, outcome, why).
 * Each entry is hash-linked to the one before it and is a leaf of a Merkle tree (RFC 6962,
 * src/audit/merkle.ts) whose signed checkpoints (checkpoints.ts) pin the whole history.
 * append() runs inside the caller's transaction, so the event, its tree nodes and the change
 * it records commit together or not at all; if the append fails, the transaction — and so
 * the action — fails (DESIGN §5.5, fail closed).
 */

export interface AuditEventInput {
  /** Principal name, "anonymous" (failed authentication) or "system". */
  readonly actor: string;
  readonly action: string;
  readonly target?: string;
  readonly outcome: AuditRow['outcome'];
  readonly reason?: string;
  /** Source address of the request; "" for the server's own events. */
  readonly source?: string;
  /** Plain JSON; values wrapped in sensitive() are recorded only as their keyed HMAC. */
  readonly details?: Readonly<Record<string, unknown>>;
}

/** An outside checkpoint to compare the log with (verify --against). */
export interface AgainstCheckpoint {
  readonly treeSize: number;
  readonly rootHash: Buffer;
}

export interface AuditLog {
  append(tx: Tx, event: AuditEventInput): Promise<AuditRow>;
  verify(store: Store, against?: AgainstCheckpoint): Promise<AuditVerification>;
  /** The keyed HMAC under which a sensitive value is recorded ("hmac-sha256:<hex>"). */
  hash(value: string): string;
}

export const GENESIS_HASH = '0'.repeat(64);
/** Bounds of what one event may carry: the log must not become a place to store bulk data. */
const MAX_FIELD_CHARS = 1024;
const MAX_DETAILS_CHARS = 16 * 1024;
const VERIFY_PAGE = 1000;

/**
 * A value that must not be readable in the log — a secret's value, a token, a personal-data
 * field — but that an operator may need to search for: it is recorded as HMAC-SHA256 under
 * the log's own key (as Vault's audit devices do), which `airlock audit hash VALUE` computes.
 * A plain hash would not do: a short secret could be found by hashing guesses offline.
 */
export class SensitiveValue {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toJSON(): string {
    return '[sensitive]';
  }
}

export function sensitive(value: string): SensitiveValue {
  return new SensitiveValue(value);
}

/**
 * An entry as a Merkle leaf: the canonical JSON (UTF-8) of every field but the hash, exactly
 * the bytes docs/audit.md describes. `hash` is SHA-256 of these bytes (the chain link) and
 * the leaf hash is SHA-256(0x00 || these bytes).
 */
export function entryBytes(row: Omit<AuditRow, 'hash'>): Buffer {
  const body = canonicalJson({
    seq: row.seq,
    at: row.at,
    actor: row.actor,
    action: row.action,
    target: row.target,
    outcome: row.outcome,
    reason: row.reason,
    source: row.source,
    details: row.details,
    prevHash: row.prevHash,
  });
  return Buffer.from(body, 'utf8');
}

/** The chain hash of an entry: SHA-256 over its bytes. */
export function entryHash(row: Omit<AuditRow, 'hash'>): string {
  return createHash('sha256').update(entryBytes(row)).digest('hex');
}

/**
 * A field as it is hashed and stored: well-formed (a lone surrogate — from a request or an
 * error message quoting one — would be stored as U+FFFD and no longer match its hash) and
 * cut by code points, never inside a surrogate pair.
 */
export function bounded(text: string): string {
  const whole = toWellFormedText(text);
  if (whole.length <= MAX_FIELD_CHARS) return whole;
  return `${Array.from(whole).slice(0, MAX_FIELD_CHARS).join('')}…`;
}

export class MerkleAuditLog implements AuditLog {
  readonly #now: () => number;
  readonly #hmacKey: Buffer | null;

  /** hmacKey: the log's HMAC key (keys.ts); without it a sensitive value refuses the append. */
  constructor(options: { now?: () => number; hmacKey?: Buffer } = {}) {
    this.#now = options.now ?? Date.now;
    this.#hmacKey = options.hmacKey ?? null;
  }

  hash(value: string): string {
    if (this.#hmacKey === null) throw new AirlockError('INTERNAL', 'the audit log has no HMAC key');
    return `hmac-sha256:${createHmac('sha256', this.#hmacKey).update(value, 'utf8').digest('hex')}`;
  }

  async append(tx: Tx, event: AuditEventInput): Promise<AuditRow> {
    try {
      const head = await tx.audit.head();
      let details = canonicalJson(this.#protect(event.details ?? {}, 0));
      if (details.length > MAX_DETAILS_CHARS)
        details = canonicalJson({ truncated: details.slice(0, MAX_DETAILS_CHARS) });
      const unsigned = {
        seq: (head?.seq ?? 0) + 1,
        at: this.#now(),
        actor: bounded(event.actor),
        action: bounded(event.action),
        target: bounded(event.target ?? ''),
        outcome: event.outcome,
        reason: bounded(event.reason ?? ''),
        source: bounded(event.source ?? ''),
        details,
        prevHash: head?.hash ?? GENESIS_HASH,
      };
      const bytes = entryBytes(unsigned);
      const row: AuditRow = { ...unsigned, hash: createHash('sha256').update(bytes).digest('hex') };
      await tx.audit.insert(row);
      await tx.audit.insertNodes(await nodesForAppend(tx.audit, row.seq - 1, leafHash(bytes)));
      await tx.audit.setHead(row.seq, row.hash);
      return row;
    } catch (error) {
      throw new AirlockError(
        'AUDIT_FAILED',
        `the audit event ${event.action} could not be written: ${describeError(error)}`,
        { cause: error },
      );
    }
  }

  /** Replaces every sensitive() value with its HMAC; plain values pass unchanged. */
  #protect(value: unknown, depth: number): unknown {
    if (value instanceof SensitiveValue) return this.hash(value.reveal());
    if (depth > 16 || value === null || typeof value !== 'object') return value;
    if (Array.isArray(value)) return value.map((item) => this.#protect(item, depth + 1));
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([key, item]) => [
        key,
        this.#protect(item, depth + 1),
      ]),
    );
  }

  /** Walks the whole log from the first entry; names the first entry that does not verify. */
  async verify(store: Store, against?: AgainstCheckpoint): Promise<AuditVerification> {
    return verifyLog(store, against);
  }
}

type Bad = { seq: number; kind: AuditProblem; reason: string };

/**
 * The full check, on any store (the API's, or an offline copy of the database). For every
 * entry: the chain link, the entry's own hash, its leaf and every tree node it completes
 * against the stored tree; at each size the log's own checkpoints (and the outside one, if
 * given) name, the root recomputed from the entries against theirs. So it finds an entry
 * changed, deleted or reordered; a tree rewritten; a tail cut off; and — given a checkpoint
 * from outside — a history rewritten consistently or a database restored from an older copy.
 *
 * It reads page by page, each page a read of its own, and yields between pages: a long log
 * must not hold the store — and every request behind it — for the whole walk. Entries never
 * change once written, so pages read at different times still form one log; the walk ends
 * at the head read together with the last (empty) page, so appends made meanwhile are
 * walked too.
 */
export async function verifyLog(
  store: Pick<Store, 'read'>,
  against?: AgainstCheckpoint,
): Promise<AuditVerification> {
  let expectedSeq = 1;
  let prevHash = GENESIS_HASH;
  const tree = new CompactRange();
  let checkpointsChecked = 0;
  let checkpointCursor = 0;
  let pending: CheckpointRow[] = [];
  const seen: { newestOwn: { treeSize: number; madeAt: number } | null } = { newestOwn: null };
  let againstMatched: boolean | null = null;
  const result = (bad: Bad | null, head: AuditVerification['head']): AuditVerification => ({
    ok: bad === null,
    entries: tree.size,
    firstBad: bad,
    head,
    treeSize: tree.size,
    rootHash: tree.root().toString('base64'),
    checkpointsChecked,
    against:
      against === undefined
        ? null
        : {
            treeSize: against.treeSize,
            rootHash: against.rootHash.toString('base64'),
            matched: againstMatched === true,
          },
  });
  // The log's own checkpoints, in order; each is compared when the walk reaches its size.
  const nextCheckpoints = async (): Promise<void> => {
    if (pending.length > 0) return;
    pending = await store.read(async (tx) => tx.audit.checkpointsAfter(checkpointCursor, VERIFY_PAGE));
    const last = pending.at(-1);
    if (last !== undefined) checkpointCursor = last.id;
  };
  // The log's own keys and origin: each stored checkpoint is compared by its *signed* note,
  // so rewriting the root column alone does not make a rewritten history pass.
  const identity = await store.read(async (tx) => ({
    keys: await tx.audit.keys(),
    info: await tx.audit.logInfo(),
  }));
  const verifiers: NoteVerifier[] = [];
  for (const key of identity.keys) {
    try {
      verifiers.push(parseVerifierKey(key.verifierKey));
    } catch {
      // A malformed key row verifies nothing; the checkpoints it signed fail below.
    }
  }
  const signedCheckpoint = (row: CheckpointRow): string | null => {
    try {
      const body = parseCheckpoint(openNote(row.note, verifiers).text);
      if (identity.info !== null && body.origin !== identity.info.origin) return 'names another log';
      if (body.treeSize !== row.treeSize || !body.rootHash.equals(row.rootHash))
        return 'differs from its own signed note';
      return null;
    } catch (error) {
      return `is not signed by the log's keys (${describeError(error)})`;
    }
  };
  const compareCheckpoints = async (): Promise<Bad | null> => {
    for (;;) {
      await nextCheckpoints();
      const next = pending[0];
      if (next === undefined || next.treeSize > tree.size) return null;
      pending.shift();
      const when = new Date(next.madeAt).toISOString();
      // Sizes only grow from one checkpoint to the next: a smaller one was inserted or rewritten.
      if (next.treeSize < tree.size)
        return {
          seq: Math.max(1, next.treeSize),
          kind: 'checkpoint-mismatch',
          reason: `checkpoint ${next.id} (${when}) covers ${next.treeSize} entries, fewer than the one before it: the checkpoints were tampered with`,
        };
      seen.newestOwn = { treeSize: next.treeSize, madeAt: next.madeAt };
      checkpointsChecked += 1;
      const problem = signedCheckpoint(next);
      if (problem !== null)
        return {
          seq: Math.max(1, next.treeSize),
          kind: 'checkpoint-mismatch',
          reason: `checkpoint ${next.id} (${when}) ${problem}: the checkpoints were rewritten`,
        };
      if (!tree.root().equals(next.rootHash))
        return {
          seq: Math.max(1, next.treeSize),
          kind: 'checkpoint-mismatch',
          reason: `the first ${next.treeSize} entries no longer match checkpoint ${next.id} signed ${when}: entries up to ${next.treeSize} were rewritten`,
        };
    }
  };
  const compareAgainst = (): Bad | null => {
    if (against === undefined || against.treeSize !== tree.size) return null;
    againstMatched = tree.root().equals(against.rootHash);
    if (againstMatched) return null;
    return {
      seq: Math.max(1, against.treeSize),
      kind: 'checkpoint-mismatch',
      reason: `the first ${against.treeSize} entries do not match the checkpoint given: the history up to entry ${against.treeSize} was rewritten (or the database forked from it after a restore)`,
    };
  };

  let bad = (await compareCheckpoints()) ?? compareAgainst();
  if (bad !== null) return result(bad, null);
  for (;;) {
    const first = expectedSeq - 1;
    const { page, head, nodes, extra } = await store.read(async (tx) => {
      const rows = await tx.audit.after(first, VERIFY_PAGE);
      // The stored nodes this page completes, level by level.
      const stored = new Map<string, Buffer>();
      const end = first + rows.length;
      // Node (L, i) is completed by leaf (i+1)·2^L − 1, so this page's are those with
      // first ≤ (i+1)·2^L − 1 < end; [first/2^L, end/2^L) holds them all.
      for (let level = 0; Math.floor(end / 2 ** level) > Math.floor(first / 2 ** level); level += 1) {
        const from = Math.floor(first / 2 ** level);
        for (const node of await tx.audit.nodes(level, from, Math.floor(end / 2 ** level)))
          stored.set(`${level}:${node.index}`, node.hash);
      }
      // At the end, what lies beyond the last entry is read in the same view as the head:
      // read later, an append in between would look like a cut tail.
      const atEnd =
        rows.length > 0
          ? null
          : {
              leaves: await tx.audit.leafCount(),
              nodesBeyond: await tx.audit.nodesBeyond(first),
              unreached: await tx.audit.checkpointsAfter(checkpointCursor, 1),
            };
      return { page: rows, head: await tx.audit.head(), nodes: stored, extra: atEnd };
    });
    for (const row of page) {
      const at = row.seq;
      if (row.seq !== expectedSeq)
        bad = {
          seq: expectedSeq,
          kind: 'entry-missing',
          reason: `entry ${expectedSeq} is missing (the next entry is ${row.seq}): entries were deleted`,
        };
      else if (row.prevHash !== prevHash)
        bad = {
          seq: at,
          kind: 'chain-broken',
          reason: `entry ${at} does not link to entry ${at - 1} (prev_hash differs): entries were deleted, reordered or rewritten`,
        };
      else if (entryHash(row) !== row.hash)
        bad = {
          seq: at,
          kind: 'entry-changed',
          reason: `entry ${at} was changed after it was written (its hash does not match its content)`,
        };
      if (bad !== null) return result(bad, null);
      for (const node of tree.push(leafHash(entryBytes(row)))) {
        const stored = nodes.get(`${node.level}:${node.index}`);
        if (stored === undefined || !stored.equals(node.hash)) {
          bad = {
            seq: at,
            kind: node.level === 0 && stored !== undefined ? 'entry-changed' : 'tree-changed',
            reason:
              stored === undefined
                ? `the Merkle tree lacks node (${node.level}, ${node.index}) completed by entry ${at}: the tree was cut or never written`
                : node.level === 0
                  ? `entry ${at} differs from the leaf stored for it: the entry was rewritten (and its chain with it)`
                  : `the Merkle tree node (${node.level}, ${node.index}) completed by entry ${at} differs from the entries: the tree was rewritten`,
          };
          return result(bad, null);
        }
      }
      prevHash = row.hash;
      expectedSeq += 1;
      bad = (await compareCheckpoints()) ?? compareAgainst();
      if (bad !== null) return result(bad, null);
    }
    if (page.length > 0) {
      await new Promise((resolve) => setImmediate(resolve));
      continue;
    }
    const lastSeq = expectedSeq - 1;
    if (extra === null) throw new Error('verifyLog: the last page was read without its end');
    const beyond = pending[0] ?? extra.unreached[0];
    if (head === null && lastSeq > 0)
      return result(
        { seq: lastSeq, kind: 'tail-cut', reason: 'the head record of the log is missing' },
        null,
      );
    if (head !== null && (head.seq !== lastSeq || head.hash !== prevHash))
      return result(
        head.seq > lastSeq
          ? {
              seq: lastSeq + 1,
              kind: 'tail-cut',
              reason: `the log ends at entry ${lastSeq} but its head records entry ${head.seq}: the tail was cut off`,
            }
          : {
              seq: head.seq,
              kind: 'chain-broken',
              reason: `the head records entry ${head.seq} with another hash than the log's last entry ${lastSeq}`,
            },
        null,
      );
    if (extra.leaves > lastSeq)
      return result(
        {
          seq: lastSeq + 1,
          kind: 'tail-cut',
          reason: `the Merkle tree has ${extra.leaves} leaves but the log ends at entry ${lastSeq}: the tail was cut off`,
        },
        null,
      );
    if (extra.nodesBeyond > 0)
      return result(
        {
          seq: lastSeq + 1,
          kind: 'tree-changed',
          reason: `the Merkle tree holds ${extra.nodesBeyond} nodes beyond its ${lastSeq} entries: they were planted (the next append would fail on them)`,
        },
        null,
      );
    if (beyond !== undefined)
      return result(
        {
          seq: lastSeq + 1,
          kind: 'tail-cut',
          reason: `the log ends at entry ${lastSeq} but its own checkpoint ${beyond.id} records ${beyond.treeSize} entries: the tail was cut off`,
        },
        null,
      );
    if (against !== undefined && against.treeSize > lastSeq) {
      const own = seen.newestOwn;
      return result(
        {
          seq: lastSeq + 1,
          kind: 'older-than-checkpoint',
          reason: `the log has ${lastSeq} entries but the checkpoint given covers ${against.treeSize}: entries ${lastSeq + 1}–${against.treeSize} are gone — the database was restored from an older copy or its tail was cut off${own === null ? '' : ` (its own newest checkpoint covers ${own.treeSize} entries, made ${new Date(own.madeAt).toISOString()})`}`,
        },
        head === null ? null : { seq: head.seq, hash: head.hash },
      );
    }
    return result(null, head === null ? null : { seq: head.seq, hash: head.hash });
  }
}

const auditedErrors = new WeakSet<object>();

/** Marks a refusal as already audited, so the API boundary does not record it twice. */
export function markAudited<T>(error: T): T {
  if (typeof error === 'object' && error !== null) auditedErrors.add(error);
  return error;
}

export function wasAudited(error: unknown): boolean {
  return typeof error === 'object' && error !== null && auditedErrors.has(error);
}

import { createHash } from 'node:crypto';
import type { AuditVerification } from '../api/types.js';
import { AirlockError, describeError } from '../errors.js';
import type { AuditRow, Store, Tx } from '../store/store.js';
import { canonicalJson, toWellFormedText } from './canonical.js';

/**
 * The audit trail: an append-only log of events (who, what, when, on what, outcome, why),
 * each entry hash-linked to the one before it. append() runs inside the caller's
 * transaction, so the event and the change it records commit together or not at all; if the
 * append fails, the transaction — and so the action — fails (DESIGN §5.5, fail closed).
 *
 * The interface is small on purpose: a later issue replaces the chain with a Merkle log
 * with signed checkpoints behind the same append/verify.
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
  readonly details?: Readonly<Record<string, unknown>>;
}

export interface AuditLog {
  append(tx: Tx, event: AuditEventInput): Promise<AuditRow>;
  verify(store: Store): Promise<AuditVerification>;
}

export const GENESIS_HASH = '0'.repeat(64);
/** Bounds of what one event may carry: the log must not become a place to store bulk data. */
const MAX_FIELD_CHARS = 1024;
const MAX_DETAILS_CHARS = 16 * 1024;
const VERIFY_PAGE = 1000;

/** The hash of an entry: SHA-256 over the canonical JSON of every field but the hash itself. */
export function entryHash(row: Omit<AuditRow, 'hash'>): string {
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
  return createHash('sha256').update(body, 'utf8').digest('hex');
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

export class HashChainAuditLog implements AuditLog {
  readonly #now: () => number;

  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  async append(tx: Tx, event: AuditEventInput): Promise<AuditRow> {
    try {
      const head = await tx.audit.head();
      let details = canonicalJson(event.details ?? {});
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
      const row: AuditRow = { ...unsigned, hash: entryHash(unsigned) };
      await tx.audit.insert(row);
      await tx.audit.setHead(row.seq, row.hash);
      return row;
    } catch (error) {
      throw new AirlockError(
        'AUDIT_FAILED',
        `the audit event ${event.action} could not be written: ${describeError(error)}`,
        {
          cause: error,
        },
      );
    }
  }

  /** Walks the whole log from the first entry; names the first entry that does not verify. */
  async verify(store: Store): Promise<AuditVerification> {
    return verifyChain(store);
  }
}

/**
 * The chain check, on any store (the API's, or an offline copy of the database). It reads
 * page by page, each page a read of its own, and yields between pages: a long log must not
 * hold the store — and every request behind it — for the whole walk. Entries never change
 * once written, so pages read at different times still form one log; the walk ends at the
 * head read together with the last (empty) page, so appends made meanwhile are walked too.
 */
export async function verifyChain(store: Pick<Store, 'read'>): Promise<AuditVerification> {
  let expectedSeq = 1;
  let prevHash = GENESIS_HASH;
  let entries = 0;
  const bad = (seq: number, reason: string): AuditVerification => ({
    ok: false,
    entries,
    firstBad: { seq, reason },
    head: null,
  });
  for (;;) {
    const { page, head } = await store.read(async (tx) => ({
      page: await tx.audit.after(expectedSeq - 1, VERIFY_PAGE),
      head: await tx.audit.head(),
    }));
    for (const row of page) {
      if (row.seq !== expectedSeq)
        return bad(
          expectedSeq,
          `entry ${expectedSeq} is missing (the next entry is ${row.seq}): entries were deleted`,
        );
      if (row.prevHash !== prevHash)
        return bad(
          row.seq,
          `entry ${row.seq} does not link to entry ${row.seq - 1} (prev_hash differs): entries were deleted, reordered or rewritten`,
        );
      if (entryHash(row) !== row.hash)
        return bad(
          row.seq,
          `entry ${row.seq} was changed after it was written (its hash does not match its content)`,
        );
      prevHash = row.hash;
      expectedSeq += 1;
      entries += 1;
    }
    if (page.length > 0) {
      await new Promise((resolve) => setImmediate(resolve));
      continue;
    }
    const lastSeq = expectedSeq - 1;
    if (head === null && lastSeq > 0) return bad(lastSeq, 'the head record of the log is missing');
    if (head !== null && (head.seq !== lastSeq || head.hash !== prevHash)) {
      return bad(
        Math.min(head.seq, lastSeq + 1),
        head.seq > lastSeq
          ? `the log ends at entry ${lastSeq} but its head records entry ${head.seq}: the tail was cut off`
          : `the head records entry ${head.seq} with another hash than the log's last entry ${lastSeq}`,
      );
    }
    return {
      ok: true,
      entries,
      firstBad: null,
      head: head === null ? null : { seq: head.seq, hash: head.hash },
    };
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

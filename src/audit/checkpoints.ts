import { randomBytes } from 'node:crypto';
import type { ConsistencyProof, InclusionProof } from '../api/types.js';
import type { Principal } from '../auth/principal.js';
import { AirlockError } from '../errors.js';
import type { Logger } from '../log.js';
import type { AuditKeyRow, CheckpointRow, Store, Tx } from '../store/store.js';
import { type AuditLog, entryBytes } from './audit-log.js';
import {
  completeRotation,
  LAST_SIGNED_FILE,
  type LastSigned,
  loadOrCreateSigningKey,
  prepareRotation,
  readLastSigned,
  type SigningKey,
  settleRotation,
  writeLastSigned,
} from './keys.js';
import { leafHash, nodesForAppend, StoredTree } from './merkle.js';
import { formatCheckpoint, type NoteSigner, rotationExtension, signNote } from './note.js';
import type { CheckpointSink } from './sinks.js';

/**
 * Signed checkpoints of the audit log: made on a schedule (when the log grew) and on
 * demand, signed with the control plane's key, stored, and exported to a sink outside the
 * system so whoever holds the database cannot rewrite history unnoticed. Also answers
 * inclusion and consistency proofs, and rotates the signing key.
 */

export interface AuditCheckpointsOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly dataDir: string;
  readonly sink: CheckpointSink | null;
  readonly logger: Logger;
  /** How often a checkpoint is made when the log grew; 0 = only on demand. */
  readonly intervalMs: number;
  /** Fingerprint of the HMAC key (keys.ts hmacKeyId); a log made with another key refuses it. */
  readonly hmacKeyId?: string;
  readonly now?: () => number;
}

const EXPORT_BATCH = 100;
const BACKFILL_BATCH = 1000;

/** Builds the tree nodes of entries written before the log was a Merkle tree (schema 1). */
export async function buildMissingTree(store: Store): Promise<number> {
  let built = 0;
  for (;;) {
    const done = await store.transaction(async (tx) => {
      const leaves = await tx.audit.leafCount();
      const rows = await tx.audit.after(leaves, BACKFILL_BATCH);
      for (const [i, row] of rows.entries()) {
        if (row.seq !== leaves + 1 + i)
          throw new AirlockError(
            'AUDIT_FAILED',
            `audit entry ${leaves + 1 + i} is missing: run airlock audit verify --database`,
          );
        await tx.audit.insertNodes(await nodesForAppend(tx.audit, row.seq - 1, leafHash(entryBytes(row))));
      }
      return rows.length;
    });
    built += done;
    if (done < BACKFILL_BATCH) return built;
  }
}

export class AuditCheckpoints {
  readonly #o: AuditCheckpointsOptions;
  readonly #now: () => number;
  readonly origin: string;
  #key: SigningKey;
  #timer: NodeJS.Timeout | null = null;
  #exporting: Promise<void> = Promise.resolve();
  /** Checkpoints and rotations one at a time: a rotation's key files and the last-signed record. */
  #signing: Promise<unknown> = Promise.resolve();
  #lastSigned: LastSigned | null;

  private constructor(
    options: AuditCheckpointsOptions,
    origin: string,
    key: SigningKey,
    lastSigned: LastSigned | null,
  ) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.origin = origin;
    this.#key = key;
    this.#lastSigned = lastSigned;
  }

  /**
   * Opens the log's checkpointing: its origin (made on the first start), the signing key
   * (settling a rotation a crash interrupted, refusing a key the log does not know), the tree
   * nodes of older entries, and a first checkpoint.
   */
  static async open(options: AuditCheckpointsOptions): Promise<AuditCheckpoints> {
    const { store, dataDir } = options;
    const now = options.now ?? Date.now;
    const { origin, keys } = await store.transaction(async (tx) => {
      let info = await tx.audit.logInfo();
      if (info === null) {
        // The origin names this log in every checkpoint: unique, so two Airlocks' checkpoints
        // can never be confused. A key name may hold no spaces and no '+'.
        info = {
          origin: `airlock-audit/${randomBytes(8).toString('hex')}`,
          createdAt: now(),
          hmacKeyId: null,
        };
        await tx.audit.setLogInfo(info.origin, info.createdAt);
      }
      if (options.hmacKeyId !== undefined) {
        // A lost or replaced HMAC key would make the log's HMACs unsearchable without a word.
        if (info.hmacKeyId === null) await tx.audit.setHmacKeyId(options.hmacKeyId);
        else if (info.hmacKeyId !== options.hmacKeyId)
          throw new AirlockError(
            'INVALID_CONFIG',
            `the audit HMAC key in ${dataDir} (id ${options.hmacKeyId}) is not the key this audit log was written with (id ${info.hmacKeyId}): restore audit-hmac.key from the backup that goes with this database`,
          );
      }
      return { origin: info.origin, keys: await tx.audit.keys() };
    });
    const current = keys.filter((k) => k.retiredAt === null).map((k) => k.verifierKey);
    await settleRotation(dataDir, origin, (verifierKey) => current.includes(verifierKey));
    const { key } = await loadOrCreateSigningKey(dataDir, origin);
    if (current.length > 0 && !current.includes(key.verifierKey))
      throw new AirlockError(
        'INVALID_CONFIG',
        `the checkpoint signing key in ${dataDir} (${key.verifierKey}) is not the key this audit log records as current (${current.join(', ')}): restore the data directory's audit-checkpoint.key from the backup that goes with this database`,
      );
    const built = await buildMissingTree(store);
    if (built > 0) options.logger.info({ entries: built }, 'built the Merkle tree of older audit entries');
    const self = new AuditCheckpoints(options, origin, key, await readLastSigned(dataDir));
    // The database must still extend what this server last signed: a rolled-back or rewritten
    // database is refused here, before the server signs anything for it.
    await store.read(async (tx) => self.#checkExtendsLastSigned(tx));
    await self.#sign(async (tx) => {
      if (current.length === 0)
        await tx.audit.insertKey({
          verifierKey: key.verifierKey,
          keyId: key.verifierKey.split('+')[1] ?? '',
          createdAt: now(),
          retiredAt: null,
        });
      return (await tx.audit.latestCheckpoint()) === null ? self.#make(tx, [key]) : null;
    });
    return self;
  }

  /** Refuses a tree that does not extend the last checkpoint this server signed. */
  async #checkExtendsLastSigned(tx: Tx): Promise<void> {
    const last = this.#lastSigned;
    if (last === null) return;
    const size = (await tx.audit.head())?.seq ?? 0;
    let root: Buffer | null = null;
    if (size >= last.treeSize) root = await new StoredTree(tx.audit).root(last.treeSize).catch(() => null);
    if (root?.equals(last.rootHash) === true) return;
    throw new AirlockError(
      'AUDIT_FAILED',
      `the audit log (${size} entries) no longer extends the last checkpoint this server signed (${last.treeSize} entries, root ${last.rootHash.toString('base64')}): the database was restored from an older copy or rewritten, and the server will not sign it. If this is a deliberate restore, move ${this.#o.dataDir}/${LAST_SIGNED_FILE} aside to sign the restored log — every witness will still see the break, as it must`,
    );
  }

  /**
   * Runs `work` (which may make a checkpoint) in a transaction, one at a time, and records a
   * checkpoint it made as the last signed one once it is committed.
   */
  #sign<T extends CheckpointRow | null>(work: (tx: Tx) => Promise<T>): Promise<T> {
    const run = this.#signing.then(async () => {
      const row = await this.#o.store.transaction(work);
      if (row !== null && (this.#lastSigned === null || row.treeSize >= this.#lastSigned.treeSize)) {
        this.#lastSigned = { treeSize: row.treeSize, rootHash: row.rootHash };
        await writeLastSigned(this.#o.dataDir, this.#lastSigned);
      }
      return row;
    });
    this.#signing = run.catch(() => undefined);
    return run;
  }

  get verifierKey(): string {
    return this.#key.verifierKey;
  }

  /** Starts the schedule: a checkpoint whenever the log grew, then an export of what is pending. */
  start(): void {
    if (this.#o.intervalMs <= 0 || this.#timer !== null) return;
    this.#timer = setInterval(() => {
      this.checkpoint({ onlyIfGrown: true }).catch((error: unknown) =>
        this.#o.logger.error({ err: error }, 'the scheduled audit checkpoint failed'),
      );
    }, this.#o.intervalMs);
    this.#timer.unref();
  }

  /** Stops the schedule, makes a last checkpoint and waits (bounded) for its export. */
  async close(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    await this.checkpoint({ onlyIfGrown: true });
    await this.#exporting;
  }

  async keys(): Promise<{ origin: string; keys: AuditKeyRow[] }> {
    return { origin: this.origin, keys: await this.#o.store.read(async (tx) => tx.audit.keys()) };
  }

  /** A new checkpoint of the whole log now (or the latest, when nothing was appended since and onlyIfGrown). */
  async checkpoint(options: { onlyIfGrown?: boolean } = {}): Promise<CheckpointRow> {
    let fresh = true;
    const row = await this.#sign(async (tx) => {
      const latest = await tx.audit.latestCheckpoint();
      const size = (await tx.audit.head())?.seq ?? 0;
      if (options.onlyIfGrown === true && latest !== null && latest.treeSize === size) {
        fresh = false;
        return latest;
      }
      return this.#make(tx, [this.#key]);
    });
    if (fresh) this.exportPending();
    return row;
  }

  async latest(): Promise<CheckpointRow> {
    const row = await this.#o.store.read(async (tx) => tx.audit.latestCheckpoint());
    if (row === null) throw new AirlockError('NOT_FOUND', 'the audit log has no checkpoint yet');
    return row;
  }

  /**
   * Replaces the signing key. The rotation is an audit event, and the checkpoint made with it
   * is signed by both the old and the new key, so a witness that trusts the old key learns the
   * new one from a note it can verify.
   */
  async rotate(who: Principal): Promise<CheckpointRow> {
    // One rotation at a time (and none during a checkpoint): the prepared key file has one name.
    const turn = this.#signing.then(() => this.#rotate(who));
    this.#signing = turn.catch(() => undefined);
    return turn;
  }

  async #rotate(who: Principal): Promise<CheckpointRow> {
    const old = this.#key;
    const next = await prepareRotation(this.#o.dataDir, this.origin);
    const row = await this.#o.store.transaction(async (tx) => {
      const at = this.#now();
      await this.#o.audit.append(tx, {
        actor: who.name,
        action: 'audit.key.rotate',
        target: `key:${next.verifierKey}`,
        outcome: 'succeeded',
        source: who.source,
        details: { retired: old.verifierKey, current: next.verifierKey },
      });
      await tx.audit.retireKey(old.verifierKey, at);
      await tx.audit.insertKey({
        verifierKey: next.verifierKey,
        keyId: next.verifierKey.split('+')[1] ?? '',
        createdAt: at,
        retiredAt: null,
      });
      // The new key is named in the signed text, so it is the old key that vouches for it.
      return this.#make(tx, [old, next], [rotationExtension(old.verifierKey, next.verifierKey)]);
    });
    await completeRotation(this.#o.dataDir);
    this.#key = next;
    this.#lastSigned = { treeSize: row.treeSize, rootHash: row.rootHash };
    await writeLastSigned(this.#o.dataDir, this.#lastSigned);
    this.exportPending();
    return row;
  }

  async #make(
    tx: Tx,
    signers: readonly NoteSigner[],
    extensions: readonly string[] = [],
  ): Promise<CheckpointRow> {
    await this.#checkExtendsLastSigned(tx);
    const size = (await tx.audit.head())?.seq ?? 0;
    const rootHash = await new StoredTree(tx.audit).root(size);
    const latest = await tx.audit.latestCheckpoint();
    const row: CheckpointRow = {
      id: (latest?.id ?? 0) + 1,
      treeSize: size,
      rootHash,
      madeAt: this.#now(),
      note: signNote(
        formatCheckpoint({ origin: this.origin, treeSize: size, rootHash }, extensions),
        signers,
      ),
      exportedAt: null,
    };
    await tx.audit.insertCheckpoint(row);
    return row;
  }

  /**
   * Copies the checkpoints not yet exported to the sink, oldest first. When one fails it is
   * kept (and logged at every round: a checkpoint the sink refuses may be a fork) and the
   * newest pending one is tried too, so one bad checkpoint never stops anchoring the log.
   * One round at a time.
   */
  exportPending(): Promise<void> {
    const sink = this.#o.sink;
    if (sink === null) return this.#exporting;
    const put = async (row: CheckpointRow): Promise<boolean> => {
      try {
        await sink.put({ treeSize: row.treeSize, note: row.note });
      } catch (error) {
        this.#o.logger.error(
          { sink: sink.description, treeSize: row.treeSize, err: error },
          'a signed audit checkpoint could not be exported; it is retried at the next round',
        );
        return false;
      }
      await this.#o.store.transaction(async (tx) => tx.audit.markExported(row.id, this.#now()));
      return true;
    };
    this.#exporting = this.#exporting
      .then(async () => {
        for (;;) {
          const batch = await this.#o.store.read(async (tx) => tx.audit.unexportedCheckpoints(EXPORT_BATCH));
          for (const row of batch) {
            if (await put(row)) continue;
            const newest = await this.#o.store.read(async (tx) => tx.audit.latestCheckpoint());
            if (newest !== null && newest.id !== row.id && newest.exportedAt === null) await put(newest);
            return;
          }
          if (batch.length < EXPORT_BATCH) return;
        }
      })
      .catch((error: unknown) => {
        // The store itself failed (or closed): nothing is lost, the next round tries again.
        this.#o.logger.error({ err: error }, 'exporting audit checkpoints failed');
      });
    return this.#exporting;
  }

  async inclusionProof(seq: number, treeSize?: number): Promise<InclusionProof> {
    return this.#o.store.read(async (tx) => {
      const size = treeSize ?? (await tx.audit.latestCheckpoint())?.treeSize ?? 0;
      const current = (await tx.audit.head())?.seq ?? 0;
      if (size > current)
        throw new AirlockError(
          'INVALID_REQUEST',
          `the log has ${current} entries, fewer than tree size ${size}`,
        );
      if (seq < 1 || seq > size)
        throw new AirlockError(
          'INVALID_REQUEST',
          `entry ${seq} is not in the tree of size ${size}${treeSize === undefined ? ' (the latest checkpoint): make a new checkpoint first' : ''}`,
        );
      const row = await tx.audit.get(seq);
      if (row === null) throw new AirlockError('NOT_FOUND', `audit entry ${seq} is missing`);
      const bytes = entryBytes(row);
      const tree = new StoredTree(tx.audit);
      return {
        seq,
        leafIndex: seq - 1,
        treeSize: size,
        entry: bytes.toString('base64'),
        leafHash: leafHash(bytes).toString('base64'),
        rootHash: (await tree.root(size)).toString('base64'),
        proof: (await tree.inclusionProof(seq - 1, size)).map((hash) => hash.toString('base64')),
      };
    });
  }

  async consistencyProof(from: number, to: number): Promise<ConsistencyProof> {
    return this.#o.store.read(async (tx) => {
      const current = (await tx.audit.head())?.seq ?? 0;
      if (from > to || to > current)
        throw new AirlockError(
          'INVALID_REQUEST',
          `a consistency proof needs 0 ≤ from ≤ to ≤ ${current} (the log's size); got from ${from}, to ${to}`,
        );
      const tree = new StoredTree(tx.audit);
      return {
        from,
        to,
        fromRoot: (await tree.root(from)).toString('base64'),
        toRoot: (await tree.root(to)).toString('base64'),
        proof: (await tree.consistencyProof(from, to)).map((hash) => hash.toString('base64')),
      };
    });
  }
}

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import type { Tx } from '../../src/store/store.js';

/**
 * The store runs one read or transaction at a time. One opened from inside another would
 * wait for itself — and every later request behind it (a policy decision taken inside a
 * transaction once hung the whole server this way). It is refused at once instead, and
 * the store goes on working.
 */
test('a read or transaction opened inside another is refused, not deadlocked', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-store-'));
  const store = SqliteStore.open({ path: join(dir, 'airlock.db') });
  try {
    await assert.rejects(
      store.transaction(async () => store.read(async (tx) => tx.tokens.count())),
      (error: unknown) => error instanceof RangeError && /inside another/.test(error.message),
    );
    await assert.rejects(
      store.read(async () => store.transaction(async (tx) => tx.tokens.count())),
      RangeError,
    );
    // Side by side (not nested) they queue as before, and the store still answers.
    const [a, b] = await Promise.all([
      store.read(async (tx) => tx.tokens.count()),
      store.transaction(async (tx) => tx.tokens.count()),
    ]);
    assert.equal(a, 0);
    assert.equal(b, 0);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

/** A transaction that writes one row (a fresh nonce). */
let nonces = 0;
const write = async (tx: Tx): Promise<boolean> => {
  nonces += 1;
  return tx.nonces.consume('fingerprint', `nonce-${nonces}`, Date.now() + 60_000, Date.now());
};

/**
 * Group commit (decision 0013): SQLite commits without syncing and the store syncs the WAL
 * itself. Nothing may be answered before the sync that covers it has finished, overlapping
 * transactions share one sync, and a failed sync stops the store.
 */
test('a transaction resolves only after the WAL sync that covers it; overlapping ones share a sync', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-store-'));
  const held: Array<(error: NodeJS.ErrnoException | null) => void> = [];
  const store = SqliteStore.open({ path: join(dir, 'airlock.db'), syncWal: (_fd, done) => held.push(done) });
  try {
    let resolved = 0;
    const first = store.transaction(write).then(() => (resolved += 1));
    for (let i = 0; i < 20 && held.length === 0; i += 1) await new Promise((r) => setImmediate(r));
    assert.equal(held.length, 1, 'one sync started');
    // Two more commit while the first sync runs: the connection is free for them.
    const later = [1, 2].map(() => store.transaction(write).then(() => (resolved += 1)));
    // A read sees those commits: it waits for them too.
    const read = store.read(async (tx) => tx.tokens.count()).then(() => (resolved += 1));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(resolved, 0, 'nothing resolved before its sync finished');
    held.shift()?.(null);
    await first;
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(resolved, 1, 'the first sync covers only the first commit');
    assert.equal(held.length, 1, 'the later commits share one sync');
    held.shift()?.(null);
    await Promise.all([...later, read]);
    assert.equal(resolved, 4);
    // A transaction that changed nothing needs no sync of its own (everything it saw is synced).
    await store.transaction(async (tx) => tx.tokens.count());
    assert.equal(held.length, 0, 'no sync for a transaction that wrote nothing');
  } finally {
    while (held.length > 0) held.shift()?.(null);
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a failed WAL sync fails the transaction and the store refuses everything after', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-store-'));
  let fail = true;
  const store = SqliteStore.open({
    path: join(dir, 'airlock.db'),
    syncWal: (_fd, done) => {
      const error: NodeJS.ErrnoException = new Error('EIO');
      error.code = 'EIO';
      setImmediate(() => done(fail ? error : null));
    },
  });
  try {
    await assert.rejects(store.transaction(write), /could not be synced to disk \(EIO\)/);
    fail = false;
    await assert.rejects(
      store.read(async (tx) => tx.tokens.count()),
      /restart the server/,
    );
    await assert.rejects(store.transaction(write), /restart the server/);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

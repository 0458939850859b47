import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';

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

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { bounded, MerkleAuditLog } from '../../src/audit/audit-log.js';
import { canonicalJson, isWellFormedText, toWellFormedText } from '../../src/audit/canonical.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';

/** The audit chain's encoding: whatever text an event carries, what is stored is what was hashed. */

/** Any text, with lone surrogates, pairs, NUL and non-ASCII mixed in on purpose. */
const anyText = (maxLength: number) =>
  fc
    .array(
      fc.oneof(fc.constantFrom('\ud800', '\udfff', '\ud83d', '\ude00', '\u{1F600}', '\0', 'é'), fc.string()),
      {
        maxLength,
      },
    )
    .map((parts) => parts.join(''));

describe('canonical JSON', () => {
  test('the same value gives the same bytes, whatever the key order', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string(), fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null))),
        (object) => {
          const reversed = Object.fromEntries(Object.entries(object).reverse());
          assert.equal(canonicalJson(object), canonicalJson(reversed));
          assert.deepEqual(JSON.parse(canonicalJson(object)), { ...object });
        },
      ),
    );
  });

  test('refuses what JSON cannot say exactly', () => {
    assert.throws(() => canonicalJson(Number.NaN), RangeError);
    assert.throws(() => canonicalJson(() => 1), TypeError);
  });
});

describe('well-formed text', () => {
  test('lone surrogates are found and replaced; pairs are kept', () => {
    assert.equal(isWellFormedText('a\u{1F600}b'), true);
    assert.equal(isWellFormedText('a\ud83d'), false);
    assert.equal(isWellFormedText('\ude00x'), false);
    assert.equal(toWellFormedText('a\ud83dz\ude00'), 'a\ufffdz\ufffd');
    fc.assert(
      fc.property(anyText(20), (text) => {
        assert.equal(isWellFormedText(toWellFormedText(text)), true);
        assert.equal(isWellFormedText(bounded(text)), true);
      }),
    );
  });

  test('a long field is cut by code points, never inside a pair', () => {
    const text = '\u{1F600}'.repeat(2000);
    const cut = bounded(text);
    assert.equal(isWellFormedText(cut), true);
    assert.ok(cut.endsWith('…'));
  });
});

describe('audit log on SQLite', () => {
  test('any text in any field — lone surrogates, NUL, long — still verifies after the round trip', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'airlock-audit-'));
    const store = SqliteStore.open({ path: join(dir, 'airlock.db') });
    try {
      const audit = new MerkleAuditLog();
      await fc.assert(
        fc.asyncProperty(
          anyText(400),
          anyText(10),
          fc.dictionary(anyText(3), anyText(5), { maxKeys: 3 }),
          async (reason, actor, details) => {
            await store.transaction(async (tx) => {
              await audit.append(tx, { actor, action: 'test', outcome: 'denied', reason, details });
            });
          },
        ),
        { numRuns: 200 },
      );
      const result = await audit.verify(store);
      assert.equal(result.ok, true, JSON.stringify(result.firstBad));
      assert.equal(result.entries, 200);
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the data directory', () => {
  test('only the data directory is closed; directories made above it stay traversable', async () => {
    const { stat } = await import('node:fs/promises');
    const dir = await mkdtemp(join(tmpdir(), 'airlock-datadir-'));
    try {
      const store = SqliteStore.open({ path: join(dir, 'var-lib-airlock', 'data', 'airlock.db') });
      await store.close();
      assert.equal((await stat(join(dir, 'var-lib-airlock'))).mode & 0o777, 0o755);
      assert.equal((await stat(join(dir, 'var-lib-airlock', 'data'))).mode & 0o777, 0o700);
      assert.equal((await stat(join(dir, 'var-lib-airlock', 'data', 'airlock.db'))).mode & 0o777, 0o600);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a directory others can write, or a database that is a link, is refused', async () => {
    const { chmod, mkdir, symlink, writeFile } = await import('node:fs/promises');
    const dir = await mkdtemp(join(tmpdir(), 'airlock-datadir-'));
    try {
      await mkdir(join(dir, 'open'));
      await chmod(join(dir, 'open'), 0o777);
      assert.throws(() => SqliteStore.open({ path: join(dir, 'open', 'airlock.db') }), /chmod 700/);
      await mkdir(join(dir, 'linked'), { mode: 0o700 });
      await writeFile(join(dir, 'elsewhere.db'), '');
      await symlink(join(dir, 'elsewhere.db'), join(dir, 'linked', 'airlock.db'));
      assert.throws(
        () => SqliteStore.open({ path: join(dir, 'linked', 'airlock.db') }),
        /STORE_FAILED|ELOOP|symbolic/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import fc from 'fast-check';
import { MerkleAuditLog } from '../../src/audit/audit-log.js';
import { AuditCheckpoints } from '../../src/audit/checkpoints.js';
import {
  loadOrCreateHmacKey,
  loadOrCreateSigningKey,
  NEXT_SIGNING_KEY_FILE,
  prepareRotation,
  SIGNING_KEY_FILE,
  settleRotation,
} from '../../src/audit/keys.js';
import {
  formatCheckpoint,
  keyIdOf,
  openNote,
  parseCheckpoint,
  parseVerifierKey,
  rawPublicKey,
  signNote,
  verifierKeyText,
} from '../../src/audit/note.js';
import { createLogger } from '../../src/log.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';

/** The audit log's key files and the signed-note format they sign. */

function signer(name: string) {
  const { privateKey } = generateKeyPairSync('ed25519');
  const publicKey = rawPublicKey(privateKey);
  return { name, privateKey, publicKey, verifier: parseVerifierKey(verifierKeyText(name, publicKey)) };
}

describe('signed notes and checkpoints', () => {
  const root = Buffer.alloc(32, 9);
  const text = formatCheckpoint({ origin: 'airlock-audit/0123456789abcdef', treeSize: 42, rootHash: root });

  test('the checkpoint body is origin, size and base64 root, each line ending in a newline', () => {
    assert.equal(text, `airlock-audit/0123456789abcdef\n42\n${root.toString('base64')}\n`);
    assert.deepEqual(parseCheckpoint(text), {
      origin: 'airlock-audit/0123456789abcdef',
      treeSize: 42,
      rootHash: root,
      extensions: [],
    });
    for (const bad of [
      'a\n01\nxx\n',
      'a\n1\n',
      `a\n-1\n${root.toString('base64')}\n`,
      `a\n1\n${root.toString('base64')}`,
    ])
      assert.throws(() => parseCheckpoint(bad), { code: 'CHECKPOINT_INVALID' });
  });

  test('key IDs follow C2SP: SHA-256(name || 0x0A || 0x01 || key)[:4]', () => {
    // Fixed key: 32 bytes of 0x01; the ID computed by hand from the definition.
    const key = Buffer.alloc(32, 1);
    const expected = createHash('sha256')
      .update(Buffer.concat([Buffer.from('example.com/log\n'), Buffer.from([1]), key]))
      .digest()
      .subarray(0, 4)
      .toString('hex');
    assert.equal(keyIdOf('example.com/log', key), expected);
    assert.equal(
      verifierKeyText('example.com/log', key),
      `example.com/log+${expected}+${Buffer.concat([Buffer.from([1]), key]).toString('base64')}`,
    );
  });

  test('a note verifies with a trusted key; unknown signers are ignored; a bad known signature rejects it', () => {
    const a = signer('log.example/a');
    const b = signer('log.example/b');
    const note = signNote(text, [a, b]);
    assert.deepEqual(openNote(note, [a.verifier]).signedBy, [a.verifier.text]);
    assert.deepEqual(openNote(note, [a.verifier, b.verifier]).signedBy.length, 2);
    const stranger = signer('log.example/c');
    assert.throws(() => openNote(note, [stranger.verifier]), {
      code: 'CHECKPOINT_INVALID',
      message: /not signed by any trusted key/,
    });
    assert.throws(() => openNote(note.replace('\n42\n', '\n43\n'), [a.verifier]), {
      code: 'CHECKPOINT_INVALID',
      message: /does not verify/,
    });
    // Another key under the same name (so another key ID) is ignored, not trusted.
    const forged = signNote(text, [{ ...stranger, name: 'log.example/a' }]);
    assert.throws(() => openNote(forged, [a.verifier]), {
      code: 'CHECKPOINT_INVALID',
      message: /not signed by any trusted key/,
    });
    // The right name and key ID with a signature by another key: rejected.
    const sig = note.split('\n').find((line) => line.startsWith('\u2014 log.example/a ')) ?? '';
    const stolenId = Buffer.from(sig.split(' ')[2] ?? '', 'base64').subarray(0, 4);
    const other = Buffer.from((forged.split('\n').at(-2) ?? '').split(' ')[2] ?? '', 'base64').subarray(4);
    const spliced = `${text}\n\u2014 log.example/a ${Buffer.concat([stolenId, other]).toString('base64')}\n`;
    assert.throws(() => openNote(spliced, [a.verifier]), {
      code: 'CHECKPOINT_INVALID',
      message: /does not verify/,
    });
  });

  test('malformed notes and verifier keys are refused, whatever the bytes', () => {
    const a = signer('log.example/a');
    for (const bad of [
      '',
      'no newline',
      'text\n',
      `text\n\n— x\n`,
      `text\n\n— a !!!\n`,
      'a\u0000\n\n— a AAAA\n',
    ])
      assert.throws(() => openNote(bad, [a.verifier]), { code: 'CHECKPOINT_INVALID' });
    for (const bad of [
      'x',
      'a+b+c',
      `a+00000000+${Buffer.alloc(33, 1).toString('base64')}`,
      'a+0000000g+AQ==',
    ])
      assert.throws(() => parseVerifierKey(bad), { code: 'CHECKPOINT_INVALID' });
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (junk) => {
        try {
          openNote(junk, [a.verifier]);
          return false;
        } catch (error) {
          return (error as { code?: string }).code === 'CHECKPOINT_INVALID';
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('key files', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'airlock-keys-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  test('made once, 0600, and the same key afterwards', async () => {
    const first = await loadOrCreateSigningKey(dir, 'log.example/x');
    assert.equal(first.created, true);
    assert.equal((await stat(join(dir, SIGNING_KEY_FILE))).mode & 0o777, 0o600);
    const again = await loadOrCreateSigningKey(dir, 'log.example/x');
    assert.equal(again.created, false);
    assert.equal(again.key.verifierKey, first.key.verifierKey);
    const hmac = await loadOrCreateHmacKey(dir);
    assert.equal(hmac.length, 32);
    assert.deepEqual(await loadOrCreateHmacKey(dir), hmac);
  });

  test('a key file others can read, or a link, is refused', async () => {
    await loadOrCreateSigningKey(dir, 'log.example/x');
    await chmod(join(dir, SIGNING_KEY_FILE), 0o644);
    await assert.rejects(loadOrCreateSigningKey(dir, 'log.example/x'), {
      code: 'INVALID_CONFIG',
      message: /chmod 600/,
    });
    await writeFile(join(dir, 'elsewhere'), 'x', { mode: 0o600 });
    await symlink(join(dir, 'elsewhere'), join(dir, 'audit-hmac.key'));
    await assert.rejects(loadOrCreateHmacKey(dir), { code: 'INVALID_CONFIG', message: /symbolic link/ });
  });

  test('a rotation interrupted by a crash is completed or discarded at the next start', async () => {
    const current = await loadOrCreateSigningKey(dir, 'log.example/x');
    const next = await prepareRotation(dir, 'log.example/x');
    // The database did not record it (crash before the commit): discarded, the old key stays.
    assert.equal(await settleRotation(dir, 'log.example/x', () => false), 'discarded');
    assert.equal(
      (await loadOrCreateSigningKey(dir, 'log.example/x')).key.verifierKey,
      current.key.verifierKey,
    );
    // The database recorded it (crash after the commit): renamed into place.
    const again = await prepareRotation(dir, 'log.example/x');
    assert.notEqual(again.verifierKey, next.verifierKey);
    assert.equal(await settleRotation(dir, 'log.example/x', (key) => key === again.verifierKey), 'completed');
    assert.equal((await loadOrCreateSigningKey(dir, 'log.example/x')).key.verifierKey, again.verifierKey);
    await assert.rejects(readFile(join(dir, NEXT_SIGNING_KEY_FILE)));
  });

  test('the server refuses an HMAC key other than the one the log was written with', async () => {
    const path = join(dir, 'data', 'airlock.db');
    const logger = createLogger('silent', 'test');
    const options = {
      audit: new MerkleAuditLog(),
      dataDir: join(dir, 'data'),
      sink: null,
      logger,
      intervalMs: 0,
    };
    let store = SqliteStore.open({ path });
    await AuditCheckpoints.open({ ...options, store, hmacKeyId: 'aaaaaaaaaaaaaaaa' });
    await store.close();
    store = SqliteStore.open({ path });
    try {
      await assert.rejects(AuditCheckpoints.open({ ...options, store, hmacKeyId: 'bbbbbbbbbbbbbbbb' }), {
        code: 'INVALID_CONFIG',
        message: /restore audit-hmac.key/,
      });
      await AuditCheckpoints.open({ ...options, store, hmacKeyId: 'aaaaaaaaaaaaaaaa' });
    } finally {
      await store.close();
    }
  });

  test('the server refuses a signing key the log does not record as current', async () => {
    const path = join(dir, 'data', 'airlock.db');
    const logger = createLogger('silent', 'test');
    let store = SqliteStore.open({ path });
    const options = {
      audit: new MerkleAuditLog(),
      dataDir: join(dir, 'data'),
      sink: null,
      logger,
      intervalMs: 0,
    };
    await AuditCheckpoints.open({ ...options, store });
    await store.close();
    // Someone swaps in a key of their own: the log would be signed by a key no witness trusts.
    await rm(join(dir, 'data', SIGNING_KEY_FILE));
    store = SqliteStore.open({ path });
    try {
      await assert.rejects(AuditCheckpoints.open({ ...options, store }), {
        code: 'INVALID_CONFIG',
        message: /not the key this audit log records as current/,
      });
    } finally {
      await store.close();
    }
  });
});

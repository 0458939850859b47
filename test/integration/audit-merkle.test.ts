import assert from 'node:assert/strict';
import { lstat, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { entryBytes, entryHash, GENESIS_HASH } from '../../src/audit/audit-log.js';
import { leafHash, nodesForAppend, verifyConsistency, verifyInclusion } from '../../src/audit/merkle.js';
import { openNote, parseCheckpoint, parseVerifierKey } from '../../src/audit/note.js';
import { verifyAuditDatabase } from '../../src/audit/offline.js';
import { startControlPlane } from '../../src/control-plane.js';
import { createLogger } from '../../src/log.js';
import { auditFromDb } from '../../src/store/sqlite/sqlite-store.js';
import { runCli } from './helpers.js';
import { call, SERVER_DEFAULTS, spec, startTestServer, type TestServer } from './server-helpers.js';

/**
 * The audit log as a Merkle log with signed checkpoints: proofs over the API, every way of
 * rewriting history that a hash chain alone misses (a consistent rewrite, a truncated tail, a
 * database restored from an older copy) caught against a checkpoint kept outside, export to
 * a sink, key rotation, the witness, and HMACs of sensitive values. Tampering is done as an
 * attacker holding the database file would: a second connection, triggers dropped.
 */

const b64 = (text: string) => Buffer.from(text, 'base64');

function openDb(server: TestServer): Database.Database {
  const db = new Database(`${server.dataDir}/airlock.db`);
  db.exec(`DROP TRIGGER IF EXISTS audit_events_no_update; DROP TRIGGER IF EXISTS audit_events_no_delete;
           DROP TRIGGER IF EXISTS audit_tree_no_update; DROP TRIGGER IF EXISTS audit_tree_no_delete;`);
  return db;
}

/**
 * A consistent rewrite: entry `seq` gets a new reason, and the chain, the head, the whole
 * Merkle tree and (when asked) the log's own checkpoints are recomputed or removed, so the
 * database agrees with itself. Only a checkpoint kept outside can tell.
 */
async function rewriteConsistently(
  server: TestServer,
  seq: number,
  dropOwnCheckpoints: boolean,
): Promise<void> {
  const db = openDb(server);
  try {
    db.prepare('UPDATE audit_events SET reason = ? WHERE seq = ?').run('nothing happened here', seq);
    const rows = (
      db.prepare('SELECT * FROM audit_events ORDER BY seq').all() as Parameters<typeof auditFromDb>[0][]
    ).map(auditFromDb);
    let prev = GENESIS_HASH;
    const nodes = new Map<string, Buffer>();
    const source = { node: (level: number, index: number) => nodes.get(`${level}:${index}`) ?? null };
    db.exec('DELETE FROM audit_tree');
    const insert = db.prepare('INSERT INTO audit_tree (level, idx, hash) VALUES (?, ?, ?)');
    const update = db.prepare('UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?');
    for (const row of rows) {
      const fixed = { ...row, prevHash: prev };
      const hash = entryHash(fixed);
      update.run(prev, hash, row.seq);
      for (const node of await nodesForAppend(source, row.seq - 1, leafHash(entryBytes(fixed)))) {
        nodes.set(`${node.level}:${node.index}`, node.hash);
        insert.run(node.level, node.index, node.hash);
      }
      prev = hash;
    }
    db.prepare('UPDATE audit_head SET hash = ? WHERE id = 1').run(prev);
    if (dropOwnCheckpoints) db.exec('DELETE FROM audit_checkpoints');
  } finally {
    db.close();
  }
}

describe('audit Merkle log over the API', () => {
  let server: TestServer;
  let verifierKey: string;
  beforeEach(async () => {
    server = await startTestServer();
    for (let i = 0; i < 5; i++)
      await server.call('POST', '/v1/jobs', server.admin, { ...spec('audit', ['echo', String(i)]) });
    verifierKey = (await server.call('GET', '/v1/audit/keys', server.admin)).body.keys[0].verifierKey;
  });
  afterEach(() => server.close());

  const checkpoint = async () => (await server.call('POST', '/v1/audit/checkpoint', server.admin)).body;

  test('a checkpoint is a signed note in the tlog-checkpoint format, covering the whole log', async () => {
    const made = await checkpoint();
    const lines = made.note.split('\n');
    const keys = (await server.call('GET', '/v1/audit/keys', server.admin)).body;
    assert.match(keys.origin, /^airlock-audit\/[0-9a-f]{16}$/);
    assert.equal(lines[0], keys.origin);
    assert.equal(lines[1], String(made.treeSize));
    assert.equal(lines[2], made.rootHash);
    assert.equal(lines[3], '');
    assert.match(lines[4], new RegExp(`^\u2014 ${keys.origin} [A-Za-z0-9+/]+=*$`));
    const opened = openNote(made.note, [parseVerifierKey(verifierKey)]);
    assert.equal(parseCheckpoint(opened.text).treeSize, made.treeSize);
    const head = (await server.call('GET', '/v1/audit/events?last=1', server.admin)).body.events[0];
    // The checkpoint request's own event is its last entry (the read above records itself after).
    assert.equal(made.treeSize, head.seq);
    assert.equal(head.action, 'audit.checkpoint');
    // A changed note fails its signature.
    assert.throws(
      () =>
        openNote(made.note.replace(`\n${made.treeSize}\n`, `\n${made.treeSize + 1}\n`), [
          parseVerifierKey(verifierKey),
        ]),
      {
        code: 'CHECKPOINT_INVALID',
      },
    );
    // Viewers may read checkpoints and keys (a witness needs no admin token); workers may not.
    const viewer = (
      await server.call('POST', '/v1/tokens', server.admin, {
        principal: 'w',
        role: 'viewer',
        projects: ['*'],
      })
    ).body.secret;
    assert.equal((await server.call('GET', '/v1/audit/checkpoint', viewer)).status, 200);
    assert.equal((await server.call('POST', '/v1/audit/checkpoint', viewer)).status, 403);
    assert.equal((await server.call('GET', '/v1/audit/proof/inclusion?seq=1', viewer)).status, 403);
    assert.equal((await server.call('GET', '/v1/audit/checkpoint', server.worker)).status, 403);
  });

  test('inclusion proofs of every entry verify against the signed root; a proof for another entry does not', async () => {
    const made = await checkpoint();
    const root = b64(made.rootHash);
    for (let seq = 1; seq <= made.treeSize; seq++) {
      const proof = (
        await server.call(
          'GET',
          `/v1/audit/proof/inclusion?seq=${seq}&treeSize=${made.treeSize}`,
          server.admin,
        )
      ).body;
      const leaf = leafHash(b64(proof.entry));
      assert.equal(JSON.parse(b64(proof.entry).toString('utf8')).seq, seq);
      assert.ok(verifyInclusion(seq - 1, made.treeSize, leaf, proof.proof.map(b64), root), `entry ${seq}`);
      if (seq > 1)
        assert.equal(verifyInclusion(seq - 2, made.treeSize, leaf, proof.proof.map(b64), root), false);
    }
    const beyond = await server.call(
      'GET',
      `/v1/audit/proof/inclusion?seq=${made.treeSize + 100}`,
      server.admin,
    );
    assert.equal(beyond.status, 400);
  });

  test('consistency proofs link every older checkpoint to the newest; a wrong size is refused', async () => {
    const first = await checkpoint();
    for (let i = 0; i < 7; i++) await server.call('POST', '/v1/jobs', server.admin, spec('audit'));
    const second = await checkpoint();
    for (let from = 0; from <= second.treeSize; from++) {
      const proof = (
        await server.call(
          'GET',
          `/v1/audit/proof/consistency?from=${from}&to=${second.treeSize}`,
          server.admin,
        )
      ).body;
      assert.ok(
        verifyConsistency(
          from,
          second.treeSize,
          proof.proof.map(b64),
          b64(proof.fromRoot),
          b64(second.rootHash),
        ),
        `from ${from}`,
      );
    }
    const proof = (
      await server.call(
        'GET',
        `/v1/audit/proof/consistency?from=${first.treeSize}&to=${second.treeSize}`,
        server.admin,
      )
    ).body;
    assert.equal(proof.fromRoot, first.rootHash);
    const hashes = proof.proof.map(b64);
    // A changed or a dropped hash is refused. (A wrong size is not always refused by the
    // proof alone: for some size pairs the proofs of (m, n) and (m, n - 1) have the same shape,
    // e.g. (8, 14) and (8, 13). The sizes are bound by the signed checkpoints they come from.)
    const changed = hashes.map((hash: Buffer, index: number) =>
      index === 0 ? Buffer.from(hash.map((byte) => byte ^ 1)) : hash,
    );
    assert.equal(
      verifyConsistency(first.treeSize, second.treeSize, changed, b64(first.rootHash), b64(second.rootHash)),
      false,
    );
    if (hashes.length > 0)
      assert.equal(
        verifyConsistency(
          first.treeSize,
          second.treeSize,
          hashes.slice(1),
          b64(first.rootHash),
          b64(second.rootHash),
        ),
        false,
      );
    const tooFar = await server.call(
      'GET',
      `/v1/audit/proof/consistency?from=1&to=${second.treeSize + 50}`,
      server.admin,
    );
    assert.equal(tooFar.status, 400);
    assert.equal(tooFar.body.error.code, 'INVALID_REQUEST');
  });

  test('a consistent rewrite passes the internal checks but not its own checkpoints, nor an outside one', async () => {
    const outside = await checkpoint();
    const against = `treeSize=${outside.treeSize}&rootHash=${encodeURIComponent(outside.rootHash)}`;
    assert.equal((await server.call('GET', `/v1/audit/verify?${against}`, server.admin)).body.ok, true);
    // Keeping the log's own checkpoints: they give it away.
    await rewriteConsistently(server, 3, false);
    let result = await verifyAuditDatabase(`${server.dataDir}/airlock.db`);
    assert.equal(result.ok, false);
    assert.equal(result.firstBad?.kind, 'checkpoint-mismatch');
    // Rewriting their root column too: each is compared by its signed note, not the column.
    const db = openDb(server);
    try {
      db.prepare('UPDATE audit_checkpoints SET root_hash = ? WHERE tree_size > 0').run(Buffer.alloc(32, 3));
    } finally {
      db.close();
    }
    result = await verifyAuditDatabase(`${server.dataDir}/airlock.db`);
    assert.equal(result.firstBad?.kind, 'checkpoint-mismatch');
    assert.match(result.firstBad?.reason ?? '', /differs from its own signed note/);
    // Dropping them too: the database agrees with itself...
    await rewriteConsistently(server, 3, true);
    result = await verifyAuditDatabase(`${server.dataDir}/airlock.db`);
    assert.equal(result.ok, true, JSON.stringify(result.firstBad));
    // ...but not with the checkpoint kept outside.
    result = await verifyAuditDatabase(`${server.dataDir}/airlock.db`, {
      treeSize: outside.treeSize,
      rootHash: b64(outside.rootHash),
    });
    assert.equal(result.ok, false);
    assert.equal(result.firstBad?.kind, 'checkpoint-mismatch');
    assert.match(result.firstBad?.reason ?? '', /rewritten/);
    const online = (await server.call('GET', `/v1/audit/verify?${against}`, server.admin)).body;
    assert.equal(online.ok, false);
    assert.equal(online.firstBad.kind, 'checkpoint-mismatch');
  });

  test('an entry rewritten with its chain, or a rewritten tree node, is named', async () => {
    // The entry and every chain hash after it are recomputed, the stored tree is not.
    const db = openDb(server);
    try {
      db.prepare("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 2").run();
      const rows = (
        db.prepare('SELECT * FROM audit_events ORDER BY seq').all() as Parameters<typeof auditFromDb>[0][]
      ).map(auditFromDb);
      let prev = GENESIS_HASH;
      for (const row of rows) {
        const hash = entryHash({ ...row, prevHash: prev });
        db.prepare('UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?').run(prev, hash, row.seq);
        prev = hash;
      }
      db.prepare('UPDATE audit_head SET hash = ? WHERE id = 1').run(prev);
    } finally {
      db.close();
    }
    let result = await verifyAuditDatabase(`${server.dataDir}/airlock.db`);
    assert.equal(result.firstBad?.kind, 'entry-changed');
    assert.equal(result.firstBad?.seq, 2);
    await rewriteConsistently(server, 1, true); // a clean, consistent state again
    const tree = openDb(server);
    try {
      tree.prepare('UPDATE audit_tree SET hash = ? WHERE level = 1 AND idx = 1').run(Buffer.alloc(32, 7));
    } finally {
      tree.close();
    }
    result = await verifyAuditDatabase(`${server.dataDir}/airlock.db`);
    assert.equal(result.firstBad?.kind, 'tree-changed');
    assert.equal(result.firstBad?.seq, 4);
  });

  test('a truncated log, and a database restored from an older copy, are named against the outside checkpoint', async () => {
    const backup = join(server.dataDir, 'older.db');
    await checkpoint();
    const db = new Database(`${server.dataDir}/airlock.db`);
    await db.backup(backup);
    db.close();
    for (let i = 0; i < 4; i++) await server.call('POST', '/v1/jobs', server.admin, spec('audit'));
    const outside = await checkpoint();
    const against = { treeSize: outside.treeSize, rootHash: b64(outside.rootHash) };
    // Restored: the older copy agrees with itself; only the outside checkpoint shows what is gone.
    assert.equal((await verifyAuditDatabase(backup)).ok, true);
    const restored = await verifyAuditDatabase(backup, against);
    assert.equal(restored.ok, false);
    assert.equal(restored.firstBad?.kind, 'older-than-checkpoint');
    assert.match(restored.firstBad?.reason ?? '', /restored from an older copy/);
    // Truncated, with the head fixed: the tree and the log's own checkpoints still say more.
    const cut = openDb(server);
    try {
      cut.prepare('DELETE FROM audit_events WHERE seq > ?').run(outside.treeSize - 3);
      const last = cut.prepare('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1').get() as {
        seq: number;
        hash: string;
      };
      cut.prepare('UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1').run(last.seq, last.hash);
    } finally {
      cut.close();
    }
    const truncated = await verifyAuditDatabase(`${server.dataDir}/airlock.db`, against);
    assert.equal(truncated.ok, false);
    assert.equal(truncated.firstBad?.kind, 'tail-cut');
  });

  test('verify over a log being written to finds nothing wrong; planted tree nodes are found', async () => {
    const writes = Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        server.call('POST', '/v1/jobs', server.admin, spec('busy', ['echo', String(i)])),
      ),
    );
    const results = [];
    for (let i = 0; i < 3; i++)
      results.push((await server.call('GET', '/v1/audit/verify', server.admin)).body);
    await writes;
    for (const result of results) assert.equal(result.ok, true, JSON.stringify(result.firstBad));
    const db = openDb(server);
    try {
      db.prepare('INSERT INTO audit_tree (level, idx, hash) VALUES (3, 1000, ?)').run(Buffer.alloc(32, 5));
    } finally {
      db.close();
    }
    const planted = await verifyAuditDatabase(`${server.dataDir}/airlock.db`);
    assert.equal(planted.firstBad?.kind, 'tree-changed');
    assert.match(planted.firstBad?.reason ?? '', /planted/);
  });

  test('the log records sensitive values only as HMACs, which audit hash finds', async () => {
    await server.call('POST', '/v1/jobs', server.admin, {
      ...spec('audit'),
      env: { API_KEY: 'hunter2-secret' },
    });
    const events = (await server.call('GET', '/v1/audit/events?last=5', server.admin)).body.events;
    const submit = events.findLast((e: { action: string }) => e.action === 'job.submit');
    assert.ok(!JSON.stringify(events).includes('hunter2-secret'));
    const hmac = (await server.call('POST', '/v1/audit/hash', server.admin, { value: 'hunter2-secret' })).body
      .hmac;
    assert.match(hmac, /^hmac-sha256:[0-9a-f]{64}$/);
    assert.equal(submit.details.env.API_KEY, hmac);
    const other = (await server.call('POST', '/v1/audit/hash', server.admin, { value: 'hunter3-secret' }))
      .body.hmac;
    assert.notEqual(other, hmac);
    // The key lives in the data directory, not in the database, readable by its owner only.
    const database = await readFile(`${server.dataDir}/airlock.db`);
    const key = (await readFile(join(server.dataDir, 'audit-hmac.key'), 'utf8')).trim();
    assert.equal(database.includes(Buffer.from(key)), false);
    assert.equal((await stat(join(server.dataDir, 'audit-hmac.key'))).mode & 0o777, 0o600);
    assert.equal((await stat(join(server.dataDir, 'audit-checkpoint.key'))).mode & 0o777, 0o600);
  });
});

describe('audit checkpoints: sink, key rotation, witness', () => {
  let server: TestServer;
  let sinkDir: string;
  beforeEach(async () => {
    sinkDir = await mkdtemp(join(tmpdir(), 'airlock-sink-'));
    server = await startTestServer({ checkpointSink: `dir:${sinkDir}`, checkpointIntervalMs: 0 });
  });
  afterEach(async () => {
    await server.close();
    await rm(sinkDir, { recursive: true, force: true });
  });

  test('checkpoints reach the sink as files that are never overwritten', async () => {
    const made = (await server.call('POST', '/v1/audit/checkpoint', server.admin)).body;
    // Exported in the background: wait (bounded) until the server records it.
    let listed = made;
    for (let i = 0; i < 100 && listed.exportedAt === null; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      listed = (await server.call('GET', '/v1/audit/checkpoint', server.admin)).body;
    }
    assert.notEqual(listed.exportedAt, null);
    assert.deepEqual(
      (await readdir(sinkDir)).sort(),
      [
        `checkpoint-${String(made.treeSize).padStart(20, '0')}.txt`,
        'checkpoint-00000000000000000000.txt',
        'latest.txt',
      ].sort(),
    );
    const name = `checkpoint-${String(made.treeSize).padStart(20, '0')}.txt`;
    assert.equal(await readFile(join(sinkDir, name), 'utf8'), made.note);
    assert.equal(await readFile(join(sinkDir, 'latest.txt'), 'utf8'), made.note);
    assert.ok((await lstat(join(sinkDir, name))).isFile());
  });

  test('key rotation: recorded, the rotation checkpoint signed by both keys, later ones by the new key only', async () => {
    const before = (await server.call('GET', '/v1/audit/keys', server.admin)).body.keys;
    const rotated = (await server.call('POST', '/v1/audit/keys/rotate', server.admin)).body;
    const after = (await server.call('GET', '/v1/audit/keys', server.admin)).body.keys;
    assert.equal(after.length, 2);
    const oldKey = parseVerifierKey(before[0].verifierKey);
    const newKey = parseVerifierKey(
      after.find((k: { retiredAt: string | null }) => k.retiredAt === null).verifierKey,
    );
    assert.notEqual(oldKey.text, newKey.text);
    assert.equal(openNote(rotated.note, [oldKey]).signedBy.length, 1);
    assert.equal(openNote(rotated.note, [newKey]).signedBy.length, 1);
    const event = (await server.call('GET', '/v1/audit/events?last=3', server.admin)).body.events.find(
      (e: { action: string }) => e.action === 'audit.key.rotate',
    );
    assert.equal(event.details.retired, oldKey.text);
    assert.equal(event.details.current, newKey.text);
    const next = (await server.call('POST', '/v1/audit/checkpoint', server.admin)).body;
    assert.throws(() => openNote(next.note, [oldKey]), { code: 'CHECKPOINT_INVALID' });
    assert.equal(openNote(next.note, [newKey]).signedBy.length, 1);
  });

  test('the witness accepts consistent checkpoints and refuses a rewritten or truncated log', async () => {
    const env = { AIRLOCK_URL: server.url, AIRLOCK_TOKEN: server.admin, HOME: sinkDir };
    const state = join(sinkDir, 'witness.json');
    await server.call('POST', '/v1/jobs', server.admin, spec('audit'));
    await server.call('POST', '/v1/audit/checkpoint', server.admin);
    let run = await runCli(['audit', 'witness', '--state', state], env);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /first checkpoint accepted/);
    const first = (await server.call('GET', '/v1/audit/checkpoint', server.admin)).body;
    await writeFile(join(sinkDir, 'first.txt'), first.note);
    for (let i = 0; i < 3; i++) await server.call('POST', '/v1/jobs', server.admin, spec('audit'));
    await server.call('POST', '/v1/audit/checkpoint', server.admin);
    run = await runCli(['audit', 'witness', '--state', state], env);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /consistent with the last one seen/);
    // prove and consistency, checked on the client against signed checkpoints.
    run = await runCli(['audit', 'prove', '2'], env);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /entry 2 is in the log/);
    run = await runCli(['audit', 'consistency', join(sinkDir, 'first.txt'), String(first.treeSize + 2)], env);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^consistent/);
    // An older checkpoint is refused: it would hide a truncation.
    run = await runCli(
      ['audit', 'witness', '--state', state, '--checkpoint', join(sinkDir, 'first.txt')],
      env,
    );
    assert.equal(run.code, 1);
    assert.match(run.stdout, /REFUSED: .*fewer than/);
    // History rewritten under the running server: it refuses to sign a tree that does not
    // extend the last checkpoint it signed.
    const seen = JSON.parse(await readFile(state, 'utf8')).checkpoint;
    await rewriteConsistently(server, 2, true);
    const refusedToSign = await server.call('POST', '/v1/audit/checkpoint', server.admin);
    assert.equal(refusedToSign.status, 500);
    assert.equal(refusedToSign.body.error.code, 'AUDIT_FAILED');
    assert.match(
      refusedToSign.body.error.message,
      /no longer extends the last checkpoint this server signed/,
    );
    // So does a restart: the record of the last signed checkpoint lives beside the key.
    await server.plane.close();
    await assert.rejects(
      startControlPlane({ config: configOf(server, sinkDir), logger: silent, version: 'test' }),
      {
        code: 'AUDIT_FAILED',
      },
    );
    // An attacker who also holds the data directory removes that record and gets a signature:
    // the witness still refuses, as the signed history is not the one it saw.
    await rm(join(server.dataDir, 'audit-checkpoint.last'));
    const restarted = await startControlPlane({
      config: configOf(server, sinkDir),
      logger: silent,
      version: 'test',
    });
    try {
      const env2 = { ...env, AIRLOCK_URL: restarted.url };
      assert.equal((await call(restarted.url, 'POST', '/v1/audit/checkpoint', server.admin)).status, 200);
      run = await runCli(['audit', 'witness', '--state', state], env2);
      assert.equal(run.code, 1, run.stdout);
      assert.match(run.stdout, /REFUSED: .*not consistent/);
      assert.equal(
        JSON.parse(await readFile(state, 'utf8')).checkpoint,
        seen,
        'a refused checkpoint is not kept',
      );
      // verify --against the checkpoint the witness kept names the rewrite.
      await writeFile(join(sinkDir, 'seen.txt'), seen);
      run = await runCli(['audit', 'verify', '--against', join(sinkDir, 'seen.txt')], env2);
      assert.equal(run.code, 1);
      assert.match(run.stdout, /checkpoint-mismatch/);
    } finally {
      await restarted.close();
    }
  });

  test('a pinned witness follows a key rotation; a key planted in the database is never trusted', async () => {
    const env = { AIRLOCK_URL: server.url, AIRLOCK_TOKEN: server.admin, HOME: sinkDir };
    const state = join(sinkDir, 'pinned.json');
    const oldKey = (await server.call('GET', '/v1/audit/keys', server.admin)).body.keys[0].verifierKey;
    let run = await runCli(['audit', 'witness', '--state', state, '--key', oldKey], env);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    // The attacker holding the database adds a key of their own and appends its signature
    // line to the newest genuine note (signature lines sign only the text, not each other).
    const { generateKeyPairSync } = await import('node:crypto');
    const { rawPublicKey, signNote, verifierKeyText } = await import('../../src/audit/note.js');
    const made = (await server.call('POST', '/v1/audit/checkpoint', server.admin)).body;
    const origin = made.note.split('\n')[0];
    const { privateKey } = generateKeyPairSync('ed25519');
    const evil = { name: origin, privateKey, publicKey: rawPublicKey(privateKey) };
    const evilKey = verifierKeyText(origin, evil.publicKey);
    const text = made.note.slice(0, made.note.lastIndexOf('\n\n') + 1);
    const evilLine = signNote(text, [evil]).slice(text.length + 1);
    const db = openDb(server);
    try {
      db.prepare(
        'INSERT INTO audit_keys (verifier_key, key_id, created_at, retired_at) VALUES (?, ?, ?, ?)',
      ).run(evilKey, evilKey.split('+')[1], Date.now(), Date.now());
      db.prepare('UPDATE audit_checkpoints SET note = ? WHERE tree_size = ?').run(
        made.note + evilLine,
        made.treeSize,
      );
    } finally {
      db.close();
    }
    run = await runCli(['audit', 'witness', '--state', state, '--key', oldKey], env);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.deepEqual(
      JSON.parse(await readFile(state, 'utf8')).keys,
      [oldKey],
      'the planted key is not trusted',
    );
    // A real rotation: the old key vouches for the new one in the signed text.
    const rotated = (await server.call('POST', '/v1/audit/keys/rotate', server.admin)).body;
    assert.match(rotated.note, /\nairlock-key-rotation \S+ \S+\n\n/);
    await server.call('POST', '/v1/jobs', server.admin, spec('audit'));
    await server.call('POST', '/v1/audit/checkpoint', server.admin); // signed by the new key only
    run = await runCli(
      ['audit', 'witness', '--state', state, '--checkpoint', await saved(rotated.note)],
      env,
    );
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const newKey = (await server.call('GET', '/v1/audit/keys', server.admin)).body.keys.find(
      (k: { retiredAt: string | null }) => k.retiredAt === null,
    ).verifierKey;
    assert.deepEqual(
      JSON.parse(await readFile(state, 'utf8')).keys,
      [newKey],
      'the old key is dropped, the new one kept',
    );
    // Still run with the old --key pinned (a cron line nobody changed): the state's keys count too.
    run = await runCli(['audit', 'witness', '--state', state, '--key', oldKey], env);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.match(run.stdout, /consistent with the last one seen/);
  });

  const saved = async (note: string): Promise<string> => {
    const path = join(sinkDir, `note-${Date.now()}-${Math.random()}.txt`);
    await writeFile(path, note);
    return path;
  };

  test('concurrent rotations are taken one at a time: one current key, the one the server signs with', async () => {
    const answers = await Promise.all(
      [1, 2, 3].map(() => server.call('POST', '/v1/audit/keys/rotate', server.admin)),
    );
    assert.deepEqual(
      answers.map((a) => a.status),
      [200, 200, 200],
    );
    const keys = (await server.call('GET', '/v1/audit/keys', server.admin)).body.keys;
    const current = keys.filter((k: { retiredAt: string | null }) => k.retiredAt === null);
    assert.equal(keys.length, 4);
    assert.equal(current.length, 1);
    const next = (await server.call('POST', '/v1/audit/checkpoint', server.admin)).body;
    assert.equal(openNote(next.note, [parseVerifierKey(current[0].verifierKey)]).signedBy.length, 1);
    const { loadOrCreateSigningKey } = await import('../../src/audit/keys.js');
    const onDisk = await loadOrCreateSigningKey(server.dataDir, next.note.split('\n')[0]);
    assert.equal(onDisk.key.verifierKey, current[0].verifierKey);
  });
});

function configOf(server: TestServer, sinkDir: string) {
  return {
    ...SERVER_DEFAULTS,
    dataDir: server.dataDir,
    checkpointSink: `dir:${sinkDir}`,
    checkpointIntervalMs: 0,
  };
}

const silent = createLogger('silent', 'test');

describe('audit checkpoints on a schedule', () => {
  test('a checkpoint follows growth on its own, and an idle log makes none', async () => {
    const sinkDir = await mkdtemp(join(tmpdir(), 'airlock-sink-'));
    const server = await startTestServer({ checkpointSink: `dir:${sinkDir}`, checkpointIntervalMs: 100 });
    try {
      await server.call('POST', '/v1/jobs', server.admin, spec('schedule'));
      const head = (await server.call('GET', '/v1/audit/events?last=1', server.admin)).body.events[0].seq;
      let latest = '';
      for (let i = 0; i < 100; i++) {
        latest = await readFile(join(sinkDir, 'latest.txt'), 'utf8').catch(() => '');
        if (Number(latest.split('\n')[1]) >= head + 1) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      // The events read above is itself the entry after `head`: covered without being asked.
      assert.ok(Number(latest.split('\n')[1]) >= head + 1, latest);
      const files = (await readdir(sinkDir)).length;
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal((await readdir(sinkDir)).length, files, 'no checkpoint while nothing is appended');
    } finally {
      await server.close();
      await rm(sinkDir, { recursive: true, force: true });
    }
  });
});

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { verifyAuditDatabase } from '../../src/audit/offline.js';
import { spec, startTestServer, type TestServer } from './server-helpers.js';

/**
 * The audit trail: every action leaves a hash-linked event in the same transaction; whoever
 * edits, deletes, reorders or cuts entries in the database file is caught by verify, which
 * names the first bad entry. Tampering is done the way an attacker holding the file would:
 * a second connection that first drops the append-only triggers.
 */

function tamper(server: TestServer, statements: string[]): void {
  const db = new Database(`${server.dataDir}/airlock.db`);
  try {
    db.exec('DROP TRIGGER IF EXISTS audit_events_no_update; DROP TRIGGER IF EXISTS audit_events_no_delete;');
    for (const sql of statements) db.exec(sql);
  } finally {
    db.close();
  }
}

describe('audit trail', () => {
  let server: TestServer;
  beforeEach(async () => {
    server = await startTestServer();
    for (let i = 0; i < 3; i++)
      await server.call('POST', '/v1/jobs', server.admin, spec('audit', ['echo', String(i)]));
    await server.call('GET', '/v1/jobs', null); // a failed login, audited too
  });
  afterEach(() => server.close());

  const verify = async () => (await server.call('GET', '/v1/audit/verify', server.admin)).body;

  test('an untouched log verifies, over the API and offline', async () => {
    const online = await verify();
    assert.equal(online.ok, true);
    assert.ok(online.entries >= 6);
    const offline = await verifyAuditDatabase(`${server.dataDir}/airlock.db`);
    assert.equal(offline.ok, true);
  });

  test('each action is recorded: who, what, on what, outcome, source', async () => {
    const events = (await server.call('GET', '/v1/audit/events?after=0&limit=1000', server.admin)).body
      .events;
    const submit = events.find((e: { action: string }) => e.action === 'job.submit');
    assert.equal(submit.actor, 'admin');
    assert.match(submit.target, /^job:job_/);
    assert.equal(submit.outcome, 'succeeded');
    assert.equal(submit.source, '127.0.0.1');
    const failed = events.find((e: { action: string }) => e.action === 'auth.failed');
    assert.equal(failed.actor, 'anonymous');
    assert.equal(failed.outcome, 'denied');
    assert.equal(failed.reason, 'no Authorization header');
  });

  test('the database refuses updates and deletes of audit events through its triggers', () => {
    const db = new Database(`${server.dataDir}/airlock.db`);
    try {
      assert.throws(() => db.exec("UPDATE audit_events SET actor = 'x' WHERE seq = 2"), /append-only/);
      assert.throws(() => db.exec('DELETE FROM audit_events WHERE seq = 2'), /append-only/);
    } finally {
      db.close();
    }
  });

  test('an edited entry is found and named', async () => {
    tamper(server, ["UPDATE audit_events SET actor = 'mallory' WHERE seq = 3"]);
    const result = await verify();
    assert.equal(result.ok, false);
    assert.equal(result.firstBad.seq, 3);
    assert.match(result.firstBad.reason, /changed after it was written/);
    const offline = await verifyAuditDatabase(`${server.dataDir}/airlock.db`);
    assert.deepEqual(offline.firstBad, result.firstBad);
  });

  test('a deleted entry is found', async () => {
    tamper(server, ['DELETE FROM audit_events WHERE seq = 4']);
    const result = await verify();
    assert.equal(result.ok, false);
    assert.equal(result.firstBad.seq, 4);
    assert.match(result.firstBad.reason, /missing/);
  });

  test('reordered entries are found', async () => {
    // Swap the contents of entries 3 and 4, keeping their positions (and their own hashes).
    tamper(server, [
      'UPDATE audit_events SET seq = -3 WHERE seq = 3',
      'UPDATE audit_events SET seq = 3 WHERE seq = 4',
      'UPDATE audit_events SET seq = 4 WHERE seq = -3',
    ]);
    const result = await verify();
    assert.equal(result.ok, false);
    assert.equal(result.firstBad.seq, 3);
  });

  test('a cut-off tail is found through the head record', async () => {
    const before = await verify();
    tamper(server, [`DELETE FROM audit_events WHERE seq >= ${before.entries - 1}`]);
    const offline = await verifyAuditDatabase(`${server.dataDir}/airlock.db`);
    assert.equal(offline.ok, false);
    assert.match(offline.firstBad?.reason ?? '', /tail was cut off/);
  });

  test('if the audit append fails, the action fails and nothing of it is kept', async () => {
    const db = new Database(`${server.dataDir}/airlock.db`);
    db.exec(
      "CREATE TRIGGER audit_full BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    );
    db.close();
    const before = await server.plane.store.read(async (tx) => tx.jobs.list({ limit: 100 }));
    const answer = await server.call('POST', '/v1/jobs', server.admin, spec('audit'));
    assert.equal(answer.status, 500);
    assert.equal(answer.body.error.code, 'AUDIT_FAILED');
    const after = await server.plane.store.read(async (tx) => tx.jobs.list({ limit: 100 }));
    assert.equal(after.length, before.length, 'the job must not exist without its audit event');
    const reopened = new Database(`${server.dataDir}/airlock.db`);
    reopened.exec('DROP TRIGGER audit_full');
    reopened.close();
  });
});

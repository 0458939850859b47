import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { RESULT_OK, spec, startTestServer, type TestServer } from './server-helpers.js';

/**
 * The HTTP API over a real socket, on a real SQLite database: validation, authentication,
 * authorization by project, idempotency, queue bounds and the worker protocol's fencing.
 * (Sandboxes are not needed here: the worker side is played by the test with a worker token.)
 */

describe('API: input validation', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ bodyLimitBytes: 64 * 1024 });
  });
  after(() => server.close());

  test('a body over the limit is answered 413 from its Content-Length, before it is read', async () => {
    const { status, body } = await server.call('POST', '/v1/jobs', server.admin, 'x'.repeat(65 * 1024));
    assert.equal(status, 413);
    assert.equal(body.error.code, 'PAYLOAD_TOO_LARGE');
  });

  test('a chunked body is cut off at the limit too', async () => {
    const huge = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 200; i++) controller.enqueue(new TextEncoder().encode('x'.repeat(1024)));
        controller.close();
      },
    });
    const response = await fetch(`${server.url}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${server.admin}`, 'content-type': 'application/json' },
      body: huge,
      duplex: 'half',
    } as RequestInit);
    assert.equal(response.status, 413);
  });

  test('deep nesting is refused before parsing', async () => {
    const { status, body } = await server.call(
      'POST',
      '/v1/jobs',
      server.admin,
      `${'['.repeat(40)}${']'.repeat(40)}`,
    );
    assert.equal(status, 400);
    assert.equal(body.error.code, 'INVALID_REQUEST');
    assert.match(body.error.message, /deeper than 32/);
  });

  test('unknown fields are refused, at the top and inside', async () => {
    for (const extra of [{ bogus: 1 }, { resources: { memoryMiB: 64, swap: 1 } }]) {
      const { status, body } = await server.call('POST', '/v1/jobs', server.admin, { ...spec(), ...extra });
      assert.equal(status, 400, JSON.stringify(extra));
      assert.equal(body.error.code, 'INVALID_REQUEST');
    }
  });

  test('invalid UTF-8 is refused, not replaced', async () => {
    const bytes = Buffer.concat([
      Buffer.from('{"version":1,"project":"web","command":["'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"]}'),
    ]);
    const { status, body } = await server.call('POST', '/v1/jobs', server.admin, bytes);
    assert.equal(status, 400);
    assert.match(body.error.message, /UTF-8/);
  });

  test('NUL bytes in strings and keys are refused', async () => {
    for (const text of [
      '{"version":1,"project":"web","command":["a\\u0000b"]}',
      '{"version":1,"project":"web","command":["a"],"env":{"A\\u0000":"x"}}',
    ]) {
      const { status, body } = await server.call('POST', '/v1/jobs', server.admin, text);
      assert.equal(status, 400, text);
      assert.match(body.error.message, /NUL/);
    }
  });

  test('lone surrogates (half characters) are refused, and cannot break the audit chain', async () => {
    for (const text of [
      '{"version":1,"project":"web","command":["\\ud800"]}',
      '{"\\udc00":1}',
      '[\u{1F600}]',
    ]) {
      const { status, body } = await server.call('POST', '/v1/jobs', server.admin, text);
      assert.equal(status, 400, text);
      assert.equal(body.error.code, 'INVALID_REQUEST');
    }
    const verify = await server.call('GET', '/v1/audit/verify', server.admin);
    assert.equal(verify.body.ok, true, JSON.stringify(verify.body.firstBad));
  });

  test('bounds: out-of-range resources, oversize arrays, bad names and a wrong content type', async () => {
    const cases: Array<[unknown, string?]> = [
      [{ ...spec(), resources: { memoryMiB: 1 } }],
      [{ ...spec(), resources: { timeoutSeconds: 10 ** 9 } }],
      [{ ...spec(), command: [] }],
      [{ ...spec(), command: Array.from({ length: 5000 }, () => 'a') }],
      [{ ...spec('Bad Project') }],
      [{ ...spec(), version: 2 }],
      [{ ...spec(), inputs: [{ path: 'a', content: 'x', contentBase64: 'eA==' }] }],
      [{ ...spec(), inputs: [{ path: '../escape', content: 'x' }] }],
    ];
    for (const [body] of cases) {
      const answer = await server.call('POST', '/v1/jobs', server.admin, body);
      assert.equal(answer.status, 400, JSON.stringify(body).slice(0, 120));
      assert.match(answer.body.error.code, /^(INVALID_REQUEST|INVALID_JOB)$/);
    }
    const form = await server.call('POST', '/v1/jobs', server.admin, 'a=b', {
      'content-type': 'application/x-www-form-urlencoded',
    });
    assert.equal(form.status, 400);
  });

  test('errors are {error:{code,message}} and unknown routes are 404', async () => {
    const { status, body } = await server.call('GET', '/v1/nothing-here', server.admin);
    assert.equal(status, 404);
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message']);
  });

  test('the OpenAPI document lists every route, served without a token', async () => {
    const { status, body } = await server.call('GET', '/v1/openapi.json', null);
    assert.equal(status, 200);
    assert.equal(body.openapi, '3.0.3');
    for (const path of [
      '/v1/jobs',
      '/v1/jobs/{id}/logs',
      '/v1/tokens',
      '/v1/audit/verify',
      '/v1/worker/claim',
    ])
      assert.ok(path in body.paths, path);
    assert.deepEqual(body.paths['/v1/jobs'].post.requestBody.content['application/json'].schema, {
      $ref: '#/components/schemas/JobSpecV1',
    });
    assert.equal(body.components.schemas.JobSpecV1.additionalProperties, false);
  });

  test('/healthz and /readyz answer without a token', async () => {
    assert.equal((await server.call('GET', '/healthz', null)).status, 200);
    assert.deepEqual((await server.call('GET', '/readyz', null)).body, { ready: true });
  });
});

describe('API: authentication and authorization', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  const token = async (
    role: string,
    projects: string[],
    extra: Record<string, unknown> = {},
  ): Promise<{ id: string; secret: string }> => {
    const { status, body } = await server.call('POST', '/v1/tokens', server.admin, {
      principal: `${role}-${projects.join('-')}`.replace('*', 'all'),
      role,
      projects,
      ...extra,
    });
    assert.equal(status, 201, JSON.stringify(body));
    return { id: body.token.id, secret: body.secret };
  };

  test('missing, malformed, unknown and wrong-secret tokens are 401 with one message', async () => {
    const wrongSecret = server.admin.replace(/_[^_]+$/, `_${'A'.repeat(43)}`);
    const messages = new Set<string>();
    for (const bearer of [null, 'nonsense', `alk_0123456789abcdef_${'a'.repeat(43)}`, wrongSecret]) {
      const { status, body } = await server.call('GET', '/v1/jobs', bearer);
      assert.equal(status, 401);
      assert.equal(body.error.code, 'UNAUTHENTICATED');
      messages.add(body.error.message);
    }
    assert.equal(messages.size, 1, 'the answer must not tell which part was wrong');
  });

  test('a revoked token is refused from then on', async () => {
    const t = await token('viewer', ['*']);
    assert.equal((await server.call('GET', '/v1/jobs', t.secret)).status, 200);
    assert.equal((await server.call('POST', `/v1/tokens/${t.id}/revoke`, server.admin)).status, 200);
    assert.equal((await server.call('GET', '/v1/jobs', t.secret)).status, 401);
  });

  test('an expired token is refused', async () => {
    const t = await token('viewer', ['*'], { expiresInSeconds: 60 });
    assert.equal((await server.call('GET', '/v1/jobs', t.secret)).status, 200);
    // Move its expiry into the past in the database (the API bounds lifetimes to at least 60 s).
    const db = (await import('better-sqlite3')).default;
    const connection = new db(`${server.dataDir}/airlock.db`);
    connection.prepare('UPDATE tokens SET expires_at = ? WHERE id = ?').run(Date.now() - 1000, t.id);
    connection.close();
    const { status } = await server.call('GET', '/v1/jobs', t.secret);
    assert.equal(status, 401);
  });

  test("another project's job answers 404; the submitter sees only its projects", async () => {
    const web = await token('submitter', ['web']);
    const api = await token('submitter', ['api']);
    const submitted = await server.call('POST', '/v1/jobs', web.secret, spec('web'));
    assert.equal(submitted.status, 201);
    const id = submitted.body.id;
    assert.equal((await server.call('GET', `/v1/jobs/${id}`, web.secret)).status, 200);
    for (const [method, path] of [
      ['GET', `/v1/jobs/${id}`],
      ['POST', `/v1/jobs/${id}/cancel`],
      ['GET', `/v1/jobs/${id}/logs`],
    ] as const) {
      const answer = await server.call(method, path, api.secret);
      assert.equal(answer.status, 404, `${method} ${path}`);
      assert.equal(answer.body.error.code, 'NOT_FOUND');
    }
    const listed = await server.call('GET', '/v1/jobs', api.secret);
    assert.equal(listed.body.jobs.length, 0);
    const refused = await server.call('POST', '/v1/jobs', api.secret, spec('web'));
    assert.equal(refused.status, 403);
  });

  test('roles: a viewer cannot submit or cancel, a worker cannot use the client API, a submitter cannot manage tokens', async () => {
    const viewer = await token('viewer', ['*']);
    assert.equal((await server.call('POST', '/v1/jobs', viewer.secret, spec())).status, 403);
    assert.equal((await server.call('GET', '/v1/jobs', server.worker)).status, 403);
    const submitter = await token('submitter', ['web']);
    assert.equal((await server.call('GET', '/v1/tokens', submitter.secret)).status, 403);
    assert.equal(
      (
        await server.call('POST', '/v1/worker/claim', submitter.secret, {
          worker: 'x',
          runtimes: ['runc'],
          waitMs: 0,
        })
      ).status,
      403,
    );
    assert.equal((await server.call('GET', '/v1/audit/verify', viewer.secret)).status, 403);
  });

  test('brute force: after 10 failures from one source, 429 with Retry-After; a valid token still works', async () => {
    const fresh = await startTestServer();
    try {
      let limited: Awaited<ReturnType<TestServer['call']>> | undefined;
      for (let i = 0; i < 15; i++) {
        const answer = await fresh.call(
          'GET',
          '/v1/jobs',
          `alk_0123456789abcdef_${String(i).padStart(43, 'x')}`,
        );
        if (answer.status === 429) {
          limited = answer;
          break;
        }
        assert.equal(answer.status, 401);
      }
      assert.ok(limited, 'no 429 within 15 failures');
      assert.equal(limited.body.error.code, 'RATE_LIMITED');
      assert.match(limited.headers.get('retry-after') ?? '', /^\d+$/);
      // A stranger's guesses must not lock out the worker or the admin on the same address.
      assert.equal((await fresh.call('GET', '/v1/jobs', fresh.admin)).status, 200);
      assert.equal((await fresh.call('GET', '/v1/jobs', 'nonsense')).status, 429);
      // The failures and the refusal are in the audit trail.
      const events = await fresh.plane.store.read(async (tx) => tx.audit.after(0, 1000));
      assert.ok(events.filter((e) => e.action === 'auth.failed').length >= 10);
      assert.equal(events.filter((e) => e.action === 'auth.rate_limited').length, 1);
    } finally {
      await fresh.close();
    }
  });

  test('the token secret is shown once: never in lists, never stored', async () => {
    const t = await token('viewer', ['web']);
    // The secret part is base64url and may itself hold "_": everything after alk_<id>_.
    const secret = /^alk_[0-9a-f]{16}_(.+)$/.exec(t.secret)?.[1] ?? '';
    assert.equal(secret.length, 43);
    const listed = await server.call('GET', '/v1/tokens', server.admin);
    assert.ok(!JSON.stringify(listed.body).includes(secret));
    const { readFile } = await import('node:fs/promises');
    const file = await readFile(`${server.dataDir}/airlock.db`);
    const wal = await readFile(`${server.dataDir}/airlock.db-wal`).catch(() => Buffer.alloc(0));
    assert.ok(!file.includes(secret) && !wal.includes(secret), 'the secret must not be in the database');
  });
});

describe('API: jobs, idempotency, queue bounds, worker fencing', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ leaseTtlMs: 1000, maxAttempts: 2, projectQueueLimit: 3 });
  });
  after(() => server.close());

  const claim = async (worker = server.worker, waitMs = 0) =>
    server.call('POST', '/v1/worker/claim', worker, {
      worker: 'test-worker',
      runtimes: ['runc', 'gvisor'],
      waitMs,
    });

  test('a retried submit with the same Idempotency-Key returns the same job; another body is 409', async () => {
    const headers = { 'idempotency-key': 'retry-1' };
    const first = await server.call('POST', '/v1/jobs', server.admin, spec('idem'), headers);
    const second = await server.call('POST', '/v1/jobs', server.admin, spec('idem'), headers);
    assert.equal(first.status, 201);
    assert.equal(second.status, 200);
    assert.equal(second.body.id, first.body.id);
    const listed = await server.call('GET', '/v1/jobs?project=idem', server.admin);
    assert.equal(listed.body.jobs.length, 1, 'no duplicate job');
    const other = await server.call('POST', '/v1/jobs', server.admin, spec('idem', ['false']), headers);
    assert.equal(other.status, 409);
    assert.equal(other.body.error.code, 'IDEMPOTENCY_KEY_REUSED');
    // Leave the queue empty for the next tests.
    await server.call('POST', `/v1/jobs/${first.body.id}/cancel`, server.admin);
  });

  test('a project may queue only so many jobs (QUEUE_FULL, 429)', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++)
      ids.push((await server.call('POST', '/v1/jobs', server.admin, spec('capped'))).body.id);
    const refused = await server.call('POST', '/v1/jobs', server.admin, spec('capped'));
    assert.equal(refused.status, 429);
    assert.equal(refused.body.error.code, 'QUEUE_FULL');
    assert.equal((await server.call('POST', '/v1/jobs', server.admin, spec('other'))).status, 201);
    for (const id of ids) await server.call('POST', `/v1/jobs/${id}/cancel`, server.admin);
    const list = await server.call('GET', '/v1/jobs?project=other', server.admin);
    for (const job of list.body.jobs) await server.call('POST', `/v1/jobs/${job.id}/cancel`, server.admin);
  });

  test('pagination walks every job once, newest first', async () => {
    for (let i = 0; i < 3; i++)
      await server.call('POST', '/v1/jobs', server.admin, spec('pages', ['echo', String(i)]));
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: {
        body: { jobs: Array<{ id: string; spec: { command: string[] } }>; nextCursor: string | null };
      } = await server.call(
        'GET',
        `/v1/jobs?project=pages&limit=2${cursor !== null ? `&cursor=${cursor}` : ''}`,
        server.admin,
      );
      seen.push(...page.body.jobs.map((job) => job.spec.command[1] ?? ''));
      cursor = page.body.nextCursor;
    } while (cursor !== null);
    assert.deepEqual(seen, ['2', '1', '0']);
    const queued = await server.call('GET', '/v1/jobs?project=pages&state=queued', server.admin);
    for (const job of queued.body.jobs) await server.call('POST', `/v1/jobs/${job.id}/cancel`, server.admin);
  });

  test('an expired lease requeues the job; the stale worker’s late report is refused; attempts run out → failed', async () => {
    const submitted = await server.call('POST', '/v1/jobs', server.admin, spec('lease'));
    const id = submitted.body.id;
    const first = await claim();
    assert.equal(first.status, 200);
    assert.equal(first.body.jobId, id);
    assert.equal(
      (await server.call('POST', `/v1/worker/jobs/${id}/start`, server.worker, { fence: first.body.fence }))
        .status,
      200,
    );
    await sleep(2500); // the lease (1 s) runs out; the expiry timer runs every second
    const requeued = await server.call('GET', `/v1/jobs/${id}`, server.admin);
    assert.equal(requeued.body.state, 'queued');
    assert.match(requeued.body.reason, /lost/);
    const second = await claim();
    assert.equal(second.body.jobId, id);
    assert.ok(second.body.fence > first.body.fence);
    const late = await server.call('POST', `/v1/worker/jobs/${id}/result`, server.worker, {
      fence: first.body.fence,
      outcome: 'completed',
      result: RESULT_OK,
      error: null,
    });
    assert.equal(late.status, 409);
    assert.equal(late.body.error.code, 'LEASE_LOST');
    await sleep(2500);
    const failed = await server.call('GET', `/v1/jobs/${id}`, server.admin);
    assert.equal(failed.body.state, 'failed');
    assert.match(failed.body.reason, /no attempt is left \(2 of 2 used\)/);
    assert.equal(failed.body.exitStatus, 125);
    const events = await server.plane.store.read(async (tx) => tx.audit.after(0, 10_000));
    assert.ok(events.some((e) => e.action === 'api.refused' && e.reason.startsWith('LEASE_LOST')));
    assert.equal(events.filter((e) => e.action === 'job.lost' && e.target === `job:${id}`).length, 2);
  });

  test('a claim that asks to start the job answers it running: two transitions, two audit events in order', async () => {
    const leasedOnly = await server.call('POST', '/v1/jobs', server.admin, spec('start-on-claim'));
    const plain = await claim();
    assert.equal(plain.body.jobId, leasedOnly.body.id);
    assert.equal(plain.body.state, 'leased');
    assert.equal(
      (await server.call('GET', `/v1/jobs/${plain.body.jobId}`, server.admin)).body.state,
      'leased',
    );
    await server.call('POST', `/v1/jobs/${plain.body.jobId}/cancel`, server.admin);

    const submitted = await server.call('POST', '/v1/jobs', server.admin, spec('start-on-claim'));
    const claimed = await server.call('POST', '/v1/worker/claim', server.worker, {
      worker: 'test-worker',
      runtimes: ['runc'],
      waitMs: 0,
      start: true,
    });
    assert.equal(claimed.status, 200);
    assert.equal(claimed.body.jobId, submitted.body.id);
    assert.equal(claimed.body.state, 'running');
    const job = await server.call('GET', `/v1/jobs/${submitted.body.id}`, server.admin);
    assert.equal(job.body.state, 'running');
    assert.equal(typeof job.body.startedAt, 'string');
    const events = await server.plane.store.read(async (tx) => tx.audit.after(0, 100_000));
    const moves = events
      .filter((e) => e.action === 'job.state' && e.target === `job:${submitted.body.id}`)
      .map((e) => JSON.parse(e.details) as { from: string; to: string })
      .map((d) => `${d.from}→${d.to}`);
    assert.deepEqual(moves, ['queued→leased', 'leased→running']);
    // A start on the running job only renews its lease.
    const start = await server.call('POST', `/v1/worker/jobs/${submitted.body.id}/start`, server.worker, {
      fence: claimed.body.fence,
    });
    assert.equal(start.status, 200);
    const done = await server.call('POST', `/v1/worker/jobs/${submitted.body.id}/result`, server.worker, {
      fence: claimed.body.fence,
      outcome: 'completed',
      result: RESULT_OK,
      error: null,
    });
    assert.deepEqual(done.body, { state: 'succeeded' });
    // Not a boolean: refused like any field out of its schema.
    const bad = await server.call('POST', '/v1/worker/claim', server.worker, {
      worker: 'test-worker',
      runtimes: ['runc'],
      waitMs: 0,
      start: 'yes',
    });
    assert.equal(bad.status, 400);
  });

  test('a lease is bound to the worker token that took it', async () => {
    const other = await server.call('POST', '/v1/tokens', server.admin, {
      principal: 'other-worker',
      role: 'worker',
      projects: ['*'],
    });
    const submitted = await server.call('POST', '/v1/jobs', server.admin, spec('bound'));
    const claimed = await claim();
    assert.equal(claimed.body.jobId, submitted.body.id);
    const foreign = await server.call(
      'POST',
      `/v1/worker/jobs/${claimed.body.jobId}/heartbeat`,
      other.body.secret,
      { fence: claimed.body.fence },
    );
    assert.equal(foreign.status, 409);
    const done = await server.call('POST', `/v1/worker/jobs/${claimed.body.jobId}/result`, server.worker, {
      fence: claimed.body.fence,
      outcome: 'completed',
      result: { ...RESULT_OK, exitCode: 3 },
      error: null,
    });
    assert.deepEqual(done.body, { state: 'failed' });
    const job = await server.call('GET', `/v1/jobs/${claimed.body.jobId}`, server.admin);
    assert.equal(job.body.exitStatus, 3);
  });

  test('logs: ordered chunks, a retried chunk is not stored twice, a gap is refused; follow streams until the end', async () => {
    const submitted = await server.call('POST', '/v1/jobs', server.admin, spec('logs'));
    const claimed = await claim();
    const id = claimed.body.jobId;
    assert.equal(id, submitted.body.id);
    const { fence } = claimed.body;
    const chunk = (seq: number, text: string) => ({
      seq,
      stream: 'stdout',
      data: Buffer.from(text).toString('base64'),
    });
    const follower = fetch(`${server.url}/v1/jobs/${id}/logs?follow=true`, {
      headers: { authorization: `Bearer ${server.admin}` },
    }).then((r) => r.text());
    await server.call('POST', `/v1/worker/jobs/${id}/start`, server.worker, { fence });
    assert.equal(
      (
        await server.call('POST', `/v1/worker/jobs/${id}/logs`, server.worker, {
          fence,
          chunks: [chunk(1, 'a'), chunk(2, 'b')],
        })
      ).status,
      200,
    );
    assert.equal(
      (
        await server.call('POST', `/v1/worker/jobs/${id}/logs`, server.worker, {
          fence,
          chunks: [chunk(2, 'b'), chunk(3, 'c')],
        })
      ).status,
      200,
    );
    const gap = await server.call('POST', `/v1/worker/jobs/${id}/logs`, server.worker, {
      fence,
      chunks: [chunk(5, 'e')],
    });
    assert.equal(gap.status, 400);
    await server.call('POST', `/v1/worker/jobs/${id}/result`, server.worker, {
      fence,
      outcome: 'completed',
      result: RESULT_OK,
      error: null,
    });
    const lines = (await follower)
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line));
    const text = lines
      .filter((line) => 'seq' in line)
      .map((line) => Buffer.from(line.data, 'base64').toString())
      .join('');
    assert.equal(text, 'abc');
    assert.deepEqual(lines.at(-1), { end: { state: 'succeeded', terminal: true, exitStatus: 0 } });
  });

  test('a follow stream woken by many chunks holds no more listeners than one wake needs', async () => {
    await server.call('POST', '/v1/jobs', server.admin, spec('many-chunks'));
    const claimed = await claim();
    const id = claimed.body.jobId;
    const { fence } = claimed.body;
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => {
      warnings.push(`${warning.name}: ${warning.message}`);
    };
    process.on('warning', onWarning);
    try {
      const follower = fetch(`${server.url}/v1/jobs/${id}/logs?follow=true`, {
        headers: { authorization: `Bearer ${server.admin}` },
      }).then((r) => r.text());
      await server.call('POST', `/v1/worker/jobs/${id}/start`, server.worker, { fence });
      // Each chunk wakes the follower once; before, each wake left a listener on its signal.
      for (let seq = 1; seq <= 30; seq += 1) {
        const stored = await server.call('POST', `/v1/worker/jobs/${id}/logs`, server.worker, {
          fence,
          chunks: [{ seq, stream: 'stdout', data: Buffer.from(`${seq}\n`).toString('base64') }],
        });
        assert.equal(stored.status, 200);
        await sleep(5);
      }
      await server.call('POST', `/v1/worker/jobs/${id}/result`, server.worker, {
        fence,
        outcome: 'completed',
        result: RESULT_OK,
        error: null,
      });
      assert.match(await follower, /"end"/);
      await sleep(50);
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(
      warnings.filter((w) => w.includes('MaxListenersExceeded')),
      [],
    );
  });

  test('cancel: a queued job ends at once; a running one is told at its next heartbeat; a finished one is 409', async () => {
    const queued = await server.call('POST', '/v1/jobs', server.admin, spec('cancel'));
    const cancelled = await server.call('POST', `/v1/jobs/${queued.body.id}/cancel`, server.admin);
    assert.equal(cancelled.body.state, 'cancelled');
    assert.equal(
      (await server.call('POST', `/v1/jobs/${queued.body.id}/cancel`, server.admin)).body.error.code,
      'JOB_FINISHED',
    );
    await server.call('POST', '/v1/jobs', server.admin, spec('cancel'));
    const claimed = await claim();
    await server.call('POST', `/v1/jobs/${claimed.body.jobId}/cancel`, server.admin);
    const beat = await server.call('POST', `/v1/worker/jobs/${claimed.body.jobId}/heartbeat`, server.worker, {
      fence: claimed.body.fence,
    });
    assert.equal(beat.body.cancel, true);
    await server.call('POST', `/v1/worker/jobs/${claimed.body.jobId}/result`, server.worker, {
      fence: claimed.body.fence,
      outcome: 'completed',
      result: { ...RESULT_OK, exitCode: null, signal: 'SIGTERM', cancelled: true },
      error: null,
    });
    assert.equal(
      (await server.call('GET', `/v1/jobs/${claimed.body.jobId}`, server.admin)).body.state,
      'cancelled',
    );
  });

  test('a long-poll claim is woken by a submit', async () => {
    const started = Date.now();
    const waiting = claim(server.worker, 10_000);
    await sleep(300);
    const submitted = await server.call('POST', '/v1/jobs', server.admin, spec('wake'));
    const claimed = await waiting;
    assert.equal(claimed.body.jobId, submitted.body.id);
    assert.ok(Date.now() - started < 5000, 'woken by the submit, not by the timeout');
    await server.call('POST', `/v1/worker/jobs/${claimed.body.jobId}/release`, server.worker, {
      fence: claimed.body.fence,
      reason: 'test',
    });
    const job = await server.call('GET', `/v1/jobs/${claimed.body.jobId}`, server.admin);
    assert.equal(job.body.state, 'queued');
    await server.call('POST', `/v1/jobs/${claimed.body.jobId}/cancel`, server.admin);
  });
});

describe('API: what one token may hold or do', () => {
  let server: TestServer;
  before(async () => {
    // A low request rate for the rate test (the default, 100/s with bursts of 1000, would
    // need more sockets at once than a CI machine may allow); the other tests stay below it.
    server = await startTestServer({}, undefined, { perSecond: 20, burst: 100 });
  });
  after(() => server.close());

  test('a worker token scoped to projects claims only their jobs', async () => {
    const scoped = await server.call('POST', '/v1/tokens', server.admin, {
      principal: 'web-worker',
      role: 'worker',
      projects: ['web'],
    });
    const secret = await server.call('POST', '/v1/jobs', server.admin, spec('secret'));
    const none = await server.call('POST', '/v1/worker/claim', scoped.body.secret, {
      worker: 'w',
      runtimes: ['runc'],
      waitMs: 0,
    });
    assert.equal(none.status, 204, 'a job of another project must not be handed out');
    const web = await server.call('POST', '/v1/jobs', server.admin, spec('web'));
    const claimed = await server.call('POST', '/v1/worker/claim', scoped.body.secret, {
      worker: 'w',
      runtimes: ['runc'],
      waitMs: 0,
    });
    assert.equal(claimed.body.jobId, web.body.id);
    await server.call('POST', `/v1/jobs/${secret.body.id}/cancel`, server.admin);
    await server.call('POST', `/v1/jobs/${web.body.id}/cancel`, server.admin);
  });

  test('open log streams per token are bounded (429 past 32)', async () => {
    const submitted = await server.call('POST', '/v1/jobs', server.admin, spec('streams'));
    const id = submitted.body.id;
    const controllers: AbortController[] = [];
    try {
      const opened: Response[] = [];
      for (let i = 0; i < 32; i++) {
        const controller = new AbortController();
        controllers.push(controller);
        opened.push(
          await fetch(`${server.url}/v1/jobs/${id}/logs?follow=true`, {
            headers: { authorization: `Bearer ${server.admin}` },
            signal: controller.signal,
          }),
        );
      }
      assert.ok(opened.every((response) => response.status === 200));
      const refused = await server.call('GET', `/v1/jobs/${id}/logs?follow=true`, server.admin);
      assert.equal(refused.status, 429);
      assert.equal(refused.body.error.code, 'RATE_LIMITED');
    } finally {
      for (const controller of controllers) controller.abort();
    }
    // Closed streams give their places back.
    await sleep(200);
    const again = await server.call('GET', `/v1/jobs/${id}/logs`, server.admin);
    assert.equal(again.status, 200);
    await server.call('POST', `/v1/jobs/${id}/cancel`, server.admin);
  });

  test('a client token past its request rate gets 429 with Retry-After; refusals are audited once a second', async () => {
    const viewer = await server.call('POST', '/v1/tokens', server.admin, {
      principal: 'busy-viewer',
      role: 'viewer',
      projects: ['*'],
    });
    const answers = await Promise.all(
      Array.from({ length: 200 }, () => server.call('GET', '/v1/whoami', viewer.body.secret)),
    );
    const limited = answers.filter((answer) => answer.status === 429);
    assert.ok(limited.length > 0, 'no 429 in 200 requests at once');
    assert.match(limited[0]?.headers.get('retry-after') ?? '', /^\d+$/);
    const events = await server.plane.store.read(async (tx) => tx.audit.last(2000));
    const refusals = events.filter((e) => e.actor === 'busy-viewer' && e.reason.startsWith('RATE_LIMITED'));
    assert.ok(
      refusals.length >= 1 && refusals.length < limited.length,
      `${refusals.length} of ${limited.length} audited`,
    );
  });
});

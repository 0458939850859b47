import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { HttpClient } from '../../src/client/http.js';
import { AirlockError } from '../../src/errors.js';
import { backoffDelay, callWithinLease, isTransient, Lease } from '../../src/worker/lease.js';
import { httpWorkerProtocol, parseClaimedJob, parseLeaseStatus } from '../../src/worker/protocol.js';

const JOB_ID = `job_${'a'.repeat(26)}`;

function claimAnswer(fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    jobId: JOB_ID,
    fence: 3,
    attempt: 1,
    leaseTtlMs: 30_000,
    leaseExpiresAt: '2030-01-01T00:00:00.000Z',
    state: 'running',
    spec: { version: 1, project: 'web', command: ['true'] },
    ...fields,
  };
}

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  body: unknown;
}

/** A tiny HTTP server answering with `answer(path)`; records what it was sent. */
async function withServer(
  answer: (url: string) => { status: number; body?: unknown },
  use: (url: string, seen: Seen[]) => Promise<void>,
): Promise<void> {
  const seen: Seen[] = [];
  const server: Server = createServer((request: IncomingMessage, response) => {
    let text = '';
    request.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
    });
    request.on('end', () => {
      seen.push({
        method: request.method ?? '',
        url: request.url ?? '',
        authorization: request.headers.authorization,
        body: text === '' ? undefined : JSON.parse(text),
      });
      const { status, body } = answer(request.url ?? '');
      response.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json' });
      response.end(body === undefined ? undefined : JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    await use(`http://127.0.0.1:${port}`, seen);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

describe('httpWorkerProtocol over a real socket', () => {
  test('claim: 204 is null, 200 is the job; the token goes in the Authorization header', async () => {
    let next = 204;
    await withServer(
      () => (next === 204 ? { status: 204 } : { status: 200, body: claimAnswer() }),
      async (url, seen) => {
        const protocol = httpWorkerProtocol(new HttpClient({ url, token: 'wkr-secret' }));
        const request = { worker: 'w1', runtimes: ['runc' as const], waitMs: 0 };
        assert.equal(await protocol.claim(request), null);
        next = 200;
        const job = await protocol.claim(request);
        assert.equal(job?.jobId, JOB_ID);
        assert.equal(job?.fence, 3);
        assert.deepEqual(seen[0], {
          method: 'POST',
          url: '/v1/worker/claim',
          authorization: 'Bearer wkr-secret',
          body: request,
        });
      },
    );
  });

  test('job calls go to /v1/worker/jobs/:id/…; 409 LEASE_LOST comes back as that code', async () => {
    await withServer(
      (path) =>
        path.endsWith('/heartbeat')
          ? { status: 409, body: { error: { code: 'LEASE_LOST', message: 'stale fence' } } }
          : { status: 200, body: { leaseExpiresAt: '2030-01-01T00:00:00Z', cancel: true } },
      async (url, seen) => {
        const protocol = httpWorkerProtocol(new HttpClient({ url, token: 't' }));
        assert.deepEqual(await protocol.start(JOB_ID, { fence: 3 }), {
          leaseExpiresAt: '2030-01-01T00:00:00Z',
          cancel: true,
        });
        await assert.rejects(protocol.heartbeat(JOB_ID, { fence: 3 }), { code: 'LEASE_LOST' });
        await protocol.release(JOB_ID, { fence: 3, reason: 'stopping' });
        assert.deepEqual(
          seen.map((entry) => entry.url),
          [
            `/v1/worker/jobs/${JOB_ID}/start`,
            `/v1/worker/jobs/${JOB_ID}/heartbeat`,
            `/v1/worker/jobs/${JOB_ID}/release`,
          ],
        );
        assert.deepEqual(seen[2]?.body, { fence: 3, reason: 'stopping' });
      },
    );
  });

  test('a job id that is not one never reaches a URL', async () => {
    const protocol = httpWorkerProtocol(new HttpClient({ url: 'http://127.0.0.1:9', token: 't' }));
    await assert.rejects(protocol.start('../../v1/tokens', { fence: 1 }), TypeError);
  });
});

describe('parsing the server answers', () => {
  test('a well-formed claim answer is accepted', () => {
    assert.equal(parseClaimedJob(claimAnswer()).jobId, JOB_ID);
  });

  const malformed: [string, Record<string, unknown>][] = [
    ['a job id with a path in it', { jobId: 'job_../../tokens' }],
    ['a fence that is not an integer', { fence: 1.5 }],
    ['a TTL too short to heartbeat in', { leaseTtlMs: 10 }],
    ['no attempt', { attempt: undefined }],
    ['a state a claim cannot answer', { state: 'queued' }],
    ['no state', { state: undefined }],
    ['a spec that is not an object', { spec: 'rm -rf /' }],
  ];
  for (const [what, fields] of malformed) {
    test(`refused: ${what}`, () => {
      assert.throws(() => parseClaimedJob(claimAnswer(fields)), { code: 'INTERNAL' });
    });
  }

  test('a lease status needs a boolean cancel', () => {
    assert.throws(() => parseLeaseStatus({ leaseExpiresAt: 'x', cancel: 'yes' }), { code: 'INTERNAL' });
    assert.throws(() => parseLeaseStatus(null), { code: 'INTERNAL' });
  });
});

describe('lease and retries', () => {
  test('transient: unreachable, unavailable, 5xx, rate limited; not: LEASE_LOST, refusals, plain errors', () => {
    for (const code of [
      'SERVER_UNREACHABLE',
      'SERVER_UNAVAILABLE',
      'STORE_FAILED',
      'INTERNAL',
      'RATE_LIMITED',
    ] as const)
      assert.equal(isTransient(new AirlockError(code, 'x')), true, code);
    for (const code of ['LEASE_LOST', 'INVALID_REQUEST', 'UNAUTHENTICATED', 'NOT_FOUND'] as const)
      assert.equal(isTransient(new AirlockError(code, 'x')), false, code);
    assert.equal(isTransient(new Error('x')), false);
  });

  test('backoff doubles up to its cap, with jitter, and honours Retry-After', () => {
    const backoff = { initialMs: 100, maxMs: 1000 };
    for (let failures = 1; failures < 40; failures += 1) {
      const ceiling = Math.min(1000, 100 * 2 ** (failures - 1));
      const delay = backoffDelay(backoff, failures);
      assert.ok(delay >= ceiling / 2 && delay <= ceiling, `${failures}: ${delay}`);
    }
    const limited = Object.assign(new AirlockError('RATE_LIMITED', 'slow down'), { retryAfterSeconds: 0.8 });
    assert.ok(backoffDelay(backoff, 1, limited) >= 800);
  });

  test('the lease is renewed from the sending time, never shortened', () => {
    let now = 1000;
    const lease = new Lease(300, now, () => now);
    now = 1200;
    assert.equal(lease.remainingMs(), 100);
    lease.renewed(1100);
    assert.equal(lease.remainingMs(), 200);
    lease.renewed(900);
    assert.equal(lease.remainingMs(), 200);
    now = 1500;
    assert.equal(lease.expired, true);
  });

  test('callWithinLease retries transient failures, and gives up before the lease runs out', async () => {
    const lease = new Lease(200, performance.now());
    let calls = 0;
    const timeouts: number[] = [];
    const started = performance.now();
    await assert.rejects(
      callWithinLease(
        async (timeoutMs) => {
          calls += 1;
          timeouts.push(timeoutMs);
          throw new AirlockError('SERVER_UNREACHABLE', 'down');
        },
        { lease, backoff: { initialMs: 10, maxMs: 20 } },
      ),
      { code: 'SERVER_UNREACHABLE' },
    );
    assert.ok(calls >= 3, `${calls} calls`);
    // Whole milliseconds: AbortSignal.timeout() throws on a fraction.
    assert.ok(
      timeouts.every((timeoutMs) => Number.isInteger(timeoutMs)),
      String(timeouts),
    );
    assert.ok(performance.now() - started < 400);
  });

  test('callWithinLease throws a refusal at once, and returns what succeeds', async () => {
    const lease = new Lease(10_000, performance.now());
    let calls = 0;
    await assert.rejects(
      callWithinLease(
        async () => {
          calls += 1;
          throw new AirlockError('LEASE_LOST', 'stale');
        },
        { lease, backoff: { initialMs: 10, maxMs: 20 } },
      ),
      { code: 'LEASE_LOST' },
    );
    assert.equal(calls, 1);
    let attempts = 0;
    const value = await callWithinLease(
      async () => {
        attempts += 1;
        if (attempts < 3) throw new AirlockError('SERVER_UNAVAILABLE', 'starting');
        return 'ok';
      },
      { lease, backoff: { initialMs: 1, maxMs: 2 } },
    );
    assert.equal(value, 'ok');
  });
});

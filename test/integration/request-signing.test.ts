import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { signRequest } from '../../src/auth/request-signature.js';
import { runCli } from './helpers.js';
import { startTestServer, type TestServer } from './server-helpers.js';

/**
 * HTTP Message Signatures (RFC 9421) for a token created with a request key: its bearer
 * secret alone is refused; a signed request passes once; a replayed, re-aimed, re-bodied,
 * stale or foreign-key request is refused; the CLI signs with AIRLOCK_REQUEST_KEY.
 */

describe('signed requests (RFC 9421)', () => {
  let server: TestServer;
  let dir: string;
  let secret: string;
  let tokenId: string;
  const keys = generateKeyPairSync('ed25519');
  const other = generateKeyPairSync('ed25519');
  const spec = { version: 1, project: 'rs', command: ['true'] };

  before(async () => {
    server = await startTestServer();
    dir = await mkdtemp(join(tmpdir(), 'airlock-rfc9421-'));
    const created = await server.call('POST', '/v1/tokens', server.admin, {
      principal: 'ci-bot',
      role: 'submitter',
      projects: ['rs'],
      requestKey: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.match(created.body.token.requestKey, /^ssh-ed25519 /);
    secret = created.body.secret;
    tokenId = created.body.token.id;
    await writeFile(
      join(dir, 'key.pem'),
      keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      {
        mode: 0o600,
      },
    );
    await writeFile(join(dir, 'spec.json'), JSON.stringify(spec));
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const signed = (
    method: string,
    path: string,
    body: unknown,
    privateKey = keys.privateKey,
    now?: number,
  ) => {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers = signRequest({
      method,
      targetUri: `${server.url}${path}`,
      body: text,
      keyId: tokenId,
      privateKey,
      ...(now !== undefined ? { now } : {}),
    });
    return { headers, text };
  };
  const send = (method: string, path: string, headers: Record<string, string>, text?: string) =>
    fetch(`${server.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${secret}`,
        ...(text !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      ...(text !== undefined ? { body: text } : {}),
    });

  test('the bearer secret alone is refused; a signed request passes, once', async () => {
    const bare = await server.call('GET', '/v1/whoami', secret);
    assert.equal(bare.status, 401);
    assert.match(bare.body.error.message, /requires signed requests/);
    const whoami = signed('GET', '/v1/whoami', undefined);
    const first = await send('GET', '/v1/whoami', whoami.headers);
    assert.equal(first.status, 200, await first.text());
    const again = await send('GET', '/v1/whoami', whoami.headers);
    assert.equal(again.status, 409);
    assert.equal(((await again.json()) as { error: { code: string } }).error.code, 'SIGNATURE_REPLAYED');
    // Tokens without a request key are not affected.
    assert.equal((await server.call('GET', '/v1/whoami', server.admin)).status, 200);
  });

  test('a changed body, another target, an old signature or another key is refused', async () => {
    const expect = async (response: Response, status: number, code: string) => {
      const text = await response.text();
      assert.equal(response.status, status, text);
      assert.equal((JSON.parse(text) as { error: { code: string } }).error.code, code);
    };
    const submit = signed('POST', '/v1/jobs', spec);
    await expect(
      await send(
        'POST',
        '/v1/jobs',
        submit.headers,
        JSON.stringify({ ...spec, command: ['sh', '-c', 'evil'] }),
      ),
      403,
      'SIGNATURE_INVALID',
    );
    const whoami = signed('GET', '/v1/whoami', undefined);
    await expect(await send('GET', '/v1/jobs', whoami.headers), 403, 'SIGNATURE_INVALID');
    const old = signed('GET', '/v1/whoami', undefined, keys.privateKey, Date.now() - 300_000);
    await expect(await send('GET', '/v1/whoami', old.headers), 403, 'SIGNATURE_EXPIRED');
    const foreign = signed('GET', '/v1/whoami', undefined, other.privateKey);
    await expect(await send('GET', '/v1/whoami', foreign.headers), 403, 'SIGNATURE_INVALID');
    // Its nonce was spent by the refused attempt: the captured original cannot be sent now.
    await expect(await send('POST', '/v1/jobs', submit.headers, submit.text), 409, 'SIGNATURE_REPLAYED');
    const fresh = signed('POST', '/v1/jobs', spec);
    const good = await send('POST', '/v1/jobs', fresh.headers, fresh.text);
    assert.equal(good.status, 201, await good.text());
    // A request refused after its signature checked (here: by the schema) spent its nonce too.
    const invalid = signed('POST', '/v1/jobs', { ...spec, unknown: 1 });
    assert.equal((await send('POST', '/v1/jobs', invalid.headers, invalid.text)).status, 400);
    await expect(await send('POST', '/v1/jobs', invalid.headers, invalid.text), 409, 'SIGNATURE_REPLAYED');
    // An Idempotency-Key the signature does not cover is refused: a captured request cannot
    // be replayed as another submission by changing or dropping it.
    const keyed = signed('POST', '/v1/jobs', spec);
    await expect(
      await send('POST', '/v1/jobs', { ...keyed.headers, 'idempotency-key': 'k-1' }, keyed.text),
      403,
      'SIGNATURE_INVALID',
    );
    // Refusals are audited.
    const events = (await server.call('GET', '/v1/audit/events?last=30', server.admin)).body.events;
    assert.ok(
      events.some(
        (e: { action: string; reason: string }) =>
          e.action === 'auth.failed' && e.reason.startsWith('SIGNATURE_INVALID'),
      ),
    );
  });

  test('the CLI signs every request with AIRLOCK_REQUEST_KEY', async () => {
    const env = { AIRLOCK_URL: server.url, AIRLOCK_TOKEN: secret, HOME: dir };
    const unsigned = await runCli(['submit', join(dir, 'spec.json')], env);
    assert.equal(unsigned.code, 125);
    assert.match(unsigned.stderr, /requires signed requests/);
    const ok = await runCli(['submit', join(dir, 'spec.json'), '--json'], {
      ...env,
      AIRLOCK_REQUEST_KEY: join(dir, 'key.pem'),
    });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).project, 'rs');
  });

  test('a Host that splices a path into the target URI is refused; a readable key file too', async () => {
    // Signed for /v1/whoami; sent to /whoami with Host "127.0.0.1:PORT/v1" — the same string
    // if the server trusted any Host.
    const { hostname: host, port } = new URL(server.url);
    const headers = signed('GET', '/v1/whoami', undefined).headers;
    const { request } = await import('node:http');
    const status = await new Promise<{ code: number; body: string }>((resolve, reject) => {
      const req = request(
        {
          host,
          port,
          path: '/whoami',
          method: 'GET',
          headers: { ...headers, authorization: `Bearer ${secret}`, host: `${host}:${port}/v1` },
        },
        (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => {
            body += chunk.toString();
          });
          res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    // Not under /v1, so no token is even looked at: the request is a plain 404, never a 200.
    assert.notEqual(status.code, 200, status.body);
    const viaV1 = await new Promise<{ code: number; body: string }>((resolve, reject) => {
      const req = request(
        {
          host,
          port,
          path: '/v1/whoami',
          method: 'GET',
          headers: {
            ...signed('GET', '/v1/whoami', undefined).headers,
            authorization: `Bearer ${secret}`,
            host: `${host}:${port}/x`,
          },
        },
        (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => {
            body += chunk.toString();
          });
          res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    assert.equal(viaV1.code, 403, viaV1.body);
    assert.match(viaV1.body, /Host header is not a host\[:port\]/);
    // The client refuses a private key file others can read.
    const loose = join(dir, 'loose.pem');
    await writeFile(loose, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), {
      mode: 0o644,
    });
    const run = await runCli(['submit', join(dir, 'spec.json')], {
      AIRLOCK_URL: server.url,
      AIRLOCK_TOKEN: secret,
      HOME: dir,
      AIRLOCK_REQUEST_KEY: loose,
    });
    assert.equal(run.code, 125);
    assert.match(run.stderr, /chmod 600/);
  });

  test('behind a proxy, AIRLOCK_PUBLIC_URL is the URI signatures cover', async () => {
    const proxied = await startTestServer({ publicUrl: 'https://airlock.example/prefix' });
    try {
      const token = (
        await proxied.call('POST', '/v1/tokens', proxied.admin, {
          principal: 'bot',
          role: 'viewer',
          projects: ['rs'],
          requestKey: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
        })
      ).body;
      const sendTo = (uri: string) =>
        fetch(`${proxied.url}/v1/whoami`, {
          headers: {
            authorization: `Bearer ${token.secret}`,
            ...signRequest({
              method: 'GET',
              targetUri: uri,
              body: undefined,
              keyId: token.token.id,
              privateKey: keys.privateKey,
            }),
          },
        });
      assert.equal((await sendTo('https://airlock.example/prefix/v1/whoami')).status, 200);
      assert.equal((await sendTo(`${proxied.url}/v1/whoami`)).status, 403);
    } finally {
      await proxied.close();
    }
  });

  test('only Ed25519 request keys, and not for worker tokens', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
      .publicKey.export({ type: 'spki', format: 'pem' })
      .toString();
    const refused = await server.call('POST', '/v1/tokens', server.admin, {
      principal: 'x',
      role: 'submitter',
      projects: ['rs'],
      requestKey: rsa,
    });
    assert.equal(refused.status, 400);
    const pem = keys.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const worker = await server.call('POST', '/v1/tokens', server.admin, {
      principal: 'w',
      role: 'worker',
      projects: ['*'],
      requestKey: pem,
    });
    assert.equal(worker.status, 400);
  });

  // Last: it locks this source's failures out for a minute.
  test('failed signatures count as failed logins: limited, and audited once a window', async () => {
    const before = (await server.call('GET', '/v1/audit/events?last=1', server.admin)).body.events[0].seq;
    const statuses: number[] = [];
    for (let i = 0; i < 15; i++) {
      const foreign = signed('GET', '/v1/whoami', undefined, other.privateKey);
      statuses.push((await send('GET', '/v1/whoami', foreign.headers)).status);
    }
    assert.ok(
      statuses.slice(-3).every((status) => status === 429),
      statuses.join(','),
    );
    const events = (await server.call('GET', `/v1/audit/events?after=${before}&limit=100`, server.admin)).body
      .events;
    const refusals = events.filter(
      (e: { action: string }) => e.action === 'auth.failed' || e.action === 'auth.rate_limited',
    );
    assert.ok(refusals.length <= 12, `${refusals.length} audit events for 15 failures`);
    // The token's holder, signing with the right key, is not locked out.
    const mine = signed('GET', '/v1/whoami', undefined);
    assert.equal((await send('GET', '/v1/whoami', mine.headers)).status, 200);
  });
});

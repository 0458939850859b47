import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { DATABASE_FILE, startControlPlane } from '../../src/control-plane.js';
import { createLogger } from '../../src/log.js';
import { DEFAULT_POLICY } from '../../src/policy/cedar-text.js';
import { ed25519Message, PAYLOAD_TYPE, payloadBytes } from '../../src/signing/envelope.js';
import { parsePublicKey } from '../../src/signing/public-key.js';
import { applyPolicy, call, SERVER_DEFAULTS, startTestServer, type TestServer } from './server-helpers.js';

/**
 * The policy decision point against a real server and database: the default policy in
 * force from the first start, each submit decided and recorded with its version and
 * deciding policies, risk and trust in the job record, prod admitted only with a release
 * key and gvisor, a policy that would lock admins out refused, audit-mode decisions on
 * reads counted, and a tampered policy refusing everything (fail closed).
 */

describe('policy decisions', () => {
  let server: TestServer;
  let bob: string;
  const release = generateKeyPairSync('ed25519');
  const plain = generateKeyPairSync('ed25519');
  const publicPem = (pair: typeof release) =>
    pair.publicKey.export({ type: 'spki', format: 'pem' }).toString();

  const signed = (pair: typeof release, spec: Record<string, unknown>) => {
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
  };
  // biome-ignore lint/suspicious/noExplicitAny: audit events are read field by field
  const lastEvent = async (match: (event: any) => boolean): Promise<any> => {
    const events = (await server.call('GET', '/v1/audit/events?last=50', server.admin)).body.events;
    return [...events].reverse().find(match);
  };

  before(async () => {
    server = await startTestServer();
    bob = (
      await server.call('POST', '/v1/tokens', server.admin, {
        principal: 'bob',
        role: 'admin',
        projects: ['*'],
      })
    ).body.secret;
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

  test('the default policy is in force from the first start, recorded in the audit log', async () => {
    const status = await server.call('GET', '/v1/policies/status', server.admin);
    assert.equal(status.status, 200, JSON.stringify(status.body));
    assert.equal(status.body.policy.enforce.version, 1);
    assert.equal(status.body.policy.enforce.author, 'system');
    const shown = await server.call('GET', '/v1/policies/document?kind=policy', server.admin);
    assert.equal(shown.body.content, DEFAULT_POLICY);
    assert.ok(await lastEvent((event) => event.action === 'policy.bootstrap'));
    // Administrative actions carry the decision that allowed them, like jobs do.
    for (const action of ['token.create', 'key.add']) {
      const event = await lastEvent((e) => e.action === action);
      assert.equal(event.details.policy.decision, 'allow', action);
      assert.equal(event.details.policy.version, 1, action);
      assert.deepEqual(event.details.policy.policies, ['role-admin'], action);
    }
  });

  test('a dev job is let in with its risk and decision in the record and the audit log', async () => {
    const spec = { version: 1, project: 'web', command: ['echo', 'risk'] };
    const first = await server.call('POST', '/v1/jobs', server.admin, spec);
    assert.equal(first.status, 201, JSON.stringify(first.body));
    assert.deepEqual(first.body.trust.risk, { score: 45, factors: ['unsigned', 'new-script'] });
    assert.equal(first.body.trust.policy.version, 1);
    assert.deepEqual(first.body.trust.policy.policies, ['role-admin']);
    assert.match(first.body.trust.scriptDigest, /^sha256:[0-9a-f]{64}$/);
    const event = await lastEvent((e) => e.action === 'job.submit' && e.target === `job:${first.body.id}`);
    assert.equal(event.details.policy.decision, 'allow');
    assert.equal(event.details.policy.version, 1);
    assert.equal(event.details.policy.hash, first.body.trust.policy.hash);
    assert.deepEqual(event.details.risk, { score: 45, factors: ['unsigned', 'new-script'] });
    // The same script again is no longer a first run.
    const second = await server.call('POST', '/v1/jobs', server.admin, spec);
    assert.deepEqual(second.body.trust.risk, { score: 30, factors: ['unsigned'] });
    // Reading it is decided and recorded too.
    assert.equal((await server.call('GET', `/v1/jobs/${second.body.id}`, server.admin)).status, 200);
    const read = await lastEvent((e) => e.action === 'job.read' && e.target === `job:${second.body.id}`);
    assert.equal(read.details.policy.decision, 'allow');
  });

  test('handing back a job for a repeated Idempotency-Key is a decided read', async () => {
    const spec = { version: 1, project: 'web', command: ['echo', 'once'] };
    const headers = { 'idempotency-key': 'policy-replay-1' };
    const first = await server.call('POST', '/v1/jobs', server.admin, spec, headers);
    const again = await server.call('POST', '/v1/jobs', server.admin, spec, headers);
    assert.equal(again.body.id, first.body.id);
    const replay = await lastEvent((e) => e.action === 'job.submit' && e.details?.replay === true);
    assert.equal(replay.details.policy.decision, 'allow');
    assert.equal(replay.target, `job:${first.body.id}`);
  });

  test("a job asking far more than the project's recent jobs scores higher", async () => {
    for (let i = 0; i < 5; i++)
      assert.equal(
        (
          await server.call('POST', '/v1/jobs', server.admin, {
            version: 1,
            project: 'hist',
            command: ['echo', String(i)],
            resources: { memoryMiB: 256 },
          })
        ).status,
        201,
      );
    const big = await server.call('POST', '/v1/jobs', server.admin, {
      version: 1,
      project: 'hist',
      command: ['echo', '0'],
      resources: { memoryMiB: 2048 },
    });
    assert.deepEqual(big.body.trust.risk, { score: 40, factors: ['unsigned', 'resources-above-history'] });
  });

  test('unsigned code outside dev is refused, and the refusal names the policy', async () => {
    const refused = await server.call('POST', '/v1/jobs', server.admin, {
      version: 1,
      project: 'web',
      environment: 'staging',
      command: ['true'],
    });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'POLICY_DENIED');
    assert.match(refused.body.error.message, /unsigned-only-in-dev/);
    const event = await lastEvent((e) => e.action === 'job.submit' && e.outcome === 'denied');
    assert.match(event.reason, /^POLICY_DENIED/);
    assert.deepEqual(event.details.policy.policies, ['unsigned-only-in-dev']);
    assert.equal(event.details.policy.version, 1);
  });

  test('prod takes a release key and gvisor, and nothing less', async () => {
    const prod = { version: 1, project: 'web', environment: 'prod', runtime: 'gvisor', command: ['true'] };
    const ok = await server.call('POST', '/v1/jobs/signed', server.admin, signed(release, prod));
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    assert.equal(ok.body.trust.signer.release, true);
    assert.deepEqual(ok.body.trust.risk.factors, ['new-key', 'new-script', 'prod']);
    const runc = await server.call(
      'POST',
      '/v1/jobs/signed',
      server.admin,
      signed(release, { ...prod, runtime: 'runc' }),
    );
    assert.equal(runc.body.error?.code, 'POLICY_DENIED');
    assert.match(runc.body.error.message, /prod-needs-gvisor/);
    const notRelease = await server.call('POST', '/v1/jobs/signed', server.admin, signed(plain, prod));
    assert.equal(notRelease.body.error?.code, 'POLICY_DENIED');
    assert.match(notRelease.body.error.message, /prod-needs-release-key/);
    const unsigned = await server.call('POST', '/v1/jobs', server.admin, prod);
    assert.equal(unsigned.body.error?.code, 'POLICY_DENIED');
  });

  test('a policy that would lock admins out of governance is refused; so is approving your own', async () => {
    const lockout = await server.call('POST', '/v1/policies/proposals', server.admin, {
      kind: 'policy',
      scope: '',
      content: '@id("only-jobs") permit (principal, action == Airlock::Action::"job.read", resource);',
      rationale: 'oops',
    });
    assert.equal(lockout.status, 400);
    assert.equal(lockout.body.error.code, 'POLICY_INVALID');
    assert.match(lockout.body.error.message, /policy\.read|policy\.propose|policy\.approve/);
    // Nor can a rule spare the name the check uses, or wait for a date to lock admins out.
    for (const rule of [
      'forbid (principal, action in [Airlock::Action::"policy.read", Airlock::Action::"policy.propose", Airlock::Action::"policy.approve"], resource) unless { principal.name == "lockout-check" };',
      'forbid (principal, action == Airlock::Action::"policy.approve", resource) when { context.time.epochSeconds > 1900000000 };',
    ]) {
      const sneaky = await server.call('POST', '/v1/policies/proposals', server.admin, {
        kind: 'policy',
        scope: '',
        content: `${DEFAULT_POLICY}\n@id("sneaky") ${rule}\n`,
        rationale: 'looks harmless',
      });
      assert.equal(sneaky.status, 400, rule);
      assert.equal(sneaky.body.error.code, 'POLICY_INVALID', rule);
    }
    // Text that would overflow the engine's parser is refused, and the engine goes on deciding.
    const deep = await server.call('POST', '/v1/policies/proposals', server.admin, {
      kind: 'policy',
      scope: '',
      content: `@id("deep") forbid (principal, action, resource) when { ${'('.repeat(120)}context.signed${')'.repeat(120)} };`,
      rationale: 'deep',
    });
    assert.equal(deep.body.error?.code, 'POLICY_INVALID');
    assert.equal((await server.call('GET', '/v1/policies/status', server.admin)).status, 200);
    assert.equal((await server.call('GET', '/readyz', null)).status, 200);
    // Names Airlock writes for itself are not for tokens.
    const system = await server.call('POST', '/v1/tokens', server.admin, {
      principal: 'system',
      role: 'admin',
      projects: ['*'],
    });
    assert.equal(system.status, 400);
    const mine = await server.call('POST', '/v1/policies/proposals', server.admin, {
      kind: 'policy',
      scope: '',
      content: `${DEFAULT_POLICY}\n@id("extra") forbid (principal, action == Airlock::Action::"job.submit", resource) when { context.project == "nope" };\n`,
      rationale: 'forbid project nope',
    });
    assert.equal(mine.status, 201, JSON.stringify(mine.body));
    const self = await server.call('POST', '/v1/policies/approve', server.admin, {
      kind: 'policy',
      scope: '',
      version: mine.body.version,
    });
    assert.equal(self.status, 403);
    assert.equal(self.body.error.code, 'SEPARATION_OF_DUTIES');
    const proposedEvent = await lastEvent((e) => e.action === 'policy.propose');
    assert.equal(proposedEvent.details.policy.decision, 'allow');
    const rejected = await server.call('POST', '/v1/policies/reject', server.admin, {
      kind: 'policy',
      scope: '',
      version: mine.body.version,
      reason: 'withdrawn',
    });
    assert.equal(rejected.body.state, 'rejected');
  });

  test('a read forbidden only by the version in audit mode is served, counted and recorded', async () => {
    const job = (
      await server.call('POST', '/v1/jobs', server.admin, { version: 1, project: 'web', command: ['true'] })
    ).body;
    const proposalVersion = await applyPolicy(server, server.admin, bob, {
      kind: 'policy',
      scope: '',
      mode: 'audit',
      content: `${DEFAULT_POLICY}\n@id("no-web-reads") forbid (principal, action == Airlock::Action::"job.read", resource in Airlock::Project::"web");\n`,
      rationale: 'try: nobody reads web jobs',
    });
    const read = await server.call('GET', `/v1/jobs/${job.id}`, server.admin);
    assert.equal(read.status, 200, 'audit mode refuses nothing');
    const event = await lastEvent((e) => e.action === 'job.read' && e.target === `job:${job.id}`);
    assert.equal(event.details.policy.decision, 'allow');
    assert.equal(event.details.policy.audit.decision, 'deny');
    assert.deepEqual(event.details.policy.audit.policies, ['no-web-reads']);
    const status = (await server.call('GET', '/v1/policies/status', server.admin)).body;
    assert.equal(status.policy.audit.version, proposalVersion);
    const reads = status.policy.audit.counts.find((count: { action: string }) => count.action === 'job.read');
    assert.ok(
      reads.wouldDeny >= 1 && reads.evaluated >= reads.wouldDeny,
      JSON.stringify(status.policy.audit.counts),
    );
  });

  test('a version in audit mode cannot be enforced over a newer version in force', async () => {
    const status = (await server.call('GET', '/v1/policies/status', server.admin)).body;
    const shadow = status.policy.audit.version;
    await applyPolicy(server, server.admin, bob, {
      kind: 'policy',
      scope: '',
      content: `${DEFAULT_POLICY}\n@id("no-legacy") forbid (principal, action == Airlock::Action::"job.submit", resource) when { context.project == "legacy" };\n`,
      rationale: 'no more legacy jobs',
    });
    // Enforcing the older audit-mode version now would silently drop "no-legacy".
    const enforced = await server.call('POST', '/v1/policies/enforce', bob, { version: shadow });
    assert.equal(enforced.status, 409, JSON.stringify(enforced.body));
    assert.equal(enforced.body.error.code, 'POLICY_CONFLICT');
    const legacy = await server.call('POST', '/v1/jobs', server.admin, {
      version: 1,
      project: 'legacy',
      command: ['true'],
    });
    assert.equal(legacy.body.error?.code, 'POLICY_DENIED');
  });

  test('policy can single out release keys: registering one then takes a second factor', async () => {
    const rule = `${DEFAULT_POLICY}\n@id("release-keys-need-second-factor") forbid (principal, action == Airlock::Action::"key.manage", resource) when { context.signer.release && !context.authentication.secondFactor };\n`;
    await applyPolicy(server, server.admin, bob, {
      kind: 'policy',
      scope: '',
      content: rule,
      rationale: 'release keys need a second factor',
    });
    const key = generateKeyPairSync('ed25519');
    const refused = await server.call('POST', '/v1/keys', server.admin, {
      project: 'web',
      owner: 'ops',
      publicKey: publicPem(key),
      release: true,
    });
    assert.equal(refused.body.error?.code, 'POLICY_DENIED');
    assert.match(refused.body.error.message, /release-keys-need-second-factor/);
    const plainKey = await server.call('POST', '/v1/keys', server.admin, {
      project: 'web',
      owner: 'dev',
      publicKey: publicPem(key),
    });
    assert.equal(plainKey.status, 201, JSON.stringify(plainKey.body));
  });

  test('a profile changed in the database below Airlock refuses jobs of its project (fail closed)', async () => {
    await applyPolicy(server, server.admin, bob, {
      kind: 'profile',
      scope: 'tight',
      content: JSON.stringify({ runtimes: ['gvisor'], resources: { memoryMiB: 256 } }),
      rationale: 'tight project',
    });
    const job = {
      version: 1,
      project: 'tight',
      command: ['true'],
      runtime: 'runc',
      resources: { memoryMiB: 4096 },
    };
    const exceeded = await server.call('POST', '/v1/jobs', server.admin, job);
    assert.equal(exceeded.body.error?.code, 'PROFILE_EXCEEDED');
    assert.match(exceeded.body.error.message, /runtime runc.*resources\.memoryMiB 4096/);
    const dataDir = server.dataDir;
    await server.plane.close();
    const db = new Database(join(dataDir, DATABASE_FILE));
    db.exec('DROP TRIGGER policy_documents_fixed');
    db.prepare("UPDATE policy_documents SET content = ? WHERE kind = 'profile' AND scope = 'tight'").run(
      JSON.stringify({ runtimes: ['runc', 'gvisor'], resources: { memoryMiB: 65536 } }),
    );
    db.exec(`CREATE TRIGGER policy_documents_fixed BEFORE UPDATE OF content ON policy_documents
      BEGIN SELECT RAISE(ABORT, 'a policy document cannot be changed once proposed'); END;`);
    db.close();
    server = await reopen(server);
    const refused = await server.call('POST', '/v1/jobs', server.admin, job);
    assert.equal(refused.body.error?.code, 'POLICY_ERROR', JSON.stringify(refused.body));
    assert.match(refused.body.error.message, /profile tight v1 does not match its hash/);
  });

  test('a policy changed in the database below Airlock refuses every decision (fail closed)', async () => {
    const dataDir = server.dataDir;
    await server.plane.close();
    const db = new Database(join(dataDir, DATABASE_FILE));
    db.exec('DROP TRIGGER policy_documents_fixed');
    db.prepare(
      "UPDATE policy_documents SET content = ? WHERE kind = 'policy' AND version = (SELECT enforce_version FROM policy_active WHERE kind = 'policy')",
    ).run('@id("all") permit (principal, action, resource);');
    db.close();
    const plane = await startControlPlane({
      config: { ...SERVER_DEFAULTS, dataDir },
      logger: createLogger('silent', 'test'),
      version: 'test',
    });
    try {
      const refused = await call(plane.url, 'POST', '/v1/jobs', server.admin, {
        version: 1,
        project: 'web',
        command: ['true'],
      });
      assert.equal(refused.status, 500);
      assert.equal(refused.body.error.code, 'POLICY_ERROR');
      assert.match(refused.body.error.message, /does not match its hash/);
      const events = (await call(plane.url, 'GET', '/v1/audit/events?last=20', server.admin)).body;
      // The audit log itself is read through the policy too: refused as well.
      assert.equal(events.error?.code, 'POLICY_ERROR');
    } finally {
      await plane.close();
    }
    const db2 = new Database(join(dataDir, DATABASE_FILE), { readonly: true });
    const denied = db2
      .prepare(
        "SELECT reason FROM audit_events WHERE action = 'job.submit' AND outcome = 'denied' ORDER BY seq DESC LIMIT 1",
      )
      .pluck()
      .get() as string;
    db2.close();
    assert.match(denied, /^POLICY_ERROR/);
  });
});

/** The suite's server again on its data directory (after a test closed it to edit the database). */
async function reopen(previous: TestServer): Promise<TestServer> {
  const plane = await startControlPlane({
    config: { ...SERVER_DEFAULTS, dataDir: previous.dataDir },
    logger: createLogger('silent', 'test'),
    version: 'test',
  });
  return {
    ...previous,
    plane,
    url: plane.url,
    call: (method, path, token, body, headers = {}) => call(plane.url, method, path, token, body, headers),
    close: async () => {
      await plane.close().catch(() => undefined);
      await previous.close();
    },
  };
}

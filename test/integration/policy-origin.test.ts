import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_POLICY } from '../../src/policy/cedar-text.js';
import { TestIssuer } from '../unit/oidc-issuer.js';
import { applyPolicy, startTestServer, type TestServer } from './server-helpers.js';

/**
 * Origin-bound execution: a project whose policy says its jobs come only from one CI
 * repository and branch (a workload identity from a configured issuer, on loopback here)
 * takes them from there and from nowhere else — not from another branch, not from an
 * admin's token. The origin is in the job record and its audit event, and a first job from
 * an origin raises the risk score.
 */

const RULE = `
@id("deploy-only-from-main")
forbid (principal, action == Airlock::Action::"job.submit", resource == Airlock::Project::"deploy")
unless {
  context.origin.present &&
  context.origin.repository == "acme/deploy" &&
  context.origin.ref == "refs/heads/main"
};
`;

describe('origin-bound execution', () => {
  let server: TestServer;
  let ci: TestIssuer;
  let dir: string;
  const job = { version: 1, project: 'deploy', command: ['echo', 'deploying'] };

  before(async () => {
    ci = await TestIssuer.start();
    dir = await mkdtemp(join(tmpdir(), 'airlock-origin-'));
    const file = join(dir, 'issuers.json');
    await writeFile(
      file,
      JSON.stringify([
        {
          issuer: ci.url,
          audience: 'airlock',
          role: 'submitter',
          projects: ['deploy'],
          require: { repository_owner: ['acme'] },
        },
      ]),
      { mode: 0o600 },
    );
    server = await startTestServer({ oidcIssuersFile: file });
    const bob = (
      await server.call('POST', '/v1/tokens', server.admin, {
        principal: 'bob',
        role: 'admin',
        projects: ['*'],
      })
    ).body.secret;
    await applyPolicy(server, server.admin, bob, {
      kind: 'policy',
      scope: '',
      content: `${DEFAULT_POLICY}${RULE}`,
      rationale: 'deploy jobs come only from acme/deploy main',
    });
  });
  after(async () => {
    await server?.close();
    await ci?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('a job from the approved repository and branch is let in, with its origin recorded', async () => {
    const token = await ci.sign({ repository: 'acme/deploy', sub: 'repo:acme/deploy:ref:refs/heads/main' });
    const first = await server.call('POST', '/v1/jobs', token, job);
    assert.equal(first.status, 201, JSON.stringify(first.body));
    assert.equal(first.body.trust.origin.repository, 'acme/deploy');
    assert.equal(first.body.trust.origin.ref, 'refs/heads/main');
    assert.ok(first.body.trust.risk.factors.includes('new-origin'));
    const events = (await server.call('GET', '/v1/audit/events?last=20', server.admin)).body.events;
    const event = events.find((e: { target: string }) => e.target === `job:${first.body.id}`);
    assert.equal(event.details.origin.repository, 'acme/deploy');
    assert.equal(event.details.origin.ref, 'refs/heads/main');
    const second = await server.call('POST', '/v1/jobs', await ci.sign({ repository: 'acme/deploy' }), {
      ...job,
      command: ['echo', 'again'],
    });
    assert.equal(second.status, 201, JSON.stringify(second.body));
    assert.ok(!second.body.trust.risk.factors.includes('new-origin'), 'the origin is known now');
  });

  test('another branch, another repository, or no workload identity at all is refused', async () => {
    for (const [name, bearer] of [
      ['a feature branch', await ci.sign({ repository: 'acme/deploy', ref: 'refs/heads/feature' })],
      ['another repository', await ci.sign({ repository: 'acme/web' })],
      ['an admin token', server.admin],
    ] as const) {
      const refused = await server.call('POST', '/v1/jobs', bearer, job);
      assert.equal(refused.status, 403, name);
      assert.equal(refused.body.error.code, 'POLICY_DENIED', name);
      assert.match(refused.body.error.message, /deploy-only-from-main/, name);
    }
  });
});

describe('a workload minting fresh ID tokens', () => {
  test('shares one request rate: fresh tokens get no fresh allowance', async () => {
    const ci = await TestIssuer.start();
    const dir = await mkdtemp(join(tmpdir(), 'airlock-origin-rate-'));
    const file = join(dir, 'issuers.json');
    await writeFile(
      file,
      JSON.stringify([
        { issuer: ci.url, audience: 'airlock', role: 'viewer', projects: ['web'], allowAnyWorkload: true },
      ]),
      { mode: 0o600 },
    );
    const server = await startTestServer({ oidcIssuersFile: file }, undefined, { perSecond: 0.01, burst: 3 });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++)
        statuses.push((await server.call('GET', '/v1/jobs', await ci.sign())).status);
      assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    } finally {
      await server.close();
      await ci.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeStateDir, runtimeSkipReason, testStateDir } from './helpers.js';
import {
  applyPolicy,
  type CliProcess,
  startCli,
  startTestServer,
  type TestServer,
} from './server-helpers.js';

/**
 * Egress through the whole service (issue #6): a job asks for egress in its spec, the
 * project's profile must grant it, a real `airlock worker` runs it in a real sandbox with
 * its own proxy (names mapped to a loopback "registry" by AIRLOCK_EGRESS_HOSTS, loopback
 * granted by AIRLOCK_EGRESS_GRANTS), and every attempt lands in the job record and in the
 * audit log.
 */

const skip = runtimeSkipReason('gvisor');

describe('egress through the service', { timeout: 600_000, skip: skip ?? false }, () => {
  let server: TestServer;
  let registry: Server;
  let port: number;
  let worker: CliProcess;
  let dir: string;
  let bob: string;
  const sandboxDir = testStateDir('egress-service');

  before(async () => {
    registry = createServer((_request, response) => response.end('package-bytes'));
    await new Promise<void>((resolve) => registry.listen(0, '127.0.0.1', resolve));
    port = (registry.address() as AddressInfo).port;
    server = await startTestServer();
    bob = (
      await server.call('POST', '/v1/tokens', server.admin, {
        principal: 'bob',
        role: 'admin',
        projects: ['*'],
      })
    ).body.secret;
    dir = await mkdtemp(join(tmpdir(), 'airlock-egress-'));
    await writeFile(join(dir, 'worker.token'), server.worker, { mode: 0o600 });
    await writeFile(
      join(dir, 'hosts.json'),
      JSON.stringify({ 'registry.test': ['127.0.0.1'], 'other.test': ['127.0.0.1'] }),
    );
    worker = startCli(
      ['worker', '--server', server.url, '--token-file', join(dir, 'worker.token'), '--name', 'egress'],
      {
        AIRLOCK_SANDBOX_DIR: sandboxDir,
        AIRLOCK_KILL_GRACE: '200ms',
        AIRLOCK_LOG_LEVEL: 'warn',
        AIRLOCK_EGRESS_HOSTS: join(dir, 'hosts.json'),
        AIRLOCK_EGRESS_GRANTS: '127.0.0.1/32',
      },
    );
    await worker.waitFor('taking jobs', 300_000);
  });

  after(async () => {
    await worker?.kill('SIGTERM');
    await server?.close();
    registry?.close();
    await rm(dir, { recursive: true, force: true });
    await removeStateDir(sandboxDir);
  });

  const jobSpec = () => ({
    version: 1,
    project: 'web',
    runtime: 'gvisor',
    network: { egress: [`registry.test:${port}`] },
    command: [
      'sh',
      '-c',
      `curl -sS http://registry.test:${port}/pkg | grep -qx package-bytes && ` +
        `[ "$(curl -s -o /dev/null -w '%{http_code}' http://other.test:${port}/)" = 403 ]`,
    ],
  });

  test('egress beyond the project profile is refused at the door', async () => {
    const refused = await server.call('POST', '/v1/jobs', server.admin, jobSpec());
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, 'PROFILE_EXCEEDED');
    assert.match(refused.body.error.message, new RegExp(`egress to registry.test:${port}`));
  });

  test('granted egress runs; every attempt is in the job record and the audit log', async () => {
    await applyPolicy(server, server.admin, bob, {
      kind: 'profile',
      scope: 'web',
      content: JSON.stringify({ egress: [`registry.test:${port}`] }),
    });
    const submitted = await server.call('POST', '/v1/jobs', server.admin, jobSpec());
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
    const id = submitted.body.id as string;
    let record = submitted.body;
    for (let i = 0; i < 600 && !['succeeded', 'failed', 'cancelled'].includes(record.state); i += 1) {
      await sleep(200);
      record = (await server.call('GET', `/v1/jobs/${id}`, server.admin)).body;
    }
    assert.equal(record.state, 'succeeded', JSON.stringify(record));
    const egress = record.result.egress;
    assert.deepEqual(egress.allow, [`registry.test:${port}`]);
    const seen = egress.attempts.map(
      (a: { destination: string; reason: string }) => `${a.destination} ${a.reason}`,
    );
    assert.deepEqual(seen.sort(), [`other.test:${port} not-allowlisted`, `registry.test:${port} allowed`]);
    assert.equal(egress.totals.refused, 1);

    const events = (await server.call('GET', '/v1/audit/events?last=50', server.admin)).body.events as {
      action: string;
      target: string;
      outcome: string;
      reason: string;
      details: { destination: string; resolved: string | null };
    }[];
    const egressEvents = events.filter(
      (event) => event.action === 'job.egress' && event.target === `job:${id}`,
    );
    assert.equal(egressEvents.length, 2);
    const denied = egressEvents.find((event) => event.outcome === 'denied');
    assert.equal(denied?.reason, 'not-allowlisted');
    const allowed = egressEvents.find((event) => event.outcome === 'succeeded');
    assert.equal(allowed?.details.resolved, '127.0.0.1');
  });
});

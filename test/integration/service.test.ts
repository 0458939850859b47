import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeStateDir, runCli, testStateDir } from './helpers.js';
import { type CliProcess, call, startCli } from './server-helpers.js';

/**
 * The service end to end as a user runs it: real `airlock up`, `airlock server` and
 * `airlock worker` processes, real sandboxes, exit codes of DESIGN §6 — and the faults:
 * a worker killed mid-job (requeued, completed once), a server killed right after it
 * answered a submit (the job survives the restart).
 */

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

interface Place {
  dir: string;
  env: NodeJS.ProcessEnv;
  url: string;
  cleanup(): Promise<void>;
}

async function place(name: string, extra: NodeJS.ProcessEnv = {}): Promise<Place> {
  const dir = await mkdtemp(join(tmpdir(), `airlock-${name}-`));
  const port = await freePort();
  const sandboxDir = testStateDir(name);
  return {
    dir,
    url: `http://127.0.0.1:${port}`,
    env: {
      AIRLOCK_DATA_DIR: join(dir, 'data'),
      AIRLOCK_CLIENT_CONFIG: join(dir, 'client.json'),
      AIRLOCK_LISTEN: `127.0.0.1:${port}`,
      AIRLOCK_SANDBOX_DIR: sandboxDir,
      AIRLOCK_KILL_GRACE: '200ms',
      AIRLOCK_LOG_LEVEL: 'warn',
      ...extra,
    },
    cleanup: async () => {
      await rm(dir, { recursive: true, force: true });
      await removeStateDir(sandboxDir);
    },
  };
}

async function clientToken(p: Place): Promise<string> {
  return (JSON.parse(await readFile(join(p.dir, 'client.json'), 'utf8')) as { token: string }).token;
}

describe('airlock up + airlock run', { timeout: 600_000 }, () => {
  let p: Place;
  let up: CliProcess;
  before(async () => {
    // As on a fresh host: the data directory and the sandbox directory side by side under a
    // parent that does not exist yet (like /var/lib/airlock), and root's umask is 077.
    const fresh = `${testStateDir('up-fresh')}`;
    p = await place('up', {
      AIRLOCK_DATA_DIR: join(fresh, 'data'),
      AIRLOCK_SANDBOX_DIR: join(fresh, 'sandbox'),
    });
    const cleanup = p.cleanup;
    p.cleanup = async () => {
      await cleanup();
      await removeStateDir(join(fresh, 'sandbox'));
      await rm(fresh, { recursive: true, force: true });
    };
    up = startCli(['up', '--concurrency', '2'], p.env, { umask: '077' });
    await up.waitFor('Airlock is up', 300_000);
  });
  after(async () => {
    await up?.kill('SIGTERM');
    await p?.cleanup();
  });

  test('the first start wrote the admin token to a 0600 client config and printed no token', async () => {
    const mode = (await stat(join(p.dir, 'client.json'))).mode & 0o777;
    assert.equal(mode, 0o600);
    const token = await clientToken(p);
    assert.match(token, /^alk_/);
    assert.ok(
      !up.stdout().includes(token) && !up.stderr().includes(token),
      'the token must never be printed',
    );
    // The secret part is base64url and may itself hold "_": everything after alk_<id>_.
    const secret = /^alk_[0-9a-f]{16}_(.+)$/.exec(token)?.[1] ?? '';
    assert.equal(secret.length, 43);
    assert.ok(!up.stderr().includes(secret));
    assert.match(up.stdout(), /hello from a fresh sandbox: uid 1000/);
    assert.match(up.stdout(), /demo job succeeded \(exit 0\)/);
  });

  test('run streams stdout and stderr and exits with the job’s code', async () => {
    const run = await runCli(['run', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3'], p.env);
    assert.equal(run.code, 3, run.stderr);
    assert.equal(run.stdout, 'out\n');
    assert.match(run.stderr, /err\n/);
  });

  test('a timeout exits 124 and a memory kill 137', async () => {
    const timeout = await runCli(['run', '--timeout', '1s', '--', 'sleep', '30'], p.env);
    assert.equal(timeout.code, 124, timeout.stderr);
    // tail holds a line with no end in memory: 256 MiB of zeros against a 64 MiB limit.
    const memory = await runCli(
      ['run', '--memory', '64M', '--', 'sh', '-c', 'head -c 268435456 /dev/zero | tail'],
      p.env,
    );
    assert.equal(memory.code, 137, memory.stderr);
  });

  test('not found 127, not executable 126, and a refusal 125', async () => {
    assert.equal((await runCli(['run', '--', 'no-such-command'], p.env)).code, 127);
    assert.equal((await runCli(['run', '--', '/etc/hostname'], p.env)).code, 126);
    const refused = await runCli(['run', '--memory', '1M', '--', 'true'], p.env);
    assert.equal(refused.code, 125);
  });

  test('a job cannot reach the audit keys: the data directory is not in its world', async () => {
    const dataDir = p.env.AIRLOCK_DATA_DIR ?? '';
    assert.ok((await readFile(join(dataDir, 'audit-checkpoint.key'), 'utf8')).includes('PRIVATE KEY'));
    const probe = await runCli(
      [
        'run',
        '--',
        'sh',
        '-c',
        `cat ${dataDir}/audit-checkpoint.key ${dataDir}/audit-hmac.key; ls ${dataDir}`,
      ],
      p.env,
    );
    assert.notEqual(probe.code, 0);
    assert.doesNotMatch(probe.stdout, /PRIVATE KEY|[0-9a-f]{64}/);
    assert.match(probe.stderr, /No such file or directory/);
  });

  test('--detach, status, logs, jobs, --json', async () => {
    const detached = await runCli(
      ['run', '--detach', '--project', 'e2e', '--', 'sh', '-c', 'echo detached'],
      p.env,
    );
    assert.equal(detached.code, 0, detached.stderr);
    const id = /job_[a-z2-7]{26}/.exec(detached.stdout)?.[0];
    assert.ok(id, detached.stdout);
    for (let i = 0; i < 100; i++) {
      const status = await runCli(['status', '--json', id], p.env);
      if ((JSON.parse(status.stdout) as { state: string }).state === 'succeeded') break;
      await sleep(200);
    }
    const logs = await runCli(['logs', id], p.env);
    assert.equal(logs.stdout, 'detached\n');
    const jobs = await runCli(['jobs', '--project', 'e2e', '--json'], p.env);
    assert.match(jobs.stdout, new RegExp(id));
    const json = await runCli(['run', '--json', '--', 'sh', '-c', 'echo j'], p.env);
    const doc = JSON.parse(json.stdout) as { job: { state: string; exitStatus: number }; stdout: string };
    assert.equal(doc.stdout, 'j\n');
    assert.equal(doc.job.state, 'succeeded');
  });

  test('the audit trail of all this verifies', async () => {
    const verify = await runCli(['audit', 'verify'], p.env);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, /verified/);
  });
});

describe('faults: a worker or the server killed with SIGKILL', { timeout: 600_000 }, () => {
  let p: Place;
  let server: CliProcess | undefined;
  const workers: CliProcess[] = [];
  let admin = '';
  before(async () => {
    p = await place('faults', { AIRLOCK_LEASE_TTL: '3s' });
    server = startCli(['server'], p.env);
    await server.waitFor('listening on');
    admin = await clientToken(p);
  });
  after(async () => {
    for (const worker of workers) await worker.kill('SIGKILL');
    await server?.kill('SIGTERM');
    await p?.cleanup();
  });

  const startWorker = async (): Promise<CliProcess> => {
    const made = await call(p.url, 'POST', '/v1/tokens', admin, {
      principal: `worker-${workers.length}`,
      role: 'worker',
      projects: ['*'],
    });
    const tokenFile = join(p.dir, `worker-${workers.length}.token`);
    const { writeFile } = await import('node:fs/promises');
    await writeFile(tokenFile, made.body.secret, { mode: 0o600 });
    const worker = startCli(
      ['worker', '--server', p.url, '--token-file', tokenFile, '--name', `w${workers.length}`],
      p.env,
    );
    workers.push(worker);
    await worker.waitFor('taking jobs', 300_000);
    return worker;
  };

  const job = async (id: string) => (await call(p.url, 'GET', `/v1/jobs/${id}`, admin)).body;

  test('kill -9 the worker mid-job: the job is requeued and its result recorded exactly once', async () => {
    const first = await startWorker();
    const submitted = await call(p.url, 'POST', '/v1/jobs', admin, {
      version: 1,
      project: 'faults',
      command: ['sh', '-c', 'echo started; sleep 2; echo finished'],
    });
    assert.equal(submitted.status, 201);
    const id = submitted.body.id as string;
    for (let i = 0; i < 200 && (await job(id)).state !== 'running'; i++) await sleep(100);
    assert.equal((await job(id)).state, 'running');
    await first.kill('SIGKILL');
    await startWorker(); // its engine sweeps the sandbox the dead worker left
    let record = await job(id);
    for (let i = 0; i < 300 && record.state !== 'succeeded'; i++) {
      await sleep(100);
      record = await job(id);
    }
    assert.equal(record.state, 'succeeded', JSON.stringify(record));
    assert.equal(record.attempts, 2);
    const logs = await call(p.url, 'GET', `/v1/jobs/${id}/logs`, admin);
    const text = String(logs.body)
      .split('\n')
      .filter((line) => line.startsWith('{"seq"'))
      .map((line) => Buffer.from((JSON.parse(line) as { data: string }).data, 'base64').toString())
      .join('');
    assert.match(text, /attempt 1 was lost/);
    assert.match(text, /finished\n$/);
    const events = (await call(p.url, 'GET', '/v1/audit/events?after=0&limit=1000', admin)).body
      .events as Array<{
      action: string;
      target: string;
      details: { to?: string; sandbox?: { configSha256: string; seccompSha256: string } };
    }>;
    const results = events.filter(
      (e) => e.target === `job:${id}` && e.action === 'job.state' && e.details.to === 'succeeded',
    );
    assert.equal(results.length, 1, 'one result');
    // The result's audit event pins the sandbox it ran in: its OCI config and seccomp profile.
    assert.match(results[0]?.details.sandbox?.configSha256 ?? '', /^[0-9a-f]{64}$/);
    assert.match(results[0]?.details.sandbox?.seccompSha256 ?? '', /^[0-9a-f]{64}$/);
  });

  test('kill -9 the server right after a 2xx submit: the job is there after the restart, and runs', async () => {
    const submitted = await call(p.url, 'POST', '/v1/jobs', admin, {
      version: 1,
      project: 'faults',
      command: ['echo', 'survived'],
    });
    assert.equal(submitted.status, 201);
    await server?.kill('SIGKILL');
    server = startCli(['server'], p.env);
    await server.waitFor('listening on');
    let record = await job(submitted.body.id);
    assert.ok(record.id === submitted.body.id, 'the job survived the crash');
    for (let i = 0; i < 300 && record.state !== 'succeeded'; i++) {
      await sleep(100);
      record = await job(submitted.body.id);
    }
    // The worker reconnects to the new server process on its own.
    assert.equal(record.state, 'succeeded', JSON.stringify(record));
    const verify = await call(p.url, 'GET', '/v1/audit/verify', admin);
    assert.equal(verify.body.ok, true);
  });
});

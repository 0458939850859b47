import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NODE_FLAGS } from '../src/cli/node-flags.js';
import { ApiClient } from '../src/client/api-client.js';
import { followLogs } from '../src/client/follow.js';
import { HttpClient } from '../src/client/http.js';
import type { SandboxEngine } from '../src/sandbox/engine.js';
import type { SandboxJob } from '../src/sandbox/job.js';
import { type BareBundle, prepareBareBundle } from './bare.js';
import { type PairedResult, paired, summarize } from './stats.js';

/**
 * The service end to end (issue #3): `airlock up` (server + local worker, two processes,
 * embedded SQLite) against bare hardened `runc run` of the same bundle, in the same run.
 *
 *  - latency of a trivial job through API, auth, queue, worker, sandbox and audit: submit,
 *    follow the log stream to its end — from a client in this process, and as the
 *    `airlock run -- true` command (a new Node.js process each time);
 *  - sustained throughput: concurrent submitters for a fixed number of jobs, against the
 *    bare ceiling — two bare `runc run` loops, one per core, back to back;
 *  - resident memory of the idle server and worker processes, and after the load.
 */

export interface ServiceOptions {
  readonly pairs: number;
  readonly jobs: number;
  readonly submitters: number;
  /** The worker's --concurrency. */
  readonly concurrency: number;
  readonly cli: string;
  readonly root: string;
  readonly openEngine: (name: string) => Promise<SandboxEngine>;
  readonly log: (message: string) => void;
}

export interface ServiceReport {
  readonly rows: PairedResult[];
  readonly lines: string[];
}

const MAX_BARE_LOOPS = 4;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN);
  return kib / 1024;
}

/** CPU time (ms) a process used itself and that its reaped children used, from /proc/PID/stat. */
async function cpuOf(pid: number | undefined): Promise<{ self: number; children: number }> {
  if (pid === undefined) return { self: Number.NaN, children: Number.NaN };
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = text
    .slice(text.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  // utime, stime, cutime, cstime are fields 14-17 (1-based), in clock ticks of 10 ms.
  const [utime = 0, stime = 0, cutime = 0, cstime = 0] = fields.slice(11, 15);
  return { self: (utime + stime) * 10, children: (cutime + cstime) * 10 };
}

/** Busy CPU time (ms) of the whole machine, from /proc/stat. */
async function machineCpu(): Promise<number> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const total = ticks.reduce((sum, value) => sum + value, 0);
  return (total - (ticks[3] ?? 0) - (ticks[4] ?? 0)) * 10;
}

async function commOf(pid: number): Promise<string> {
  return (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
}

async function childrenOf(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  return text
    .trim()
    .split(/\s+/)
    .filter((part) => part !== '')
    .map(Number);
}

export async function service(options: ServiceOptions): Promise<ServiceReport> {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-bench-service-'));
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    AIRLOCK_DATA_DIR: join(dir, 'data'),
    AIRLOCK_CLIENT_CONFIG: join(dir, 'client.json'),
    AIRLOCK_LISTEN: `127.0.0.1:${port}`,
    AIRLOCK_SANDBOX_DIR: join(options.root, 'service'),
    AIRLOCK_LOG_LEVEL: 'warn',
    AIRLOCK_PROJECT_QUEUE_LIMIT: '100000',
  };
  delete env.AIRLOCK_URL;
  delete env.AIRLOCK_TOKEN;
  // With the flags the `airlock` executable and the ./airlock wrapper run Node.js with.
  const up = spawn(
    process.execPath,
    [...NODE_FLAGS, options.cli, 'up', '--no-demo', '--concurrency', String(options.concurrency)],
    {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  up.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  up.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const engine = await options.openEngine('service-bare');
  const bares: BareBundle[] = [];
  try {
    options.log('service: waiting for airlock up (the worker runs its selftest first)');
    for (let waited = 0; !output.includes('Airlock is up'); waited += 200) {
      if (up.exitCode !== null || waited > 300_000) throw new Error(`airlock up did not start:\n${output}`);
      await sleep(200);
    }
    const { url, token } = JSON.parse(await readFile(join(dir, 'client.json'), 'utf8')) as {
      url: string;
      token: string;
    };
    const api = new ApiClient(new HttpClient({ url, token }));
    const job: SandboxJob = { runtime: 'runc', command: ['true'] };
    for (let i = 0; i < MAX_BARE_LOOPS; i += 1)
      bares.push(await prepareBareBundle(engine, job, join(options.root, `service-bare-${i}`)));
    const [bare] = bares as [BareBundle];

    await sleep(3000);
    const workerPid = (await childrenOf(up.pid ?? 0))[0];
    const idleServer = await rssMiB(up.pid ?? 0);
    const idleWorker = workerPid === undefined ? Number.NaN : await rssMiB(workerPid);

    const throughApi = async (): Promise<number> => {
      const started = performance.now();
      const record = await api.submit({ version: 1, project: 'bench', command: ['true'] });
      const end = await followLogs(api, record.id, { onLine: () => undefined });
      const elapsed = performance.now() - started;
      if (end.state !== 'succeeded') throw new Error(`bench job ${record.id} ended ${end.state}`);
      return elapsed;
    };
    const throughCli = (): Promise<number> =>
      new Promise((resolve, reject) => {
        const started = performance.now();
        execFile(
          process.execPath,
          [options.cli, 'run', '--project', 'bench', '--', 'true'],
          { env },
          (error) => {
            if (error !== null) reject(error);
            else resolve(performance.now() - started);
          },
        );
      });

    options.log(`service: latency, ${options.pairs} pairs each`);
    for (let i = 0; i < 3; i += 1) {
      await bare.run();
      await throughApi();
      await throughCli();
    }
    const apiPairs: { airlock: number; bare: number }[] = [];
    const cliPairs: { airlock: number; bare: number }[] = [];
    for (let i = 0; i < options.pairs; i += 1) {
      // Alternate which side goes first; let the worker settle (prepare its next slot) between.
      if (i % 2 === 0) apiPairs.push({ bare: await bare.run(), airlock: await throughApi() });
      else apiPairs.push({ airlock: await throughApi(), bare: await bare.run() });
      await sleep(50);
      if (i % 2 === 0) cliPairs.push({ bare: await bare.run(), airlock: await throughCli() });
      else cliPairs.push({ airlock: await throughCli(), bare: await bare.run() });
      await sleep(50);
    }

    options.log(`service: throughput, ${options.jobs} jobs`);
    // The bare ceiling: the best of 2, 3 and 4 parallel loops (a `runc run` also waits, so
    // more loops than cores can go faster).
    const bareRates: number[] = [];
    for (let loops = 2; loops <= MAX_BARE_LOOPS; loops += 1) {
      const bareStarted = performance.now();
      let bareLeft = options.jobs;
      await Promise.all(
        bares.slice(0, loops).map(async (b) => {
          while (bareLeft > 0) {
            bareLeft -= 1;
            await b.run();
          }
        }),
      );
      bareRates.push(options.jobs / ((performance.now() - bareStarted) / 1000));
      await sleep(500);
    }
    const bareRate = Math.max(...bareRates);
    const bareLoops = bareRates.indexOf(bareRate) + 2;
    await sleep(1000);
    // The worker's host helpers (one for processes, one for disks; decision 0012).
    const helperPids =
      workerPid === undefined
        ? []
        : (
            await Promise.all(
              (await childrenOf(workerPid)).map(async (pid) => ({ pid, comm: await commOf(pid) })),
            )
          )
            .filter((child) => child.comm === 'perl')
            .map((child) => child.pid);
    const sample = async () => {
      const helpers = await Promise.all(helperPids.map(cpuOf));
      return {
        server: (await cpuOf(up.pid)).self,
        worker: (await cpuOf(workerPid)).self,
        helpers: helpers.reduce((sum, cpu) => sum + cpu.self, 0),
        started: helpers.reduce((sum, cpu) => sum + cpu.children, 0),
        clients: (await cpuOf(process.pid)).self,
        machine: await machineCpu(),
      };
    };
    const cpuBefore = await sample();
    const started = performance.now();
    let left = options.jobs;
    await Promise.all(
      Array.from({ length: options.submitters }, async () => {
        while (left > 0) {
          left -= 1;
          await throughApi();
        }
      }),
    );
    const rate = options.jobs / ((performance.now() - started) / 1000);
    const cpuAfter = await sample();
    const perJob = (key: keyof typeof cpuAfter): string =>
      ((cpuAfter[key] - cpuBefore[key]) / options.jobs).toFixed(1);
    const cpuLine = `CPU per job during the load (ms, 10 ms ticks): machine ${perJob('machine')}; server ${perJob('server')}, worker ${perJob('worker')}, its host helpers ${perJob('helpers')} and what they started (the runtime, mkfs) ${perJob('started')}, the submitting clients (this process) ${perJob('clients')}; the rest is the kernel's own threads.`;
    const loadedServer = await rssMiB(up.pid ?? 0);
    const loadedWorker = workerPid === undefined ? Number.NaN : await rssMiB(workerPid);

    const apiRow = paired('trivial job end to end through the API (submit → result), runc', apiPairs);
    const cliRow = paired('`airlock run -- true` as a command (new Node.js process), runc', cliPairs);
    const ratio = rate / bareRate;
    return {
      rows: [apiRow, cliRow],
      lines: [
        '| service measurement | value |',
        '|---|---|',
        `| sustained throughput, ${options.submitters} submitters, ${options.jobs} jobs, worker concurrency ${options.concurrency} | ${rate.toFixed(1)} jobs/s |`,
        `| bare ceiling: the best of 2, 3 and 4 parallel \`runc run\` loops, ${options.jobs} jobs each (${bareRates.map((r) => r.toFixed(1)).join(' / ')}) | ${bareRate.toFixed(1)} jobs/s (${bareLoops} loops) |`,
        `| throughput / bare ceiling | ${(ratio * 100).toFixed(0)}% |`,
        `| server resident memory, idle / after the load | ${idleServer.toFixed(1)} / ${loadedServer.toFixed(1)} MiB |`,
        `| worker resident memory, idle / after the load | ${idleWorker.toFixed(1)} / ${loadedWorker.toFixed(1)} MiB |`,
        '',
        cpuLine,
        '',
        `End-to-end latency medians: API ${summarize(apiPairs.map((p) => p.airlock)).median.toFixed(1)} ms, CLI ${summarize(cliPairs.map((p) => p.airlock)).median.toFixed(1)} ms, bare runc ${summarize(apiPairs.map((p) => p.bare)).median.toFixed(1)} ms.`,
      ],
    };
  } finally {
    for (const b of bares) await b.close().catch(() => undefined);
    await engine.close().catch(() => undefined);
    if (up.exitCode === null) {
      const exited = new Promise<void>((resolve) => up.once('exit', () => resolve()));
      up.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  }
}

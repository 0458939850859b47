import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, rmdir } from 'node:fs/promises';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { detectCgroupLayout } from '../src/sandbox/cgroup.js';
import { SandboxEngine } from '../src/sandbox/engine.js';
import type { RuntimeName, SandboxJob } from '../src/sandbox/job.js';
import { findExecutable, RUNTIME_DRIVERS } from '../src/sandbox/runtimes.js';
import { loadSeccompProfile } from '../src/sandbox/seccomp.js';
import { auditBench } from './audit.js';
import { prepareBareBundle } from './bare.js';
import { writeCProject } from './build-project.js';
import { egressBench } from './egress.js';
import { policyBench } from './policy.js';
import { service } from './service.js';
import { formatRow, type PairedResult, paired, summarize, TABLE_HEADER } from './stats.js';

/**
 * `npm run bench`: Airlock against the bare runtime, measured side by side in the same run
 * as paired ratios (this machine is shared and noisy; absolute times mean little).
 *
 *  1. trivial job: engine.run({command:['true']}) timed in this process, against a bare
 *     `runc run` of the same hardened bundle; pairs alternate which goes first, and the
 *     engine is let settle (remove the last sandbox, prepare the next disk) between pairs,
 *     as a worker does between jobs. Also the full cycle with nothing prepared ahead:
 *     prepare + run + remove, all timed.
 *  2. the same under gVisor, against a bare `runsc run`.
 *  3. a real build (161 C files, make -j2) in the sandbox against the same build bare, wall
 *     time and CPU time (the bare build in a cgroup of its own, measured the same way).
 *  4. the CLI's own start-up cost.
 *  5. the service (bench/service.ts): a trivial job end to end through `airlock up`, sustained
 *     throughput with concurrent submitters, the server's and worker's memory.
 *  6. the audit log (bench/audit.ts): append cost from 1K to 1M entries, full verification,
 *     proof size and time.
 *  7. policy (bench/policy.ts): what the Cedar decision and the admission step add to a submit.
 *  8. egress (bench/egress.ts): a build fetching its packages through the job's egress proxy.
 */

const { values: args } = parseArgs({
  options: {
    pairs: { type: 'string', default: '60' },
    'build-pairs': { type: 'string', default: '7' },
    'build-files': { type: 'string', default: '160' },
    only: { type: 'string' },
    'service-pairs': { type: 'string', default: '40' },
    'service-jobs': { type: 'string', default: '120' },
    submitters: { type: 'string', default: '4' },
    'worker-concurrency': { type: 'string', default: '3' },
    'audit-entries': { type: 'string', default: '1000000' },
    'egress-pairs': { type: 'string', default: '10' },
    'egress-packages': { type: 'string', default: '40' },
  },
});
const PAIRS = Number(args.pairs);
const BUILD_PAIRS = Number(args['build-pairs']);
const BUILD_FILES = Number(args['build-files']);
/** Run one part only: trivial, build, startup, service, audit, policy or egress. */
const ONLY = args.only;
const part = (name: string): boolean => ONLY === undefined || ONLY === name;
const BENCH_ROOT = '/var/lib/airlock-bench';
/** Concurrent run() loops in the engine-alone throughput part (as the service's default worker concurrency). */
const ENGINE_LOOPS = 3;
const REPO = new URL('../../', import.meta.url).pathname;

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

async function openEngine(name: string, preparedSlots: number): Promise<SandboxEngine> {
  return SandboxEngine.open({
    root: join(BENCH_ROOT, name),
    idBase: 2 ** 31,
    idRanges: 4096,
    killGraceMs: 1000,
    runtimePaths: {},
    seccomp: loadSeccompProfile(),
    preparedSlots,
  });
}

function timeCommand(file: string, argv: readonly string[], cwd?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(file, argv, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stdout.resume();
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`${file} ${argv.join(' ')} exited ${code}: ${err.slice(-500)}`));
      else resolve(performance.now() - started);
    });
  });
}

async function trivial(runtime: RuntimeName): Promise<PairedResult[]> {
  const results: PairedResult[] = [];
  const job: SandboxJob = { runtime, command: ['true'] };
  const engine = await openEngine(`trivial-${runtime}`, 1);
  const bare = await prepareBareBundle(engine, job, join(BENCH_ROOT, `bare-${runtime}`));
  try {
    const timeAirlock = async (): Promise<number> => {
      const started = performance.now();
      const result = await engine.run(job);
      const elapsed = performance.now() - started;
      if (result.exitCode !== 0) throw new Error(`trivial job exited ${result.exitCode}`);
      await engine.settle();
      return elapsed;
    };
    for (let i = 0; i < 3; i += 1) {
      await bare.run();
      await timeAirlock();
    }
    const pairs: { airlock: number; bare: number }[] = [];
    for (let i = 0; i < PAIRS; i += 1) {
      if (i % 2 === 0) {
        const b = await bare.run();
        pairs.push({ bare: b, airlock: await timeAirlock() });
      } else {
        const a = await timeAirlock();
        pairs.push({ airlock: a, bare: await bare.run() });
      }
    }
    results.push(paired(`trivial job, ${runtime}: run() latency (disk prepared ahead)`, pairs));

    // Full cycle, nothing prepared ahead: disk formatted and mounted, job run, everything removed.
    const cold = await openEngine(`cold-${runtime}`, 0);
    try {
      const full: { airlock: number; bare: number }[] = [];
      for (let i = 0; i < PAIRS; i += 1) {
        const b = await bare.run();
        const started = performance.now();
        await cold.run(job);
        await cold.settle();
        full.push({ bare: b, airlock: performance.now() - started });
      }
      results.push(paired(`trivial job, ${runtime}: full cycle (prepare + run + remove)`, full));
    } finally {
      await cold.close();
    }
  } finally {
    await bare.close();
    await engine.close();
  }
  return results;
}

/** CPU time (ms) of everything `argv` runs, measured like Airlock's: in a cgroup of its own. */
async function bareInCgroup(
  argv: readonly string[],
  cwd: string,
): Promise<{ wallMs: number; cpuMs: number }> {
  const layout = detectCgroupLayout();
  const dir =
    layout.version === 1
      ? join(
          layout.controllers.cpuacct,
          'airlock-bench',
          `bare-${process.pid}-${Math.random().toString(36).slice(2)}`,
        )
      : join(layout.mount, 'airlock-bench', `bare-${process.pid}-${Math.random().toString(36).slice(2)}`);
  await mkdir(dir, { recursive: true });
  try {
    // The shell moves itself into the cgroup, then runs the build.
    const wallMs = await timeCommand(
      'sh',
      ['-c', `echo $$ > ${dir}/cgroup.procs && exec "$@"`, 'sh', ...argv],
      cwd,
    );
    const cpuMs =
      layout.version === 1
        ? Number(await readFile(join(dir, 'cpuacct.usage'), 'utf8')) / 1e6
        : Number(/usage_usec (\d+)/.exec(await readFile(join(dir, 'cpu.stat'), 'utf8'))?.[1] ?? 0) / 1000;
    return { wallMs, cpuMs };
  } finally {
    await rmdir(dir).catch(() => undefined);
  }
}

async function build(): Promise<PairedResult[]> {
  const work = await mkdtemp('/var/tmp/airlock-bench-build-');
  const project = join(work, 'project');
  await writeCProject(project, BUILD_FILES);
  const engine = await openEngine('build', 1);
  const script = 'make -s -j2 && ./build/app';
  const job: SandboxJob = {
    command: ['sh', '-c', script],
    inputDir: project,
    resources: { cpus: 2, memoryBytes: 2 * 1024 ** 3, pids: 1024, timeoutMs: 600_000, diskBytes: 1024 ** 3 },
  };
  try {
    const timeAirlock = async (): Promise<{ wallMs: number; cpuMs: number }> => {
      const started = performance.now();
      const result = await engine.run(job);
      const wallMs = performance.now() - started;
      if (result.exitCode !== 0) throw new Error(`sandboxed build exited ${result.exitCode}`);
      await engine.settle();
      return { wallMs, cpuMs: result.cpuMs };
    };
    const timeBare = async (): Promise<{ wallMs: number; cpuMs: number }> => {
      // Same work as the job: copy the sources to a fresh directory, then build there.
      const copy = join(work, `bare-${Math.random().toString(36).slice(2)}`);
      try {
        return await bareInCgroup(['sh', '-c', `cp -r ${project} ${copy} && cd ${copy} && ${script}`], work);
      } finally {
        await rm(copy, { recursive: true, force: true });
      }
    };
    await timeBare();
    await timeAirlock();
    const wall: { airlock: number; bare: number }[] = [];
    const cpu: { airlock: number; bare: number }[] = [];
    for (let i = 0; i < BUILD_PAIRS; i += 1) {
      log(`build pair ${i + 1}/${BUILD_PAIRS}`);
      let a: { wallMs: number; cpuMs: number };
      let b: { wallMs: number; cpuMs: number };
      if (i % 2 === 0) {
        b = await timeBare();
        a = await timeAirlock();
      } else {
        a = await timeAirlock();
        b = await timeBare();
      }
      wall.push({ airlock: a.wallMs, bare: b.wallMs });
      cpu.push({ airlock: a.cpuMs, bare: b.cpuMs });
    }
    const files = BUILD_FILES + 1;
    return [
      paired(`C build, ${files} files, make -j2 (runc): wall time`, wall),
      paired(`C build, ${files} files, make -j2 (runc): CPU time`, cpu),
    ];
  } finally {
    await engine.close();
    await rm(work, { recursive: true, force: true });
    const layout = detectCgroupLayout();
    const top = layout.version === 1 ? layout.controllers.cpuacct : layout.mount;
    await rmdir(join(top, 'airlock-bench')).catch(() => undefined);
  }
}

async function startup(): Promise<string[]> {
  const cli = join(REPO, 'dist/src/cli/bin.js');
  const env = { ...process.env, AIRLOCK_SANDBOX_DIR: join(BENCH_ROOT, 'cli') };
  const measure = async (argv: string[]): Promise<number> => {
    const times: number[] = [];
    for (let i = 0; i < 12; i += 1) {
      const started = performance.now();
      execFileSync(process.execPath, argv, { env, stdio: 'ignore' });
      times.push(performance.now() - started);
    }
    return summarize(times.slice(2)).median;
  };
  const node = await measure(['-e', '0']);
  const version = await measure([cli, '--version']);
  const sandbox = await measure([cli, 'sandbox', '--', 'true']);
  return [
    '| command | median ms |',
    '|---|---|',
    `| \`node -e 0\` (Node.js itself) | ${node.toFixed(1)} |`,
    `| \`airlock --version\` (CLI start-up) | ${version.toFixed(1)} |`,
    `| \`airlock sandbox -- true\` (start-up, sweep, one job, removal) | ${sandbox.toFixed(1)} |`,
    '',
    `CLI start-up beyond Node.js itself: ${(version - node).toFixed(1)} ms.`,
  ];
}

/**
 * The sandbox engine alone: `ENGINE_LOOPS` concurrent run() loops on one engine (as many slots
 * prepared ahead), for `jobs` trivial jobs, against the bare ceiling in the same run — the best
 * of 2, 3 and 4 parallel `runc run` loops: the most the service could reach with a free control
 * plane and worker. With the machine's busy CPU time per job on both sides.
 */
async function engineThroughput(jobs: number): Promise<string[]> {
  const job: SandboxJob = { runtime: 'runc', command: ['true'] };
  const engine = await openEngine('engine-throughput', ENGINE_LOOPS);
  const bares = [];
  for (let i = 0; i < 4; i += 1)
    bares.push(await prepareBareBundle(engine, job, join(BENCH_ROOT, `engine-bare-${i}`)));
  try {
    for (let i = 0; i < 3; i += 1) {
      await engine.run(job);
      for (const bare of bares) await bare.run();
    }
    await engine.settle();
    const rate = async (loops: Array<() => Promise<unknown>>): Promise<{ rate: number; cpuMs: number }> => {
      let left = jobs;
      const busyBefore = machineBusyMs();
      const started = performance.now();
      await Promise.all(
        loops.map(async (one) => {
          while (left > 0) {
            left -= 1;
            await one();
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      return { rate: jobs / seconds, cpuMs: (machineBusyMs() - busyBefore) / jobs };
    };
    const bareRuns = [];
    for (let loops = 2; loops <= 4; loops += 1)
      bareRuns.push(await rate(bares.slice(0, loops).map((bare) => () => bare.run())));
    const bareBest = bareRuns.reduce((best, run) => (run.rate > best.rate ? run : best));
    const engineRun = await rate(Array.from({ length: ENGINE_LOOPS }, () => () => engine.run(job)));
    await engine.settle();
    return [
      '| engine alone (no server, no worker) | value |',
      '|---|---|',
      `| ${ENGINE_LOOPS} concurrent \`engine.run()\` loops, ${jobs} trivial jobs | ${engineRun.rate.toFixed(1)} jobs/s, ${engineRun.cpuMs.toFixed(1)} ms CPU a job |`,
      `| bare ceiling: the best of 2, 3 and 4 parallel \`runc run\` loops (${bareRuns.map((run) => run.rate.toFixed(1)).join(' / ')} jobs/s) | ${bareBest.rate.toFixed(1)} jobs/s, ${bareBest.cpuMs.toFixed(1)} ms CPU a job |`,
      `| engine / bare ceiling | ${((engineRun.rate / bareBest.rate) * 100).toFixed(0)}% |`,
    ];
  } finally {
    for (const bare of bares) await bare.close();
    await engine.close();
  }
}

/** Busy CPU time of the whole machine so far (ms), from /proc/stat. */
function machineBusyMs(): number {
  const ticks = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const total = ticks.reduce((sum, value) => sum + value, 0);
  return (total - (ticks[3] ?? 0) - (ticks[4] ?? 0)) * 10;
}

function versionOf(binary: string): string {
  try {
    return execFileSync(binary, ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? '?';
  } catch {
    return 'not installed';
  }
}

async function main(): Promise<void> {
  log(`${PAIRS} pairs per trivial measurement, ${BUILD_PAIRS} build pairs`);
  const rows: PairedResult[] = [];
  if (part('trivial')) {
    log('trivial job under runc');
    rows.push(...(await trivial('runc')));
    if (findExecutable(RUNTIME_DRIVERS.gvisor.binary) !== null) {
      log('trivial job under gvisor');
      rows.push(...(await trivial('gvisor')));
    } else {
      log('runsc is not installed: skipping the gvisor measurement');
    }
  }
  if (part('build')) {
    log('C build under runc');
    rows.push(...(await build()));
  }
  let serviceLines: string[] = [];
  if (part('service')) {
    log('service end to end');
    const report = await service({
      pairs: Number(args['service-pairs']),
      jobs: Number(args['service-jobs']),
      submitters: Number(args.submitters),
      concurrency: Number(args['worker-concurrency']),
      cli: join(REPO, 'dist/src/cli/bin.js'),
      root: BENCH_ROOT,
      openEngine: (name) => openEngine(name, 0),
      log,
    });
    rows.push(...report.rows);
    serviceLines = report.lines;
    log('engine throughput (no server, no worker)');
    serviceLines.push('', ...(await engineThroughput(Number(args['service-jobs']))));
  }
  let auditLines: string[] = [];
  if (part('audit')) {
    log('audit log growth, verification and proofs');
    auditLines = await auditBench({ entries: Number(args['audit-entries']), log });
  }
  let policyLines: string[] = [];
  if (part('policy')) {
    log('policy per submit');
    policyLines = await policyBench({ history: 2000, samples: 2000, log });
  }
  let egressLines: string[] = [];
  if (part('egress')) {
    log('egress: a build fetching through the proxy');
    const engine = await openEngine('egress', 1);
    try {
      const report = await egressBench({
        engine,
        pairs: Number(args['egress-pairs']),
        packages: Number(args['egress-packages']),
        log,
      });
      rows.push(...report.rows);
      egressLines = report.lines;
    } finally {
      await engine.close();
    }
  }
  let cli: string[] = [];
  if (part('startup')) {
    log('CLI start-up');
    cli = await startup();
  }
  await rm(BENCH_ROOT, { recursive: true, force: true });

  const lines = [
    `Run on ${new Date().toISOString()}: Linux ${release()}, ${cpus().length} CPUs, Node.js ${process.version}, ${versionOf('runc')}, ${versionOf('runsc')}.`,
    '',
    ...(rows.length > 0 ? [TABLE_HEADER, ...rows.map(formatRow)] : []),
    '',
    ...serviceLines,
    '',
    ...auditLines,
    '',
    ...policyLines,
    '',
    ...egressLines,
    '',
    ...cli,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();

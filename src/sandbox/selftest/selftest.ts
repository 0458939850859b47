import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RunningJob, SandboxEngine } from '../engine.js';
import { RANGE_SIZE } from '../idmap.js';
import type { RuntimeName, SandboxJob } from '../job.js';
import { egressProbes } from './egress-probes.js';

/**
 * `airlock selftest`: escape and limit probes run in real sandboxes, each reported on one
 * line. Probes that try to escape run only inside a sandbox (inside.pl); the host side only
 * observes (host UIDs of the job's processes, leftovers, its own responsiveness). A worker
 * runs the same battery at start and takes no jobs while any probe fails.
 */

export interface ProbeResult {
  readonly name: string;
  readonly pass: boolean;
  readonly detail: string;
}

export interface SelftestReport {
  readonly runtime: RuntimeName;
  readonly probes: readonly ProbeResult[];
  readonly passed: number;
  readonly failed: number;
  readonly wallMs: number;
}

const INSIDE_SCRIPT = new URL('../../../../src/sandbox/selftest/inside.pl', import.meta.url);

const MiB = 1024 * 1024;

export interface SelftestOptions {
  readonly runtime: RuntimeName;
  /** Host paths that must not be visible inside a sandbox (Airlock's state directory, say). */
  readonly hostPaths: readonly string[];
  /** Called as each probe finishes (progress on a terminal). */
  readonly onProbe?: (probe: ProbeResult) => void;
  /** Stops the battery between steps (Ctrl-C); the report then says it was interrupted. */
  readonly signal?: AbortSignal;
}

export async function runSelftest(engine: SandboxEngine, options: SelftestOptions): Promise<SelftestReport> {
  const started = performance.now();
  const probes: ProbeResult[] = [];
  const record = (name: string, pass: boolean, detail: string): void => {
    const probe = { name, pass, detail };
    probes.push(probe);
    options.onProbe?.(probe);
  };
  const { runtime } = options;
  const base: Pick<SandboxJob, 'runtime'> = { runtime };

  // Each step is guarded: a probe that throws is a failed probe, and the battery goes on.
  const step = async (name: string, body: () => Promise<void>): Promise<void> => {
    if (options.signal?.aborted) {
      if (!probes.some((probe) => probe.name === 'interrupted'))
        record('interrupted', false, 'the selftest was stopped before it ended');
      return;
    }
    try {
      await body();
    } catch (error) {
      record(name, false, `could not run: ${(error as Error).message}`);
    }
  };

  await step('inside-probes', () => insideProbes(engine, runtime, options.hostPaths, record));
  await step('isolation-between-jobs', () => concurrentJobs(engine, runtime, record));
  await step('egress-probes', () => egressProbes(engine, runtime, record));
  await step('fork-bomb-contained', async () => {
    const lag = watchEventLoop();
    const out = collector();
    let hostProbe: Promise<number> = Promise.resolve(Number.POSITIVE_INFINITY);
    const result = await engine.run(
      {
        ...base,
        command: [
          'perl',
          '-e',
          '$| = 1; my $n = 0; while (1) { my $p = fork; last unless defined $p; if ($p == 0) { sleep 30; exit 0 } $n++ } print "forked $n\\n"; sleep 1;',
        ],
        resources: { pids: 64, timeoutMs: 30_000 },
      },
      {
        onOutput: out.listener,
        // While the bomb runs, time a command on the host.
        onStarted: () => {
          hostProbe = sleep(300).then(timeHostCommand);
        },
      },
    );
    const hostMs = await hostProbe;
    const maxLag = lag.stop();
    const forked = Number(/forked (\d+)/.exec(out.text())?.[1] ?? Number.NaN);
    const pass = Number.isFinite(forked) && forked < 64 && !result.timedOut && maxLag < 1000 && hostMs < 2000;
    record(
      'fork-bomb-contained',
      pass,
      `stopped after ${Number.isFinite(forked) ? forked : '?'} forks at pids=64; host event-loop lag ${Math.round(maxLag)} ms; host command ${Math.round(hostMs)} ms`,
    );
  });
  await step('memory-hog-killed', async () => {
    const result = await engine.run({
      ...base,
      command: ['perl', '-e', 'my $x = "x" x (256 * 1024 * 1024); print "survived\\n";'],
      resources: { memoryBytes: 64 * MiB, timeoutMs: 60_000 },
    });
    record(
      'memory-hog-killed',
      result.oomKilled && result.signal === 'SIGKILL' && !result.timedOut,
      `oomKilled=${result.oomKilled} signal=${result.signal} exitCode=${result.exitCode} peak=${Math.round(result.peakMemoryBytes / MiB)} MiB of 64 MiB`,
    );
  });
  await step('disk-filler-capped', async () => {
    let fillBytes = -1;
    const out = collector();
    const result = await engine.run(
      {
        ...base,
        command: ['sh', '-c', 'dd if=/dev/zero of=/workspace/fill bs=1M count=128 2>&1; echo "dd exit $?"'],
        resources: { diskBytes: 32 * MiB, timeoutMs: 60_000 },
      },
      {
        onOutput: out.listener,
        inspect: async (workspace) => {
          fillBytes = (await workspace.list()).find((entry) => entry.path === 'fill')?.size ?? -1;
        },
      },
    );
    const text = out.text();
    const pass =
      /No space left on device/.test(text) &&
      fillBytes >= 0 &&
      fillBytes <= 32 * MiB &&
      result.exitCode === 0;
    record(
      'disk-filler-capped',
      pass,
      `wrote ${fillBytes} bytes into a 32 MiB disk; dd said: ${firstLine(text, /No space|dd exit/)}`,
    );
  });
  await step('output-flood-capped', async () => {
    const out = collector();
    const result = await engine.run(
      {
        ...base,
        command: ['head', '-c', '5000000', '/dev/zero'],
        resources: { outputBytes: 64 * 1024, timeoutMs: 60_000 },
      },
      { onOutput: out.listener },
    );
    const kept = out.bytes();
    const pass =
      result.outputTruncated &&
      result.outputBytes === 5_000_000 &&
      kept < 64 * 1024 + 200 &&
      /output truncated/.test(out.text());
    record(
      'output-flood-capped',
      pass,
      `job wrote ${result.outputBytes} bytes, ${kept} kept (cap 64 KiB), marker ${/output truncated/.test(out.text()) ? 'shown' : 'missing'}`,
    );
  });
  await step('timeout-kills-everything', async () => {
    let running: RunningJob | undefined;
    // TERM ignored everywhere, a setsid'd grandchild and a double-forked one.
    const script =
      'trap "" TERM; setsid sh -c \'trap "" TERM; while :; do sleep 1; done\' & ' +
      '(sh -c \'trap "" TERM; sleep 1000\' &); sleep 1000';
    const result = await engine.run(
      { ...base, command: ['sh', '-c', script], resources: { timeoutMs: 2000 } },
      { onStarted: (job) => (running = job) },
    );
    await engine.settle();
    const leftovers =
      running === undefined
        ? ['job never started']
        : await engine.leftovers(running.jobId, running.hostUidBase);
    record(
      'timeout-kills-everything',
      result.timedOut && result.signal === 'SIGKILL' && leftovers.length === 0 && result.wallMs < 15_000,
      `timedOut=${result.timedOut} after ${result.wallMs} ms, ended by ${result.signal}; ${leftovers.length === 0 ? 'no process left' : `left: ${leftovers.join(', ')}`}`,
    );
  });
  await step('nothing-left-behind', async () => {
    let running: RunningJob | undefined;
    await engine.run(
      { ...base, command: ['sh', '-c', 'echo data > /workspace/f; echo tmp > /tmp/t'] },
      { onStarted: (job) => (running = job) },
    );
    await engine.settle();
    const leftovers =
      running === undefined
        ? ['job never started']
        : await engine.leftovers(running.jobId, running.hostUidBase);
    record(
      'nothing-left-behind',
      leftovers.length === 0,
      leftovers.length === 0
        ? 'no container, cgroup, mount, bundle, ID lease or process remains'
        : `left: ${leftovers.join(', ')}`,
    );
  });

  const failed = probes.filter((probe) => !probe.pass).length;
  return {
    runtime,
    probes,
    passed: probes.length - failed,
    failed,
    wallMs: Math.round(performance.now() - started),
  };
}

async function insideProbes(
  engine: SandboxEngine,
  runtime: RuntimeName,
  hostPaths: readonly string[],
  record: (name: string, pass: boolean, detail: string) => void,
): Promise<void> {
  const out = collector();
  const result = await engine.run(
    {
      runtime,
      command: ['perl', '/workspace/inside.pl', runtime, ...hostPaths],
      files: [{ path: 'inside.pl', content: readFileSync(INSIDE_SCRIPT) }],
      resources: { timeoutMs: 60_000 },
    },
    { onOutput: out.listener },
  );
  const text = out.text();
  let seen = 0;
  for (const line of text.split('\n')) {
    const [tag, name, verdict, detail] = line.split('\t');
    if (tag !== 'PROBE' || name === undefined) continue;
    seen += 1;
    record(name, verdict === 'pass', detail ?? '');
  }
  if (!text.includes('\nDONE') || result.exitCode !== 0) {
    record(
      'inside-probes-complete',
      false,
      `probe script ended early (exit ${result.exitCode}, signal ${result.signal}): ${text.slice(-300)}`,
    );
  } else if (seen < 30) {
    record('inside-probes-complete', false, `only ${seen} probes reported`);
  }
}

/** Two jobs at once: neither sees nor can signal the other, and they run as different host UIDs. */
async function concurrentJobs(
  engine: SandboxEngine,
  runtime: RuntimeName,
  record: (name: string, pass: boolean, detail: string) => void,
): Promise<void> {
  const started: RunningJob[] = [];
  const hostUids: number[][] = [[], []];
  const victimOut = collector();
  const victim = engine.run(
    { runtime, command: ['perl', '-e', '$| = 1; print "victim up\\n"; sleep 4; print "victim alive\\n";'] },
    {
      onOutput: victimOut.listener,
      onStarted: (job) => {
        started[0] = job;
      },
    },
  );
  // Handled now, awaited below: if the attacker's run fails first, the victim's failure must
  // not become an unhandled rejection that ends the process (a worker's selftest).
  victim.catch(() => undefined);
  // Wait until the victim runs, and record the host UIDs of its processes.
  for (let i = 0; i < 100 && !victimOut.text().includes('victim up'); i += 1) await sleep(20);
  if (started[0] !== undefined) hostUids[0] = await hostUidsOf(started[0]);
  const attackerOut = collector();
  let attackerUids: Promise<number[]> = Promise.resolve([]);
  await engine.run(
    {
      runtime,
      command: [
        'perl',
        '-e',
        '$| = 1; print "attacker up\\n"; select(undef, undef, undef, 0.5); ' +
          'opendir(my $d, "/proc"); my @p = grep { /^\\d+$/ } readdir($d); print "visible ", scalar(@p), "\\n"; ' +
          'my $k = kill("KILL", -1); print "kill -1 reached $k\\n"; ' +
          'my $hit = 0; for my $pid (2 .. 4000) { $hit++ if kill(0, $pid) } print "signalable $hit\\n";',
      ],
    },
    {
      onOutput: (stream, chunk) => {
        attackerOut.listener(stream, chunk);
        // Sampled once the job's own code runs (gVisor starts as root before it drops to nobody).
        const job = started[1];
        if (job !== undefined && chunk.toString().includes('attacker up')) attackerUids = hostUidsOf(job);
      },
      onStarted: (job) => {
        started[1] = job;
      },
    },
  );
  hostUids[1] = await attackerUids;
  const victimResult = await victim;
  const attacker = attackerOut.text();
  const visible = Number(/visible (\d+)/.exec(attacker)?.[1] ?? Number.NaN);
  const survived = victimOut.text().includes('victim alive') && victimResult.exitCode === 0;
  record(
    'isolation-between-jobs',
    survived && visible <= 2,
    `the second job saw ${Number.isFinite(visible) ? visible : '?'} processes and ${/signalable (\d+)/.exec(attacker)?.[1] ?? '?'} signalable; the first ${survived ? 'survived kill(-1)' : 'was hurt'}`,
  );
  const [first, second] = started;
  const nonRoot = hostUids.every((uids) => uids.length > 0 && uids.every((uid) => uid !== 0));
  const inRange = (job: RunningJob | undefined, uids: number[]): boolean =>
    job !== undefined && uids.some((uid) => uid >= job.hostUidBase && uid < job.hostUidBase + RANGE_SIZE);
  const disjoint = first !== undefined && second !== undefined && first.hostUidBase !== second.hostUidBase;
  record(
    'host-uid-unprivileged',
    nonRoot &&
      disjoint &&
      (runtime === 'gvisor' || (inRange(first, hostUids[0] ?? []) && inRange(second, hostUids[1] ?? []))),
    `host UIDs of job processes: [${(hostUids[0] ?? []).join(',')}] and [${(hostUids[1] ?? []).join(',')}]; ranges ${first?.hostUidBase} and ${second?.hostUidBase}` +
      (runtime === 'gvisor' ? ' (gVisor: sentry runs as nobody, gofer as the job range root)' : ''),
  );
}

async function hostUidsOf(job: RunningJob): Promise<number[]> {
  const uids = new Set<number>();
  for (let attempt = 0; attempt < 50 && uids.size === 0; attempt += 1) {
    for (const pid of await job.cgroup.processes()) {
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      const match = /^Uid:\s+(\d+)\s+(\d+)/m.exec(status);
      if (match !== null) uids.add(Number(match[2]));
    }
    if (uids.size === 0) await sleep(20);
  }
  return [...uids];
}

function collector(): {
  listener: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
  text: () => string;
  bytes: () => number;
} {
  const chunks: Buffer[] = [];
  return {
    listener: (_stream, chunk) => chunks.push(chunk),
    text: () => Buffer.concat(chunks).toString('utf8'),
    bytes: () => chunks.reduce((sum, chunk) => sum + chunk.length, 0),
  };
}

function firstLine(text: string, pattern: RegExp): string {
  return (
    text
      .split('\n')
      .find((line) => pattern.test(line))
      ?.trim() ?? text.trim().slice(0, 120)
  );
}

/** Largest delay of a 50 ms timer while it runs: how responsive this host process stayed. */
function watchEventLoop(): { stop: () => number } {
  let last = performance.now();
  let max = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    max = Math.max(max, now - last - 50);
    last = now;
  }, 50);
  return {
    stop: () => {
      clearInterval(timer);
      return max;
    },
  };
}

/** Milliseconds the host takes to run `true`: a fork bomb in a sandbox must not slow it. */
function timeHostCommand(): Promise<number> {
  return new Promise((resolve) => {
    const start = performance.now();
    const child = spawn('true', { stdio: 'ignore' });
    child.on('close', () => resolve(performance.now() - start));
    child.on('error', () => resolve(Number.POSITIVE_INFINITY));
  });
}

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, type TestContext, test } from 'node:test';
import type {
  ClaimedJob,
  ClaimRequest,
  EgressBatch,
  FencedRequest,
  JobSpecV1,
  LeaseStatus,
  LogChunks,
  ResultReport,
} from '../../src/api/types.js';
import { AirlockError } from '../../src/errors.js';
import type { EgressRecord } from '../../src/network/egress-proxy.js';
import type { RunOptions, SandboxResult } from '../../src/sandbox/engine.js';
import type { RuntimeName, SandboxJob } from '../../src/sandbox/job.js';
import type { WorkspaceEntry, WorkspaceReader } from '../../src/sandbox/workspace.js';
import { JobRun } from '../../src/worker/job-run.js';
import { sleep } from '../../src/worker/lease.js';
import type { SelftestOutcome, WorkerEngine, WorkerLogger } from '../../src/worker/ports.js';
import type { CallOptions, WorkerProtocol } from '../../src/worker/protocol.js';
import { runtimeSelftest } from '../../src/worker/selftest.js';
import { Worker, type WorkerOptions } from '../../src/worker/worker.js';

// ---- fakes: a server speaking the worker protocol in memory, a sandbox engine whose jobs
// write output and last until their time is up (or they are aborted), a recording logger ----

interface Call {
  readonly kind: 'claim' | 'start' | 'heartbeat' | 'logs' | 'egress' | 'result' | 'release';
  readonly jobId: string | null;
  readonly body: unknown;
}

let jobCounter = 0;

function claimedJob(spec: Partial<JobSpecV1> = {}, leaseTtlMs = 300): ClaimedJob {
  jobCounter += 1;
  return {
    jobId: `job_${String(jobCounter).padStart(26, '0')}`,
    fence: 7,
    attempt: 1,
    leaseTtlMs,
    leaseExpiresAt: new Date(Date.now() + leaseTtlMs).toISOString(),
    state: 'leased',
    spec: { version: 1, project: 'web', command: ['echo', 'hi'], ...spec },
  };
}

function egressRecord(i: number): EgressRecord {
  return {
    at: new Date().toISOString(),
    destination: `registry.test:443`,
    protocol: 'connect',
    resolved: '192.0.2.10',
    allowed: i % 2 === 0,
    reason: i % 2 === 0 ? 'allowed' : 'not-allowlisted',
    detail: null,
    bytesUp: 10,
    bytesDown: 20,
    durationMs: 3,
  };
}

const leaseStatus = (cancel = false): LeaseStatus => ({ leaseExpiresAt: new Date().toISOString(), cancel });

/** Answers: return a LeaseStatus (or nothing for result/release), or throw to fail the call. */
type Answer<T> = (call: number, jobId: string) => T;

class FakeServer implements WorkerProtocol {
  readonly calls: Call[] = [];
  readonly queue: ClaimedJob[] = [];
  /** Claims that fail (thrown) before the queue is served. */
  claimFailures: unknown[] = [];
  onStart: Answer<LeaseStatus> = () => leaseStatus();
  onHeartbeat: Answer<LeaseStatus> = () => leaseStatus();
  onLogs: Answer<LeaseStatus> = () => leaseStatus();
  onEgress: Answer<LeaseStatus> = () => leaseStatus();
  onResult: Answer<void> = () => undefined;
  onRelease: Answer<void> = () => undefined;
  /** Logs requests not yet answered, and how many there were when each result arrived. */
  logsPending = 0;
  readonly logsPendingAtResult: number[] = [];
  readonly #counts = new Map<string, number>();

  #count(kind: string): number {
    const next = (this.#counts.get(kind) ?? 0) + 1;
    this.#counts.set(kind, next);
    return next;
  }

  callsOf(kind: Call['kind']): Call[] {
    return this.calls.filter((call) => call.kind === kind);
  }

  async claim(request: ClaimRequest, options?: CallOptions): Promise<ClaimedJob | null> {
    this.calls.push({ kind: 'claim', jobId: null, body: request });
    const failure = this.claimFailures.shift();
    if (failure !== undefined) throw failure;
    const job = this.queue.shift();
    // As the server: a claim that asks to start the job answers with it running.
    if (job !== undefined) return request.start === true ? { ...job, state: 'running' } : job;
    // A short long poll.
    await sleep(Math.min(request.waitMs, 20), options?.signal);
    if (options?.signal?.aborted) throw options.signal.reason;
    return null;
  }

  async start(jobId: string, body: FencedRequest): Promise<LeaseStatus> {
    this.calls.push({ kind: 'start', jobId, body });
    return this.onStart(this.#count('start'), jobId);
  }

  async heartbeat(jobId: string, body: FencedRequest): Promise<LeaseStatus> {
    this.calls.push({ kind: 'heartbeat', jobId, body });
    return this.onHeartbeat(this.#count('heartbeat'), jobId);
  }

  async logs(jobId: string, body: LogChunks): Promise<LeaseStatus> {
    this.calls.push({ kind: 'logs', jobId, body });
    this.logsPending += 1;
    try {
      await new Promise((resolve) => setImmediate(resolve));
      return this.onLogs(this.#count('logs'), jobId);
    } finally {
      this.logsPending -= 1;
    }
  }

  async egress(jobId: string, body: EgressBatch): Promise<LeaseStatus> {
    this.calls.push({ kind: 'egress', jobId, body });
    await new Promise((resolve) => setImmediate(resolve));
    return this.onEgress(this.#count('egress'), jobId);
  }

  async result(jobId: string, body: ResultReport): Promise<void> {
    this.calls.push({ kind: 'result', jobId, body });
    this.logsPendingAtResult.push(this.logsPending);
    this.onResult(this.#count('result'), jobId);
  }

  async release(jobId: string, body: FencedRequest): Promise<void> {
    this.calls.push({ kind: 'release', jobId, body });
    this.onRelease(this.#count('release'), jobId);
  }

  /** The output shipped for a job, decoded, in seq order (and the seqs). */
  shipped(jobId: string): { text: string; seqs: number[] } {
    const lines = this.callsOf('logs')
      .filter((call) => call.jobId === jobId)
      .flatMap((call) => (call.body as LogChunks).chunks);
    return {
      text: lines.map((line) => Buffer.from(line.data, 'base64').toString('utf8')).join(''),
      seqs: lines.map((line) => line.seq),
    };
  }
}

function sandboxResult(fields: Partial<SandboxResult> = {}): SandboxResult {
  return {
    jobId: 'local-1',
    egress: null,
    exitCode: 0,
    signal: null,
    timedOut: false,
    oomKilled: false,
    cancelled: false,
    wallMs: 12,
    cpuMs: 3,
    peakMemoryBytes: 1024,
    outputBytes: 6,
    outputTruncated: false,
    runtime: 'runc',
    startFailure: null,
    configSha256: 'c'.repeat(64),
    seccompSha256: 'd'.repeat(64),
    ...fields,
  };
}

interface EngineRun {
  readonly job: SandboxJob;
  aborted: boolean;
}

/** A fake workspace for inspect(): a list of files with contents. */
function fakeWorkspace(files: Record<string, string>): {
  list(): Promise<WorkspaceEntry[]>;
  readFile(path: string): Promise<Buffer>;
} {
  return {
    list: async () =>
      Object.entries(files).map(([path, content]) => ({ path, type: 'file' as const, size: content.length })),
    readFile: async (path) => Buffer.from(files[path] ?? ''),
  };
}

class FakeEngine implements WorkerEngine {
  readonly runs: EngineRun[] = [];
  /** How long a job runs unless aborted. */
  durationMs = 30;
  output = 'hello\n';
  /** Written as the job ends: only a flush gets it to the server before the result. */
  tailOutput = '';
  /** Egress records the fake job makes, handed to onEgress as the real proxy would. */
  egressRecords: EgressRecord[] = [];
  workspace: Record<string, string> = {};
  /** Makes run() throw (a sandbox failure). */
  failure: unknown;
  settled = 0;
  closed = false;
  running = 0;

  async run(job: SandboxJob, options: RunOptions): Promise<SandboxResult> {
    const entry: EngineRun = { job, aborted: false };
    this.runs.push(entry);
    if (this.failure !== undefined) throw this.failure;
    this.running += 1;
    try {
      options.onOutput?.('stdout', Buffer.from(this.output));
      for (const record of this.egressRecords) options.onEgress?.(record);
      const finished = await sleep(this.durationMs, options.signal);
      entry.aborted = !finished;
      if (this.tailOutput !== '') options.onOutput?.('stderr', Buffer.from(this.tailOutput));
      // As the real engine: inspect is called once the job has ended.
      await options.inspect?.(fakeWorkspace(this.workspace) as unknown as WorkspaceReader);
      return sandboxResult(finished ? {} : { cancelled: true, exitCode: null, signal: 'SIGTERM' });
    } finally {
      this.running -= 1;
    }
  }

  async settle(): Promise<void> {
    this.settled += 1;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

interface LogEntry {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly details: Record<string, unknown>;
  readonly message: string;
}

class RecordingLogger implements WorkerLogger {
  readonly entries: LogEntry[] = [];
  debug(details: Record<string, unknown>, message: string): void {
    this.entries.push({ level: 'debug', details, message });
  }
  info(details: Record<string, unknown>, message: string): void {
    this.entries.push({ level: 'info', details, message });
  }
  warn(details: Record<string, unknown>, message: string): void {
    this.entries.push({ level: 'warn', details, message });
  }
  error(details: Record<string, unknown>, message: string): void {
    this.entries.push({ level: 'error', details, message });
  }
}

/** Polls until `predicate` holds (or fails the test after `timeoutMs`). */
async function waitFor(predicate: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const started = performance.now();
  while (!predicate()) {
    if (performance.now() - started > timeoutMs) throw new Error(`timed out waiting for: ${what}`);
    await sleep(5);
  }
}

// ---- the worker under test ----

const lost = (): AirlockError => new AirlockError('LEASE_LOST', 'the fencing token is stale');
const unreachable = (): AirlockError => new AirlockError('SERVER_UNREACHABLE', 'connection refused');

interface Harness {
  readonly worker: Worker;
  readonly server: FakeServer;
  readonly engine: FakeEngine;
  readonly logger: RecordingLogger;
  readonly ready: (readonly RuntimeName[])[];
  readonly selftests: { count: number };
  readonly done: Promise<void>;
}

type HarnessOptions = Partial<Omit<WorkerOptions, 'client' | 'engine' | 'logger'>> & {
  readonly selftestOutcome?: () => SelftestOutcome;
};

function startWorker(t: TestContext, options: HarnessOptions = {}): Harness {
  const server = new FakeServer();
  const engine = new FakeEngine();
  const logger = new RecordingLogger();
  const ready: (readonly RuntimeName[])[] = [];
  const selftests = { count: 0 };
  const outcome = options.selftestOutcome ?? (() => ({ ok: true, runtimes: ['runc'], failedProbes: [] }));
  const worker = new Worker({
    client: server,
    engine,
    logger,
    name: 'test-worker',
    concurrency: 1,
    selftestIntervalMs: 0,
    selftestRetryMs: 20,
    claimWaitMs: 20,
    graceMs: 50,
    backoff: { initialMs: 5, maxMs: 20 },
    logLimits: { flushDelayMs: 5 },
    selftest: async () => {
      selftests.count += 1;
      return outcome();
    },
    onReady: (runtimes) => ready.push(runtimes),
    ...options,
  });
  const done = worker.run();
  // Whatever the test did, the worker is stopped and its loops have ended when it is over.
  t.after(async () => {
    await worker.stop({ force: true });
    await done;
  });
  return { worker, server, engine, logger, ready, selftests, done };
}

function bodyOf<T>(calls: readonly Call[], index = 0): T {
  const call = calls[index];
  assert.ok(call !== undefined, `no call #${index}`);
  return call.body as T;
}

function reportOf(server: FakeServer, jobId: string): ResultReport {
  const calls = server.callsOf('result').filter((call) => call.jobId === jobId);
  assert.equal(calls.length, 1, 'exactly one result');
  return calls[0]?.body as ResultReport;
}

describe('Worker: selftest gate', () => {
  test('while the selftest fails nothing is claimed; it is retried and the failed probes logged', async (t) => {
    const h = startWorker(t, {
      selftestOutcome: () => ({ ok: false, runtimes: [], failedProbes: ['runc/seccomp: ptrace allowed'] }),
    });
    await waitFor(() => h.selftests.count >= 3, 'three selftest rounds');
    assert.equal(h.server.callsOf('claim').length, 0);
    assert.equal(h.worker.takingJobs, false);
    assert.deepEqual(h.ready, []);
    const failure = h.logger.entries.find(
      (entry) => entry.level === 'error' && /selftest failed/.test(entry.message),
    );
    assert.deepEqual(failure?.details.failedProbes, ['runc/seccomp: ptrace allowed']);
    await h.worker.stop();
    await h.done;
    assert.equal(h.engine.closed, true, 'the engine is closed when the worker stops');
  });

  test('claims start once the selftest passes, offering only the runtimes that passed', async (t) => {
    let passing = false;
    const h = startWorker(t, {
      selftestOutcome: () =>
        passing
          ? { ok: true, runtimes: ['runc', 'gvisor'], failedProbes: ['crun/x: failed'] }
          : { ok: false, runtimes: [], failedProbes: ['runc/x: failed'] },
    });
    await waitFor(() => h.selftests.count >= 1, 'first selftest');
    passing = true;
    await waitFor(() => h.server.callsOf('claim').length > 0, 'a claim');
    assert.deepEqual(bodyOf<ClaimRequest>(h.server.callsOf('claim')).runtimes, ['runc', 'gvisor']);
    assert.deepEqual(bodyOf<ClaimRequest>(h.server.callsOf('claim')).worker, 'test-worker');
    assert.deepEqual(h.ready, [['runc', 'gvisor']]);
  });

  test('a scheduled selftest waits until no job runs, with claims paused meanwhile', async (t) => {
    const h = startWorker(t, { selftestIntervalMs: 30 });
    h.engine.durationMs = 200;
    h.server.queue.push(claimedJob({}, 3000));
    await waitFor(() => h.engine.running === 1, 'the job runs');
    const selftestsWhileRunning = h.selftests.count;
    const claimsWhileRunning = h.server.callsOf('claim').length;
    await sleep(120);
    assert.equal(h.engine.running, 1);
    assert.equal(h.selftests.count, selftestsWhileRunning, 'no selftest while a job runs');
    assert.equal(h.server.callsOf('claim').length, claimsWhileRunning, 'no claim meanwhile');
    await waitFor(() => h.selftests.count > selftestsWhileRunning, 'the scheduled selftest after the job');
    assert.equal(h.engine.running, 0);
    await waitFor(() => h.server.callsOf('claim').length > claimsWhileRunning, 'claims resume');
  });
});

describe('Worker: running a job', () => {
  test('claimed and started in one call → output shipped in order → result with usage and outputs, after every log was acknowledged', async (t) => {
    const h = startWorker(t);
    h.engine.workspace = { 'dist/app.js': 'code', 'src/a.ts': 'x', 'notes.txt': 'n' };
    h.engine.tailOutput = 'bye\n';
    const job = claimedJob({
      resources: { outputKiB: 4, memoryMiB: 64 },
      outputs: ['dist/**', '*.txt'],
    });
    h.server.queue.push(job);
    await waitFor(() => h.server.callsOf('result').length === 1, 'a result');
    const kinds = h.server.calls.filter((call) => call.jobId === job.jobId).map((call) => call.kind);
    // The claim asked to start the job (decision 0014): no separate start.
    assert.ok(h.server.callsOf('claim').every((call) => (call.body as ClaimRequest).start === true));
    assert.ok(!kinds.includes('start'), kinds.join(', '));
    assert.equal(kinds.at(-1), 'result');
    assert.ok(kinds.includes('logs'));
    assert.deepEqual(h.server.logsPendingAtResult, [0]);
    assert.deepEqual(h.server.shipped(job.jobId), { text: 'hello\nbye\n', seqs: [1, 2] });
    const report = reportOf(h.server, job.jobId);
    assert.equal(report.fence, job.fence);
    assert.equal(report.outcome, 'completed');
    assert.equal(report.error, null);
    assert.deepEqual(report.result, {
      exitCode: 0,
      signal: null,
      timedOut: false,
      oomKilled: false,
      cancelled: false,
      wallMs: 12,
      cpuMs: 3,
      peakMemoryBytes: 1024,
      outputBytes: 6,
      outputTruncated: false,
      runtime: 'runc',
      startFailure: null,
      sandbox: { configSha256: 'c'.repeat(64), seccompSha256: 'd'.repeat(64) },
      outputs: [
        { path: 'dist/app.js', sha256: createHash('sha256').update('code').digest('hex'), size: 4 },
        { path: 'notes.txt', sha256: createHash('sha256').update('n').digest('hex'), size: 1 },
      ],
    });
    const ran = h.engine.runs[0]?.job;
    assert.deepEqual(ran?.resources, { outputBytes: 4096, memoryBytes: 64 * 1024 * 1024 });
    assert.deepEqual(ran?.fallbackRuntimes, []);
  });

  test('heartbeats every TTL/3 carry the fence', async (t) => {
    const h = startWorker(t);
    h.engine.durationMs = 450;
    const job = claimedJob({}, 300);
    h.server.queue.push(job);
    await waitFor(() => h.server.callsOf('result').length === 1, 'a result');
    const beats = h.server.callsOf('heartbeat');
    // Every 100 ms: about 4 in 450 ms (fewer on a loaded machine, never more).
    assert.ok(beats.length >= 2 && beats.length <= 5, `${beats.length} heartbeats in 450 ms`);
    assert.ok(beats.every((call) => (call.body as FencedRequest).fence === job.fence));
  });

  test('LEASE_LOST on a heartbeat: the job is aborted at once, no result, no release, no more logs', async (t) => {
    const h = startWorker(t);
    h.engine.durationMs = 10_000;
    h.server.onHeartbeat = () => {
      throw lost();
    };
    const job = claimedJob({}, 300);
    h.server.queue.push(job);
    await waitFor(() => h.engine.runs[0]?.aborted === true, 'the sandbox aborted');
    await waitFor(() => h.worker.activeJobs === 0, 'the job ended');
    assert.equal(h.server.callsOf('result').length, 0);
    assert.equal(h.server.callsOf('release').length, 0);
    assert.equal(h.server.callsOf('heartbeat').length, 1, 'no heartbeat after the loss');
    assert.ok(h.logger.entries.some((entry) => entry.level === 'warn' && /lease lost/.test(entry.message)));
  });

  test('LEASE_LOST on a log request: the job is stopped and nothing is reported', async (t) => {
    const h = startWorker(t);
    h.engine.durationMs = 10_000;
    h.server.onLogs = () => {
      throw lost();
    };
    h.server.queue.push(claimedJob({}, 3000));
    await waitFor(() => h.engine.runs[0]?.aborted === true, 'the sandbox aborted');
    await waitFor(() => h.worker.activeJobs === 0, 'the job ended');
    assert.equal(h.server.callsOf('result').length, 0);
    assert.equal(h.server.callsOf('release').length, 0);
  });

  test('LEASE_LOST while the last logs are flushed: no result, and the loss is logged', async (t) => {
    const h = startWorker(t);
    h.engine.output = '';
    h.engine.tailOutput = 'last words\n';
    h.server.onLogs = () => {
      throw lost();
    };
    h.server.queue.push(claimedJob({}, 3000));
    await waitFor(() => h.server.callsOf('logs').length === 1, 'the flush');
    await waitFor(() => h.worker.activeJobs === 0, 'the job ended');
    assert.equal(h.server.callsOf('result').length, 0);
    assert.ok(h.logger.entries.some((entry) => entry.level === 'warn' && /lease lost/.test(entry.message)));
    assert.ok(h.logger.entries.some((entry) => entry.details.ending === 'lost'));
  });

  test('cancel:true in a heartbeat aborts the sandbox; reported as completed with cancelled', async (t) => {
    const h = startWorker(t);
    h.engine.durationMs = 10_000;
    h.server.onHeartbeat = () => ({ leaseExpiresAt: new Date().toISOString(), cancel: true });
    const job = claimedJob({}, 300);
    h.server.queue.push(job);
    await waitFor(() => h.server.callsOf('result').length === 1, 'a result');
    assert.equal(h.engine.runs[0]?.aborted, true);
    const report = reportOf(h.server, job.jobId);
    assert.equal(report.outcome, 'completed');
    assert.equal(report.result?.cancelled, true);
  });

  test('the server unreachable until the lease runs out: the job is given up (aborted, not reported)', async (t) => {
    const h = startWorker(t);
    h.engine.durationMs = 10_000;
    h.server.onHeartbeat = () => {
      throw unreachable();
    };
    h.server.queue.push(claimedJob({}, 300));
    await waitFor(() => h.engine.runs[0]?.aborted === true, 'the sandbox aborted');
    await waitFor(() => h.worker.activeJobs === 0, 'the job ended');
    assert.ok(h.server.callsOf('heartbeat').length >= 2, 'heartbeats were retried');
    assert.equal(h.server.callsOf('result').length, 0);
    assert.ok(
      h.logger.entries.some(
        (entry) => entry.level === 'error' && /until the lease ran out/.test(entry.message),
      ),
    );
  });

  test('a result that fails transiently is retried until acknowledged', async (t) => {
    const h = startWorker(t);
    h.server.onResult = (call) => {
      if (call < 3) throw new AirlockError('STORE_FAILED', 'database busy');
    };
    const job = claimedJob({}, 3000);
    h.server.queue.push(job);
    await waitFor(() => h.server.callsOf('result').length === 3, 'three result attempts');
    await waitFor(() => h.worker.activeJobs === 0, 'the job ended');
    assert.equal(h.server.callsOf('release').length, 0);
    assert.ok(h.logger.entries.some((entry) => entry.details.ending === 'reported'));
  });

  test('a spec the worker cannot honour is reported as an INVALID_JOB error, never run', async (t) => {
    const h = startWorker(t);
    // A malformed allowlist entry: the worker never runs what it cannot check.
    const job = claimedJob({ network: { egress: ['https://example.com/'] } });
    h.server.queue.push(job);
    await waitFor(() => h.server.callsOf('result').length === 1, 'a result');
    const report = reportOf(h.server, job.jobId);
    assert.equal(report.outcome, 'error');
    assert.equal(report.result, null);
    assert.equal(report.error?.code, 'INVALID_JOB');
    assert.equal(h.engine.runs.length, 0);
  });

  test('egress records are streamed to the server, numbered, before the result', async (t) => {
    const h = startWorker(t);
    h.engine.egressRecords = Array.from({ length: 150 }, (_, i) => egressRecord(i));
    const job = claimedJob({ network: { egress: ['registry.test:443'] } });
    h.server.queue.push(job);
    await waitFor(() => h.server.callsOf('result').length === 1, 'a result');
    const batches = h.server.callsOf('egress').map((call) => call.body as EgressBatch);
    assert.ok(batches.length >= 2, 'at most 100 records a call');
    assert.ok(batches.every((batch) => batch.fence === job.fence && batch.attempts.length <= 100));
    const seqs = batches.flatMap((batch) => batch.attempts.map((attempt) => attempt.seq));
    assert.deepEqual(
      seqs,
      Array.from({ length: 150 }, (_, i) => i + 1),
    );
    // Every batch was answered before the result was sent.
    const order = h.server.calls.filter((call) => call.kind === 'egress' || call.kind === 'result');
    assert.equal(order.at(-1)?.kind, 'result');
    assert.equal(reportOf(h.server, job.jobId).outcome, 'completed');
  });

  test('egress records the server refuses stop the job, which is reported as an error', async (t) => {
    const h = startWorker(t);
    h.engine.durationMs = 10_000;
    h.engine.egressRecords = [egressRecord(0)];
    h.server.onEgress = () => {
      throw new AirlockError('INVALID_REQUEST', 'refused');
    };
    const job = claimedJob();
    h.server.queue.push(job);
    await waitFor(() => h.server.callsOf('result').length === 1, 'a result');
    const report = reportOf(h.server, job.jobId);
    assert.equal(report.outcome, 'error');
    assert.match(report.error?.message ?? '', /egress records could not be shipped/);
    assert.ok(h.engine.runs[0]?.aborted, 'the job was stopped');
  });

  test('a job for a runtime this worker does not offer is refused (RUNTIME_UNAVAILABLE)', async (t) => {
    const h = startWorker(t);
    const job = claimedJob({ runtime: 'gvisor' });
    h.server.queue.push(job);
    await waitFor(() => h.server.callsOf('result').length === 1, 'a result');
    assert.equal(reportOf(h.server, job.jobId).error?.code, 'RUNTIME_UNAVAILABLE');
    assert.equal(h.engine.runs.length, 0);
  });

  test('a sandbox failure is reported as outcome error with its code and message', async (t) => {
    const h = startWorker(t);
    h.engine.failure = new AirlockError('SANDBOX_START_FAILED', 'runc could not run the job: boom');
    const job = claimedJob();
    h.server.queue.push(job);
    await waitFor(() => h.server.callsOf('result').length === 1, 'a result');
    assert.deepEqual(reportOf(h.server, job.jobId), {
      fence: job.fence,
      outcome: 'error',
      result: null,
      error: { code: 'SANDBOX_START_FAILED', message: 'runc could not run the job: boom' },
    });
  });

  test('claim failures are retried with backoff and logged; the loop goes on', async (t) => {
    const h = startWorker(t);
    h.server.claimFailures.push(unreachable(), unreachable(), new AirlockError('UNAUTHENTICATED', 'revoked'));
    const job = claimedJob();
    h.server.queue.push(job);
    await waitFor(() => h.server.callsOf('result').length === 1, 'a result after the failures');
    assert.ok(h.server.callsOf('claim').length >= 4);
    assert.equal(h.logger.entries.filter((entry) => /claiming failed/.test(entry.message)).length, 3);
  });

  test('concurrency N runs N jobs at once', async (t) => {
    const h = startWorker(t, { concurrency: 3 });
    h.engine.durationMs = 150;
    for (let i = 0; i < 3; i += 1) h.server.queue.push(claimedJob({}, 3000));
    await waitFor(() => h.engine.running === 3, 'three jobs at once');
    await waitFor(() => h.server.callsOf('result').length === 3, 'three results');
  });
});

describe('Worker: stopping', () => {
  test('stop(): a job that ends within the grace period is reported, not released', async (t) => {
    const h = startWorker(t, { graceMs: 2000 });
    h.engine.durationMs = 100;
    const job = claimedJob({}, 3000);
    h.server.queue.push(job);
    await waitFor(() => h.engine.running === 1, 'the job runs');
    await h.worker.stop();
    await h.done;
    assert.equal(reportOf(h.server, job.jobId).outcome, 'completed');
    assert.equal(h.server.callsOf('release').length, 0);
    assert.equal(h.engine.closed, true);
  });

  test('stop(): after the grace period running jobs are aborted and their leases released', async (t) => {
    const h = startWorker(t, { graceMs: 50 });
    h.engine.durationMs = 10_000;
    const job = claimedJob({}, 3000);
    h.server.queue.push(job);
    await waitFor(() => h.engine.running === 1, 'the job runs');
    const started = performance.now();
    await h.worker.stop();
    await h.done;
    assert.ok(performance.now() - started >= 45, 'the job had its grace period');
    assert.equal(h.engine.runs[0]?.aborted, true);
    const releases = h.server.callsOf('release');
    assert.equal(releases.length, 1);
    assert.equal(releases[0]?.jobId, job.jobId);
    assert.equal(bodyOf<FencedRequest>(releases).fence, job.fence);
    assert.match(String(bodyOf<FencedRequest>(releases).reason), /worker stopped/);
    assert.equal(h.server.callsOf('result').length, 0);
    assert.equal(h.engine.closed, true);
  });

  test('stop({ force: true }) releases running jobs at once, their egress records sent first', async (t) => {
    const h = startWorker(t, { graceMs: 60_000 });
    h.engine.durationMs = 10_000;
    h.engine.egressRecords = [egressRecord(0)];
    h.server.queue.push(claimedJob({}, 3000));
    await waitFor(() => h.engine.running === 1, 'the job runs');
    void h.worker.stop();
    const started = performance.now();
    await h.worker.stop({ force: true });
    assert.ok(performance.now() - started < 2000);
    assert.equal(h.server.callsOf('release').length, 1);
    const order = h.server.calls.filter((call) => call.kind === 'egress' || call.kind === 'release');
    assert.deepEqual(
      order.map((call) => call.kind),
      ['egress', 'release'],
    );
  });

  test('stop() aborts a pending long poll and ends the loops', async (t) => {
    const h = startWorker(t, { claimWaitMs: 30_000 });
    await waitFor(() => h.server.callsOf('claim').length > 0, 'a claim');
    const started = performance.now();
    await h.worker.stop();
    await h.done;
    assert.ok(performance.now() - started < 1000);
    assert.equal(h.server.callsOf('release').length, 0);
  });
});

describe('JobRun', () => {
  /** A JobRun of a job claimed but not started (state leased), on its own, without a worker loop. */
  const jobRunOf = (server: FakeServer, engine: FakeEngine): JobRun =>
    new JobRun(claimedJob({}, 3000), performance.now(), {
      client: server,
      engine,
      logger: new RecordingLogger(),
      backoff: { initialMs: 5, maxMs: 20 },
      runtimes: ['runc'],
    });

  test('a job claimed while the worker stops is released without being started', async () => {
    const server = new FakeServer();
    const engine = new FakeEngine();
    const run = jobRunOf(server, engine);
    run.interrupt();
    assert.equal(await run.execute(), 'released');
    assert.deepEqual(
      server.calls.map((call) => call.kind),
      ['release'],
    );
    assert.equal(engine.runs.length, 0);
  });

  test('a job claimed without starting it is started first; the runtime runs only after', async () => {
    const server = new FakeServer();
    const engine = new FakeEngine();
    const run = jobRunOf(server, engine);
    assert.equal(await run.execute(), 'reported');
    const kinds = server.calls.map((call) => call.kind);
    assert.equal(kinds[0], 'start');
    assert.equal(kinds.at(-1), 'result');
    assert.equal(engine.runs.length, 1);
  });

  test('a start refused for another reason than the lease: the job is released', async () => {
    const server = new FakeServer();
    server.onStart = () => {
      throw new AirlockError('INVALID_REQUEST', 'fence must be an integer');
    };
    const engine = new FakeEngine();
    const run = jobRunOf(server, engine);
    assert.equal(await run.execute(), 'released');
    assert.deepEqual(
      server.calls.map((call) => call.kind),
      ['start', 'release'],
    );
    assert.equal(engine.runs.length, 0);
  });

  test('a result refused for another reason than the lease: the job is released, not held', async () => {
    const server = new FakeServer();
    server.onResult = () => {
      throw new AirlockError('INVALID_REQUEST', 'result.wallMs must be a number');
    };
    const run = new JobRun(claimedJob({}, 3000), performance.now(), {
      client: server,
      engine: new FakeEngine(),
      logger: new RecordingLogger(),
      backoff: { initialMs: 5, maxMs: 20 },
      runtimes: ['runc'],
    });
    assert.equal(await run.execute(), 'released');
    assert.match(String(bodyOf<FencedRequest>(server.callsOf('release')).reason), /INVALID_REQUEST/);
  });
});

describe('runtimeSelftest', () => {
  const statuses = (gvisor: boolean) => () => [
    { name: 'runc' as const, available: true, reason: null },
    { name: 'crun' as const, available: false, reason: 'not installed' },
    { name: 'gvisor' as const, available: gvisor, reason: gvisor ? null : 'not installed' },
  ];
  const probe =
    (failing: readonly string[], seen: string[] = []) =>
    async (runtime: RuntimeName) => {
      seen.push(runtime);
      return {
        probes: [
          {
            name: 'seccomp',
            pass: !failing.includes(runtime),
            detail: failing.includes(runtime) ? 'bad' : 'ok',
          },
        ],
      };
    };

  test('runc and every available runtime are tested; those that pass are offered', async () => {
    const seen: string[] = [];
    const outcome = await runtimeSelftest({ runtimes: statuses(true), probe: probe([], seen) })(
      new AbortController().signal,
    );
    assert.deepEqual(outcome, { ok: true, runtimes: ['runc', 'gvisor'], failedProbes: [] });
    assert.deepEqual(seen, ['runc', 'gvisor']);
  });

  test('a failing gVisor is left out; the worker still runs runc jobs', async () => {
    const outcome = await runtimeSelftest({ runtimes: statuses(true), probe: probe(['gvisor']) })(
      new AbortController().signal,
    );
    assert.deepEqual(outcome, { ok: true, runtimes: ['runc'], failedProbes: ['gvisor/seccomp: bad'] });
  });

  test('a failing runc fails the round, and nothing else is tested', async () => {
    const seen: string[] = [];
    const outcome = await runtimeSelftest({ runtimes: statuses(true), probe: probe(['runc'], seen) })(
      new AbortController().signal,
    );
    assert.deepEqual(outcome, { ok: false, runtimes: [], failedProbes: ['runc/seccomp: bad'] });
    assert.deepEqual(seen, ['runc']);
  });
});

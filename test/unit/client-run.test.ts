import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, test } from 'node:test';
import type { AuditEvent, JobRecord, JobSpecV1, LogEnd, LogLine } from '../../src/api/types.js';
import { auditTailCommand } from '../../src/cli/audit-command.js';
import type { CliContext } from '../../src/cli/io.js';
import { logsCommand } from '../../src/cli/logs-command.js';
import { type Interrupts, runCommand, type WatchDependencies } from '../../src/cli/run-command.js';
import { statusCommand } from '../../src/cli/status-command.js';
import { submitCommand } from '../../src/cli/submit-command.js';
import { loadConfig } from '../../src/config/config.js';

/**
 * `airlock run` end to end against a tiny in-test HTTP server that speaks the /v1 endpoints
 * it uses: submit, the log stream (ndjson, follow), cancel, get — with faults on demand.
 */

const TOKEN = 'alk_test_secret_do_not_print_0123456789';
let jobCounter = 0;

function jobId(): string {
  jobCounter += 1;
  return `job_${String(jobCounter)
    .padStart(26, 'a')
    .replace(/[0-9]/g, (d) => 'abcdefghij'[Number(d)] ?? 'a')}`;
}

interface FakeJob {
  record: JobRecord;
  lines: LogLine[];
  end: LogEnd['end'] | null;
  listeners: Set<() => void>;
}

class FakeServer {
  readonly jobs = new Map<string, FakeJob>();
  readonly submits: { key: string | undefined; body: JobSpecV1 }[] = [];
  readonly cancels: string[] = [];
  readonly logRequests: { after: string | null; follow: string | null }[] = [];
  readonly authorizations = new Set<string>();
  audit: AuditEvent[] = [];
  /** Answers of the next submissions instead of a job (status and error code). */
  submitFaults: { status: number; code: string }[] = [];
  /** The first log stream is cut after this many lines. */
  dropStreamAfter: number | undefined;
  onSubmit: ((job: FakeJob) => void) | undefined;
  onCancel: ((job: FakeJob) => void) | undefined;
  readonly #server: Server;
  url = '';

  constructor() {
    this.#server = createServer((request, response) => {
      this.#handle(request, response).catch((error: unknown) => {
        response.destroy(error as Error);
      });
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const job of this.jobs.values()) job.listeners.clear();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  line(job: FakeJob, stream: 'stdout' | 'stderr', text: string | Buffer): void {
    job.lines.push({ seq: job.lines.length + 1, stream, data: Buffer.from(text).toString('base64') });
    for (const listener of job.listeners) listener();
  }

  finish(job: FakeJob, state: JobRecord['state'], exitStatus: number | null): void {
    job.record = { ...job.record, state, exitStatus, finishedAt: new Date().toISOString() };
    job.end = { state, terminal: true, exitStatus };
    for (const listener of job.listeners) listener();
  }

  only(): FakeJob {
    const [job] = this.jobs.values();
    assert.ok(job !== undefined, 'a job was submitted');
    return job;
  }

  #json(response: ServerResponse, status: number, body: unknown): void {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body));
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    this.authorizations.add(request.headers.authorization ?? '');
    if (request.headers.authorization !== `Bearer ${TOKEN}`) {
      this.#json(response, 401, { error: { code: 'UNAUTHENTICATED', message: 'bad token' } });
      return;
    }
    const url = new URL(request.url ?? '/', 'http://x');
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const path = url.pathname;
    if (request.method === 'POST' && path === '/v1/jobs') {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as JobSpecV1;
      const key = request.headers['idempotency-key'] as string | undefined;
      this.submits.push({ key, body });
      const fault = this.submitFaults.shift();
      if (fault !== undefined) {
        response.setHeader('retry-after', '0');
        this.#json(response, fault.status, { error: { code: fault.code, message: `fault ${fault.code}` } });
        return;
      }
      const now = new Date().toISOString();
      const id = jobId();
      const job: FakeJob = {
        record: {
          id,
          project: body.project,
          environment: body.environment ?? 'dev',
          state: 'queued',
          spec: body,
          submittedBy: 'tester',
          createdAt: now,
          updatedAt: now,
          startedAt: null,
          finishedAt: null,
          attempts: 0,
          maxAttempts: 3,
          worker: null,
          cancelRequested: false,
          result: null,
          reason: null,
          exitStatus: null,
          trust: null,
        },
        lines: [],
        end: null,
        listeners: new Set(),
      };
      this.jobs.set(id, job);
      this.#json(response, 201, job.record);
      this.onSubmit?.(job);
      return;
    }
    if (request.method === 'GET' && path === '/v1/audit/events') {
      const after = url.searchParams.has('after') ? Number(url.searchParams.get('after')) : -1;
      const limit = Number(url.searchParams.get('limit') ?? url.searchParams.get('last') ?? '100');
      const events = url.searchParams.has('last')
        ? this.audit.slice(-limit)
        : this.audit.filter((event) => event.seq > after).slice(0, limit);
      const last = events.at(-1);
      const more = last !== undefined && this.audit.some((event) => event.seq > last.seq);
      this.#json(response, 200, { events, nextAfter: more && last !== undefined ? last.seq : null });
      return;
    }
    const match = /^\/v1\/jobs\/(job_[a-z0-9]+)(\/logs|\/cancel)?$/.exec(path);
    const job = match?.[1] === undefined ? undefined : this.jobs.get(match[1]);
    if (job === undefined) {
      this.#json(response, 404, { error: { code: 'NOT_FOUND', message: 'no such job' } });
      return;
    }
    if (match?.[2] === '/cancel') {
      this.cancels.push(job.record.id);
      if (job.end !== null) {
        this.#json(response, 409, { error: { code: 'JOB_FINISHED', message: 'finished' } });
        return;
      }
      job.record = { ...job.record, cancelRequested: true };
      this.#json(response, 200, job.record);
      this.onCancel?.(job);
      return;
    }
    if (match?.[2] === '/logs') {
      this.#logs(job, url, response);
      return;
    }
    this.#json(response, 200, job.record);
  }

  #logs(job: FakeJob, url: URL, response: ServerResponse): void {
    this.logRequests.push({ after: url.searchParams.get('after'), follow: url.searchParams.get('follow') });
    const follow = url.searchParams.get('follow') === 'true';
    let sent = Number(url.searchParams.get('after') ?? '0');
    let count = 0;
    const drop = this.dropStreamAfter;
    this.dropStreamAfter = undefined;
    response.writeHead(200, { 'content-type': 'application/x-ndjson' });
    response.write('\n'); // a keep-alive line, as the server may send
    const pump = (): void => {
      for (const line of job.lines) {
        if (line.seq <= sent) continue;
        if (drop !== undefined && count >= drop) {
          // Cut once the lines sent have had time to arrive: the client has seen them.
          job.listeners.delete(pump);
          setTimeout(() => response.destroy(), 50);
          return;
        }
        response.write(`${JSON.stringify(line)}\n`);
        sent = line.seq;
        count += 1;
      }
      if (job.end !== null || !follow) {
        job.listeners.delete(pump);
        const end = job.end ?? { state: job.record.state, terminal: false, exitStatus: null };
        response.end(`${JSON.stringify({ end })}\n`);
      }
    };
    job.listeners.add(pump);
    response.on('close', () => job.listeners.delete(pump));
    pump();
  }
}

class Capture extends Writable {
  readonly chunks: Buffer[] = [];
  isTTY: boolean;
  onText: ((text: string) => void) | undefined;
  constructor(tty = false) {
    super();
    this.isTTY = tty;
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.chunks.push(Buffer.from(chunk));
    this.onText?.(this.text());
    callback();
  }
  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

interface Harness {
  context: CliContext;
  stdout: Capture;
  stderr: Capture;
  first: AbortController;
  hard: AbortController;
  deps: WatchDependencies;
}

function harness(server: FakeServer, options: { tty?: boolean } = {}): Harness {
  const stdout = new Capture();
  const stderr = new Capture(options.tty === true);
  const first = new AbortController();
  const hard = new AbortController();
  const context: CliContext = {
    stdout,
    stderr,
    config: loadConfig({ AIRLOCK_URL: server.url, AIRLOCK_TOKEN: TOKEN, HOME: '/nonexistent' }),
    openEngine: () => Promise.reject(new Error('no engine in client tests')),
    cliEntry: '',
    interrupted: first.signal,
    version: 'test',
  };
  const interrupts: Interrupts = { first: first.signal, hard: hard.signal, dispose: () => undefined };
  return {
    context,
    stdout,
    stderr,
    first,
    hard,
    deps: {
      interrupts: () => interrupts,
      reconnectDelayMs: 10,
      progress: { delayMs: 0, frameMs: 20 },
      progressPollMs: 30,
    },
  };
}

let server: FakeServer;
beforeEach(async () => {
  server = new FakeServer();
  await server.start();
});
afterEach(async () => {
  await server.close();
});

describe('airlock run against a server', () => {
  test('streams output live, stdout and stderr apart, and exits with the job status', async () => {
    const h = harness(server);
    server.onSubmit = (job) => {
      server.line(job, 'stdout', 'hello ');
      server.line(job, 'stderr', 'warning\n');
    };
    // The job ends only once the first line is seen on stdout: a client that waited for the
    // end before writing anything would never finish.
    h.stdout.onText = (text) => {
      if (text === 'hello ') {
        const job = server.only();
        server.line(job, 'stdout', Buffer.from([0x77, 0x6f, 0x72, 0x6c, 0x64, 0x0a]));
        server.finish(job, 'failed', 3);
      }
    };
    const code = await runCommand(h.context, ['make', 'test'], { memory: '1G', env: ['CI=1'] }, h.deps);
    assert.equal(code, 3);
    assert.equal(h.stdout.text(), 'hello world\n');
    assert.equal(h.stderr.text(), 'warning\n');
    const [submit] = server.submits;
    assert.deepEqual(submit?.body, {
      version: 1,
      project: 'default',
      environment: 'dev',
      command: ['make', 'test'],
      env: { CI: '1' },
      resources: { memoryMiB: 1024 },
    });
    assert.match(submit?.key ?? '', /^[0-9a-f-]{36}$/);
    assert.deepEqual([...server.authorizations], [`Bearer ${TOKEN}`]);
    assert.ok(!h.stderr.text().includes(TOKEN));
  });

  test('a success exits 0 with no words from Airlock', async () => {
    const h = harness(server);
    server.onSubmit = (job) => server.finish(job, 'succeeded', 0);
    assert.equal(await runCommand(h.context, ['true'], {}, h.deps), 0);
    assert.equal(h.stderr.text(), '');
  });

  test('a timed-out job exits 124 and says so', async () => {
    const h = harness(server);
    server.onSubmit = (job) => server.finish(job, 'timed_out', 124);
    assert.equal(await runCommand(h.context, ['sleep', '9'], {}, h.deps), 124);
    assert.match(h.stderr.text(), /timed out/);
  });

  test('Ctrl-C cancels the job on the server and follows it to its end', async () => {
    const h = harness(server);
    server.onSubmit = (job) => server.line(job, 'stdout', 'started\n');
    server.onCancel = (job) => {
      server.line(job, 'stderr', 'terminated\n');
      server.finish(job, 'cancelled', 143);
    };
    h.stdout.onText = (text) => {
      if (text === 'started\n') h.first.abort();
    };
    const code = await runCommand(h.context, ['sleep', '100'], {}, h.deps);
    const job = server.only();
    assert.equal(code, 143);
    assert.deepEqual(server.cancels, [job.record.id]);
    assert.match(h.stderr.text(), new RegExp(`cancelling job ${job.record.id}…`));
    assert.match(h.stderr.text(), /terminated\n/);
    assert.match(h.stderr.text(), /the job was cancelled/);
  });

  test('a second Ctrl-C leaves at once with 130, the job still being cancelled', async () => {
    const h = harness(server);
    server.onSubmit = (job) => server.line(job, 'stdout', 'started\n');
    server.onCancel = () => setImmediate(() => h.hard.abort());
    h.stdout.onText = (text) => {
      if (text === 'started\n') h.first.abort();
    };
    const code = await runCommand(h.context, ['sleep', '100'], {}, h.deps);
    assert.equal(code, 130);
    assert.equal(server.cancels.length, 1);
    assert.match(h.stderr.text(), /left job job_\w+ without waiting/);
  });

  test('a dropped stream is resumed after the last line seen: nothing lost, nothing twice', async () => {
    const h = harness(server);
    server.dropStreamAfter = 2;
    server.onSubmit = (job) => {
      for (const text of ['a\n', 'b\n', 'c\n', 'd\n']) server.line(job, 'stdout', text);
      server.finish(job, 'succeeded', 0);
    };
    assert.equal(await runCommand(h.context, ['x'], {}, h.deps), 0);
    assert.equal(h.stdout.text(), 'a\nb\nc\nd\n');
    assert.deepEqual(
      server.logRequests.map((request) => request.after),
      [null, '2'],
    );
  });

  test('a submission the server could not take is retried with the same Idempotency-Key', async () => {
    const h = harness(server);
    server.submitFaults = [{ status: 503, code: 'SERVER_UNAVAILABLE' }];
    server.onSubmit = (job) => server.finish(job, 'succeeded', 0);
    assert.equal(await runCommand(h.context, ['true'], { idempotencyKey: 'build-42:step.1' }, h.deps), 0);
    assert.deepEqual(
      server.submits.map((submit) => submit.key),
      ['build-42:step.1', 'build-42:step.1'],
    );
    assert.match(h.stderr.text(), /fault SERVER_UNAVAILABLE; trying again/);
  });

  test('QUEUE_FULL is not retried: the user sees it at once', async () => {
    const h = harness(server);
    server.submitFaults = [{ status: 429, code: 'QUEUE_FULL' }];
    await assert.rejects(runCommand(h.context, ['true'], {}, h.deps), {
      name: 'AirlockError',
      code: 'QUEUE_FULL',
    });
    assert.equal(server.submits.length, 1);
  });

  test('a bad token is UNAUTHENTICATED (exit 125) and the token is not in the message', async () => {
    const h = harness(server);
    const context = {
      ...h.context,
      config: loadConfig({ AIRLOCK_URL: server.url, AIRLOCK_TOKEN: 'wrong-secret' }),
    };
    await assert.rejects(
      runCommand(context, ['true'], {}, h.deps),
      (error: Error & { code?: string; exitCode?: number }) => {
        assert.equal(error.code, 'UNAUTHENTICATED');
        assert.equal(error.exitCode, 125);
        assert.ok(!error.message.includes('wrong-secret'));
        return true;
      },
    );
  });

  test('--detach prints the job id and reads no logs', async () => {
    const h = harness(server);
    assert.equal(await runCommand(h.context, ['true'], { detach: true }, h.deps), 0);
    assert.equal(h.stdout.text(), `${server.only().record.id}\n`);
    assert.equal(server.logRequests.length, 0);
  });

  test('--json prints one object {job, stdout, stderr} at the end', async () => {
    const h = harness(server);
    server.onSubmit = (job) => {
      server.line(job, 'stdout', 'out');
      server.line(job, 'stderr', 'err');
      server.finish(job, 'failed', 2);
    };
    assert.equal(await runCommand(h.context, ['x'], { json: true }, h.deps), 2);
    const document = JSON.parse(h.stdout.text()) as { job: JobRecord; stdout: string; stderr: string };
    assert.equal(document.stdout, 'out');
    assert.equal(document.stderr, 'err');
    assert.equal(document.job.exitStatus, 2);
    assert.equal(h.stderr.text(), '');
  });

  test('on a terminal, a waiting job shows a progress line, cleared before the output', async () => {
    const h = harness(server, { tty: true });
    server.onSubmit = (job) => {
      setTimeout(() => {
        server.line(job, 'stdout', 'go\n');
        server.finish(job, 'succeeded', 0);
      }, 150);
    };
    assert.equal(await runCommand(h.context, ['x'], {}, h.deps), 0);
    const text = h.stderr.text();
    assert.match(text, /[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] job_\w+ queued \d+s/);
    assert.ok(text.endsWith('\r\x1b[2K'), 'the line is cleared');
    assert.equal(h.stdout.text(), 'go\n');
  });

  test('not on a terminal: no progress line, no control characters', async () => {
    const h = harness(server);
    server.onSubmit = (job) => setTimeout(() => server.finish(job, 'succeeded', 0), 100);
    assert.equal(await runCommand(h.context, ['x'], {}, h.deps), 0);
    assert.equal(h.stderr.text(), '');
  });
});

describe('submit, logs and status against a server', () => {
  test('submit - --wait: a YAML spec from stdin, sent as written, followed to its exit', async () => {
    const h = harness(server);
    server.onSubmit = (job) => {
      server.line(job, 'stdout', 'built\n');
      server.finish(job, 'failed', 2);
    };
    const yaml = 'version: 1\nproject: web\ncommand: [make, test]\nresources: { memoryMiB: 256 }\n';
    const code = await submitCommand(
      h.context,
      '-',
      { wait: true },
      { ...h.deps, stdin: [Buffer.from(yaml)] },
    );
    assert.equal(code, 2);
    assert.deepEqual(server.submits[0]?.body, {
      version: 1,
      project: 'web',
      command: ['make', 'test'],
      resources: { memoryMiB: 256 },
    });
    assert.equal(h.stdout.text(), 'built\n');
    assert.match(h.stderr.text(), /submitted job_\w+/);
  });

  test('submit without --wait prints the job id only', async () => {
    const h = harness(server);
    const code = await submitCommand(
      h.context,
      '-',
      {},
      { ...h.deps, stdin: ['{"version": 1, "project": "web", "command": ["true"]}'] },
    );
    assert.equal(code, 0);
    assert.equal(h.stdout.text(), `${server.only().record.id}\n`);
    assert.equal(server.logRequests.length, 0);
  });

  test('logs without -f writes what there is and returns; status describes the job', async () => {
    const h = harness(server);
    await runCommand(h.context, ['x'], { detach: true }, h.deps);
    const job = server.only();
    server.line(job, 'stdout', 'one\n');
    server.line(job, 'stderr', 'two\n');
    const logs = harness(server);
    assert.equal(await logsCommand(logs.context, job.record.id, {}), 0);
    assert.equal(logs.stdout.text(), 'one\n');
    assert.equal(logs.stderr.text(), 'two\n');
    assert.equal(server.logRequests.at(-1)?.follow, 'false');
    const status = harness(server);
    assert.equal(await statusCommand(status.context, job.record.id, {}), 0);
    assert.match(status.stdout.text(), /^job: +job_\w+\nstate: +queued\nproject: +default\n/);
  });
});

describe('audit tail over the API', () => {
  function events(count: number, start = 1): AuditEvent[] {
    return Array.from({ length: count }, (_, index) => ({
      seq: start + index,
      at: '2025-01-01T00:00:00.000Z',
      actor: 'tester',
      action: 'job.submit',
      target: `job:job_${index}`,
      outcome: 'succeeded' as const,
      reason: '',
      source: '',
      details: {},
      prevHash: '',
      hash: '',
    }));
  }

  test('tail -n 3 prints the last three events, oldest first', async () => {
    const h = harness(server);
    server.audit = events(10);
    assert.equal(await auditTailCommand(h.context, { lines: '3' }), 0);
    const lines = h.stdout.text().trimEnd().split('\n');
    assert.deepEqual(
      lines.map((line) => line.split(' ')[0]),
      ['8', '9', '10'],
    );
  });
});

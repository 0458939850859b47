import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ControlPlane } from '../control-plane.js';
import { AirlockError, describeError } from '../errors.js';
import type { CliContext, CommandResult } from './io.js';
import { NODE_FLAGS } from './node-flags.js';
import { serverSettings, startServer, waitForAbort } from './server-command.js';
import type { UpCommandOptions } from './server-commands.js';

/**
 * `airlock up`: everything one machine needs, in one command. The data directory and the
 * database (first start: an admin token into the client config, mode 0600, never printed or
 * logged), the server, a local worker — a child process that speaks HTTP to the server like
 * any remote worker, never opening the database (DESIGN §2) — and a first demo job. Stays in
 * the foreground; Ctrl-C stops the worker (its jobs finish or are released) and the server.
 */

const WORKER_TOKEN_FILE = 'worker-token';
const READY_MARK = 'taking jobs';
/** The worker's start includes the selftest (about 50 sandboxes): allow it time. */
const WORKER_READY_TIMEOUT_MS = 180_000;

export async function upCommand(context: CliContext, options: UpCommandOptions): Promise<CommandResult> {
  const concurrency = parseConcurrency(options.concurrency);
  const plane = await startServer(context, options, { bootstrapWorker: true });
  let worker: LocalWorker | undefined;
  try {
    await ensureClientConfig(context, plane);
    const tokenFile = await ensureWorkerToken(plane, serverSettings(context, options).dataDir);
    context.stderr.write(`airlock up: server listening on ${plane.url}\n`);
    worker = new LocalWorker(context, plane.url, tokenFile, concurrency);
    await worker.start();
    if (options.demo !== false) await runDemo(context);
    context.stdout.write(
      [
        '',
        `Airlock is up at ${plane.url}`,
        `  client config: ${context.config.client.configFile} (admin token, mode 0600)`,
        '  try:           airlock run -- sh -c "echo hello; id"',
        '  stop:          Ctrl-C',
        '',
      ].join('\n'),
    );
    await waitForAbort(context.interrupted);
    context.stderr.write('airlock up: stopping the worker and the server\n');
  } finally {
    await worker?.stop();
    await plane.close();
  }
  return 0;
}

function parseConcurrency(text: string | undefined): number {
  if (text === undefined) return 2;
  if (!/^\d{1,2}$/.test(text) || Number(text) < 1 || Number(text) > 64)
    throw new AirlockError(
      'INVALID_OPTION',
      `--concurrency must be a whole number from 1 to 64, got "${text}"`,
    );
  return Number(text);
}

/** Writes 0600 content atomically (temporary file, rename). */
async function writeSecretFile(path: string, content: string): Promise<void> {
  const temporary = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temporary, content, { mode: 0o600, flag: 'wx' });
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw new AirlockError('INVALID_CONFIG', `cannot write ${path}: ${describeError(error)}`, {
      cause: error,
    });
  }
}

/**
 * The client config holds the admin token of the first start. On a later start it keeps its
 * token and only its URL is brought up to date; if it is gone, a new admin token is issued
 * (audited) — the old one cannot be recovered, only its hash is stored.
 */
async function ensureClientConfig(context: CliContext, plane: ControlPlane): Promise<void> {
  const { readClientConfig, writeClientConfig } = await import('../client/config-file.js');
  const path = context.config.client.configFile;
  if (plane.firstStart !== null) {
    await writeClientConfig(path, { url: plane.url, token: plane.firstStart.admin });
    context.stderr.write(`airlock up: first start; the admin token was written to ${path} (mode 0600)\n`);
    return;
  }
  const existing = await readClientConfig(path);
  if (existing?.token !== undefined) {
    if (existing.url !== plane.url) await writeClientConfig(path, { url: plane.url, token: existing.token });
    return;
  }
  const token = await plane.issueSystemToken('admin', 'admin');
  await writeClientConfig(path, { url: plane.url, token });
  context.stderr.write(`airlock up: ${path} had no token; a new admin token was written there (mode 0600)\n`);
}

async function ensureWorkerToken(plane: ControlPlane, dataDir: string): Promise<string> {
  const path = join(dataDir, WORKER_TOKEN_FILE);
  if (plane.firstStart?.worker != null) {
    await writeSecretFile(path, `${plane.firstStart.worker}\n`);
    return path;
  }
  const existing = await readFile(path, 'utf8').catch(() => '');
  if (existing.trim() !== '') return path;
  await writeSecretFile(path, `${await plane.issueSystemToken('local-worker', 'worker')}\n`);
  return path;
}

/** The local worker: `airlock worker` as a child process, restarted if it dies. */
class LocalWorker {
  readonly #context: CliContext;
  readonly #args: string[];
  #child: ChildProcess | undefined;
  #stopping = false;
  #restarts: number[] = [];

  constructor(context: CliContext, url: string, tokenFile: string, concurrency: number) {
    this.#context = context;
    this.#args = [
      ...NODE_FLAGS,
      context.cliEntry,
      'worker',
      '--server',
      url,
      '--token-file',
      tokenFile,
      '--concurrency',
      String(concurrency),
    ];
  }

  /** Starts the worker and resolves once it takes jobs (its selftest passed). */
  async start(): Promise<void> {
    const progress = (this.#context.stderr as NodeJS.WriteStream).isTTY === true;
    this.#context.stderr.write(
      `airlock up: starting the local worker; it runs its selftest first${progress ? ' (about half a minute)' : ''}…\n`,
    );
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(new AirlockError('SELFTEST_FAILED', 'the local worker did not become ready within 180 s')),
        WORKER_READY_TIMEOUT_MS,
      );
      this.#spawn(
        () => {
          clearTimeout(timer);
          resolve();
        },
        (error) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  #spawn(onReady: () => void, onEarlyExit: (error: AirlockError) => void): void {
    const env = { ...process.env };
    // The worker uses its own token file: never the admin token of this shell.
    delete env.AIRLOCK_TOKEN;
    delete env.AIRLOCK_URL;
    // Nor the control plane's own secrets: the checkpoint sink's credentials stay with it.
    for (const name of [
      'AIRLOCK_CHECKPOINT_SINK_TOKEN',
      'AWS_ACCESS_KEY_ID',
      'AWS_SECRET_ACCESS_KEY',
      'AWS_SESSION_TOKEN',
    ])
      delete env[name];
    const child = spawn(process.execPath, this.#args, { stdio: ['ignore', 'inherit', 'pipe'], env });
    this.#child = child;
    let ready = false;
    let tail = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (text: string) => {
      this.#context.stderr.write(text);
      if (!ready) {
        tail = (tail + text).slice(-4096);
        if (tail.includes(READY_MARK)) {
          ready = true;
          onReady();
        }
      }
    });
    child.once('exit', (code, signal) => {
      this.#child = undefined;
      if (this.#stopping) return;
      if (!ready) {
        onEarlyExit(
          new AirlockError(
            'SELFTEST_FAILED',
            `the local worker stopped before taking jobs (${signal ?? `exit ${code}`}); its output is above`,
          ),
        );
        return;
      }
      // A worker that died is started again, at most 5 times a minute.
      const now = Date.now();
      this.#restarts = this.#restarts.filter((at) => now - at < 60_000);
      if (this.#restarts.length >= 5) {
        this.#context.stderr.write(
          'airlock up: the local worker keeps dying; not restarting it (jobs wait in the queue)\n',
        );
        return;
      }
      this.#restarts.push(now);
      this.#context.stderr.write(
        `airlock up: the local worker stopped (${signal ?? `exit ${code}`}); restarting it\n`,
      );
      void sleep(1000).then(() => {
        if (!this.#stopping)
          this.#spawn(
            () => undefined,
            () => undefined,
          );
      });
    });
  }

  /** SIGTERM (the worker finishes or releases its jobs), SIGKILL after 60 s. */
  async stop(): Promise<void> {
    this.#stopping = true;
    const child = this.#child;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise<void>((done) => child.once('exit', () => done()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    await exited;
    clearTimeout(timer);
  }
}

async function runDemo(context: CliContext): Promise<void> {
  const { connect } = await import('../client/connect.js');
  const { followLogs } = await import('../client/follow.js');
  const api = await connect(context.config.client);
  const job = await api.submit({
    version: 1,
    project: 'demo',
    command: ['sh', '-c', 'echo "hello from a fresh sandbox: uid $(id -u), no network, read-only root"'],
  });
  context.stdout.write(`airlock up: demo job ${job.id}:\n`);
  const end = await followLogs(api, job.id, {
    onLine: (line) => {
      (line.stream === 'stdout' ? context.stdout : context.stderr).write(Buffer.from(line.data, 'base64'));
    },
    signal: context.interrupted,
  });
  context.stdout.write(`airlock up: demo job ${end.state} (exit ${end.exitStatus ?? '?'})\n`);
}

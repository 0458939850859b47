import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { Command } from 'commander';
import { type AirlockConfig, isHttpUrl } from '../config/config.js';
import { DURATION_FORMS, parseDuration } from '../config/units.js';
import { AirlockError, describeError } from '../errors.js';
import type { CliContext, CommandResult } from './io.js';

/**
 * `airlock worker --server URL`: takes jobs from an Airlock server and runs them in local
 * sandboxes (src/worker). Options are checked here; the worker's modules are imported only
 * when the command runs (CLI start-up time is benchmarked).
 */

export interface WorkerCommandOptions {
  server?: string;
  tokenFile?: string;
  concurrency?: string;
  name?: string;
  selftestInterval?: string;
}

export interface WorkerSettings {
  readonly url: string;
  readonly token: string;
  /** The file the token came from (kept out of sandboxes by the selftest), if any. */
  readonly tokenFile: string | undefined;
  readonly concurrency: number;
  readonly name: string;
  /** 0 = the selftest runs only at start. */
  readonly selftestIntervalMs: number;
}

const MAX_TOKEN_FILE_BYTES = 4096;
const MAX_SELFTEST_INTERVAL_MS = 30 * 24 * 3600 * 1000;
const MIN_SELFTEST_INTERVAL_MS = 60_000;

function bad(option: string, message: string): never {
  throw new AirlockError('INVALID_OPTION', `--${option}: ${message}`);
}

/**
 * Reads the worker token from a file. A file group or others can access is refused: a worker
 * token lets its holder take jobs (their specs and inputs) and report false results.
 * Links are followed (secret volumes are often links); the mode checked is the target's.
 */
export async function readTokenFile(path: string): Promise<string> {
  let handle: import('node:fs/promises').FileHandle;
  try {
    // O_NONBLOCK: a FIFO put in its place cannot hang the worker.
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    bad('token-file', `cannot open ${path}: ${describeError(error)}`);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) bad('token-file', `${path} is not a regular file`);
    if ((info.mode & 0o077) !== 0) {
      const mode = (info.mode & 0o777).toString(8).padStart(4, '0');
      bad(
        'token-file',
        `${path} can be accessed by group or others (mode ${mode}): run chmod 600 ${path}, and replace the token if others could read it`,
      );
    }
    if (info.size > MAX_TOKEN_FILE_BYTES) bad('token-file', `${path} is larger than a token file can be`);
    const buffer = Buffer.alloc(MAX_TOKEN_FILE_BYTES + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    if (bytesRead > MAX_TOKEN_FILE_BYTES) bad('token-file', `${path} is larger than a token file can be`);
    const token = buffer.subarray(0, bytesRead).toString('utf8').trim();
    if (token === '') bad('token-file', `${path} is empty`);
    return token;
  } finally {
    await handle.close();
  }
}

export async function resolveWorkerSettings(
  client: AirlockConfig['client'],
  options: WorkerCommandOptions,
  defaults: { hostname: string; pid: number } = { hostname: hostname(), pid: process.pid },
): Promise<WorkerSettings> {
  const url = options.server ?? client.url;
  if (url === undefined || url === '')
    throw new AirlockError(
      'INVALID_OPTION',
      'no server URL: give --server URL or set AIRLOCK_URL (e.g. http://127.0.0.1:7340)',
    );
  if (!isHttpUrl(url)) bad('server', `must be an http:// or https:// URL, got "${url}"`);

  let token: string;
  if (options.tokenFile !== undefined) token = await readTokenFile(options.tokenFile);
  else if (client.token !== undefined && client.token !== '') token = client.token;
  else
    throw new AirlockError(
      'INVALID_OPTION',
      'no worker token: give --token-file PATH (a file only you can read) or set AIRLOCK_TOKEN to a token of role "worker"',
    );

  const concurrencyText = options.concurrency ?? '1';
  if (!/^\d+$/.test(concurrencyText.trim()))
    bad('concurrency', `must be a whole number, got "${concurrencyText}"`);
  const concurrency = Number(concurrencyText);
  if (concurrency < 1 || concurrency > 64) bad('concurrency', `must be between 1 and 64, got ${concurrency}`);

  const name = options.name ?? `${defaults.hostname}-${defaults.pid}`;
  // Printable, no spaces: the name is shown in job records and logs, and must not forge lines there.
  if (!/^[\x21-\x7e]{1,128}$/.test(name))
    bad('name', `must be 1 to 128 printable characters without spaces, got ${JSON.stringify(name)}`);

  const intervalText = options.selftestInterval ?? '6h';
  const selftestIntervalMs = parseDuration(intervalText);
  if (
    selftestIntervalMs === null ||
    (selftestIntervalMs !== 0 &&
      (selftestIntervalMs < MIN_SELFTEST_INTERVAL_MS || selftestIntervalMs > MAX_SELFTEST_INTERVAL_MS))
  )
    bad(
      'selftest-interval',
      `must be 0 (only at start) or ${DURATION_FORMS}, from 1m to 30d, got "${intervalText}"`,
    );

  return { url, token, tokenFile: options.tokenFile, concurrency, name, selftestIntervalMs };
}

export function registerWorkerCommand(
  program: Command,
  context: CliContext,
  setResult: (code: CommandResult) => void,
): void {
  program
    .command('worker')
    .description(
      'Take jobs from an Airlock server and run them in local sandboxes; runs the selftest first and takes no jobs while it fails.',
    )
    .option('--server <url>', 'URL of the Airlock server (default: AIRLOCK_URL)')
    .option('--token-file <path>', 'file holding the worker token, mode 0600 (default: AIRLOCK_TOKEN)')
    .option('--concurrency <n>', 'jobs run at once, 1 to 64', '1')
    .option('--name <name>', 'name of this worker shown by the server (default: HOSTNAME-PID)')
    .option('--selftest-interval <duration>', 'time between selftests, 0 = only at start', '6h')
    .action(async (options: WorkerCommandOptions) => {
      setResult(await workerCommand(context, options));
    });
}

/** Runs the worker until SIGINT/SIGTERM (a second one stops running jobs at once). Exit 0 on a clean stop. */
export async function workerCommand(
  context: CliContext,
  options: WorkerCommandOptions,
): Promise<CommandResult> {
  const settings = await resolveWorkerSettings(context.config.client, options);
  const [
    { HttpClient },
    { httpWorkerProtocol },
    { Worker },
    { runtimeSelftest },
    { runSelftest },
    { createLogger },
  ] = await Promise.all([
    import('../client/http.js'),
    import('../worker/protocol.js'),
    import('../worker/worker.js'),
    import('../worker/selftest.js'),
    import('../sandbox/selftest/selftest.js'),
    import('../log.js'),
  ]);
  const client = httpWorkerProtocol(new HttpClient({ url: settings.url, token: settings.token }));
  const logger = createLogger(context.config.server.logLevel, 'airlock-worker', context.stderr);
  const { hostname: host } = new URL(settings.url);
  if (new URL(settings.url).protocol === 'http:' && !['127.0.0.1', 'localhost', '[::1]'].includes(host))
    logger.warn(
      { url: settings.url },
      'plain http to a remote server: the worker token crosses the network unencrypted',
    );

  const engine = await context.openEngine({ preparedSlots: settings.concurrency });
  // Paths a job must never see: Airlock's state, the server's data, the worker's token.
  const hostPaths = [context.config.sandbox.dir, context.config.server.dataDir];
  if (settings.tokenFile !== undefined) hostPaths.push(settings.tokenFile);
  let worker: InstanceType<typeof Worker>;
  try {
    worker = new Worker({
      client,
      engine,
      logger,
      name: settings.name,
      concurrency: settings.concurrency,
      selftestIntervalMs: settings.selftestIntervalMs,
      selftest: runtimeSelftest({
        runtimes: () => engine.runtimes(),
        probe: (runtime, signal) => runSelftest(engine, { runtime, hostPaths, signal }),
      }),
      onReady: (runtimes) =>
        context.stderr.write(
          `airlock worker ${settings.name}: selftest passed (${runtimes.join(', ')}), taking jobs from ${settings.url} with concurrency ${settings.concurrency}\n`,
        ),
    });
  } catch (error) {
    await engine.close().catch(() => undefined);
    throw error;
  }

  // The first SIGINT/SIGTERM (context.interrupted) stops gracefully; the second forces.
  let signals = 0;
  const onSignal = (): void => {
    signals += 1;
    void worker.stop({ force: signals >= 2 });
  };
  const onInterrupted = (): void => void worker.stop();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  context.interrupted.addEventListener('abort', onInterrupted, { once: true });
  if (context.interrupted.aborted) onInterrupted();
  try {
    await worker.run();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    context.interrupted.removeEventListener('abort', onInterrupted);
  }
  logger.info({ name: settings.name }, 'worker stopped');
  return 0;
}

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AirlockConfig } from '../../src/config/config.js';
import { type ControlPlane, startControlPlane } from '../../src/control-plane.js';
import { createLogger } from '../../src/log.js';
import { CLI } from './helpers.js';

/**
 * Control-plane set-up for the integration tests: a real server on a random loopback port
 * with a fresh SQLite database in a temporary directory, removed afterwards.
 */

export interface TestServer {
  readonly plane: ControlPlane;
  readonly url: string;
  readonly dataDir: string;
  readonly admin: string;
  readonly worker: string;
  /** A request with a bearer token; answers status, headers and parsed body. */
  call(
    method: string,
    path: string,
    token: string | null,
    body?: unknown,
    headers?: Record<string, string>,
    // biome-ignore lint/suspicious/noExplicitAny: answers are read field by field in the tests; a wrong shape fails their assertions
  ): Promise<{ status: number; headers: Headers; body: any }>;
  close(): Promise<void>;
}

export const SERVER_DEFAULTS: AirlockConfig['server'] = {
  dataDir: '',
  host: '127.0.0.1',
  port: 0,
  leaseTtlMs: 30_000,
  maxAttempts: 3,
  projectQueueLimit: 1000,
  bodyLimitBytes: 4 * 1024 * 1024,
  logLevel: 'silent',
  checkpointIntervalMs: 0,
  checkpointSink: null,
};

export async function startTestServer(
  overrides: Partial<AirlockConfig['server']> = {},
  logDestination?: NodeJS.WritableStream,
  requestRate?: { perSecond: number; burst: number },
): Promise<TestServer> {
  const dataDir = await mkdtemp(join(tmpdir(), 'airlock-server-'));
  const config = { ...SERVER_DEFAULTS, ...overrides, dataDir };
  const plane = await startControlPlane({
    config,
    logger: createLogger(logDestination === undefined ? config.logLevel : 'trace', 'test', logDestination),
    version: 'test',
    bootstrapWorker: true,
    ...(requestRate !== undefined ? { requestRate } : {}),
  }).catch(async (error: unknown) => {
    // A server that refuses to start (a configuration test) leaves no directory behind.
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  });
  const first = plane.firstStart;
  if (first === null || first.worker === null) throw new Error('a fresh database must bootstrap tokens');
  return {
    plane,
    url: plane.url,
    dataDir,
    admin: first.admin,
    worker: first.worker,
    call: (method, path, token, body, headers = {}) => call(plane.url, method, path, token, body, headers),
    close: async () => {
      await plane.close().catch(() => undefined);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export async function call(
  url: string,
  method: string,
  path: string,
  token: string | null,
  body?: unknown,
  headers: Record<string, string> = {},
  // biome-ignore lint/suspicious/noExplicitAny: as above
): Promise<{ status: number; headers: Headers; body: any }> {
  const init: RequestInit = {
    method,
    headers: {
      ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
  };
  if (body !== undefined)
    init.body = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
  const response = await fetch(`${url}${path}`, init);
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? null : JSON.parse(text);
  } catch {
    // NDJSON or plain text: returned as is
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

export const RESULT_OK = {
  exitCode: 0,
  signal: null,
  timedOut: false,
  oomKilled: false,
  cancelled: false,
  wallMs: 5,
  cpuMs: 1,
  peakMemoryBytes: 1024,
  outputBytes: 0,
  outputTruncated: false,
  runtime: 'runc',
  startFailure: null,
  outputs: [],
} as const;

export function spec(project = 'web', command: string[] = ['true']): Record<string, unknown> {
  return { version: 1, project, command };
}

/** A CLI process kept running (server, worker, up), with its stderr collected. */
export interface CliProcess {
  readonly child: ChildProcess;
  stderr(): string;
  stdout(): string;
  /** Resolves when stderr (or stdout) has shown `text`; rejects on exit or after timeoutMs. */
  waitFor(text: string | RegExp, timeoutMs?: number): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export function startCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  options: { umask?: string } = {},
): CliProcess {
  // With a umask, through sh (`umask` is the shell's): a host whose root has umask 077.
  const [file, argv] =
    options.umask === undefined
      ? [process.execPath, [CLI, ...args]]
      : ['/bin/sh', ['-c', `umask ${options.umask}; exec "$0" "$@"`, process.execPath, CLI, ...args]];
  const child = spawn(file, argv, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  const waiters = new Set<() => void>();
  const poke = (): void => {
    for (const waiter of [...waiters]) waiter();
  };
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    poke();
  });
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    poke();
  });
  child.on('exit', poke);
  return {
    child,
    stderr: () => stderr,
    stdout: () => stdout,
    waitFor: (text, timeoutMs = 120_000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const all = `${stderr}\n${stdout}`;
          const match = typeof text === 'string' ? all.includes(text) : text.exec(all);
          if (match) {
            done();
            resolve(typeof match === 'boolean' ? text.toString() : match[0]);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            done();
            reject(new Error(`process exited before showing ${String(text)}:\n${stderr}\n${stdout}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out waiting for ${String(text)}:\n${stderr}\n${stdout}`));
        }, timeoutMs);
        const done = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
    kill: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill(signal);
      await exited;
    },
  };
}

/**
 * Proposes a policy set or profile as `author` and has `approver` (another admin) approve it,
 * asserting both answers; returns the version now applied.
 */
export async function applyPolicy(
  server: TestServer,
  author: string,
  approver: string,
  document: {
    kind?: 'policy' | 'profile';
    scope?: string;
    content: string;
    rationale?: string;
    mode?: 'audit' | 'enforce';
  },
): Promise<number> {
  const body = { kind: 'policy', scope: '', rationale: 'test', ...document };
  const proposed = await server.call('POST', '/v1/policies/proposals', author, body);
  if (proposed.status !== 201) throw new Error(`proposal refused: ${JSON.stringify(proposed.body)}`);
  const approved = await server.call('POST', '/v1/policies/approve', approver, {
    kind: body.kind,
    scope: body.scope,
    version: proposed.body.version,
  });
  if (approved.status !== 200) throw new Error(`approval refused: ${JSON.stringify(approved.body)}`);
  return proposed.body.version as number;
}

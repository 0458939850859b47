import { chmod, chown, copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { AirlockError } from '../errors.js';
import {
  type EgressProxy,
  type EgressProxyOptions,
  type EgressRecord,
  type EgressTotals,
  startEgressProxy,
} from '../network/egress-proxy.js';

/**
 * A job granted egress, on the sandbox side (decision 0009, docs/network.md). Its network
 * namespace stays loopback-only; the job gets one Unix socket, bind-mounted with the
 * forwarder script at /run/airlock, and its command is started through the forwarder, which
 * listens on 127.0.0.1:3128 inside the sandbox and relays to the socket. Behind the socket is
 * the job's own egress proxy (src/network), started here on the worker and closed with the job.
 */

/** Where the job sees its egress directory (read-only bind): the socket and the forwarder. */
export const EGRESS_MOUNT = '/run/airlock';
export const EGRESS_SOCKET = 'egress.sock';
export const FORWARDER_SCRIPT = 'forward.pl';
/** The forwarder's address inside the sandbox: what HTTP_PROXY and HTTPS_PROXY name. */
export const FORWARDER_URL = 'http://127.0.0.1:3128';
/** The interpreter that runs the forwarder, from the job's own root. */
export const FORWARDER_INTERPRETER = '/usr/bin/perl';

const FORWARDER_SOURCE = new URL('../../../src/sandbox/egress/forward.pl', import.meta.url);

/** sun_path holds 108 bytes with its terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** The worker's settings for every job's proxy (AIRLOCK_EGRESS_* in docs/configuration.md). */
export type EgressSettings = Pick<
  EgressProxyOptions,
  | 'resolve'
  | 'grantAddresses'
  | 'maxBytes'
  | 'maxConnections'
  | 'maxConcurrent'
  | 'connectTimeoutMs'
  | 'idleTimeoutMs'
  | 'headerTimeoutMs'
  | 'maxRecords'
  | 'hostAddresses'
>;

/** What a job's egress came to: the kept attempts (oldest dropped past maxRecords) and totals. */
export interface EgressSummary {
  readonly allow: readonly string[];
  readonly attempts: readonly EgressRecord[];
  readonly totals: EgressTotals;
}

/** The variables that point a job's tools at the forwarder. They override the job's own. */
export function egressEnv(): Record<string, string> {
  const noProxy = 'localhost,127.0.0.1,::1';
  return {
    HTTP_PROXY: FORWARDER_URL,
    HTTPS_PROXY: FORWARDER_URL,
    http_proxy: FORWARDER_URL,
    https_proxy: FORWARDER_URL,
    NO_PROXY: noProxy,
    no_proxy: noProxy,
  };
}

/** The job's command, started through the forwarder (which execs it in its own place). */
export function egressArgs(command: readonly string[]): string[] {
  return [FORWARDER_INTERPRETER, `${EGRESS_MOUNT}/${FORWARDER_SCRIPT}`, '--', ...command];
}

export interface JobEgress {
  /** Host directory to bind read-only at EGRESS_MOUNT. */
  readonly dir: string;
  /** Stops the proxy (cutting what is still open) and answers what the job's egress came to. */
  close(): Promise<EgressSummary>;
}

/**
 * Starts the egress proxy of one job on a Unix socket in `jobDir`/egress, openable by the
 * job's user only, next to a copy of the forwarder. The directory is root's: the job can
 * neither replace the socket nor the script.
 */
export async function openJobEgress(input: {
  readonly jobDir: string;
  readonly allow: readonly string[];
  readonly jobUser: { readonly uid: number; readonly gid: number };
  readonly settings: EgressSettings;
  readonly onAttempt?: (record: EgressRecord) => void;
}): Promise<JobEgress> {
  const dir = join(input.jobDir, 'egress');
  const socket = join(dir, EGRESS_SOCKET);
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new AirlockError(
      'SANDBOX_SETUP_FAILED',
      `the egress socket path ${socket} is longer than the ${MAX_SOCKET_PATH} bytes a Unix socket allows: use a shorter AIRLOCK_SANDBOX_DIR`,
    );
  }
  await mkdir(dir, { mode: 0o755 });
  await copyFile(FORWARDER_SOURCE, join(dir, FORWARDER_SCRIPT));
  await chmod(join(dir, FORWARDER_SCRIPT), 0o444);
  let proxy: EgressProxy;
  try {
    proxy = await startEgressProxy({
      ...input.settings,
      allow: input.allow,
      listen: { path: socket },
      ...(input.onAttempt !== undefined ? { onAttempt: input.onAttempt } : {}),
    });
  } catch (error) {
    if (error instanceof AirlockError) throw error;
    throw new AirlockError(
      'SANDBOX_SETUP_FAILED',
      `cannot start the job's egress proxy: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  try {
    // Only the job's user may connect (connect() needs write permission on the socket).
    await chown(socket, input.jobUser.uid, input.jobUser.gid);
    await chmod(socket, 0o600);
  } catch (error) {
    await proxy.close();
    throw new AirlockError(
      'SANDBOX_SETUP_FAILED',
      `cannot hand the egress socket to the job: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  let closing: Promise<EgressSummary> | undefined;
  return {
    dir,
    close: () => {
      closing ??= proxy.close().then(() => ({
        allow: input.allow,
        attempts: proxy.attempts(),
        totals: proxy.totals(),
      }));
      return closing;
    },
  };
}

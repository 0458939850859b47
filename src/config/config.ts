import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { AirlockError } from '../errors.js';
import { parseGrant } from '../network/addresses.js';
import type { RuntimeName } from '../sandbox/job.js';
import { DURATION_FORMS, parseDuration, parseSize } from './units.js';

/**
 * Airlock's one configuration, read from AIRLOCK_* environment variables and validated at
 * start. An invalid or unknown setting stops Airlock with INVALID_CONFIG: it never falls
 * back to a default silently. Every setting is documented in docs/configuration.md (a test
 * keeps the two in step).
 */

export interface AirlockConfig {
  readonly sandbox: {
    readonly dir: string;
    readonly idBase: number;
    readonly idRanges: number;
    readonly killGraceMs: number;
    readonly runtimePaths: Partial<Record<RuntimeName, string>>;
    readonly seccompProfile: string | undefined;
    /** Settings of every job's egress proxy (docs/network.md). */
    readonly egress: {
      /** AIRLOCK_EGRESS_GRANTS: special-purpose ranges jobs may reach when listed (CIDR, comma-separated). */
      readonly grants: readonly string[];
      /** AIRLOCK_EGRESS_HOSTS: a JSON file of names the proxy resolves itself; undefined = DNS only. */
      readonly hostsFile: string | undefined;
      readonly maxBytes: number;
      readonly maxConnections: number;
    };
  };
  readonly server: {
    /** Holds the database (airlock.db) and the first-start files. */
    readonly dataDir: string;
    readonly host: string;
    readonly port: number;
    readonly leaseTtlMs: number;
    readonly maxAttempts: number;
    readonly projectQueueLimit: number;
    readonly bodyLimitBytes: number;
    readonly logLevel: LogLevel;
    /** 0 = checkpoints only on demand. */
    readonly checkpointIntervalMs: number;
    /** AIRLOCK_CHECKPOINT_SINK as given (parsed at server start); null = none. */
    readonly checkpointSink: string | null;
    /** AIRLOCK_PUBLIC_URL: the URL clients call, behind a proxy; undefined = this server's own. */
    readonly publicUrl?: string;
    /** AIRLOCK_OIDC_ISSUERS: the issuer file (read and validated at server start); undefined = no workload identity. */
    readonly oidcIssuersFile?: string;
  };
  readonly client: {
    /** From AIRLOCK_URL; undefined = take it from the client config file. */
    readonly url: string | undefined;
    /** From AIRLOCK_TOKEN; undefined = take it from the client config file. */
    readonly token: string | undefined;
    /** The client config file (AIRLOCK_CLIENT_CONFIG or ~/.config/airlock/client.json). */
    readonly configFile: string;
    /** AIRLOCK_REQUEST_KEY: an Ed25519 private key (PEM) that signs every request; undefined = none. */
    readonly requestKeyFile?: string;
  };
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

interface Setting {
  readonly summary: string;
  readonly defaultValue: string;
}

export const SETTINGS = {
  AIRLOCK_SANDBOX_DIR: {
    summary:
      'State directory of the sandbox engine: job bundles and disks, runtime state, ID leases, the host image root.',
    defaultValue: '/var/lib/airlock/sandbox',
  },
  AIRLOCK_SANDBOX_ID_BASE: {
    summary:
      'First host UID/GID of the per-job ID ranges, a multiple of 65536 (each job gets 65536 IDs of its own).',
    defaultValue: '2147483648',
  },
  AIRLOCK_SANDBOX_ID_RANGES: {
    summary: 'Number of per-job ID ranges: the most jobs that can run at once on this host.',
    defaultValue: '4096',
  },
  AIRLOCK_KILL_GRACE: {
    summary: 'Time between SIGTERM and SIGKILL when a job is stopped for its timeout or cancelled.',
    defaultValue: '1s',
  },
  AIRLOCK_RUNC: {
    summary: 'Path of the runc binary, if not found in PATH.',
    defaultValue: 'runc (from PATH)',
  },
  AIRLOCK_CRUN: {
    summary: 'Path of the crun binary, if not found in PATH.',
    defaultValue: 'crun (from PATH)',
  },
  AIRLOCK_RUNSC: {
    summary: 'Path of the runsc (gVisor) binary, if not found in PATH.',
    defaultValue: 'runsc (from PATH)',
  },
  AIRLOCK_SECCOMP_PROFILE: {
    summary:
      'Path of an OCI seccomp profile to use instead of the one shipped (src/sandbox/seccomp/profile.json).',
    defaultValue: 'the shipped profile',
  },
  AIRLOCK_EGRESS_GRANTS: {
    summary:
      'Special-purpose address ranges (CIDR, comma-separated: an internal registry at 10.20.0.0/16) that a job may reach when its allowlist names them; none by default, and never wider than /8.',
    defaultValue: '(none)',
  },
  AIRLOCK_EGRESS_HOSTS: {
    summary:
      'Absolute path of a JSON file {"name": ["address", ...]} of names the egress proxy resolves itself, before DNS (internal names; tests).',
    defaultValue: '(none: DNS only)',
  },
  AIRLOCK_EGRESS_MAX_BYTES: {
    summary:
      'Bytes, both ways together, that one job may move through its egress proxy; past it every connection is cut.',
    defaultValue: '1GiB',
  },
  AIRLOCK_EGRESS_MAX_CONNECTIONS: {
    summary: 'Connections one job may open through its egress proxy over its life.',
    defaultValue: '1000',
  },
  AIRLOCK_DATA_DIR: {
    summary:
      'Data directory of the server: the SQLite database airlock.db (jobs, tokens, audit trail) and the worker token of `airlock up`.',
    defaultValue: '/var/lib/airlock/data',
  },
  AIRLOCK_LISTEN: {
    summary:
      'Address and port the server listens on, HOST:PORT. Plain HTTP: keep it on loopback, or put a TLS proxy in front (docs/operations.md).',
    defaultValue: '127.0.0.1:7340',
  },
  AIRLOCK_LEASE_TTL: {
    summary:
      'How long a worker’s lease on a job lasts without a heartbeat; then the job is requeued (or failed when its attempts are used up).',
    defaultValue: '30s',
  },
  AIRLOCK_JOB_ATTEMPTS: {
    summary: 'How many times a job is leased to a worker before a lost lease fails it.',
    defaultValue: '3',
  },
  AIRLOCK_PROJECT_QUEUE_LIMIT: {
    summary: 'Most jobs one project may have queued at once; more submissions are refused with QUEUE_FULL.',
    defaultValue: '1000',
  },
  AIRLOCK_MAX_BODY: {
    summary:
      'Largest request body the server reads (a job spec with its inputs); larger is refused with 413.',
    defaultValue: '4M',
  },
  AIRLOCK_CHECKPOINT_INTERVAL: {
    summary:
      'How often the server signs an audit checkpoint when the log grew (and exports it to the sink); 0 = only on demand.',
    defaultValue: '60s',
  },
  AIRLOCK_CHECKPOINT_SINK: {
    summary:
      'Where signed audit checkpoints are exported: dir:/PATH, an http(s):// URL, or s3://BUCKET/PREFIX?endpoint=URL&region=R.',
    defaultValue: 'none',
  },
  AIRLOCK_CHECKPOINT_SINK_TOKEN: {
    summary: 'Bearer token sent to an http(s) checkpoint sink. Never logged.',
    defaultValue: 'none',
  },
  AIRLOCK_PUBLIC_URL: {
    summary:
      'The URL clients call when a proxy stands in front (https://airlock.example/path); signed requests (RFC 9421) cover it.',
    defaultValue: "this server's own scheme, Host and path",
  },
  AIRLOCK_OIDC_ISSUERS: {
    summary:
      'Absolute path of a JSON file listing the OIDC issuers whose ID tokens are accepted as workload identities (docs/identity.md).',
    defaultValue: 'none (only Airlock tokens)',
  },
  AIRLOCK_LOG_LEVEL: {
    summary: 'Server and worker log level: fatal, error, warn, info, debug, trace or silent.',
    defaultValue: 'info',
  },
  AIRLOCK_URL: {
    summary: 'Client: URL of the server (overrides the client config file).',
    defaultValue: 'the url in the client config file',
  },
  AIRLOCK_TOKEN: {
    summary: 'Client and worker: the API token (overrides the client config file). Never logged.',
    defaultValue: 'the token in the client config file',
  },
  AIRLOCK_REQUEST_KEY: {
    summary:
      'Client: an Ed25519 private key (PKCS#8 PEM) that signs every request (RFC 9421), for a token created with --request-key.',
    defaultValue: 'none',
  },
  AIRLOCK_CLIENT_CONFIG: {
    summary:
      'Client config file with {"url", "token"}, mode 0600 (a file others can read is refused). `airlock up` writes it.',
    defaultValue: '$XDG_CONFIG_HOME/airlock/client.json, else ~/.config/airlock/client.json',
  },
} as const satisfies Record<string, Setting>;

type SettingName = keyof typeof SETTINGS;

function invalid(name: string, message: string): never {
  throw new AirlockError('INVALID_CONFIG', `${name}: ${message}`);
}

function integer(name: SettingName, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) invalid(name, `must be a whole number, got "${text}"`);
  const value = Number(text);
  if (value < min || value > max) invalid(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function absolutePath(name: SettingName, text: string): string {
  if (!isAbsolute(text)) invalid(name, `must be an absolute path, got "${text}"`);
  if (text.includes('\0')) invalid(name, 'must not contain a NUL byte');
  return text;
}

/** Names of the environment that are not Airlock settings but start like them. */
const NOT_SETTINGS = new Set(['AIRLOCK']);

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AirlockConfig {
  for (const name of Object.keys(env)) {
    if (name.startsWith('AIRLOCK_') && !(name in SETTINGS) && !NOT_SETTINGS.has(name)) {
      invalid(name, `is not an Airlock setting; known settings: ${Object.keys(SETTINGS).join(', ')}`);
    }
  }
  const get = (name: SettingName): string | undefined => {
    const value = env[name];
    return value === undefined || value === '' ? undefined : value;
  };
  const dir = absolutePath(
    'AIRLOCK_SANDBOX_DIR',
    get('AIRLOCK_SANDBOX_DIR') ?? SETTINGS.AIRLOCK_SANDBOX_DIR.defaultValue,
  );
  const idBase = integer(
    'AIRLOCK_SANDBOX_ID_BASE',
    get('AIRLOCK_SANDBOX_ID_BASE') ?? '2147483648',
    65_536,
    0xffff_0000,
  );
  if (idBase % 65_536 !== 0) invalid('AIRLOCK_SANDBOX_ID_BASE', `must be a multiple of 65536, got ${idBase}`);
  const idRanges = integer(
    'AIRLOCK_SANDBOX_ID_RANGES',
    get('AIRLOCK_SANDBOX_ID_RANGES') ?? '4096',
    1,
    65_535,
  );
  if (idBase + idRanges * 65_536 > 0xffff_fffe) {
    invalid(
      'AIRLOCK_SANDBOX_ID_RANGES',
      `${idRanges} ranges from ${idBase} pass the largest valid ID (4294967294)`,
    );
  }
  const graceText = get('AIRLOCK_KILL_GRACE') ?? '1s';
  const killGraceMs = parseDuration(graceText);
  if (killGraceMs === null || killGraceMs > 60_000)
    invalid('AIRLOCK_KILL_GRACE', `must be ${DURATION_FORMS}, at most 60s`);
  const runtimePaths: Partial<Record<RuntimeName, string>> = {};
  const runc = get('AIRLOCK_RUNC');
  const crun = get('AIRLOCK_CRUN');
  const runsc = get('AIRLOCK_RUNSC');
  if (runc !== undefined) runtimePaths.runc = absolutePath('AIRLOCK_RUNC', runc);
  if (crun !== undefined) runtimePaths.crun = absolutePath('AIRLOCK_CRUN', crun);
  if (runsc !== undefined) runtimePaths.gvisor = absolutePath('AIRLOCK_RUNSC', runsc);
  const profile = get('AIRLOCK_SECCOMP_PROFILE');
  const egressBytes = parseSize(get('AIRLOCK_EGRESS_MAX_BYTES') ?? '1GiB');
  if (egressBytes === null || egressBytes < 1)
    invalid('AIRLOCK_EGRESS_MAX_BYTES', 'must be a size such as 512MiB or 1GiB');
  const hostsFile = get('AIRLOCK_EGRESS_HOSTS');
  const egress = {
    grants: (get('AIRLOCK_EGRESS_GRANTS') ?? '')
      .split(',')
      .map((entry) => entry.trim())
      .filter((entry) => entry !== '')
      .map((entry) => {
        try {
          parseGrant(entry);
        } catch (error) {
          invalid('AIRLOCK_EGRESS_GRANTS', (error as Error).message);
        }
        return entry;
      }),
    hostsFile: hostsFile === undefined ? undefined : absolutePath('AIRLOCK_EGRESS_HOSTS', hostsFile),
    maxBytes: egressBytes,
    maxConnections: integer(
      'AIRLOCK_EGRESS_MAX_CONNECTIONS',
      get('AIRLOCK_EGRESS_MAX_CONNECTIONS') ?? '1000',
      1,
      1_000_000,
    ),
  };
  return {
    server: serverSettings(get),
    client: clientSettings(get, env),
    sandbox: {
      dir,
      idBase,
      idRanges,
      killGraceMs,
      runtimePaths,
      seccompProfile: profile === undefined ? undefined : absolutePath('AIRLOCK_SECCOMP_PROFILE', profile),
      egress,
    },
  };
}

type Getter = (name: SettingName) => string | undefined;

/** Whether `text` is an absolute http:// or https:// URL (a server's address). */
export function isHttpUrl(text: string): boolean {
  try {
    const { protocol } = new URL(text);
    return protocol === 'http:' || protocol === 'https:';
  } catch {
    return false;
  }
}

function duration(name: SettingName, text: string, minMs: number, maxMs: number): number {
  const value = parseDuration(text);
  if (value === null || value < minMs || value > maxMs)
    invalid(name, `must be ${DURATION_FORMS}, between ${minMs} ms and ${maxMs} ms, got "${text}"`);
  return value;
}

/** HOST:PORT or [IPv6]:PORT; port 0 picks a free port (tests). */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (match === null || host === undefined || !Number.isInteger(port) || port > 65_535)
    invalid('AIRLOCK_LISTEN', `must be HOST:PORT or [IPv6]:PORT, got "${text}"`);
  return { host, port };
}

function serverSettings(get: Getter): AirlockConfig['server'] {
  const bodyText = get('AIRLOCK_MAX_BODY') ?? '4M';
  const bodyLimitBytes = parseSize(bodyText);
  if (bodyLimitBytes === null || bodyLimitBytes < 64 * 1024 || bodyLimitBytes > 256 * 1024 * 1024)
    invalid('AIRLOCK_MAX_BODY', `must be a size between 64K and 256M, got "${bodyText}"`);
  const level = get('AIRLOCK_LOG_LEVEL') ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level))
    invalid('AIRLOCK_LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}, got "${level}"`);
  return {
    dataDir: absolutePath(
      'AIRLOCK_DATA_DIR',
      get('AIRLOCK_DATA_DIR') ?? SETTINGS.AIRLOCK_DATA_DIR.defaultValue,
    ),
    ...parseListen(get('AIRLOCK_LISTEN') ?? SETTINGS.AIRLOCK_LISTEN.defaultValue),
    leaseTtlMs: duration('AIRLOCK_LEASE_TTL', get('AIRLOCK_LEASE_TTL') ?? '30s', 1000, 3_600_000),
    maxAttempts: integer('AIRLOCK_JOB_ATTEMPTS', get('AIRLOCK_JOB_ATTEMPTS') ?? '3', 1, 100),
    projectQueueLimit: integer(
      'AIRLOCK_PROJECT_QUEUE_LIMIT',
      get('AIRLOCK_PROJECT_QUEUE_LIMIT') ?? '1000',
      1,
      10_000_000,
    ),
    bodyLimitBytes,
    logLevel: level as LogLevel,
    checkpointIntervalMs:
      (get('AIRLOCK_CHECKPOINT_INTERVAL') ?? '60s') === '0'
        ? 0
        : duration(
            'AIRLOCK_CHECKPOINT_INTERVAL',
            get('AIRLOCK_CHECKPOINT_INTERVAL') ?? '60s',
            1000,
            86_400_000,
          ),
    checkpointSink: ((text) => (text === undefined || text === '' || text === 'none' ? null : text))(
      get('AIRLOCK_CHECKPOINT_SINK'),
    ),
    ...((url) => {
      if (url === undefined || url === '') return {};
      if (!isHttpUrl(url)) invalid('AIRLOCK_PUBLIC_URL', `must be an http:// or https:// URL, got "${url}"`);
      return { publicUrl: url.replace(/\/$/, '') };
    })(get('AIRLOCK_PUBLIC_URL')),
    // The file itself is read when the server starts (src/auth/oidc-issuers.ts): a client
    // command never needs it, nor permission to read it.
    ...((path) =>
      path === undefined ? {} : { oidcIssuersFile: absolutePath('AIRLOCK_OIDC_ISSUERS', path) })(
      get('AIRLOCK_OIDC_ISSUERS'),
    ),
  };
}

function clientSettings(get: Getter, env: NodeJS.ProcessEnv): AirlockConfig['client'] {
  const url = get('AIRLOCK_URL');
  if (url !== undefined && !isHttpUrl(url))
    invalid('AIRLOCK_URL', `must be an http:// or https:// URL, got "${url}"`);
  const configured = get('AIRLOCK_CLIENT_CONFIG');
  const home = env.HOME === undefined || env.HOME === '' ? homedir() : env.HOME;
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg !== undefined && isAbsolute(xdg) ? xdg : join(home, '.config');
  return {
    url,
    token: get('AIRLOCK_TOKEN'),
    configFile:
      configured === undefined
        ? join(base, 'airlock', 'client.json')
        : absolutePath('AIRLOCK_CLIENT_CONFIG', configured),
    ...((key) =>
      key === undefined || key === '' ? {} : { requestKeyFile: absolutePath('AIRLOCK_REQUEST_KEY', key) })(
      get('AIRLOCK_REQUEST_KEY'),
    ),
  };
}

import { isAbsolute } from 'node:path';
import { AirlockError } from '../errors.js';
import type { RuntimeName } from '../sandbox/job.js';
import { DURATION_FORMS, parseDuration } from './units.js';

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
  };
}

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
  return {
    sandbox: {
      dir,
      idBase,
      idRanges,
      killGraceMs,
      runtimePaths,
      seccompProfile: profile === undefined ? undefined : absolutePath('AIRLOCK_SECCOMP_PROFILE', profile),
    },
  };
}

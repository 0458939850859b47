import { AirlockError } from '../errors.js';
import { type ImageRef, parseImageRef } from '../images/reference.js';
import { normaliseEgress } from '../network/allowlist.js';

/**
 * What one sandboxed job asks for, and the bounds every request is held to (DESIGN §5.6).
 * validateJob() is the only way in: the rest of the sandbox trusts a ValidJob.
 */

export const RUNTIME_NAMES = ['runc', 'crun', 'gvisor'] as const;
export type RuntimeName = (typeof RUNTIME_NAMES)[number];

export interface SandboxResources {
  /** CPU quota in cores (0.5 = half a core). */
  cpus: number;
  /** Memory limit in bytes; memory+swap is set to the same value, so no swap. */
  memoryBytes: number;
  /** Maximum number of processes and threads. */
  pids: number;
  /** Wall-clock limit in milliseconds. */
  timeoutMs: number;
  /** Size of the job's disk: workspace and /tmp together. */
  diskBytes: number;
  /** Bytes of stdout+stderr kept; the rest is counted and discarded. */
  outputBytes: number;
}

export interface WorkspaceFile {
  /** Relative path inside the workspace. */
  path: string;
  content: string | Uint8Array;
  /** Permission bits (0o755 for a script); default 0o644. Set-id bits are refused. */
  mode?: number;
}

export interface SandboxJob {
  command: readonly string[];
  env?: Readonly<Record<string, string>>;
  resources?: Partial<SandboxResources>;
  runtime?: RuntimeName;
  /**
   * Runtimes the job accepts when `runtime` cannot run on this host, in order. Empty
   * (the default) means: refuse rather than run under a runtime the job did not ask for.
   */
  fallbackRuntimes?: readonly RuntimeName[];
  /** A host directory whose contents are copied into the workspace before the run. */
  inputDir?: string;
  /** Files written into the workspace before the run. */
  files?: readonly WorkspaceFile[];
  /**
   * Egress allowlist (docs/network.md): destinations the job may reach through its egress
   * proxy. Absent or empty: no network at all (loopback only), the default.
   */
  egress?: readonly string[];
  /** `host` (default) or a digest-pinned image `NAME@sha256:<64 hex>` from the image cache. */
  image?: string;
}

export interface ValidJob {
  command: readonly string[];
  env: Readonly<Record<string, string>>;
  resources: Readonly<SandboxResources>;
  runtime: RuntimeName;
  fallbackRuntimes: readonly RuntimeName[];
  inputDir: string | undefined;
  files: readonly WorkspaceFile[];
  /** Normalised allowlist entries; empty = no egress. */
  egress: readonly string[];
  image: ImageRef;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const DEFAULT_RESOURCES: Readonly<SandboxResources> = Object.freeze({
  cpus: 1,
  memoryBytes: 512 * MiB,
  pids: 256,
  timeoutMs: 60_000,
  diskBytes: 1 * GiB,
  outputBytes: 1 * MiB,
});

/** Inclusive bounds of each resource; a request outside them is refused, never clamped. */
export const RESOURCE_BOUNDS: Readonly<Record<keyof SandboxResources, readonly [number, number]>> =
  Object.freeze({
    cpus: [0.01, 256],
    memoryBytes: [16 * MiB, 1024 * GiB],
    pids: [8, 65_536],
    timeoutMs: [100, 7 * 24 * 3600 * 1000],
    diskBytes: [16 * MiB, 16 * 1024 * GiB],
    outputBytes: [0, 1 * GiB],
  });

export const JOB_BOUNDS = Object.freeze({
  maxArgs: 4096,
  maxArgBytes: 128 * KiB,
  maxCommandBytes: 1 * MiB,
  maxEnvEntries: 1024,
  maxEnvNameBytes: 256,
  maxEnvValueBytes: 128 * KiB,
  maxEnvBytes: 1 * MiB,
  maxFiles: 10_000,
  /** Entries copied from an input directory (inputDir; a node_modules tree has tens of thousands). */
  maxInputEntries: 100_000,
  maxPathBytes: 4096,
});

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function invalid(message: string): never {
  throw new AirlockError('INVALID_JOB', message);
}

function utf8Length(value: string): number {
  return Buffer.byteLength(value, 'utf8');
}

function checkString(what: string, value: unknown, maxBytes: number): string {
  if (typeof value !== 'string') invalid(`${what} must be a string`);
  if (value.includes('\0')) invalid(`${what} must not contain a NUL byte`);
  if (utf8Length(value) > maxBytes) invalid(`${what} is longer than ${maxBytes} bytes`);
  return value;
}

export function isRuntimeName(value: unknown): value is RuntimeName {
  return typeof value === 'string' && (RUNTIME_NAMES as readonly string[]).includes(value);
}

/**
 * A relative path inside the workspace, refused if it could name anything outside it:
 * absolute, `..` components, empty components, NUL. Returned normalised ("a/b").
 */
export function checkWorkspacePath(what: string, value: unknown): string {
  const path = checkString(what, value, JOB_BOUNDS.maxPathBytes);
  if (path.length === 0) invalid(`${what} is empty`);
  if (path.startsWith('/')) invalid(`${what} must be relative to the workspace, not absolute: ${path}`);
  const parts = path.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.length === 0) invalid(`${what} names the workspace itself: ${path}`);
  if (parts.includes('..')) invalid(`${what} must not contain "..": ${path}`);
  return parts.join('/');
}

function checkResources(requested: Partial<SandboxResources> | undefined): SandboxResources {
  const out: SandboxResources = { ...DEFAULT_RESOURCES };
  if (requested === undefined) return out;
  if (typeof requested !== 'object' || requested === null) invalid('resources must be an object');
  for (const [key, value] of Object.entries(requested)) {
    if (!(key in RESOURCE_BOUNDS)) invalid(`unknown resource "${key}"`);
    if (value === undefined) continue;
    const name = key as keyof SandboxResources;
    const [min, max] = RESOURCE_BOUNDS[name];
    if (typeof value !== 'number' || !Number.isFinite(value)) invalid(`resources.${name} must be a number`);
    if (name !== 'cpus' && !Number.isInteger(value)) invalid(`resources.${name} must be a whole number`);
    if (value < min || value > max)
      invalid(`resources.${name} must be between ${min} and ${max}, got ${value}`);
    out[name] = value;
  }
  return out;
}

function checkEnv(env: Readonly<Record<string, string>> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (env === undefined) return out;
  if (typeof env !== 'object' || env === null || Array.isArray(env))
    invalid('env must be an object of strings');
  const entries = Object.entries(env);
  if (entries.length > JOB_BOUNDS.maxEnvEntries)
    invalid(`env has more than ${JOB_BOUNDS.maxEnvEntries} entries`);
  let total = 0;
  for (const [name, value] of entries) {
    checkString('an env name', name, JOB_BOUNDS.maxEnvNameBytes);
    if (!ENV_NAME.test(name)) invalid(`env name "${name}" must match ${ENV_NAME.source}`);
    checkString(`env ${name}`, value, JOB_BOUNDS.maxEnvValueBytes);
    total += utf8Length(name) + utf8Length(value) + 2;
    out[name] = value;
  }
  if (total > JOB_BOUNDS.maxEnvBytes) invalid(`env is larger than ${JOB_BOUNDS.maxEnvBytes} bytes`);
  return out;
}

function checkFiles(files: readonly WorkspaceFile[] | undefined, diskBytes: number): WorkspaceFile[] {
  if (files === undefined) return [];
  if (!Array.isArray(files)) invalid('files must be an array');
  if (files.length > JOB_BOUNDS.maxFiles) invalid(`more than ${JOB_BOUNDS.maxFiles} files`);
  const seen = new Set<string>();
  let total = 0;
  const out = files.map((file, index) => {
    const path = checkWorkspacePath(`files[${index}].path`, file.path);
    if (seen.has(path)) invalid(`files[${index}].path repeats ${path}`);
    seen.add(path);
    if (typeof file.content !== 'string' && !(file.content instanceof Uint8Array)) {
      invalid(`files[${index}].content must be a string or bytes`);
    }
    total += typeof file.content === 'string' ? utf8Length(file.content) : file.content.byteLength;
    const mode = file.mode ?? 0o644;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
      invalid(`files[${index}].mode must be permission bits between 0 and 0o777 (no set-id or sticky bits)`);
    }
    return { path, content: file.content, mode };
  });
  if (total > diskBytes) invalid(`files add up to ${total} bytes, more than the job's disk of ${diskBytes}`);
  return out;
}

export function validateJob(job: SandboxJob): ValidJob {
  if (typeof job !== 'object' || job === null) invalid('a job must be an object');
  const { command } = job;
  if (!Array.isArray(command) || command.length === 0)
    invalid('command must be a non-empty array of strings');
  if (command.length > JOB_BOUNDS.maxArgs) invalid(`command has more than ${JOB_BOUNDS.maxArgs} arguments`);
  let commandBytes = 0;
  for (const [index, arg] of command.entries()) {
    checkString(`command[${index}]`, arg, JOB_BOUNDS.maxArgBytes);
    commandBytes += utf8Length(arg) + 1;
  }
  if (command[0] === '') invalid('command[0] must name a program');
  if (commandBytes > JOB_BOUNDS.maxCommandBytes)
    invalid(`command is larger than ${JOB_BOUNDS.maxCommandBytes} bytes`);

  const runtime = job.runtime ?? 'runc';
  if (!isRuntimeName(runtime)) invalid(`runtime must be one of ${RUNTIME_NAMES.join(', ')}`);
  const fallbackRuntimes = job.fallbackRuntimes ?? [];
  if (!Array.isArray(fallbackRuntimes) || !fallbackRuntimes.every(isRuntimeName)) {
    invalid(`fallbackRuntimes must list runtimes among ${RUNTIME_NAMES.join(', ')}`);
  }
  if (job.inputDir !== undefined) checkString('inputDir', job.inputDir, JOB_BOUNDS.maxPathBytes);

  const resources = checkResources(job.resources);
  return {
    command: [...command],
    env: checkEnv(job.env),
    resources,
    runtime,
    fallbackRuntimes: [...fallbackRuntimes],
    inputDir: job.inputDir,
    files: checkFiles(job.files, resources.diskBytes),
    egress: checkEgress(job.egress),
    image: parseImageRef(job.image),
  };
}

/** The allowlist in the proxy's own grammar (INVALID_JOB naming a bad entry), normalised. */
function checkEgress(egress: readonly string[] | undefined): string[] {
  return egress === undefined ? [] : normaliseEgress(egress);
}

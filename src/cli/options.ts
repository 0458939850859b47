import { DURATION_FORMS, parseDuration, parseSize, SIZE_FORMS } from '../config/units.js';
import { AirlockError } from '../errors.js';
import { isRuntimeName, RUNTIME_NAMES, type RuntimeName, type SandboxResources } from '../sandbox/job.js';

/**
 * Parsing of the command-line options shared by `airlock sandbox` (and later `airlock run`)
 * into a job description. Each option is checked here with a message naming the option;
 * the job's bounds are then checked by the sandbox's validateJob().
 */

export interface SandboxCliOptions {
  runtime?: string;
  fallbackRuntime?: string[];
  cpus?: string;
  memory?: string;
  pids?: string;
  timeout?: string;
  disk?: string;
  outputLimit?: string;
  env?: string[];
  input?: string;
}

function bad(option: string, message: string): never {
  throw new AirlockError('INVALID_OPTION', `--${option}: ${message}`);
}

export function parseRuntime(option: string, value: string): RuntimeName {
  if (!isRuntimeName(value)) bad(option, `must be one of ${RUNTIME_NAMES.join(', ')}, got "${value}"`);
  return value;
}

function size(option: string, value: string): number {
  const bytes = parseSize(value);
  if (bytes === null) bad(option, `must be ${SIZE_FORMS}, got "${value}"`);
  return bytes;
}

function wholeNumber(option: string, value: string): number {
  if (!/^\d+$/.test(value.trim())) bad(option, `must be a whole number, got "${value}"`);
  return Number(value);
}

export function parseEnvPairs(values: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of values) {
    const equals = pair.indexOf('=');
    if (equals <= 0) bad('env', `must be NAME=VALUE, got "${pair}"`);
    env[pair.slice(0, equals)] = pair.slice(equals + 1);
  }
  return env;
}

export function parseResources(options: SandboxCliOptions): Partial<SandboxResources> {
  const resources: Partial<SandboxResources> = {};
  if (options.cpus !== undefined) {
    const cpus = Number(options.cpus);
    if (!/^\d+(\.\d+)?$/.test(options.cpus.trim()) || !Number.isFinite(cpus)) {
      bad('cpus', `must be a number of CPUs such as 1 or 0.5, got "${options.cpus}"`);
    }
    resources.cpus = cpus;
  }
  if (options.memory !== undefined) resources.memoryBytes = size('memory', options.memory);
  if (options.pids !== undefined) resources.pids = wholeNumber('pids', options.pids);
  if (options.timeout !== undefined) {
    const ms = parseDuration(options.timeout);
    if (ms === null) bad('timeout', `must be ${DURATION_FORMS}, got "${options.timeout}"`);
    resources.timeoutMs = ms;
  }
  if (options.disk !== undefined) resources.diskBytes = size('disk', options.disk);
  if (options.outputLimit !== undefined) resources.outputBytes = size('output-limit', options.outputLimit);
  return resources;
}

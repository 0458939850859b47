import type { JobSpecV1 } from '../api/types.js';
import { AirlockError } from '../errors.js';
import { parseImageRef } from '../images/reference.js';
import { egressOfNetwork } from '../network/allowlist.js';
import {
  RESOURCE_BOUNDS,
  type SandboxJob,
  type SandboxResources,
  validateJob,
  type WorkspaceFile,
} from '../sandbox/job.js';
import { GLOB_BOUNDS, parseGlob } from './glob.js';

/**
 * A claimed job's spec (JobSpecV1, as the server accepted it) turned into the sandbox's own
 * job description. The server validated the spec, but the worker does not rely on that: the
 * spec is the submitter's, so every field is checked again here (shape and units) and then
 * by the sandbox's validateJob() (bounds, paths, sizes). Any refusal is INVALID_JOB and is
 * reported as the job's error, never run.
 */

const KiB = 1024;
const MiB = 1024 * KiB;

/** Spec resource → sandbox resource, and the factor from the spec's unit to the sandbox's. */
const RESOURCE_MAP = {
  cpus: { target: 'cpus', factor: 1, whole: false },
  memoryMiB: { target: 'memoryBytes', factor: MiB, whole: true },
  pids: { target: 'pids', factor: 1, whole: true },
  timeoutSeconds: { target: 'timeoutMs', factor: 1000, whole: false },
  diskMiB: { target: 'diskBytes', factor: MiB, whole: true },
  outputKiB: { target: 'outputBytes', factor: KiB, whole: true },
} as const satisfies Record<
  keyof NonNullable<JobSpecV1['resources']>,
  { target: keyof SandboxResources; factor: number; whole: boolean }
>;

/** What the worker runs for a spec: the sandbox job and the output patterns to collect. */
export interface WorkerJob {
  readonly sandbox: SandboxJob;
  /** Normalised output patterns (checked by parseGlob), in the spec's order. */
  readonly outputs: readonly string[];
}

function invalid(message: string): never {
  throw new AirlockError('INVALID_JOB', message);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function workerJobOf(spec: JobSpecV1): WorkerJob {
  const raw: unknown = spec;
  if (!isRecord(raw)) invalid('the job spec must be an object');
  // Only what this worker can honour. The image is `host` or pinned by digest (parseImageRef
  // refuses tags); a pinned image missing from this worker's cache fails the job with
  // IMAGE_NOT_FOUND when it runs, never runs on something else.
  const image = raw.image === undefined ? undefined : parseImageRef(raw.image).ref;

  const sandbox: SandboxJob = {
    command: raw.command as string[],
    runtime: (raw.runtime ?? 'runc') as NonNullable<SandboxJob['runtime']>,
    // No fallback: a job that asked for gVisor never runs under runc instead.
    fallbackRuntimes: [],
    ...(image !== undefined ? { image } : {}),
    ...(raw.env !== undefined ? { env: raw.env as Record<string, string> } : {}),
    ...(raw.resources !== undefined ? { resources: resourcesOf(raw.resources) } : {}),
    ...(raw.inputs !== undefined ? { files: filesOf(raw.inputs) } : {}),
    // Egress only through the job's own proxy, and only to what the allowlist names.
    egress: egressOfNetwork(raw.network),
  };
  const outputs = outputsOf(raw.outputs);
  // The engine checks again; checking here refuses a bad job before anything is prepared.
  validateJob(sandbox);
  return { sandbox, outputs };
}

function resourcesOf(value: unknown): Partial<SandboxResources> {
  if (!isRecord(value)) invalid('resources must be an object');
  const out: Partial<SandboxResources> = {};
  for (const [name, amount] of Object.entries(value)) {
    if (!Object.hasOwn(RESOURCE_MAP, name)) invalid(`unknown resource "${name}"`);
    if (amount === undefined) continue;
    const { target, factor, whole } = RESOURCE_MAP[name as keyof typeof RESOURCE_MAP];
    if (typeof amount !== 'number' || !Number.isFinite(amount)) invalid(`resources.${name} must be a number`);
    if (whole && !Number.isInteger(amount)) invalid(`resources.${name} must be a whole number`);
    // The bounds are the sandbox's, said in the spec's unit so the message names what was sent.
    const [min, max] = RESOURCE_BOUNDS[target];
    if (amount < min / factor || amount > max / factor)
      invalid(`resources.${name} must be between ${min / factor} and ${max / factor}, got ${amount}`);
    out[target] = target === 'cpus' ? amount : Math.round(amount * factor);
  }
  return out;
}

/** Strict base64 (RFC 4648, padded): Buffer.from() would silently skip what is not. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function filesOf(value: unknown): WorkspaceFile[] {
  if (!Array.isArray(value)) invalid('inputs must be an array');
  return value.map((input: unknown, index) => {
    if (!isRecord(input)) invalid(`inputs[${index}] must be an object`);
    const { path, content, contentBase64, mode } = input;
    if ((content === undefined) === (contentBase64 === undefined))
      invalid(`inputs[${index}] must have exactly one of content and contentBase64`);
    let data: string | Buffer;
    if (content !== undefined) {
      if (typeof content !== 'string') invalid(`inputs[${index}].content must be a string`);
      data = content;
    } else {
      if (typeof contentBase64 !== 'string' || !BASE64.test(contentBase64))
        invalid(`inputs[${index}].contentBase64 must be base64`);
      data = Buffer.from(contentBase64, 'base64');
    }
    // path and mode are checked by validateJob (relative, no "..", permission bits only).
    return { path: path as string, content: data, ...(mode !== undefined ? { mode: mode as number } : {}) };
  });
}

function outputsOf(value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) invalid('outputs must be an array of glob patterns');
  if (value.length > GLOB_BOUNDS.maxPatterns)
    invalid(`more than ${GLOB_BOUNDS.maxPatterns} outputs patterns`);
  return value.map((pattern: unknown, index) => parseGlob(pattern, `outputs[${index}]`).join('/'));
}

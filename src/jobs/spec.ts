import type { JobSpecV1 } from '../api/types.js';
import { AirlockError } from '../errors.js';
import { parseImageRef } from '../images/reference.js';
import { egressOfNetwork } from '../network/allowlist.js';
import { type SandboxJob, type SandboxResources, validateJob, type WorkspaceFile } from '../sandbox/job.js';

/**
 * Job spec v1 (DESIGN §6) → the sandbox's job description. The API schema has already
 * checked the shape and field bounds; this checks what a schema cannot (base64 that decodes,
 * one content per input, the sandbox's own resource bounds) so that a job the server queues
 * is one a worker can run. The worker maps the same way with the same function.
 */

const MiB = 1024 * 1024;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export const NAME_PATTERN = '^[a-z0-9][a-z0-9._-]{0,63}$';
const NAME = new RegExp(NAME_PATTERN);

function invalid(message: string): never {
  throw new AirlockError('INVALID_JOB', message);
}

export function toSandboxJob(spec: JobSpecV1): SandboxJob {
  if (spec.version !== 1) invalid(`version must be 1, got ${String(spec.version)}`);
  if (!NAME.test(spec.project)) invalid(`project must match ${NAME_PATTERN}`);
  if (spec.environment !== undefined && !NAME.test(spec.environment))
    invalid(`environment must match ${NAME_PATTERN}`);
  // "host" or NAME@sha256:<64 hex>; a tag or anything else is refused with the reason.
  parseImageRef(spec.image);
  const resources: Partial<SandboxResources> = {};
  const r = spec.resources ?? {};
  if (r.cpus !== undefined) resources.cpus = r.cpus;
  if (r.memoryMiB !== undefined) resources.memoryBytes = r.memoryMiB * MiB;
  if (r.pids !== undefined) resources.pids = r.pids;
  if (r.timeoutSeconds !== undefined) resources.timeoutMs = Math.round(r.timeoutSeconds * 1000);
  if (r.diskMiB !== undefined) resources.diskBytes = r.diskMiB * MiB;
  if (r.outputKiB !== undefined) resources.outputBytes = r.outputKiB * 1024;
  const files: WorkspaceFile[] = (spec.inputs ?? []).map((input, index) => {
    const hasText = input.content !== undefined;
    const hasBytes = input.contentBase64 !== undefined;
    if (hasText === hasBytes) invalid(`inputs[${index}] needs exactly one of content and contentBase64`);
    let content: string | Uint8Array;
    if (input.contentBase64 !== undefined) {
      if (input.contentBase64.length % 4 !== 0 || !BASE64.test(input.contentBase64))
        invalid(`inputs[${index}].contentBase64 is not base64`);
      content = Buffer.from(input.contentBase64, 'base64');
    } else {
      content = input.content ?? '';
    }
    return { path: input.path, content, ...(input.mode !== undefined ? { mode: input.mode } : {}) };
  });
  const job: SandboxJob = {
    command: spec.command,
    env: spec.env ?? {},
    resources,
    runtime: spec.runtime ?? 'runc',
    files,
    egress: egressOfNetwork(spec.network),
  };
  // The sandbox's own bounds (resources, env, paths, sizes): refused here, before queueing.
  validateJob(job);
  return job;
}

/** The output cap of a spec in bytes (the server bounds stored logs by it). */
export function outputBytesOf(spec: JobSpecV1): number {
  return (spec.resources?.outputKiB ?? 1024) * 1024;
}

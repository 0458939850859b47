import { AirlockError } from '../errors.js';
import type { SandboxEngine, SandboxResult } from '../sandbox/engine.js';
import type { SandboxJob } from '../sandbox/job.js';
import { exitCodeOf } from './exit-codes.js';
import { type CliContext, type CommandResult, withEngine } from './io.js';
import { parseEnvPairs, parseResources, parseRuntime, type SandboxCliOptions } from './options.js';

/** `airlock sandbox [options] -- CMD [ARGS…]`: one job in a local sandbox, no server. */

export interface SandboxCommandOptions extends SandboxCliOptions {
  /** `host` or NAME@sha256:… from this host's image cache (`airlock image import`). */
  image?: string;
  json?: boolean;
  printConfig?: boolean;
}

/**
 * Under --json the kept output is held in memory and written as one JSON string; V8 strings
 * stop at 512 MiB and escaping can multiply the size by six, so the cap is lower there.
 */
export const JSON_OUTPUT_LIMIT = 64 * 1024 * 1024;

export function jobFromOptions(
  command: readonly string[],
  options: SandboxCliOptions & { image?: string },
): SandboxJob {
  if (command.length === 0)
    throw new AirlockError('INVALID_OPTION', 'no command given: airlock sandbox [options] -- CMD [ARGS…]');
  const job: SandboxJob = {
    command,
    env: parseEnvPairs(options.env ?? []),
    resources: parseResources(options),
    runtime: parseRuntime('runtime', options.runtime ?? 'runc'),
    fallbackRuntimes: (options.fallbackRuntime ?? []).map((name) => parseRuntime('fallback-runtime', name)),
    ...(options.input !== undefined ? { inputDir: options.input } : {}),
    ...(options.image !== undefined ? { image: options.image } : {}),
  };
  return job;
}

/** The --json document (stable field names: scripts depend on them). */
export function resultDocument(
  result: SandboxResult,
  stdout: string,
  stderr: string,
): Record<string, unknown> {
  return {
    exitCode: result.exitCode,
    signal: result.signal,
    timedOut: result.timedOut,
    oomKilled: result.oomKilled,
    wallMs: result.wallMs,
    cpuMs: result.cpuMs,
    peakMemoryBytes: result.peakMemoryBytes,
    stdout,
    stderr,
    outputBytes: result.outputBytes,
    outputTruncated: result.outputTruncated,
    runtime: result.runtime,
    cancelled: result.cancelled,
    startFailure: result.startFailure,
    jobId: result.jobId,
    configSha256: result.configSha256,
    seccompSha256: result.seccompSha256,
    ...(result.imageDigest !== undefined ? { imageDigest: result.imageDigest } : {}),
  };
}

export async function sandboxCommand(
  context: CliContext,
  command: readonly string[],
  options: SandboxCommandOptions,
): Promise<CommandResult> {
  const job = jobFromOptions(command, options);
  if (options.json === true && (job.resources?.outputBytes ?? 0) > JSON_OUTPUT_LIMIT) {
    throw new AirlockError(
      'INVALID_OPTION',
      `--output-limit: at most 64M with --json (the output is held in memory)`,
    );
  }
  return withEngine(context, (engine) => runOne(context, engine, job, options));
}

async function runOne(
  context: CliContext,
  engine: SandboxEngine,
  job: SandboxJob,
  options: SandboxCommandOptions,
): Promise<CommandResult> {
  if (options.printConfig === true) {
    context.stdout.write(`${JSON.stringify(await engine.describeBundle(job), null, 2)}\n`);
    return 0;
  }
  if (options.json === true) {
    // Bounded by the job's output cap (plus the marker).
    const captured: Record<'stdout' | 'stderr', Buffer[]> = { stdout: [], stderr: [] };
    const result = await engine.run(job, {
      onOutput: (stream, chunk) => captured[stream].push(chunk),
      signal: context.interrupted,
    });
    const text = (stream: 'stdout' | 'stderr'): string => Buffer.concat(captured[stream]).toString('utf8');
    context.stdout.write(`${JSON.stringify(resultDocument(result, text('stdout'), text('stderr')))}\n`);
    return exitCodeOf(result);
  }
  const result = await engine.run(job, {
    onOutput: (stream, chunk) => (stream === 'stdout' ? context.stdout : context.stderr).write(chunk),
    signal: context.interrupted,
  });
  if (result.timedOut)
    context.stderr.write(`airlock: the job timed out and was killed (${result.wallMs} ms)\n`);
  if (result.oomKilled) context.stderr.write('airlock: the job reached its memory limit and was killed\n');
  if (result.cancelled) context.stderr.write('airlock: the job was cancelled\n');
  if (job.runtime !== undefined && result.runtime !== job.runtime) {
    context.stderr.write(
      `airlock: ${job.runtime} cannot run here; the job ran under ${result.runtime} as --fallback-runtime allows\n`,
    );
  }
  return exitCodeOf(result);
}

import { randomUUID } from 'node:crypto';
import type { JobRecord, JobSpecV1 } from '../api/types.js';
import type { ApiClient } from '../client/api-client.js';
import { connect } from '../client/connect.js';
import { EXIT_INTERRUPTED, exitCodeOfEnd, followLogs } from '../client/follow.js';
import { DEFAULT_INPUT_LIMITS, readInputDir } from '../client/inputs.js';
import { isTerminal, ProgressLine, type ProgressOptions, writeOut } from '../client/terminal.js';
import { AirlockError, describeError, isAirlockError } from '../errors.js';
import { parseImageRef } from '../images/reference.js';
import { normaliseEgress } from '../network/allowlist.js';
import type { CliContext, CommandResult } from './io.js';
import { parseEnvPairs, parseResources, parseRuntime, type SandboxCliOptions } from './options.js';

/**
 * `airlock run [options] -- CMD [ARGS…]`: the job goes to the server, its output comes
 * back live, and the CLI exits with the job's exit status (DESIGN §6). Ctrl-C cancels the
 * job on the server and keeps following until it has stopped; a second Ctrl-C leaves at
 * once (exit 130) without waiting.
 */

export interface RunCommandOptions extends SandboxCliOptions {
  image?: string;
  egress?: string[];
  project?: string;
  environment?: string;
  detach?: boolean;
  json?: boolean;
  idempotencyKey?: string;
}

/** Output held for --json (like `airlock sandbox --json`): the rest is dropped with a warning. */
export const JSON_OUTPUT_LIMIT = 64 * 1024 * 1024;

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

function bad(option: string, message: string): never {
  throw new AirlockError('INVALID_OPTION', `--${option}: ${message}`);
}

/**
 * A job spec counts in whole units (MiB, KiB, seconds). A value that is not whole is
 * refused rather than rounded: a limit is what the user wrote, or nothing.
 */
function whole(
  option: string,
  written: string,
  value: number,
  unit: number,
  unitName: string,
  suffix: string,
): number {
  if (value % unit === 0) return value / unit;
  const up = Math.ceil(value / unit);
  bad(option, `a job spec counts this in whole ${unitName}, and "${written}" is not; use ${up}${suffix}`);
}

function checkName(option: string, value: string): string {
  if (!NAME.test(value))
    bad(
      option,
      `must be 1–64 lower-case letters, digits, ".", "_" or "-", starting with a letter or digit; got "${value}"`,
    );
  return value;
}

/** The job spec of `airlock run` (without inputs, which readInputDir() adds). */
export function specFromRunOptions(command: readonly string[], options: RunCommandOptions): JobSpecV1 {
  if (command.length === 0)
    throw new AirlockError('INVALID_OPTION', 'no command given: airlock run [options] -- CMD [ARGS…]');
  if ((options.fallbackRuntime ?? []).length > 0)
    bad(
      'fallback-runtime',
      'is for the local `airlock sandbox` only: a job spec names one runtime, and the server gives the job to a worker that has it',
    );
  const parsed = parseResources(options);
  const resources: NonNullable<JobSpecV1['resources']> = {};
  if (parsed.cpus !== undefined) resources.cpus = parsed.cpus;
  if (parsed.memoryBytes !== undefined && options.memory !== undefined)
    resources.memoryMiB = whole('memory', options.memory, parsed.memoryBytes, 1024 * 1024, 'MiB', 'M');
  if (parsed.pids !== undefined) resources.pids = parsed.pids;
  if (parsed.timeoutMs !== undefined && options.timeout !== undefined)
    resources.timeoutSeconds = whole('timeout', options.timeout, parsed.timeoutMs, 1000, 'seconds', 's');
  if (parsed.diskBytes !== undefined && options.disk !== undefined)
    resources.diskMiB = whole('disk', options.disk, parsed.diskBytes, 1024 * 1024, 'MiB', 'M');
  if (parsed.outputBytes !== undefined && options.outputLimit !== undefined)
    resources.outputKiB = whole('output-limit', options.outputLimit, parsed.outputBytes, 1024, 'KiB', 'K');
  const env = parseEnvPairs(options.env ?? []);
  const spec: JobSpecV1 = {
    version: 1,
    project: checkName('project', options.project ?? 'default'),
    environment: checkName('environment', options.environment ?? 'dev'),
    command: [...command],
  };
  // Without --runtime the spec names none: the server picks runc, or gvisor where policy requires it.
  if (options.runtime !== undefined) spec.runtime = parseRuntime('runtime', options.runtime);
  if (Object.keys(env).length > 0) spec.env = env;
  if (Object.keys(resources).length > 0) spec.resources = resources;
  if (options.image !== undefined) spec.image = asOption('image', () => parseImageRef(options.image).ref);
  const egress = options.egress ?? [];
  if (egress.length > 0) spec.network = { egress: asOption('egress', () => normaliseEgress(egress)) };
  return spec;
}

/** A spec check's INVALID_JOB, said as the option that caused it. */
function asOption<T>(option: string, check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof AirlockError) bad(option, error.message);
    throw error;
  }
}

/** The Ctrl-C state of one command: the first asks the job to stop, the second leaves. */
export interface Interrupts {
  /** The first Ctrl-C (or SIGTERM, or a closed stdout): cancel the job. */
  readonly first: AbortSignal;
  /** A second one: stop waiting. */
  readonly hard: AbortSignal;
  dispose(): void;
}

/**
 * The CLI context gives one signal, aborted at the first SIGINT/SIGTERM; the second is
 * caught here, on the process, only once the first has come.
 */
export function processInterrupts(first: AbortSignal): Interrupts {
  const hard = new AbortController();
  const onSignal = (): void => hard.abort();
  const arm = (): void => {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  };
  if (first.aborted) arm();
  else first.addEventListener('abort', arm, { once: true });
  return {
    first,
    hard: hard.signal,
    dispose(): void {
      first.removeEventListener('abort', arm);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

export interface WatchDependencies {
  readonly interrupts?: (first: AbortSignal) => Interrupts;
  readonly connect?: (client: CliContext['config']['client']) => Promise<ApiClient>;
  readonly progress?: ProgressOptions;
  /** How often the progress line asks for the job's state (only on a terminal). Default 1 s. */
  readonly progressPollMs?: number;
  readonly reconnectDelayMs?: number;
}

/** Keeps the progress line's state current while it shows; stops with it. */
function pollState(api: ApiClient, job: JobRecord, progress: ProgressLine, everyMs: number): () => void {
  const stop = new AbortController();
  const loop = async (): Promise<void> => {
    while (progress.active && !stop.signal.aborted) {
      await new Promise((resolve) => setTimeout(resolve, everyMs).unref());
      if (!progress.active || stop.signal.aborted) return;
      const record = await api.getJob(job.id, stop.signal).catch(() => null);
      if (record !== null) progress.setState(record.state);
    }
  };
  void loop();
  return () => stop.abort();
}

async function explainEnd(
  context: CliContext,
  api: ApiClient,
  jobId: string,
  state: string,
  code: number,
): Promise<void> {
  // A job that failed with its own exit code needs no words; the rest say why.
  if (state === 'succeeded' || (state === 'failed' && code !== 125)) return;
  const record = await api.getJob(jobId).catch(() => null);
  const reason = record?.reason !== null && record?.reason !== undefined ? `: ${record.reason}` : '';
  let text: string;
  if (state === 'timed_out') text = 'the job timed out and was killed';
  else if (record?.result?.oomKilled === true) text = 'the job reached its memory limit and was killed';
  else if (state === 'cancelled') text = 'the job was cancelled';
  else if (state === 'killed') text = 'the job was killed';
  else text = `the job ${state.replace('_', ' ')}`;
  context.stderr.write(`airlock: ${text}${reason} (${jobId})\n`);
}

/**
 * Follows a submitted job to its end: output live (or collected under --json), a progress
 * line on a terminal while nothing happens, Ctrl-C → cancel. Returns the exit code.
 */
export async function watchJob(
  context: CliContext,
  api: ApiClient,
  job: JobRecord,
  options: { json: boolean },
  interrupts: Interrupts,
  deps: WatchDependencies = {},
): Promise<CommandResult> {
  const { stderr } = context;
  const progress =
    !options.json && isTerminal(stderr)
      ? new ProgressLine(stderr, job.id, job.state, deps.progress)
      : undefined;
  const stopPolling =
    progress === undefined ? () => undefined : pollState(api, job, progress, deps.progressPollMs ?? 1000);
  const stopProgress = (): void => {
    progress?.stop();
    stopPolling();
  };
  let cancelling: Promise<void> | undefined;
  const onInterrupt = (): void => {
    stopProgress();
    stderr.write(`cancelling job ${job.id}… (Ctrl-C again to leave without waiting)\n`);
    cancelling = api.cancel(job.id, interrupts.hard).then(
      () => undefined,
      (error: unknown) => {
        if (isAirlockError(error, 'JOB_FINISHED') || interrupts.hard.aborted) return;
        stderr.write(`airlock: could not cancel ${job.id}: ${describeError(error)}\n`);
      },
    );
  };
  if (interrupts.first.aborted) onInterrupt();
  else interrupts.first.addEventListener('abort', onInterrupt, { once: true });

  const captured = { stdout: [] as Buffer[], stderr: [] as Buffer[], bytes: 0, dropped: false };
  let end: Awaited<ReturnType<typeof followLogs>>;
  try {
    end = await followLogs(api, job.id, {
      signal: interrupts.hard,
      ...(deps.reconnectDelayMs !== undefined ? { baseDelayMs: deps.reconnectDelayMs } : {}),
      onLine: async (line) => {
        stopProgress();
        const data = Buffer.from(line.data, 'base64');
        if (!options.json) {
          await writeOut(line.stream === 'stdout' ? context.stdout : stderr, data);
          return;
        }
        if (captured.bytes + data.length > JSON_OUTPUT_LIMIT) {
          captured.dropped = true;
          return;
        }
        captured.bytes += data.length;
        captured[line.stream].push(data);
      },
      onReconnect: (error, attempt) => {
        if (isTerminal(stderr))
          stderr.write(`\r\x1b[2Kairlock: ${error.message}; reconnecting (${attempt})…\n`);
      },
    });
  } catch (error) {
    stopProgress();
    if (interrupts.hard.aborted) {
      stderr.write(
        `airlock: left job ${job.id} without waiting${cancelling !== undefined ? ' (cancellation requested)' : ''}; see: airlock status ${job.id}\n`,
      );
      return EXIT_INTERRUPTED;
    }
    throw error;
  } finally {
    stopProgress();
    interrupts.first.removeEventListener('abort', onInterrupt);
  }
  await cancelling;
  const code = exitCodeOfEnd(end);
  if (options.json) {
    if (captured.dropped)
      stderr.write(
        `airlock: the output passed ${JSON_OUTPUT_LIMIT} bytes; the rest is left out of the JSON\n`,
      );
    const final = await api.getJob(job.id);
    const text = (stream: 'stdout' | 'stderr'): string => Buffer.concat(captured[stream]).toString('utf8');
    context.stdout.write(
      `${JSON.stringify({ job: final, stdout: text('stdout'), stderr: text('stderr') })}\n`,
    );
  } else {
    await explainEnd(context, api, job.id, end.state, code);
  }
  return code;
}

export async function runCommand(
  context: CliContext,
  command: readonly string[],
  options: RunCommandOptions,
  deps: WatchDependencies = {},
): Promise<CommandResult> {
  const spec = specFromRunOptions(command, options);
  const bodyLimit = context.config.server.bodyLimitBytes;
  if (options.input !== undefined)
    spec.inputs = readInputDir(options.input, { ...DEFAULT_INPUT_LIMITS, maxEncodedBytes: bodyLimit });
  const size = Buffer.byteLength(JSON.stringify(spec));
  if (size > bodyLimit)
    throw new AirlockError(
      spec.inputs !== undefined ? 'INPUT_REJECTED' : 'INVALID_JOB',
      `the job is ${size} bytes as JSON, more than the ${bodyLimit} bytes a server takes in one request (AIRLOCK_MAX_BODY); send fewer input files or a shorter command and env`,
    );
  const api = await (deps.connect ?? connect)(context.config.client);
  const interrupts = (deps.interrupts ?? processInterrupts)(context.interrupted);
  try {
    const idempotencyKey = options.idempotencyKey ?? randomUUID();
    let job: JobRecord;
    try {
      job = await api.submit(spec, {
        idempotencyKey,
        signal: interrupts.hard,
        stopRetrying: interrupts.first,
        onRetry: (error, attempt, delayMs) =>
          context.stderr.write(
            `airlock: ${error.message}; trying again in ${(delayMs / 1000).toFixed(1)} s (${attempt + 1})…\n`,
          ),
      });
    } catch (error) {
      if (interrupts.hard.aborted) {
        context.stderr.write(
          `airlock: interrupted before the server confirmed the job; if it was made, resubmitting with --idempotency-key ${idempotencyKey} finds it instead of making another\n`,
        );
        return EXIT_INTERRUPTED;
      }
      throw error;
    }
    if (options.detach === true) {
      context.stdout.write(options.json === true ? `${JSON.stringify(job)}\n` : `${job.id}\n`);
      // A Ctrl-C during the submission still cancels what was made.
      if (interrupts.first.aborted) {
        await api.cancel(job.id).catch(() => undefined);
        context.stderr.write(`airlock: interrupted: cancelled job ${job.id}\n`);
        return EXIT_INTERRUPTED;
      }
      return 0;
    }
    return await watchJob(context, api, job, { json: options.json === true }, interrupts, deps);
  } finally {
    interrupts.dispose();
  }
}

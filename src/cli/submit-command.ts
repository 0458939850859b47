import { randomUUID } from 'node:crypto';
import type { JobSpecV1 } from '../api/types.js';
import { connect } from '../client/connect.js';
import { EXIT_INTERRUPTED } from '../client/follow.js';
import { readJobSpecFile } from '../client/job-spec-file.js';
import type { CliContext, CommandResult } from './io.js';
import { processInterrupts, type WatchDependencies, watchJob } from './run-command.js';

/** `airlock submit FILE|- [--json] [--wait]`: a job spec file (JSON or YAML) to the server. */

export interface SubmitCommandOptions {
  json?: boolean;
  wait?: boolean;
  idempotencyKey?: string;
}

export async function submitCommand(
  context: CliContext,
  file: string,
  options: SubmitCommandOptions,
  deps: WatchDependencies & {
    stdin?: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>;
  } = {},
): Promise<CommandResult> {
  // Sent as read: the server validates the spec, and its errors name the fields. A signed job
  // (airlock sign) goes to /v1/jobs/signed as it is: its bytes are what was signed.
  const spec = (await readJobSpecFile(file, deps.stdin)) as unknown as JobSpecV1;
  const api = await (deps.connect ?? connect)(context.config.client);
  const interrupts = (deps.interrupts ?? processInterrupts)(context.interrupted);
  try {
    const idempotencyKey = options.idempotencyKey ?? randomUUID();
    const job = await api
      .submit(spec, {
        idempotencyKey,
        signal: interrupts.hard,
        stopRetrying: interrupts.first,
        onRetry: (error, attempt, delayMs) =>
          context.stderr.write(
            `airlock: ${error.message}; trying again in ${(delayMs / 1000).toFixed(1)} s (${attempt + 1})…\n`,
          ),
      })
      .catch((error: unknown) => {
        if (!interrupts.hard.aborted) throw error;
        context.stderr.write(
          `airlock: interrupted before the server confirmed the job; if it was made, resubmitting with --idempotency-key ${idempotencyKey} finds it instead of making another\n`,
        );
        return null;
      });
    if (job === null) return EXIT_INTERRUPTED;
    if (options.wait !== true) {
      context.stdout.write(options.json === true ? `${JSON.stringify(job)}\n` : `${job.id}\n`);
      return 0;
    }
    if (options.json !== true) context.stderr.write(`airlock: submitted ${job.id}\n`);
    return await watchJob(context, api, job, { json: options.json === true }, interrupts, deps);
  } finally {
    interrupts.dispose();
  }
}

import { connect } from '../client/connect.js';
import { EXIT_INTERRUPTED, followLogs } from '../client/follow.js';
import { writeOut } from '../client/terminal.js';
import type { CliContext, CommandResult } from './io.js';

/** `airlock logs JOB [-f]`: the job's stdout and stderr bytes to the CLI's stdout and stderr. */

export interface LogsCommandOptions {
  follow?: boolean;
}

export async function logsCommand(
  context: CliContext,
  jobId: string,
  options: LogsCommandOptions,
): Promise<CommandResult> {
  const api = await connect(context.config.client);
  try {
    await followLogs(api, jobId, {
      follow: options.follow === true,
      signal: context.interrupted,
      onLine: (line) =>
        writeOut(
          line.stream === 'stdout' ? context.stdout : context.stderr,
          Buffer.from(line.data, 'base64'),
        ),
    });
  } catch (error) {
    // Ctrl-C ends `logs -f` (the job goes on).
    if (context.interrupted.aborted) return EXIT_INTERRUPTED;
    throw error;
  }
  return 0;
}

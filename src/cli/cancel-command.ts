import { connect } from '../client/connect.js';
import type { CliContext, CommandResult } from './io.js';

/** `airlock cancel JOB`: asks the server to stop the job; its worker kills it. */
export async function cancelCommand(
  context: CliContext,
  jobId: string,
  options: { json?: boolean },
): Promise<CommandResult> {
  const api = await connect(context.config.client);
  const job = await api.cancel(jobId);
  if (options.json === true) context.stdout.write(`${JSON.stringify(job)}\n`);
  else
    context.stdout.write(
      `${job.id}: ${job.state === 'cancelled' ? 'cancelled' : `cancel requested (state ${job.state}); follow with: airlock logs -f ${job.id}`}\n`,
    );
  return 0;
}

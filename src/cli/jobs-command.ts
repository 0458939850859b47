import { JOB_STATES, type JobRecord, type JobState } from '../api/types.js';
import { connect } from '../client/connect.js';
import { shortTime, table } from '../client/format.js';
import { AirlockError } from '../errors.js';
import type { CliContext, CommandResult } from './io.js';

/** `airlock jobs [--project P] [--state S] [--limit N] [--all] [--json]`: jobs, newest first. */

export interface JobsCommandOptions {
  project?: string;
  state?: string;
  limit?: string;
  all?: boolean;
  json?: boolean;
}

/** Pages fetched by --all before it stops: 10 000 jobs at 200 a page; --json for more is a script's job. */
const MAX_PAGES = 50;

export function parseJobsQuery(options: JobsCommandOptions): {
  project?: string;
  state?: JobState;
  limit: number;
} {
  let limit = options.all === true ? 200 : 50;
  if (options.limit !== undefined) {
    if (!/^\d+$/.test(options.limit) || Number(options.limit) < 1 || Number(options.limit) > 200)
      throw new AirlockError(
        'INVALID_OPTION',
        `--limit: must be a whole number from 1 to 200, got "${options.limit}"`,
      );
    limit = Number(options.limit);
  }
  if (options.state !== undefined && !(JOB_STATES as readonly string[]).includes(options.state))
    throw new AirlockError(
      'INVALID_OPTION',
      `--state: must be one of ${JOB_STATES.join(', ')}, got "${options.state}"`,
    );
  return {
    limit,
    ...(options.project !== undefined ? { project: options.project } : {}),
    ...(options.state !== undefined ? { state: options.state as JobState } : {}),
  };
}

export function jobsTable(jobs: readonly JobRecord[]): string {
  return table(
    ['ID', 'STATE', 'PROJECT', 'ENV', 'CREATED', 'EXIT'],
    jobs.map((job) => [
      job.id,
      job.state,
      job.project,
      job.environment,
      shortTime(job.createdAt),
      job.exitStatus === null ? '-' : String(job.exitStatus),
    ]),
  );
}

export async function jobsCommand(context: CliContext, options: JobsCommandOptions): Promise<CommandResult> {
  const query = parseJobsQuery(options);
  const api = await connect(context.config.client);
  const jobs: JobRecord[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const page = await api.listJobs(
      { ...query, ...(cursor !== null ? { cursor } : {}) },
      context.interrupted,
    );
    jobs.push(...page.jobs);
    cursor = page.nextCursor;
    pages += 1;
  } while (options.all === true && cursor !== null && pages < MAX_PAGES);
  if (options.json === true) {
    context.stdout.write(`${JSON.stringify({ jobs, nextCursor: cursor })}\n`);
  } else {
    context.stdout.write(jobsTable(jobs));
    if (cursor !== null)
      context.stderr.write(
        options.all === true
          ? `airlock: stopped after ${jobs.length} jobs; narrow with --project or --state\n`
          : `airlock: more jobs than shown; --all lists them all, --limit up to 200 a page\n`,
      );
  }
  return 0;
}

import type { JobRecord } from '../api/types.js';
import { connect } from '../client/connect.js';
import { bytes, milliseconds, printable, shortTime } from '../client/format.js';
import type { CliContext, CommandResult } from './io.js';

/** `airlock status JOB [--json]`: one job in words (or its JobRecord as JSON). */

export interface StatusCommandOptions {
  json?: boolean;
}

export function describeJob(job: JobRecord): string {
  const lines: [string, string][] = [
    ['job', job.id],
    ['state', job.cancelRequested && job.finishedAt === null ? `${job.state} (cancel requested)` : job.state],
    ['project', job.project],
    ['environment', job.environment],
    ['command', JSON.stringify(job.spec.command)],
    ['submitted by', job.submittedBy],
    ['attempts', `${job.attempts} of ${job.maxAttempts}`],
    ['worker', job.worker ?? '-'],
    ['created', shortTime(job.createdAt)],
    ['started', shortTime(job.startedAt)],
    ['finished', shortTime(job.finishedAt)],
    ['exit status', job.exitStatus === null ? '-' : String(job.exitStatus)],
  ];
  if (job.reason !== null) lines.push(['reason', job.reason]);
  const result = job.result;
  if (result !== null) {
    lines.push(['runtime', result.runtime]);
    lines.push(['wall time', milliseconds(result.wallMs)]);
    lines.push(['cpu time', milliseconds(result.cpuMs)]);
    lines.push(['peak memory', bytes(result.peakMemoryBytes)]);
    lines.push(['output', `${bytes(result.outputBytes)}${result.outputTruncated ? ' (truncated)' : ''}`]);
    if (result.signal !== null) lines.push(['signal', result.signal]);
    if (result.timedOut) lines.push(['timed out', 'yes']);
    if (result.oomKilled) lines.push(['memory kill', 'yes']);
    if (result.startFailure !== null)
      lines.push(['start failure', `${result.startFailure.kind}: ${result.startFailure.message}`]);
    for (const output of result.outputs)
      lines.push(['output file', `${output.path} ${bytes(output.size)} sha256:${output.sha256}`]);
  }
  const width = Math.max(...lines.map(([label]) => label.length));
  return lines.map(([label, value]) => `${`${label}:`.padEnd(width + 2)}${printable(value)}\n`).join('');
}

export async function statusCommand(
  context: CliContext,
  jobId: string,
  options: StatusCommandOptions,
): Promise<CommandResult> {
  const api = await connect(context.config.client);
  const job = await api.getJob(jobId, context.interrupted);
  context.stdout.write(options.json === true ? `${JSON.stringify(job)}\n` : describeJob(job));
  return 0;
}

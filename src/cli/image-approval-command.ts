import type { Command } from 'commander';
import type { ImageApproval } from '../api/types.js';
import type { ApiClient } from '../client/api-client.js';
import { printable, shortTime, table } from '../client/format.js';
import { AirlockError, isAirlockError } from '../errors.js';
import { parseImageRef } from '../images/reference.js';
import type { CliContext, CommandResult } from './io.js';

/**
 * `airlock image approve|revoke|approvals`: the images an admin approved, which policy sees as
 * `context.imageApproved` (docs/policy.md, "Images"). They live on the control plane; the
 * image cache of a worker (`airlock image import|list|remove`) is another matter.
 */

const MAX_REASON = 2000;

/** The HTTP client is loaded when a command runs, not when the program is built (startup time). */
async function client(context: CliContext): Promise<ApiClient> {
  const { connect } = await import('../client/connect.js');
  return connect(context.config.client);
}
const DIGEST = /^sha256:[0-9a-f]{64}$/;

function reasonOf(value: string | undefined): string {
  if (value === undefined || value.trim().length === 0)
    throw new AirlockError(
      'INVALID_OPTION',
      '--reason: say why (kept with the approval and in the audit log)',
    );
  if (value.length > MAX_REASON)
    throw new AirlockError('INVALID_OPTION', `--reason: at most ${MAX_REASON} characters`);
  return value;
}

/** The digest of `NAME@sha256:…` or of a bare `sha256:…`; INVALID_OPTION otherwise. */
export function digestOfArgument(value: string): string {
  if (DIGEST.test(value)) return value;
  const image = pinnedOf(value);
  return image.digest;
}

function pinnedOf(value: string): { name: string; digest: string; ref: string } {
  try {
    const image = parseImageRef(value);
    if (image.kind === 'pinned') return image;
  } catch (error) {
    if (isAirlockError(error, 'INVALID_JOB')) throw new AirlockError('INVALID_OPTION', error.message);
    throw error;
  }
  throw new AirlockError(
    'INVALID_OPTION',
    '"host" is the workers\' own /usr, not an image to approve: give NAME@sha256:<64 hex>',
  );
}

function approvalTable(approvals: readonly ImageApproval[]): string {
  return table(
    ['DIGEST', 'NAME', 'APPROVED BY', 'APPROVED', 'REVOKED', 'REASON'],
    approvals.map((approval) => [
      approval.digest,
      approval.name,
      approval.approvedBy,
      shortTime(approval.approvedAt),
      approval.revokedAt === null ? '-' : `${shortTime(approval.revokedAt)} by ${approval.revokedBy ?? '?'}`,
      approval.revokedAt === null ? approval.reason : (approval.revokeReason ?? ''),
    ]),
  );
}

export async function imageApproveCommand(
  context: CliContext,
  ref: string,
  options: { reason?: string; json?: boolean },
): Promise<CommandResult> {
  const image = pinnedOf(ref);
  const reason = reasonOf(options.reason);
  const api = await client(context);
  const approval = await api.approveImage(image.ref, reason);
  context.stdout.write(
    options.json === true
      ? `${JSON.stringify(approval)}\n`
      : `${printable(approval.ref)} approved: policy now sees its jobs as imageApproved\n`,
  );
  return 0;
}

export async function imageRevokeCommand(
  context: CliContext,
  ref: string,
  options: { reason?: string; json?: boolean },
): Promise<CommandResult> {
  const digest = digestOfArgument(ref);
  const reason = reasonOf(options.reason);
  const api = await client(context);
  const approval = await api.revokeImageApproval(digest, reason);
  context.stdout.write(
    options.json === true
      ? `${JSON.stringify(approval)}\n`
      : `${printable(approval.ref)} no longer approved (jobs already queued keep their admission)\n`,
  );
  return 0;
}

export async function imageApprovalsCommand(
  context: CliContext,
  options: { json?: boolean },
): Promise<CommandResult> {
  const api = await client(context);
  const approvals = await api.listImageApprovals();
  context.stdout.write(
    options.json === true ? `${JSON.stringify({ approvals })}\n` : approvalTable(approvals),
  );
  return 0;
}

/** Adds `approve`, `revoke` and `approvals` to the `airlock image` command. */
export function registerImageApprovalCommands(
  image: Command,
  context: CliContext,
  setResult: (code: CommandResult) => void,
): void {
  const reason = ['--reason <text>', 'why (kept with the approval and in the audit log)'] as const;
  image
    .command('approve')
    .description(
      'Approve a digest-pinned image for policy (admin): the default policy runs only approved images outside dev.',
    )
    .argument('<ref>', 'NAME@sha256:<64 hex>')
    .requiredOption(...reason)
    .option('--json', 'print the approval as JSON')
    .action(async (ref: string, options: { reason?: string; json?: boolean }) => {
      setResult(await imageApproveCommand(context, ref, options));
    });
  image
    .command('revoke')
    .description('Revoke the approval of an image (admin): jobs submitted from now on see it as unapproved.')
    .argument('<ref>', 'NAME@sha256:<64 hex>, or sha256:<64 hex>')
    .requiredOption(...reason)
    .option('--json', 'print the revoked approval as JSON')
    .action(async (ref: string, options: { reason?: string; json?: boolean }) => {
      setResult(await imageRevokeCommand(context, ref, options));
    });
  image
    .command('approvals')
    .description('Image approvals, revoked ones included, newest first.')
    .option('--json', 'print {approvals} as JSON')
    .action(async (options: { json?: boolean }) => {
      setResult(await imageApprovalsCommand(context, options));
    });
}

import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { type ApiClient, MAX_SUGGEST_RUNS } from '../client/api-client.js';
import { connect } from '../client/connect.js';
import { printable, shortTime, table } from '../client/format.js';
import { duplicateJsonKey } from '../client/job-spec-file.js';
import type {
  AuditModeCounts,
  PolicyDocument,
  PolicyKind,
  PolicyMode,
  PolicyStatus,
  PolicySummary,
  ProfileSuggestion,
} from '../client/policy-types.js';
import { AirlockError } from '../errors.js';
import { DEFAULT_POLICY } from '../policy/cedar-text.js';
import { diffLines, unifiedDiff } from '../policy/diff.js';
import type { CliContext, CommandResult } from './io.js';

/**
 * `airlock policy …` and `airlock profile …`: read, propose, approve, reject, roll back and
 * compare versions of the Cedar policy set and of the projects' permission profiles. The
 * server decides (and audits) every step; this module reads files with bounds, checks the
 * options, and prints answers. What it prints comes from the server and from other admins:
 * control characters are shown escaped, so a proposal cannot rewrite the reviewer's terminal.
 */

/** The server's bounds (MAX_POLICY_BYTES, MAX_PROFILE_BYTES, the rationale's length). */
export const MAX_POLICY_FILE_BYTES = 256 * 1024;
export const MAX_PROFILE_FILE_BYTES = 64 * 1024;
const MAX_RATIONALE = 2000;
const RATIONALE_COLUMN = 60;
const HASH_PREFIX = 12;

const PROJECT = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const SCRIPT = /^sha256:[0-9a-f]{64}$/;
const VERSION = /^[1-9][0-9]{0,8}$/;

export interface JsonOptions {
  json?: boolean;
}
export interface ShowOptions extends JsonOptions {
  version?: string;
}
export interface ProposeOptions extends JsonOptions {
  rationale: string;
  mode?: string;
}
export interface RejectOptions extends JsonOptions {
  reason?: string;
}
export interface RollbackOptions extends JsonOptions {
  rationale: string;
}
export interface PolicyDiffOptions extends JsonOptions {
  default?: boolean;
}
/** Options of the profile commands: --script names one script's profile within the project. */
export interface ScriptOption {
  script?: string;
}
export interface SuggestOptions extends JsonOptions {
  runs?: string;
}

/** The policy set, or one profile: what a command acts on. */
interface Subject {
  readonly kind: PolicyKind;
  readonly scope: string;
}

const POLICY: Subject = { kind: 'policy', scope: '' };

function bad(message: string): never {
  throw new AirlockError('INVALID_OPTION', message);
}

function parseVersion(text: string, what = 'version'): number {
  if (!VERSION.test(text)) bad(`${what}: "${text.slice(0, 40)}" is not a version number (1, 2, …)`);
  return Number(text);
}

/** PROJECT, or PROJECT@sha256:… with --script: the scope of a profile. */
function profileSubject(project: string, options: ScriptOption): Subject {
  if (!PROJECT.test(project))
    bad(`"${project.slice(0, 80)}" is not a project name (lower-case letters, digits, . _ -; at most 64)`);
  if (options.script === undefined) return { kind: 'profile', scope: project };
  if (!SCRIPT.test(options.script))
    bad(`--script: "${options.script.slice(0, 80)}" is not a script digest (sha256: and 64 hex digits)`);
  return { kind: 'profile', scope: `${project}@${options.script}` };
}

function checkRationale(text: string, option: string): string {
  const trimmed = text.trim();
  if (trimmed.length === 0)
    bad(`${option}: say why (the rationale is kept with the version and in the audit log)`);
  if (trimmed.length > MAX_RATIONALE) bad(`${option}: at most ${MAX_RATIONALE} characters`);
  return trimmed;
}

// ---- Words

/** "policy v3", "profile web v2", "profile web@sha256:… v1". */
function nameOf(document: Pick<PolicySummary, 'kind' | 'scope' | 'version'>): string {
  if (document.kind === 'policy') return `policy v${document.version}`;
  return document.version === 0
    ? `profile ${document.scope} (the default profile)`
    : `profile ${document.scope} v${document.version}`;
}

/** The command that acts on a version: `airlock policy approve 3`, `airlock profile approve web 3 --script …`. */
function commandFor(verb: string, document: Pick<PolicySummary, 'kind' | 'scope' | 'version'>): string {
  if (document.kind === 'policy') return `airlock policy ${verb} ${document.version}`;
  const [project, script] = document.scope.split('@');
  return `airlock profile ${verb} ${project} ${document.version}${script === undefined ? '' : ` --script ${script}`}`;
}

function hashPrefix(hash: string): string {
  return `sha256:${hash.slice(0, HASH_PREFIX)}`;
}

function when(ms: number | null): string {
  return ms === null ? '-' : shortTime(new Date(ms).toISOString());
}

/** On one line, at most `width` characters (code points: a cut never splits one). */
function oneLine(text: string, width: number): string {
  const flat = [...text.replace(/\s+/g, ' ').trim()];
  return flat.length > width ? `${flat.slice(0, width - 1).join('')}…` : flat.join('');
}

/** Text as it is, but for control characters other than tab and newline, shown escaped. */
function printableText(text: string): string {
  return text.replace(
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
    /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g,
    (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

function json(context: CliContext, value: unknown): void {
  context.stdout.write(`${JSON.stringify(value)}\n`);
}

function percent(part: number, whole: number): string {
  return whole === 0 ? '' : ` (${Math.round((100 * part) / whole)}%)`;
}

// ---- Files

/**
 * A proposal's file: a regular file of at most `limit` bytes of UTF-8 text. Read with a
 * bound (not trusting the size from stat: the file may grow) and opened non-blocking, so a
 * FIFO given by mistake cannot hang the CLI.
 */
async function readProposalFile(path: string, limit: number, what: string): Promise<string> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    bad(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  const tooLarge = (): never =>
    bad(`${path} is larger than ${limit / 1024} KiB, the most a ${what} may hold`);
  try {
    const info = await handle.stat();
    if (!info.isFile()) bad(`${path} is not a regular file`);
    if (info.size > limit) tooLarge();
    const buffer = Buffer.alloc(limit + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > limit) tooLarge();
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(buffer.subarray(0, length));
    } catch {
      bad(`${path} is not UTF-8 text`);
    }
    if (text.trim() === '') bad(`${path} is empty`);
    return text;
  } finally {
    await handle.close();
  }
}

// ---- Status

function countsTable(counts: readonly AuditModeCounts[]): string {
  return table(
    ['ACTION', 'EVALUATED', 'WOULD DENY'],
    counts.map((row) => [
      row.action,
      String(row.evaluated),
      `${row.wouldDeny} of ${row.evaluated}${percent(row.wouldDeny, row.evaluated)}`,
    ]),
  );
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => (line === '' ? '' : `  ${line}`))
    .join('\n');
}

export function describeStatus(status: PolicyStatus): string {
  const out: string[] = [];
  const { enforce, audit } = status.policy;
  out.push(
    enforce === null
      ? 'Policy in force: none — every request is refused (fail closed)\n'
      : `Policy in force: v${enforce.version} (${hashPrefix(enforce.contentHash)}), written by ${printable(enforce.author)}, approved by ${printable(enforce.decidedBy ?? '-')} at ${when(enforce.decidedAt)}\n`,
  );
  if (audit === null) {
    out.push('Audit mode: none\n');
  } else {
    const evaluated = audit.counts.reduce((sum, row) => sum + row.evaluated, 0);
    const wouldDeny = audit.counts.reduce((sum, row) => sum + row.wouldDeny, 0);
    out.push(
      `Audit mode: v${audit.version} (${hashPrefix(audit.contentHash)}), written by ${printable(audit.author)}, approved by ${printable(audit.decidedBy ?? '-')} at ${when(audit.decidedAt)}\n`,
      `  evaluated beside v${enforce?.version ?? '-'} on every request; nothing is refused for it\n`,
      `  would deny ${wouldDeny} of ${evaluated} requests${percent(wouldDeny, evaluated)} so far\n`,
    );
    if (audit.counts.length > 0) out.push(indent(countsTable(audit.counts)));
    out.push(
      `  enforce it (an admin other than ${printable(audit.author)}): ${commandFor('enforce', audit)}\n`,
    );
  }
  out.push('\nProfiles:\n');
  out.push(
    status.profiles.length === 0
      ? '  none set: every project has the default profile\n'
      : indent(
          table(
            ['SCOPE', 'VERSION'],
            status.profiles.map((row) => [row.scope, row.version === null ? '-' : `v${row.version}`]),
          ),
        ),
  );
  out.push('\nPending proposals:\n');
  out.push(
    status.pending.length === 0
      ? '  none\n'
      : indent(
          table(
            ['WHAT', 'MODE', 'AUTHOR', 'PROPOSED', 'RATIONALE', 'APPROVE WITH'],
            status.pending.map((row) => [
              nameOf(row),
              row.mode,
              row.author,
              when(row.proposedAt),
              oneLine(row.rationale, 40),
              commandFor('approve', row),
            ]),
          ),
        ),
  );
  return out.join('');
}

export async function policyStatusCommand(context: CliContext, options: JsonOptions): Promise<CommandResult> {
  const api = await connect(context.config.client);
  const status = await api.policyStatus(context.interrupted);
  if (options.json === true) json(context, status);
  else context.stdout.write(describeStatus(status));
  return 0;
}

// ---- Show and history

async function show(context: CliContext, subject: Subject, options: ShowOptions): Promise<CommandResult> {
  const version = options.version === undefined ? undefined : parseVersion(options.version, '--version');
  const api = await connect(context.config.client);
  const document = await api.policyDocument(subject.kind, subject.scope, version, context.interrupted);
  if (options.json === true) {
    json(context, document);
    return 0;
  }
  if (document.kind === 'profile' && document.version === 0)
    context.stderr.write(`no profile is set for ${printable(document.scope)}: the default profile applies\n`);
  const text = printableText(document.content);
  context.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  return 0;
}

/** STATE of a history row: whether it is the one in force (or in audit mode) now. */
function stateOf(row: PolicySummary, active: { enforce: number | null; audit: number | null }): string {
  if (row.state === 'rejected')
    return row.decidedBy === row.author ? 'withdrawn' : `rejected by ${row.decidedBy ?? '-'}`;
  if (row.state === 'proposed') return 'proposed';
  if (row.version === active.enforce) return 'in force';
  if (row.version === active.audit) return 'audit mode';
  return 'approved';
}

export function historyTable(
  versions: readonly PolicySummary[],
  active: { enforce: number | null; audit: number | null },
): string {
  return table(
    ['VERSION', 'STATE', 'MODE', 'AUTHOR', 'APPROVED BY', 'WHEN', 'ROLLBACK OF', 'RATIONALE'],
    versions.map((row) => [
      `v${row.version}`,
      stateOf(row, active),
      row.mode,
      row.author,
      row.state === 'approved' ? (row.decidedBy ?? '-') : '-',
      when(row.decidedAt ?? row.proposedAt),
      row.rollbackOf === null ? '-' : `v${row.rollbackOf}`,
      oneLine(row.rationale, RATIONALE_COLUMN),
    ]),
  );
}

function activeVersions(
  status: PolicyStatus,
  subject: Subject,
): { enforce: number | null; audit: number | null } {
  if (subject.kind === 'policy')
    return { enforce: status.policy.enforce?.version ?? null, audit: status.policy.audit?.version ?? null };
  return {
    enforce: status.profiles.find((row) => row.scope === subject.scope)?.version ?? null,
    audit: null,
  };
}

async function history(context: CliContext, subject: Subject, options: JsonOptions): Promise<CommandResult> {
  const api = await connect(context.config.client);
  const versions = await api.policyHistory(subject.kind, subject.scope, context.interrupted);
  if (options.json === true) {
    json(context, { versions });
    return 0;
  }
  if (versions.length === 0) {
    context.stdout.write(
      subject.kind === 'policy'
        ? 'no versions of the policy are visible to this token\n'
        : `no profile was ever proposed for ${printable(subject.scope)}: the default profile applies\n`,
    );
    return 0;
  }
  const status = await api.policyStatus(context.interrupted);
  context.stdout.write(historyTable(versions, activeVersions(status, subject)));
  return 0;
}

// ---- Diff

interface Side {
  readonly label: string;
  /** The version compared (null: the default policy of this build). */
  readonly summary: Omit<PolicyDocument, 'content'> | null;
  readonly content: string;
}

function side(document: PolicyDocument, inForce: boolean): Side {
  const { content, ...summary } = document;
  const state =
    document.version === 0
      ? null
      : inForce
        ? 'in force'
        : document.state === 'proposed'
          ? `proposed by ${document.author}`
          : `${document.state} by ${document.decidedBy ?? '-'}`;
  return {
    label: printable(state === null ? nameOf(document) : `${nameOf(document)} (${state})`),
    summary,
    content,
  };
}

async function newestPending(api: ApiClient, subject: Subject, signal: AbortSignal): Promise<number> {
  const pending = (await api.policyHistory(subject.kind, subject.scope, signal)).filter(
    (row) => row.state === 'proposed',
  );
  const newest = Math.max(0, ...pending.map((row) => row.version));
  if (newest === 0) {
    const what = subject.kind === 'policy' ? 'the policy' : `profile ${printable(subject.scope)}`;
    const usage = subject.kind === 'policy' ? 'airlock policy diff A B' : 'airlock profile diff PROJECT A B';
    throw new AirlockError(
      'NOT_FOUND',
      `no proposal of ${what} is pending: name the versions to compare (${usage})`,
    );
  }
  return newest;
}

async function diff(
  context: CliContext,
  subject: Subject,
  older: string | undefined,
  newer: string | undefined,
  options: PolicyDiffOptions & { release: string },
): Promise<CommandResult> {
  const olderVersion = older === undefined ? undefined : parseVersion(older, 'A');
  const newerVersion = newer === undefined ? undefined : parseVersion(newer, 'B');
  if (options.default === true && newerVersion !== undefined)
    bad('--default compares a version (default: the one in force) with the default policy: give at most A');
  const api = await connect(context.config.client);
  const a = side(
    await api.policyDocument(subject.kind, subject.scope, olderVersion, context.interrupted),
    olderVersion === undefined,
  );
  let b: Side;
  if (options.default === true)
    b = {
      label: `the default policy of Airlock ${printable(options.release)}`,
      summary: null,
      content: DEFAULT_POLICY,
    };
  else
    b = side(
      await api.policyDocument(
        subject.kind,
        subject.scope,
        newerVersion ?? (await newestPending(api, subject, context.interrupted)),
        context.interrupted,
      ),
      false,
    );
  const text = unifiedDiff(diffLines(a.content, b.content, { older: a.label, newer: b.label }), {
    older: a.label,
    newer: b.label,
  });
  if (options.json === true)
    json(context, { older: a.summary, newer: b.summary, changed: text !== '', diff: text });
  else
    context.stdout.write(
      text === '' ? `no differences between ${a.label} and ${b.label}\n` : printableText(text),
    );
  return 0;
}

// ---- Propose, approve, reject, roll back, enforce

function against(summary: PolicySummary): string {
  if (summary.baseVersion !== null) return `, against v${summary.baseVersion} in force`;
  return summary.kind === 'profile' ? ', replacing the default profile' : '';
}

function proposedMessage(summary: PolicySummary): string {
  const lines = [
    `proposed ${nameOf(summary)} (${hashPrefix(summary.contentHash)}${summary.kind === 'policy' ? `, mode ${summary.mode}` : ''}${summary.rollbackOf === null ? '' : `, a rollback to v${summary.rollbackOf}`})${against(summary)}`,
    `it applies only once another admin approves it: ${commandFor('approve', summary)}`,
  ];
  if (summary.mode === 'audit')
    lines.push(
      `once approved it runs in audit mode beside the version in force, refusing nothing: watch \`airlock policy status\`, then ${commandFor('enforce', summary)}`,
    );
  return lines.map((line) => `${printable(line)}\n`).join('');
}

async function propose(
  context: CliContext,
  subject: Subject,
  file: string,
  options: ProposeOptions,
): Promise<CommandResult> {
  const rationale = checkRationale(options.rationale, '--rationale');
  let mode: PolicyMode | undefined;
  if (options.mode !== undefined) {
    if (options.mode !== 'audit' && options.mode !== 'enforce') bad('--mode: audit or enforce');
    mode = options.mode;
  }
  const content =
    subject.kind === 'policy'
      ? await readProposalFile(file, MAX_POLICY_FILE_BYTES, 'policy set')
      : await readProposalFile(file, MAX_PROFILE_FILE_BYTES, 'profile');
  if (subject.kind === 'profile') {
    // The server keeps the last of two equal keys: the proposer must not believe the first applies.
    let parsed = true;
    try {
      JSON.parse(content);
    } catch {
      parsed = false; // not JSON: the server says why (POLICY_INVALID)
    }
    const duplicate = parsed ? duplicateJsonKey(content) : null;
    if (duplicate !== null) bad(`${file} has the key "${duplicate}" twice in one object`);
  }
  const api = await connect(context.config.client);
  const summary = await api.proposePolicy(
    {
      kind: subject.kind,
      scope: subject.scope,
      content,
      rationale,
      ...(mode !== undefined ? { mode } : {}),
    },
    context.interrupted,
  );
  if (options.json === true) json(context, summary);
  else context.stdout.write(proposedMessage(summary));
  return 0;
}

function appliesTo(summary: PolicySummary): string {
  if (summary.kind === 'policy') return 'every request';
  const [project, script] = summary.scope.split('@');
  return script === undefined ? `the jobs of ${project}` : `the jobs of ${project} that run script ${script}`;
}

async function approve(
  context: CliContext,
  subject: Subject,
  versionText: string,
  options: JsonOptions,
): Promise<CommandResult> {
  const version = parseVersion(versionText);
  const api = await connect(context.config.client);
  const summary = await api.approvePolicy(subject.kind, subject.scope, version, context.interrupted);
  if (options.json === true) json(context, summary);
  else
    context.stdout.write(
      `${printable(
        summary.mode === 'audit'
          ? `${nameOf(summary)} approved by ${summary.decidedBy ?? '-'}: in audit mode beside the version in force, refusing nothing; watch \`airlock policy status\`, then ${commandFor('enforce', summary)} (an admin other than ${summary.author})`
          : `${nameOf(summary)} approved by ${summary.decidedBy ?? '-'}: now in force for ${appliesTo(summary)}`,
      )}\n`,
    );
  return 0;
}

async function reject(
  context: CliContext,
  subject: Subject,
  versionText: string,
  options: RejectOptions,
): Promise<CommandResult> {
  const version = parseVersion(versionText);
  const reason = (options.reason ?? '').trim();
  if (reason.length > MAX_RATIONALE) bad(`--reason: at most ${MAX_RATIONALE} characters`);
  const api = await connect(context.config.client);
  const summary = await api.rejectPolicy(subject.kind, subject.scope, version, reason, context.interrupted);
  if (options.json === true) json(context, summary);
  else
    context.stdout.write(
      `${printable(
        summary.decidedBy === summary.author
          ? `${nameOf(summary)} withdrawn by its author`
          : `${nameOf(summary)} rejected by ${summary.decidedBy ?? '-'}`,
      )}\n`,
    );
  return 0;
}

async function rollback(
  context: CliContext,
  subject: Subject,
  versionText: string,
  options: RollbackOptions,
): Promise<CommandResult> {
  const version = parseVersion(versionText);
  const rationale = checkRationale(options.rationale, '--rationale');
  const api = await connect(context.config.client);
  const summary = await api.rollbackPolicy(
    subject.kind,
    subject.scope,
    version,
    rationale,
    context.interrupted,
  );
  if (options.json === true) json(context, summary);
  else context.stdout.write(proposedMessage(summary));
  return 0;
}

export function policyShowCommand(context: CliContext, options: ShowOptions): Promise<CommandResult> {
  return show(context, POLICY, options);
}

export function policyHistoryCommand(context: CliContext, options: JsonOptions): Promise<CommandResult> {
  return history(context, POLICY, options);
}

export function policyDiffCommand(
  context: CliContext,
  older: string | undefined,
  newer: string | undefined,
  options: PolicyDiffOptions,
): Promise<CommandResult> {
  return diff(context, POLICY, older, newer, { ...options, release: context.version });
}

export function policyProposeCommand(
  context: CliContext,
  file: string,
  options: ProposeOptions,
): Promise<CommandResult> {
  return propose(context, POLICY, file, options);
}

export function policyApproveCommand(
  context: CliContext,
  version: string,
  options: JsonOptions,
): Promise<CommandResult> {
  return approve(context, POLICY, version, options);
}

export function policyRejectCommand(
  context: CliContext,
  version: string,
  options: RejectOptions,
): Promise<CommandResult> {
  return reject(context, POLICY, version, options);
}

export function policyRollbackCommand(
  context: CliContext,
  version: string,
  options: RollbackOptions,
): Promise<CommandResult> {
  return rollback(context, POLICY, version, options);
}

export async function policyEnforceCommand(
  context: CliContext,
  versionText: string,
  options: JsonOptions,
): Promise<CommandResult> {
  const version = parseVersion(versionText);
  const api = await connect(context.config.client);
  const summary = await api.enforcePolicy(version, context.interrupted);
  if (options.json === true) json(context, summary);
  else
    context.stdout.write(
      `policy v${summary.version} switched from audit mode to enforce: it is now the policy in force\n`,
    );
  return 0;
}

// ---- Profiles

export function profileShowCommand(
  context: CliContext,
  project: string,
  options: ShowOptions & ScriptOption,
): Promise<CommandResult> {
  return show(context, profileSubject(project, options), options);
}

export function profileHistoryCommand(
  context: CliContext,
  project: string,
  options: JsonOptions & ScriptOption,
): Promise<CommandResult> {
  return history(context, profileSubject(project, options), options);
}

export function profileProposeCommand(
  context: CliContext,
  project: string,
  file: string,
  options: JsonOptions & ScriptOption & { rationale: string },
): Promise<CommandResult> {
  return propose(context, profileSubject(project, options), file, options);
}

export function profileApproveCommand(
  context: CliContext,
  project: string,
  version: string,
  options: JsonOptions & ScriptOption,
): Promise<CommandResult> {
  return approve(context, profileSubject(project, options), version, options);
}

export function profileRejectCommand(
  context: CliContext,
  project: string,
  version: string,
  options: RejectOptions & ScriptOption,
): Promise<CommandResult> {
  return reject(context, profileSubject(project, options), version, options);
}

export function profileRollbackCommand(
  context: CliContext,
  project: string,
  version: string,
  options: RollbackOptions & ScriptOption,
): Promise<CommandResult> {
  return rollback(context, profileSubject(project, options), version, options);
}

export function profileDiffCommand(
  context: CliContext,
  project: string,
  older: string | undefined,
  newer: string | undefined,
  options: JsonOptions & ScriptOption,
): Promise<CommandResult> {
  return diff(context, profileSubject(project, options), older, newer, {
    ...options,
    release: context.version,
  });
}

/** The suggestion as a profile document: the fields in the order of docs/policy.md, two-space indented. */
export function profileText(suggestion: ProfileSuggestion): string {
  const { runtimes, resources, egress, secrets } = suggestion.profile;
  return `${JSON.stringify({ runtimes, resources, egress, secrets }, null, 2)}\n`;
}

export async function profileSuggestCommand(
  context: CliContext,
  project: string,
  options: SuggestOptions,
): Promise<CommandResult> {
  profileSubject(project, {});
  let runs: number | undefined;
  if (options.runs !== undefined) {
    runs = /^[1-9][0-9]{0,3}$/.test(options.runs) ? Number(options.runs) : 0;
    if (runs < 1 || runs > MAX_SUGGEST_RUNS)
      bad(`--runs: a whole number from 1 to ${MAX_SUGGEST_RUNS}, got "${options.runs.slice(0, 40)}"`);
  }
  const api = await connect(context.config.client);
  const suggestion = await api.suggestProfile(project, runs, context.interrupted);
  if (options.json === true) {
    json(context, suggestion);
    return 0;
  }
  // The profile alone on stdout (`> web.json` saves it ready to propose); the notes on stderr.
  context.stdout.write(printableText(profileText(suggestion)));
  const notes: string[] = [];
  const current = suggestion.current === 0 ? 'the default profile' : `profile v${suggestion.current}`;
  notes.push(
    suggestion.runs === 0
      ? `${project} has no runs yet: this suggestion grants nothing\n`
      : `the smallest profile covering the last ${suggestion.runs} runs of ${project} (in force: ${current})\n`,
  );
  // With no runs every grant is unused: listing them all would say nothing.
  if (suggestion.runs > 0 && suggestion.unused.length === 0)
    notes.push(`every grant of ${current} was used in those runs\n`);
  if (suggestion.runs > 0 && suggestion.unused.length > 0) {
    notes.push(`granted but unused in the last ${suggestion.runs} runs — consider retiring:\n`);
    for (const item of suggestion.unused) notes.push(`  ${printable(item)}\n`);
  }
  notes.push(`save it, then: airlock profile propose ${project} FILE --rationale "…"\n`);
  context.stderr.write(notes.join(''));
  return 0;
}

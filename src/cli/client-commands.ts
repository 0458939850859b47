import { type Command, Option } from 'commander';
import type { CliContext, CommandResult } from './io.js';

/**
 * The client commands (run, submit, status, logs, cancel, jobs, token, audit): options and
 * help here; each command's module is imported only when it runs, so `airlock run` loads
 * the HTTP client and nothing of the other commands (startup time is benchmarked).
 */

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** The runtime names, written out so that this module imports nothing of the sandbox. */
const RUNTIMES = ['runc', 'crun', 'gvisor'];

const UNITS_HELP = `
Sizes and durations:
  a job spec counts memory and disk in whole MiB, output in whole KiB and the timeout in
  whole seconds; a value that is not whole in its unit (--memory 1500K, --timeout 1.5s) is
  refused, not rounded, with the nearest value that is.

Exit status: the job's own; 124 timed out; 125 refused or failed by Airlock; 126 not
executable; 127 not found; 128+N killed by signal N (137: memory limit); 130 left with a
second Ctrl-C.
`;

export function registerClientCommands(
  program: Command,
  context: CliContext,
  setResult: (code: CommandResult) => void,
): void {
  program
    .command('run')
    .description(
      'Run one command as a job on the Airlock server, stream its output, and exit with its status.',
    )
    .usage('[options] -- CMD [ARGS…]')
    .argument('<command...>', 'the command and its arguments (put them after --)')
    .addOption(
      new Option(
        '--runtime <runtime>',
        'OCI runtime (default: runc, or gvisor when policy requires it for the job)',
      ).choices(RUNTIMES),
    )
    .option('--fallback-runtime <runtime>', 'local `airlock sandbox` only: refused here', collect)
    .option('--cpus <n>', 'CPU quota in cores (server default 1)')
    .option('--memory <size>', 'memory limit in whole MiB, no swap (server default 512M)')
    .option('--pids <n>', 'maximum processes and threads (server default 256)')
    .option('--timeout <duration>', 'wall-clock limit in whole seconds: 90, 30s, 2m (server default 60s)')
    .option('--disk <size>', 'job disk for /workspace and /tmp, whole MiB (server default 1G)')
    .option('--output-limit <size>', 'stdout+stderr kept, whole KiB (server default 1M)')
    .option('--env <NAME=VALUE>', 'environment variable for the job (repeatable)', collect)
    .option('--input <dir>', "send this directory's files into the workspace (files only; no links)")
    .option('--image <ref>', 'root filesystem: host (default) or NAME@sha256:<64 hex> (docs/images.md)')
    .option(
      '--egress <host:port>',
      "allow egress to this destination through the job's proxy (repeatable; must be in the project's profile; docs/network.md)",
      collect,
    )
    .option('--project <name>', 'project the job belongs to', 'default')
    .option('--environment <env>', 'environment: dev, staging, prod…', 'dev')
    .option('--detach', 'print the job id once submitted, and exit 0 without waiting')
    .option('--json', 'no live output: print one JSON object {job, stdout, stderr} at the end')
    .option(
      '--idempotency-key <key>',
      'submission key (default: a new one per run); a retry with the same key makes no second job',
    )
    .addHelpText('after', UNITS_HELP)
    .passThroughOptions()
    .action(async (command: string[], options: import('./run-command.js').RunCommandOptions) => {
      const { runCommand } = await import('./run-command.js');
      setResult(await runCommand(context, command, options));
    });

  program
    .command('submit')
    .description(
      'Submit a job spec v1 file, or a signed job from `airlock sign` (JSON or YAML; "-" reads standard input), and print the job id.',
    )
    .argument('<file>', 'the job spec: .json, .yaml or .yml (else told apart by content), at most 8 MiB')
    .option('--wait', 'follow the job like `airlock run`, and exit with its status')
    .option('--json', 'print the job as JSON (with --wait: {job, stdout, stderr} at the end)')
    .option('--idempotency-key <key>', 'submission key (default: a new one per call)')
    .action(async (file: string, options: import('./submit-command.js').SubmitCommandOptions) => {
      const { submitCommand } = await import('./submit-command.js');
      setResult(await submitCommand(context, file, options));
    });

  program
    .command('status')
    .description('Show a job: state, attempts, worker, times, exit status, reason, resource usage.')
    .argument('<job>', 'job id (job_…)')
    .option('--json', 'print the job record as JSON')
    .action(async (job: string, options: { json?: boolean }) => {
      const { statusCommand } = await import('./status-command.js');
      setResult(await statusCommand(context, job, options));
    });

  program
    .command('logs')
    .description("Write a job's output: its stdout to stdout, its stderr to stderr.")
    .argument('<job>', 'job id (job_…)')
    .option('-f, --follow', 'keep following until the job ends')
    .action(async (job: string, options: { follow?: boolean }) => {
      const { logsCommand } = await import('./logs-command.js');
      setResult(await logsCommand(context, job, options));
    });

  program
    .command('cancel')
    .description('Cancel a job: a queued job never runs, a running one is killed.')
    .argument('<job>', 'job id (job_…)')
    .option('--json', 'print the job record as JSON')
    .action(async (job: string, options: { json?: boolean }) => {
      const { cancelCommand } = await import('./cancel-command.js');
      setResult(await cancelCommand(context, job, options));
    });

  program
    .command('jobs')
    .description('List jobs, newest first.')
    .option('--project <name>', 'only this project')
    .option('--state <state>', 'only jobs in this state')
    .option('--limit <n>', 'jobs per page, 1–200 (default 50; 200 with --all)')
    .option('--all', 'follow the pages to the end (at most 50 pages)')
    .option('--json', 'print {jobs, nextCursor} as JSON')
    .action(async (options: import('./jobs-command.js').JobsCommandOptions) => {
      const { jobsCommand } = await import('./jobs-command.js');
      setResult(await jobsCommand(context, options));
    });

  program
    .command('sign')
    .description(
      'Sign a job spec for `airlock submit`: with an OpenSSH key (through ssh-keygen -Y sign -n airlock) or an Ed25519 PEM key.',
    )
    .argument('<file>', 'the job spec (JSON or YAML; "-" reads standard input)')
    .requiredOption(
      '--key <file>',
      'the private key: OpenSSH (signs through ssh-keygen) or Ed25519 PKCS#8 PEM',
    )
    .option('--ttl <duration>', 'how long the signature is valid (default 15m, at most 24h)')
    .option('-o, --output <file>', 'write the signed job here (default: standard output)')
    .action(async (file: string, options: import('./sign-command.js').SignOptions) => {
      const { signCommand } = await import('./sign-command.js');
      setResult(await signCommand(context, file, options));
    });

  const keys = program.command('keys').description("Keys trusted to sign a project's jobs.");
  keys
    .command('add')
    .description('Register a public key (OpenSSH .pub or Ed25519 PEM) to sign the jobs of a project (admin).')
    .argument('<public-key-file>', 'the public key')
    .requiredOption('--project <name>', 'the project whose jobs it may sign')
    .requiredOption('--owner <name>', 'who holds the private key (shown in the audit log)')
    .option('--release', 'a release key (policy may require one for prod)')
    .option('--json', 'print the key as JSON')
    .action(
      async (
        file: string,
        options: { project: string; owner: string; release?: boolean; json?: boolean },
      ) => {
        const { keysAddCommand } = await import('./keys-command.js');
        setResult(await keysAddCommand(context, file, options));
      },
    );
  keys
    .command('list')
    .description('List the signing keys of the projects this token sees.')
    .option('--project <name>', 'only this project')
    .option('--json', 'print {keys} as JSON')
    .action(async (options: { project?: string; json?: boolean }) => {
      const { keysListCommand } = await import('./keys-command.js');
      setResult(await keysListCommand(context, options));
    });
  keys
    .command('revoke')
    .description('Revoke a signing key for good: its signatures are refused from now on (admin).')
    .argument('<id>', 'key id (key_…)')
    .option('--json', 'print the key as JSON')
    .action(async (id: string, options: { json?: boolean }) => {
      const { keysRevokeCommand } = await import('./keys-command.js');
      setResult(await keysRevokeCommand(context, id, options));
    });

  const token = program.command('token').description('Create, list and revoke API tokens (admin).');
  token
    .command('create')
    .description('Create a token; its secret is printed once, alone on stdout.')
    .requiredOption('--principal <name>', 'who or what the token is for (shown in the audit trail)')
    .requiredOption('--role <role>', 'admin, submitter, viewer or worker')
    .option(
      '--project <name>',
      'a project the token may act on (repeatable; "*" = all). Required for submitter and viewer; admin and worker default to "*"',
      collect,
    )
    .option('--expires <duration>', 'lifetime: 3600, 90m, 24h (default: no expiry)')
    .option(
      '--request-key <public-key-file>',
      'an Ed25519 public key: every request with the token must then be signed with it (RFC 9421; the client signs with AIRLOCK_REQUEST_KEY)',
    )
    .option('--json', 'print {token, secret} as JSON')
    .action(async (options: import('./token-command.js').TokenCreateOptions) => {
      const { tokenCreateCommand } = await import('./token-command.js');
      setResult(await tokenCreateCommand(context, options));
    });
  token
    .command('list')
    .description('List the tokens (never their secrets).')
    .option('--json', 'print {tokens} as JSON')
    .action(async (options: { json?: boolean }) => {
      const { tokenListCommand } = await import('./token-command.js');
      setResult(await tokenListCommand(context, options));
    });
  token
    .command('revoke')
    .description('Revoke a token: it is refused from now on.')
    .argument('<id>', 'token id (tok_…)')
    .option('--json', 'print the token as JSON')
    .action(async (id: string, options: { json?: boolean }) => {
      const { tokenRevokeCommand } = await import('./token-command.js');
      setResult(await tokenRevokeCommand(context, id, options));
    });

  const audit = program.command('audit').description('Read, verify and prove the tamper-evident audit log.');
  audit
    .command('tail')
    .description('Print the newest audit events, oldest first.')
    .option('-n, --lines <n>', 'how many (default 20)')
    .option('-f, --follow', 'keep printing new events')
    .option('--json', 'one JSON event per line')
    .action(async (options: import('./audit-command.js').AuditTailOptions) => {
      const { auditTailCommand } = await import('./audit-command.js');
      setResult(await auditTailCommand(context, options));
    });
  const keyOption = [
    '--key <verifier-key>',
    'trust this checkpoint key (NAME+ID+KEY; repeatable); default: the keys the server names',
    (value: string, previous: string[] = []) => [...previous, value],
  ] as const;
  audit
    .command('verify')
    .description(
      'Verify the whole log (chain, Merkle tree, its own checkpoints); exit 0 when intact, 1 when broken.',
    )
    .option(
      '--against <checkpoint-file>',
      'also compare with a signed checkpoint kept outside (from the sink)',
    )
    .option(...keyOption)
    .option('--json', 'print the verification as JSON')
    .option('--database <file>', 'verify a copy of airlock.db offline (no server), opened read-only')
    .action(async (options: { json?: boolean; database?: string; against?: string; key?: string[] }) => {
      const { auditVerifyCommand } = await import('./audit-command.js');
      setResult(await auditVerifyCommand(context, options));
    });
  audit
    .command('checkpoint')
    .description('Sign a checkpoint of the whole log now and print it (the signed note).')
    .option('--latest', 'print the latest checkpoint instead of making one')
    .option('--json', 'print {treeSize, rootHash, madeAt, exportedAt, note} as JSON')
    .action(async (options: { latest?: boolean; json?: boolean }) => {
      const { auditCheckpointCommand } = await import('./audit-proof-command.js');
      setResult(await auditCheckpointCommand(context, options));
    });
  audit
    .command('prove')
    .description(
      'Prove that an entry is in the log: its inclusion proof, verified against a signed checkpoint.',
    )
    .argument('<entry>', 'the entry (seq)')
    .option('--checkpoint <file>', 'verify against this signed checkpoint (default: the latest)')
    .option(...keyOption)
    .option('--json', 'print the proof as JSON')
    .action(async (entry: string, options: { checkpoint?: string; key?: string[]; json?: boolean }) => {
      const { auditProveCommand } = await import('./audit-proof-command.js');
      setResult(await auditProveCommand(context, entry, options));
    });
  audit
    .command('consistency')
    .description(
      'Prove that the log at NEW extends the log at OLD (each a tree size or a signed checkpoint file).',
    )
    .argument('<old>', 'tree size or checkpoint file')
    .argument('<new>', 'tree size or checkpoint file')
    .option(...keyOption)
    .option('--json', 'print the proof as JSON')
    .action(async (older: string, newer: string, options: { key?: string[]; json?: boolean }) => {
      const { auditConsistencyCommand } = await import('./audit-proof-command.js');
      setResult(await auditConsistencyCommand(context, older, newer, options));
    });
  audit
    .command('witness')
    .description(
      'Accept the newest checkpoint only if it is signed and consistent with the last one this witness kept; exit 1 when refused.',
    )
    .requiredOption(
      '--state <file>',
      'where the witness keeps the last checkpoint it accepted and its trusted keys',
    )
    .option('--checkpoint <file>', "the checkpoint to check (default: the server's latest)")
    .option(...keyOption)
    .action(async (options: { state: string; checkpoint?: string; key?: string[] }) => {
      const { auditWitnessCommand } = await import('./audit-proof-command.js');
      setResult(await auditWitnessCommand(context, options));
    });
  audit
    .command('hash')
    .description('Print the keyed HMAC under which the log records a sensitive value, to search for it.')
    .argument('<value>', 'the value, or - to read it from stdin (keeps it out of shell history)')
    .action(async (value: string) => {
      const { auditHashCommand } = await import('./audit-proof-command.js');
      setResult(await auditHashCommand(context, value));
    });
  audit
    .command('rotate-key')
    .description(
      'Replace the checkpoint signing key; prints the checkpoint signed by the old and the new key.',
    )
    .option('--json', 'print {checkpoint, current} as JSON')
    .action(async (options: { json?: boolean }) => {
      const { auditRotateKeyCommand } = await import('./audit-proof-command.js');
      setResult(await auditRotateKeyCommand(context, options));
    });
}

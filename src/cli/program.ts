import { Command, CommanderError, Option } from 'commander';
import { RUNTIME_NAMES } from '../sandbox/job.js';
import { registerClientCommands } from './client-commands.js';
import { registerImageApprovalCommands } from './image-approval-command.js';
import { registerImageCommands } from './image-command.js';
import type { CliContext, CommandResult } from './io.js';
import type { SandboxCommandOptions } from './sandbox-command.js';
import type { SelftestCommandOptions } from './selftest-command.js';
import { registerServerCommands } from './server-commands.js';
import { registerWorkerCommand } from './worker-command.js';

/** The `airlock` command line: commands, options and help texts. Parsing only; work is in the *-command modules. */

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function buildProgram(context: CliContext, setResult: (code: CommandResult) => void): Command {
  const program = new Command('airlock')
    .description('Runs untrusted builds and scripts in fresh, hardened OCI sandboxes.')
    .version(context.version, '-V, --version')
    .enablePositionalOptions()
    .showHelpAfterError()
    .configureOutput({
      writeOut: (text) => context.stdout.write(text),
      writeErr: (text) => context.stderr.write(text),
    })
    .exitOverride();

  program
    .command('sandbox')
    .description('Run one command in a fresh local sandbox (no server) and exit with its status.')
    .usage('[options] -- CMD [ARGS…]')
    .argument('<command...>', 'the command and its arguments (put them after --)')
    .addOption(new Option('--runtime <runtime>', 'OCI runtime').choices(RUNTIME_NAMES).default('runc'))
    .option(
      '--fallback-runtime <runtime>',
      'runtime to use if --runtime cannot run here (repeatable)',
      collect,
    )
    .option('--cpus <n>', 'CPU quota in cores (default 1)')
    .option('--memory <size>', 'memory limit, no swap (default 512M)')
    .option('--pids <n>', 'maximum processes and threads (default 256)')
    .option('--timeout <duration>', 'wall-clock limit: 90, 30s, 2m (default 60s)')
    .option('--disk <size>', 'size of the job disk holding /workspace and /tmp (default 1G)')
    .option('--output-limit <size>', 'stdout+stderr kept; the rest is discarded (default 1M)')
    .option('--env <NAME=VALUE>', 'environment variable for the job (repeatable)', collect)
    .option('--input <dir>', 'copy this directory into the workspace first')
    .option(
      '--image <ref>',
      'root filesystem: host (default) or NAME@sha256:<64 hex> from `airlock image import`',
    )
    .option('--json', 'print one JSON object with the result and output at the end')
    .option('--print-config', 'print the OCI config the job would get, and run nothing')
    .passThroughOptions()
    .action(async (command: string[], options: SandboxCommandOptions) => {
      // Each command's module is loaded when it runs: `airlock run` loads no sandbox code.
      const { sandboxCommand } = await import('./sandbox-command.js');
      setResult(await sandboxCommand(context, command, options));
    });

  program
    .command('selftest')
    .description('Run escape and limit probes inside real sandboxes; exit non-zero if any fails.')
    .addOption(
      new Option('--runtime <runtime>', 'OCI runtime to test').choices(RUNTIME_NAMES).default('runc'),
    )
    .option('--json', 'print the probe results as JSON')
    .action(async (options: SelftestCommandOptions) => {
      const { selftestCommand } = await import('./selftest-command.js');
      setResult(await selftestCommand(context, options));
    });

  registerServerCommands(program, context, setResult);
  registerWorkerCommand(program, context, setResult);
  registerClientCommands(program, context, setResult);
  registerPolicyCommands(program, context, setResult);
  // ---- `airlock image`: the worker host's cache (import/list/remove) and, through the server, approvals.
  const image = registerImageCommands(program, context, setResult);
  registerImageApprovalCommands(image, context, setResult);

  return program;
}

type PolicyCommands = typeof import('./policy-command.js');

/**
 * `airlock policy …` and `airlock profile …` (docs/policy.md): governance of the Cedar policy
 * set and of the projects' permission profiles. As for the other client commands, the
 * module doing the work is imported only when one of them runs.
 */
function registerPolicyCommands(
  program: Command,
  context: CliContext,
  setResult: (code: CommandResult) => void,
): void {
  const load = (): Promise<PolicyCommands> => import('./policy-command.js');
  const rationale = ['--rationale <text>', 'why (kept with the version and in the audit log)'] as const;
  const script = [
    '--script <digest>',
    "one script's profile within the project (sha256:…, the trust.scriptDigest of `airlock status JOB --json`)",
  ] as const;

  const policy = program
    .command('policy')
    .description('The Cedar policy set: show, compare, propose, approve, roll back (docs/policy.md).');
  policy
    .command('status')
    .description(
      'The version in force, the version in audit mode with what it would deny, profiles set, pending proposals.',
    )
    .option('--json', 'print the status as JSON')
    .action(async (options: { json?: boolean }) => {
      setResult(await (await load()).policyStatusCommand(context, options));
    });
  policy
    .command('show')
    .description('Print the text of a version of the policy (default: the one in force).')
    .option('--version <n>', 'this version')
    .option('--json', 'print the version with its text as JSON')
    .action(async (options: { version?: string; json?: boolean }) => {
      setResult(await (await load()).policyShowCommand(context, options));
    });
  policy
    .command('history')
    .description('Every version of the policy, newest first.')
    .option('--json', 'print {versions} as JSON')
    .action(async (options: { json?: boolean }) => {
      setResult(await (await load()).policyHistoryCommand(context, options));
    });
  policy
    .command('diff')
    .description(
      'Compare two versions line by line (default: the one in force with the newest pending proposal).',
    )
    .argument('[a]', 'the older version (default: the one in force)')
    .argument('[b]', 'the newer version (default: the newest pending proposal)')
    .option('--default', 'compare A (default: the one in force) with the default policy of this build')
    .option('--json', 'print {older, newer, changed, diff} as JSON')
    .action(
      async (
        older: string | undefined,
        newer: string | undefined,
        options: { default?: boolean; json?: boolean },
      ) => {
        setResult(await (await load()).policyDiffCommand(context, older, newer, options));
      },
    );
  policy
    .command('propose')
    .description(
      'Propose a new version from a Cedar file (at most 256 KiB); it applies once another admin approves it.',
    )
    .argument('<file>', 'the whole policy set, in Cedar')
    .requiredOption(...rationale)
    .addOption(
      new Option('--mode <mode>', 'audit: evaluated beside the version in force, refusing nothing')
        .choices(['audit', 'enforce'])
        .default('enforce'),
    )
    .option('--json', 'print the proposal as JSON')
    .action(async (file: string, options: { rationale: string; mode?: string; json?: boolean }) => {
      setResult(await (await load()).policyProposeCommand(context, file, options));
    });
  policy
    .command('approve')
    .description('Approve a pending proposal (an admin other than its author).')
    .argument('<version>', 'the proposal')
    .option('--json', 'print the approved version as JSON')
    .action(async (version: string, options: { json?: boolean }) => {
      setResult(await (await load()).policyApproveCommand(context, version, options));
    });
  policy
    .command('reject')
    .description('Reject a pending proposal (its author may withdraw it).')
    .argument('<version>', 'the proposal')
    .option('--reason <text>', 'why (kept in the audit log)')
    .option('--json', 'print the rejected version as JSON')
    .action(async (version: string, options: { reason?: string; json?: boolean }) => {
      setResult(await (await load()).policyRejectCommand(context, version, options));
    });
  policy
    .command('rollback')
    .description(
      'Propose an earlier approved version again; like any proposal, it applies once another admin approves it.',
    )
    .argument('<version>', 'the earlier version')
    .requiredOption(...rationale)
    .option('--json', 'print the proposal as JSON')
    .action(async (version: string, options: { rationale: string; json?: boolean }) => {
      setResult(await (await load()).policyRollbackCommand(context, version, options));
    });
  policy
    .command('enforce')
    .description('Switch the version in audit mode to enforce (an admin other than its author).')
    .argument('<version>', 'the version in audit mode')
    .option('--json', 'print the version as JSON')
    .action(async (version: string, options: { json?: boolean }) => {
      setResult(await (await load()).policyEnforceCommand(context, version, options));
    });

  const profile = program
    .command('profile')
    .description(
      "A project's permission profile: runtimes, resource ceilings, egress and secrets it may ask for.",
    );
  profile
    .command('show')
    .description('Print a version of the profile (default: the one in force, or the default profile).')
    .argument('<project>', 'the project')
    .option(...script)
    .option('--version <n>', 'this version')
    .option('--json', 'print the version with its text as JSON')
    .action(async (project: string, options: { script?: string; version?: string; json?: boolean }) => {
      setResult(await (await load()).profileShowCommand(context, project, options));
    });
  profile
    .command('history')
    .description('Every version of the profile, newest first.')
    .argument('<project>', 'the project')
    .option(...script)
    .option('--json', 'print {versions} as JSON')
    .action(async (project: string, options: { script?: string; json?: boolean }) => {
      setResult(await (await load()).profileHistoryCommand(context, project, options));
    });
  profile
    .command('propose')
    .description(
      'Propose a profile from a JSON file {"runtimes", "resources", "egress", "secrets"} (at most 64 KiB); it applies once another admin approves it.',
    )
    .argument('<project>', 'the project')
    .argument('<file>', 'the profile, JSON')
    .requiredOption(...rationale)
    .option(...script)
    .option('--json', 'print the proposal as JSON')
    .action(
      async (
        project: string,
        file: string,
        options: { rationale: string; script?: string; json?: boolean },
      ) => {
        setResult(await (await load()).profileProposeCommand(context, project, file, options));
      },
    );
  profile
    .command('approve')
    .description('Approve a pending proposal (an admin other than its author).')
    .argument('<project>', 'the project')
    .argument('<version>', 'the proposal')
    .option(...script)
    .option('--json', 'print the approved version as JSON')
    .action(async (project: string, version: string, options: { script?: string; json?: boolean }) => {
      setResult(await (await load()).profileApproveCommand(context, project, version, options));
    });
  profile
    .command('reject')
    .description('Reject a pending proposal (its author may withdraw it).')
    .argument('<project>', 'the project')
    .argument('<version>', 'the proposal')
    .option('--reason <text>', 'why (kept in the audit log)')
    .option(...script)
    .option('--json', 'print the rejected version as JSON')
    .action(
      async (
        project: string,
        version: string,
        options: { reason?: string; script?: string; json?: boolean },
      ) => {
        setResult(await (await load()).profileRejectCommand(context, project, version, options));
      },
    );
  profile
    .command('rollback')
    .description('Propose an earlier approved version again; it applies once another admin approves it.')
    .argument('<project>', 'the project')
    .argument('<version>', 'the earlier version')
    .requiredOption(...rationale)
    .option(...script)
    .option('--json', 'print the proposal as JSON')
    .action(
      async (
        project: string,
        version: string,
        options: { rationale: string; script?: string; json?: boolean },
      ) => {
        setResult(await (await load()).profileRollbackCommand(context, project, version, options));
      },
    );
  profile
    .command('diff')
    .description(
      'Compare two versions line by line (default: the one in force with the newest pending proposal).',
    )
    .argument('<project>', 'the project')
    .argument('[a]', 'the older version (default: the one in force)')
    .argument('[b]', 'the newer version (default: the newest pending proposal)')
    .option(...script)
    .option('--json', 'print {older, newer, changed, diff} as JSON')
    .action(
      async (
        project: string,
        older: string | undefined,
        newer: string | undefined,
        options: { script?: string; json?: boolean },
      ) => {
        setResult(await (await load()).profileDiffCommand(context, project, older, newer, options));
      },
    );
  profile
    .command('suggest')
    .description(
      "The smallest profile covering the project's last runs (stdout, ready to save and propose), and the grants they did not use (stderr).",
    )
    .argument('<project>', 'the project')
    .option('--runs <n>', 'how many of the newest runs, 1–1000 (default 50)')
    .option('--json', 'print {runs, current, profile, unused} as JSON')
    .action(async (project: string, options: { runs?: string; json?: boolean }) => {
      setResult(await (await load()).profileSuggestCommand(context, project, options));
    });
}

export { CommanderError };

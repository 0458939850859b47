import { Command, CommanderError, Option } from 'commander';
import { RUNTIME_NAMES } from '../sandbox/job.js';
import { registerClientCommands } from './client-commands.js';
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

  return program;
}

export { CommanderError };

import type { Command } from 'commander';
import type { CliContext, CommandResult } from './io.js';

/** `airlock server` and `airlock up`; the work is in server-command.ts / up-command.ts (loaded on use). */

export interface ServerCommandOptions {
  listen?: string;
  dataDir?: string;
}

export interface UpCommandOptions extends ServerCommandOptions {
  concurrency?: string;
  demo?: boolean;
}

export function registerServerCommands(
  program: Command,
  context: CliContext,
  setResult: (code: CommandResult) => void,
): void {
  program
    .command('server')
    .description('Run the control plane: the HTTP API, the job queue and the audit trail (no worker).')
    .option('--listen <host:port>', 'address to listen on (default AIRLOCK_LISTEN, 127.0.0.1:7340)')
    .option('--data-dir <dir>', 'data directory holding airlock.db (default AIRLOCK_DATA_DIR)')
    .action(async (options: ServerCommandOptions) => {
      const { serverCommand } = await import('./server-command.js');
      setResult(await serverCommand(context, options));
    });

  program
    .command('up')
    .description(
      'One machine, one command: server and a local worker on embedded SQLite, the admin token in the client config, a first demo job.',
    )
    .option('--listen <host:port>', 'address to listen on (default AIRLOCK_LISTEN, 127.0.0.1:7340)')
    .option('--data-dir <dir>', 'data directory holding airlock.db (default AIRLOCK_DATA_DIR)')
    .option('--concurrency <n>', 'jobs the local worker runs at once (default 2)')
    .option('--no-demo', 'do not run the first demo job')
    .action(async (options: UpCommandOptions) => {
      const { upCommand } = await import('./up-command.js');
      setResult(await upCommand(context, options));
    });
}

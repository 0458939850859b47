import { isAbsolute, resolve } from 'node:path';
import { parseListen } from '../config/config.js';
import type { ControlPlane } from '../control-plane.js';
import { AirlockError } from '../errors.js';
import { createLogger } from '../log.js';
import type { CliContext, CommandResult } from './io.js';
import type { ServerCommandOptions } from './server-commands.js';

/** `airlock server`: the control plane in the foreground until SIGINT/SIGTERM, then a graceful stop. */

export function serverSettings(context: CliContext, options: ServerCommandOptions) {
  const server = { ...context.config.server };
  if (options.listen !== undefined) {
    try {
      Object.assign(server, parseListen(options.listen));
    } catch (error) {
      throw new AirlockError(
        'INVALID_OPTION',
        `--listen: ${(error as Error).message.replace(/^AIRLOCK_LISTEN: /, '')}`,
      );
    }
  }
  if (options.dataDir !== undefined) {
    if (options.dataDir.includes('\0'))
      throw new AirlockError('INVALID_OPTION', '--data-dir must not contain NUL');
    server.dataDir = isAbsolute(options.dataDir) ? options.dataDir : resolve(options.dataDir);
  }
  return server;
}

export async function startServer(
  context: CliContext,
  options: ServerCommandOptions,
  extra: { bootstrapWorker: boolean },
): Promise<ControlPlane> {
  const config = serverSettings(context, options);
  const { startControlPlane } = await import('../control-plane.js');
  return startControlPlane({
    config,
    logger: createLogger(config.logLevel, 'airlock-server'),
    version: context.version,
    bootstrapWorker: extra.bootstrapWorker,
  });
}

export async function serverCommand(
  context: CliContext,
  options: ServerCommandOptions,
): Promise<CommandResult> {
  const plane = await startServer(context, options, { bootstrapWorker: false });
  try {
    if (plane.firstStart !== null) {
      const { writeClientConfig } = await import('../client/config-file.js');
      await writeClientConfig(context.config.client.configFile, {
        url: plane.url,
        token: plane.firstStart.admin,
      });
      context.stderr.write(
        `airlock server: first start; the admin token was written to ${context.config.client.configFile} (mode 0600)\n`,
      );
    }
    context.stderr.write(`airlock server: listening on ${plane.url}\n`);
    await waitForAbort(context.interrupted);
    context.stderr.write('airlock server: stopping (finishing requests in flight)\n');
  } finally {
    await plane.close();
  }
  return 0;
}

export function waitForAbort(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((done) => signal.addEventListener('abort', () => done(), { once: true }));
}

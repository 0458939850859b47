import type { AirlockConfig } from '../config/config.js';
import type { SandboxEngine } from '../sandbox/engine.js';

/** What the commands need from the outside world; given by the composition root (src/main.ts). */
export interface CliContext {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  /** The validated configuration (AIRLOCK_* settings); nothing else reads process.env. */
  readonly config: AirlockConfig;
  /**
   * Opens the sandbox engine (checks the host, sweeps leftovers). `preparedSlots` defaults
   * to 0 (one-shot commands); a worker asks for as many as it runs jobs at once.
   */
  readonly openEngine: (options?: { preparedSlots?: number }) => Promise<SandboxEngine>;
  /** Absolute path of the CLI entry (dist/src/cli/bin.js), to start `airlock worker` from `airlock up`. */
  readonly cliEntry: string;
  /** Aborted when the process receives SIGINT or SIGTERM. */
  readonly interrupted: AbortSignal;
  readonly version: string;
}

/** A command's outcome: the process exit code. */
export type CommandResult = number;

/**
 * Opens the engine, runs `use`, and closes it, waiting until every sandbox is removed. A
 * removal that failed is an error (exit 125) — unless `use` failed first: its error wins.
 */
export async function withEngine<T>(
  context: CliContext,
  use: (engine: SandboxEngine) => Promise<T>,
): Promise<T> {
  const engine = await context.openEngine();
  let result: T;
  try {
    result = await use(engine);
  } catch (error) {
    await engine.close().catch(() => undefined);
    throw error;
  }
  await engine.close();
  return result;
}

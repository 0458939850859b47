import type { SandboxEngine } from '../sandbox/engine.js';

/** What the commands need from the outside world; given by the composition root (src/main.ts). */
export interface CliContext {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  /** Opens the sandbox engine (checks the host, sweeps leftovers). */
  readonly openEngine: () => Promise<SandboxEngine>;
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

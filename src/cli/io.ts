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

import type { RunOptions, SandboxResult } from '../sandbox/engine.js';
import type { RuntimeName, SandboxJob } from '../sandbox/job.js';

/**
 * What the worker needs from its surroundings, as small interfaces: the sandbox engine and
 * a logger (the protocol is in protocol.ts). The composition root passes the real ones
 * (SandboxEngine, pino); tests pass fakes.
 */

/** The part of SandboxEngine the worker uses. */
export interface WorkerEngine {
  run(job: SandboxJob, options: RunOptions): Promise<SandboxResult>;
  /** Waits until finished jobs' sandboxes are removed; rejects naming what could not be. */
  settle(): Promise<void>;
  /** Waits for running jobs, then removes everything the engine holds. */
  close(): Promise<void>;
}

/** Structured logging, pino's call shape: details first, then the message. */
export interface WorkerLogger {
  debug(details: Record<string, unknown>, message: string): void;
  info(details: Record<string, unknown>, message: string): void;
  warn(details: Record<string, unknown>, message: string): void;
  error(details: Record<string, unknown>, message: string): void;
}

/** The outcome of one selftest round (all runtimes the worker would offer). */
export interface SelftestOutcome {
  /** True when the worker may take jobs: the selftest passed for at least the default runtime. */
  readonly ok: boolean;
  /** Runtimes whose selftest passed: the only ones the worker offers when it claims. */
  readonly runtimes: readonly RuntimeName[];
  /** Names of the probes that failed ("gvisor/seccomp-denies-ptrace: …"), for the log. */
  readonly failedProbes: readonly string[];
}

export type Selftest = (signal: AbortSignal) => Promise<SelftestOutcome>;

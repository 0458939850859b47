import type { Command } from 'commander';
import type { CliContext, CommandResult } from './io.js';

/** `airlock worker`: registered here; filled in by the worker work. */
export function registerWorkerCommand(
  _program: Command,
  _context: CliContext,
  _setResult: (code: CommandResult) => void,
): void {}

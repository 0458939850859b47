import type { Command } from 'commander';
import type { CliContext, CommandResult } from './io.js';

/** `airlock server` and `airlock up`. */
export function registerServerCommands(
  _program: Command,
  _context: CliContext,
  _setResult: (code: CommandResult) => void,
): void {}

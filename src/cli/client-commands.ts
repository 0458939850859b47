import type { Command } from 'commander';
import type { CliContext, CommandResult } from './io.js';

/** The client commands (run, submit, status, logs, cancel, jobs, token, audit); filled in by the client work. */
export function registerClientCommands(
  _program: Command,
  _context: CliContext,
  _setResult: (code: CommandResult) => void,
): void {}

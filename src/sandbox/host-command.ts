import { spawn } from 'node:child_process';

/**
 * Runs a host tool (mkfs.ext4, mount, umount, the runtime's CLI for kill/delete) with
 * argv (never a shell), a time limit and bounded captured output.
 */

export interface HostCommandResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The command could not be started at all (ENOENT, EACCES). */
  readonly spawnError: NodeJS.ErrnoException | null;
}

const MAX_CAPTURE = 64 * 1024;

export function runHostCommand(
  file: string,
  args: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<HostCommandResult> {
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      // The system directories always come last: mkfs.ext4, losetup and friends live in sbin,
      // which an ordinary user's PATH lacks.
      env: options.env ?? { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/usr/bin:/sbin:/bin`, LANG: 'C' },
      timeout: options.timeoutMs ?? 30_000,
      killSignal: 'SIGKILL',
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    child.stdout.on('data', (chunk: Buffer) => {
      if (outBytes < MAX_CAPTURE) out.push(chunk);
      outBytes += chunk.length;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (errBytes < MAX_CAPTURE) err.push(chunk);
      errBytes += chunk.length;
    });
    let spawnError: NodeJS.ErrnoException | null = null;
    child.on('error', (error: NodeJS.ErrnoException) => {
      spawnError = error;
    });
    child.on('close', (code, signal) => {
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8').slice(0, MAX_CAPTURE),
        stderr: Buffer.concat(err).toString('utf8').slice(0, MAX_CAPTURE),
        spawnError,
      });
    });
  });
}

/** One line saying how a host command failed, for error messages. */
export function describeFailure(file: string, result: HostCommandResult): string {
  if (result.spawnError !== null) return `${file}: ${result.spawnError.code ?? result.spawnError.message}`;
  const how = result.signal !== null ? `killed by ${result.signal}` : `exit code ${result.code}`;
  const detail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-3).join(' | ');
  return `${file} failed (${how})${detail ? `: ${detail}` : ''}`;
}

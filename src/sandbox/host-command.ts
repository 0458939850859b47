import { HostHelper } from './host-helper.js';

/**
 * Runs a host tool (mkfs.ext4, mount, umount, the runtime's CLI for kill/delete) with
 * argv (never a shell), a time limit and bounded captured output. It is started by the host
 * helper (host-helper.ts), not forked from Node.js.
 */

export interface HostCommandResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The command could not be started at all (ENOENT, EACCES), or the helper died. */
  readonly spawnError: NodeJS.ErrnoException | null;
}

const MAX_CAPTURE = 64 * 1024;

export async function runHostCommand(
  file: string,
  args: readonly string[],
  options: { timeoutMs?: number; env?: Readonly<Record<string, string>> } = {},
): Promise<HostCommandResult> {
  const child = HostHelper.shared().spawn(file, args, {
    // The system directories always come last: mkfs.ext4, losetup and friends live in sbin,
    // which an ordinary user's PATH lacks.
    env: options.env ?? { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/usr/bin:/sbin:/bin`, LANG: 'C' },
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let outBytes = 0;
  let errBytes = 0;
  child.onData((stream, chunk) => {
    if (stream === 'stdout') {
      if (outBytes < MAX_CAPTURE) out.push(chunk);
      outBytes += chunk.length;
    } else {
      if (errBytes < MAX_CAPTURE) err.push(chunk);
      errBytes += chunk.length;
    }
  });
  const timer = setTimeout(() => child.kill('KILL'), options.timeoutMs ?? 30_000);
  const exit = await child.closed;
  clearTimeout(timer);
  return {
    code: exit.code,
    signal: exit.signal,
    stdout: Buffer.concat(out).toString('utf8').slice(0, MAX_CAPTURE),
    stderr: Buffer.concat(err).toString('utf8').slice(0, MAX_CAPTURE),
    spawnError: exit.error,
  };
}

/** One line saying how a host command failed, for error messages. */
export function describeFailure(file: string, result: HostCommandResult): string {
  if (result.spawnError !== null) return `${file}: ${result.spawnError.code ?? result.spawnError.message}`;
  const how = result.signal !== null ? `killed by ${result.signal}` : `exit code ${result.code}`;
  const detail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-3).join(' | ');
  return `${file} failed (${how})${detail ? `: ${detail}` : ''}`;
}

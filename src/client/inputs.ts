import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';
import type { JobSpecV1 } from '../api/types.js';
import { AirlockError } from '../errors.js';

/**
 * `airlock run --input DIR`: the directory's files as job spec inputs (base64, so any bytes
 * go through; permission bits kept, set-id and sticky bits dropped). Unlike the local
 * `airlock sandbox --input`, links are refused rather than copied: a job spec has no way to
 * express one, and following it could send a file from outside DIR (~/.ssh/id_ed25519) to
 * the server. Devices, sockets and FIFOs are refused too. Empty directories are not sent.
 */

export type JobInput = NonNullable<JobSpecV1['inputs']>[number];

export interface InputLimits {
  /** Most files (the server's bound on spec.inputs). */
  readonly maxFiles: number;
  /** Most bytes of base64 content and paths: what fits into one request body. */
  readonly maxEncodedBytes: number;
  /** Most directory entries looked at (files and directories), so a huge tree stops early. */
  readonly maxEntries: number;
}

export const DEFAULT_INPUT_LIMITS: InputLimits = Object.freeze({
  maxFiles: 10_000,
  maxEncodedBytes: 4 * 1024 * 1024,
  maxEntries: 100_000,
});

const MAX_PATH_BYTES = 4096;

function reject(message: string, cause?: unknown): never {
  throw new AirlockError('INPUT_REJECTED', message, cause === undefined ? undefined : { cause });
}

function base64Length(bytes: number): number {
  return Math.ceil(bytes / 3) * 4;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function readInputDir(root: string, limits: InputLimits = DEFAULT_INPUT_LIMITS): JobInput[] {
  let info: import('node:fs').Stats;
  try {
    info = lstatSync(root);
  } catch (error) {
    reject(`--input ${root} cannot be read: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, error);
  }
  if (!info.isDirectory()) reject(`--input ${root} is not a directory (a link to one is refused too)`);
  const inputs: JobInput[] = [];
  let encoded = 0;
  let entries = 0;
  const tooLarge = (): never =>
    reject(
      `--input ${root} is too large: the files must fit into one request of ${limits.maxEncodedBytes} bytes once base64-encoded (the server's AIRLOCK_MAX_BODY); leave build outputs and dependencies out, or fetch them inside the job`,
    );
  // Depth-first with an explicit stack: no recursion limit on deep trees.
  const stack: string[] = [''];
  while (stack.length > 0) {
    const relDir = stack.pop() ?? '';
    const dir = relDir === '' ? root : join(root, relDir);
    let names: Buffer[];
    try {
      names = readdirSync(dir, { encoding: 'buffer' });
    } catch (error) {
      reject(
        `--input: cannot read the directory ${dir}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
        error,
      );
    }
    names.sort(Buffer.compare);
    for (const raw of names) {
      entries += 1;
      if (entries > limits.maxEntries)
        reject(`--input ${root} has more than ${limits.maxEntries} entries; send a smaller directory`);
      let name: string;
      try {
        name = utf8.decode(raw);
      } catch {
        reject(`--input: ${join(dir, raw.toString('latin1'))} has a name that is not UTF-8; rename it`);
      }
      const rel = relDir === '' ? name : `${relDir}/${name}`;
      if (Buffer.byteLength(rel) > MAX_PATH_BYTES)
        reject(`--input: the path ${rel} is longer than ${MAX_PATH_BYTES} bytes`);
      const path = join(root, rel);
      const entry = lstatSync(path);
      if (entry.isSymbolicLink())
        reject(
          `--input: ${path} is a symbolic link; a job's inputs are files only (replace the link with the file, or leave it out)`,
        );
      if (entry.isDirectory()) {
        stack.push(rel);
        continue;
      }
      if (!entry.isFile())
        reject(`--input: ${path} is a device, socket or FIFO; only files and directories are sent`);
      if (inputs.length + 1 > limits.maxFiles)
        reject(`--input ${root} has more than ${limits.maxFiles} files; send a smaller directory`);
      // Checked before reading: a 10 GB file is refused without being read.
      encoded += base64Length(entry.size) + Buffer.byteLength(rel) + 64;
      if (encoded > limits.maxEncodedBytes) tooLarge();
      const content = readRegularFile(path, entry, limits.maxEncodedBytes);
      if (base64Length(content.length) > base64Length(entry.size)) {
        // The file grew while it was read: count what was read.
        encoded += base64Length(content.length) - base64Length(entry.size);
        if (encoded > limits.maxEncodedBytes) tooLarge();
      }
      inputs.push({ path: rel, contentBase64: content.toString('base64'), mode: entry.mode & 0o777 });
    }
  }
  return inputs;
}

/**
 * Reads a file that lstat() saw as a regular file, opened with O_NOFOLLOW and checked to be
 * the same file (device and inode): a file swapped for a link meanwhile is refused.
 */
function readRegularFile(path: string, seen: import('node:fs').Stats, maxBytes: number): Buffer {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    reject(`--input: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, error);
  }
  try {
    const opened = fstatSync(fd);
    if (!opened.isFile() || opened.ino !== seen.ino || opened.dev !== seen.dev)
      reject(`--input: ${path} changed while it was being read; try again`);
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buffer = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(4096, seen.size - total + 1)));
      const bytesRead = readSync(fd, buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > maxBytes) reject(`--input: ${path} grew past ${maxBytes} bytes while it was being read`);
      chunks.push(buffer.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks, total);
  } finally {
    closeSync(fd);
  }
}

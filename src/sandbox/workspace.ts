import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  fstatSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  rmSync,
  symlinkSync,
  writeSync,
} from 'node:fs';
import { chown, lstat, mkdir, open, opendir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AirlockError } from '../errors.js';
import { HostHelper, type HostRequestError } from './host-helper.js';
import { checkWorkspacePath, JOB_BOUNDS, type WorkspaceFile } from './job.js';
import { readMountInfo } from './mountinfo.js';

/**
 * The job's disk: a file of the job's disk size, allocated in full (fallocate), formatted
 * ext4 and loop-mounted on the host (nosuid, nodev) before the job starts. Its `work/` is bound at /workspace and
 * its `tmp/` at /tmp, so the two together can never take more than the disk size from the
 * host, however the job writes (files, holes, inodes). After the run Airlock reads it from
 * the host side, never following a link out of it, then unmounts and deletes it.
 */

export interface Workspace {
  readonly image: string;
  readonly mountPoint: string;
  readonly workDir: string;
  readonly tmpDir: string;
}

export function workspacePaths(jobDir: string): Workspace {
  const mountPoint = join(jobDir, 'disk');
  return {
    image: join(jobDir, 'disk.img'),
    mountPoint,
    workDir: join(mountPoint, 'work'),
    tmpDir: join(mountPoint, 'tmp'),
  };
}

function setupFailed(message: string, cause?: unknown): never {
  throw new AirlockError('SANDBOX_SETUP_FAILED', message, { cause });
}

/**
 * Formats and mounts a fresh disk in `jobDir`. Its work/ and tmp/ stay root's (0700) until
 * assignWorkspace() hands them to one job's user: a disk may be prepared before the job that
 * will use it is known (see the engine's prepared slots), but it is never used twice.
 */
export async function createWorkspace(jobDir: string, diskBytes: number): Promise<Workspace> {
  const ws = workspacePaths(jobDir);
  // The whole size is allocated on the host now (fallocate: no data written, milliseconds),
  // so the job can use all of its disk and never fill the host's instead: a disk the host
  // cannot hold is refused here, before the job starts.
  // Synchronous calls here and below: a few small metadata operations on local disks for
  // every job, each of which would otherwise be a round trip through libuv's thread pool.
  closeSync(openSync(ws.image, 'wx', 0o600));
  mkdirSync(ws.mountPoint, { mode: 0o711 });
  // Allocated, formatted and mounted by the host helper with system calls: no host tool is
  // started for it (decision 0012).
  try {
    await HostHelper.disks().makeDisk(ws.image, diskBytes, ws.mountPoint);
  } catch (error) {
    const failure = error as HostRequestError;
    if (failure.step === 'allocate' && (failure.code === 'ENOSPC' || failure.code === 'EFBIG')) {
      // ENOSPC: not that much free space; EFBIG: larger than a file the host filesystem can hold.
      setupFailed(
        `the host has less free disk than the job's ${diskBytes}-byte disk needs (in ${jobDir}: ${failure.message}); ask for a smaller --disk or free space`,
      );
    }
    if (failure.step === 'allocate') setupFailed(`cannot allocate the job's disk: ${failure.message}`, error);
    if (failure.step === 'format') setupFailed(`cannot format the job's disk: ${failure.message}`, error);
    setupFailed(`cannot mount the job's disk: ${failure.message}`, error);
  }
  // The helper hands the disk out laid out: its root root's and closed (0700), work/ and
  // tmp/ made and closed (0700) until assignWorkspace() gives them to one job, no lost+found.
  return ws;
}

/** Gives the disk's work/ (0755) and tmp/ (1777, like any /tmp) to the job's host user. */
export async function assignWorkspace(
  ws: Workspace,
  owner: { uid: number; gid: number },
  rangeRoot: { uid: number; gid: number },
): Promise<void> {
  // The disk's root belongs to the job's range root (its container root) and is closed to
  // every other host user: no one but the job and host root can read or plant files in its
  // workspace or /tmp, nor swap a path component while Airlock reads results.
  chownSync(ws.mountPoint, rangeRoot.uid, rangeRoot.gid);
  chmodSync(ws.mountPoint, 0o700);
  chownSync(ws.workDir, owner.uid, owner.gid);
  chownSync(ws.tmpDir, owner.uid, owner.gid);
  chmodSync(ws.workDir, 0o755);
  chmodSync(ws.tmpDir, 0o1777);
}

/** Whether `path` is a mount point of this host (per /proc/self/mountinfo). */
export function isMounted(path: string): boolean {
  return readMountInfo().some((entry) => entry.mountPoint === path);
}

/** Unmounts (which also frees the loop device) and deletes the job's disk. */
export async function removeWorkspace(jobDir: string): Promise<void> {
  const ws = workspacePaths(jobDir);
  for (let attempt = 0; isMounted(ws.mountPoint) && attempt < 20; attempt += 1) {
    try {
      await HostHelper.disks().unmount(ws.mountPoint);
      break;
    } catch (error) {
      if (attempt === 19) {
        throw new AirlockError(
          'SANDBOX_CLEANUP_FAILED',
          `cannot unmount ${ws.mountPoint}: ${(error as Error).message}`,
        );
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  // Freeing a large image's blocks can take a while: off the event loop.
  await rm(ws.image, { force: true });
  // The helper removed the mount point with the unmount; one never mounted is still here.
  rmSync(ws.mountPoint, { recursive: true, force: true });
}

// --- inputs: files copied in before the run -----------------------------------------------

export interface InputLimits {
  readonly maxFiles: number;
  readonly maxBytes: number;
}

export async function writeWorkspaceFiles(
  ws: Workspace,
  files: readonly WorkspaceFile[],
  owner: { uid: number; gid: number },
): Promise<void> {
  for (const file of files) {
    const path = checkWorkspacePath('file path', file.path);
    const target = join(ws.workDir, path);
    await makeParents(ws.workDir, dirname(path), owner);
    // O_EXCL + O_NOFOLLOW: never write through a link or over an earlier entry.
    const handle = await open(
      target,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      await handle.writeFile(file.content);
      await handle.chown(owner.uid, owner.gid);
      await handle.chmod(file.mode ?? 0o644);
    } finally {
      await handle.close();
    }
  }
}

async function makeParents(root: string, relDir: string, owner: { uid: number; gid: number }): Promise<void> {
  if (relDir === '.' || relDir === '') return;
  let current = root;
  for (const part of relDir.split('/')) {
    current = join(current, part);
    try {
      await mkdir(current, { mode: 0o755 });
      await chown(current, owner.uid, owner.gid);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const info = await lstat(current);
      if (!info.isDirectory()) {
        throw new AirlockError('INPUT_REJECTED', `workspace path ${current} exists and is not a directory`);
      }
    }
  }
}

/**
 * Copies a host directory into the workspace: regular files, directories and symbolic links
 * (copied as links, never followed, so a link to /etc/shadow stays a link that points at
 * nothing inside the sandbox). Devices, sockets and FIFOs are refused. Set-id bits dropped.
 */
export async function copyInputDir(
  ws: Workspace,
  source: string,
  owner: { uid: number; gid: number },
  limits: InputLimits = { maxFiles: JOB_BOUNDS.maxFiles, maxBytes: Number.POSITIVE_INFINITY },
): Promise<{ files: number; bytes: number }> {
  let info: import('node:fs').Stats;
  try {
    info = await lstat(source);
  } catch (error) {
    throw new AirlockError('INPUT_REJECTED', `input directory ${source} cannot be read`, { cause: error });
  }
  if (!info.isDirectory()) throw new AirlockError('INPUT_REJECTED', `input ${source} is not a directory`);
  const count = { files: 0, bytes: 0 };
  await copyTree(source, ws.workDir, owner, limits, count);
  return count;
}

/** Copies in batches of plain system calls, yielding to the event loop between batches. */
const COPY_BATCH = 256;

async function copyTree(
  from: string,
  to: string,
  owner: { uid: number; gid: number },
  limits: InputLimits,
  count: { files: number; bytes: number },
): Promise<void> {
  const buffer = Buffer.allocUnsafe(1 << 20);
  // Depth-first with an explicit stack; synchronous calls are several times faster than
  // promises for many small files, and the batches keep the event loop responsive.
  const stack: { from: string; to: string }[] = [{ from, to }];
  while (stack.length > 0) {
    const dir = stack.pop();
    if (dir === undefined) break;
    for (const name of readdirSync(dir.from)) {
      const source = join(dir.from, name);
      const target = join(dir.to, name);
      count.files += 1;
      if (count.files > limits.maxFiles) {
        throw new AirlockError('INPUT_REJECTED', `input has more than ${limits.maxFiles} entries`);
      }
      if (count.files % COPY_BATCH === 0) await new Promise((resolve) => setImmediate(resolve));
      const info = lstatSync(source);
      if (info.isSymbolicLink()) {
        // Copied as a link, never followed: inside the sandbox it points into the sandbox.
        symlinkSync(readlinkSync(source), target);
        lchownSync(target, owner.uid, owner.gid);
      } else if (info.isDirectory()) {
        mkdirSync(target, { mode: 0o700 });
        chownSync(target, owner.uid, owner.gid);
        chmodSync(target, info.mode & 0o777);
        stack.push({ from: source, to: target });
      } else if (info.isFile()) {
        count.bytes += info.size;
        if (count.bytes > limits.maxBytes) {
          throw new AirlockError(
            'INPUT_REJECTED',
            `input is larger than the job's disk (${limits.maxBytes} bytes)`,
          );
        }
        copyRegularFile(source, info, target, owner, buffer);
      } else {
        throw new AirlockError(
          'INPUT_REJECTED',
          `input ${source} is a device, socket or FIFO; only files, directories and links are copied`,
        );
      }
    }
  }
}

/**
 * Copies one regular file. The source is opened with O_NOFOLLOW and must still be the file
 * lstat() saw (same device and inode): a file swapped for a link meanwhile is refused, not
 * followed. Set-id bits are dropped.
 */
function copyRegularFile(
  source: string,
  seen: import('node:fs').Stats,
  target: string,
  owner: { uid: number; gid: number },
  buffer: Buffer,
): void {
  const input = openSync(source, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const opened = fstatSync(input);
    if (!opened.isFile() || opened.ino !== seen.ino || opened.dev !== seen.dev) {
      throw new AirlockError('INPUT_REJECTED', `input ${source} changed while it was being copied`);
    }
    const output = openSync(
      target,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      for (;;) {
        const bytesRead = readSync(input, buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        let written = 0;
        while (written < bytesRead) written += writeSync(output, buffer, written, bytesRead - written);
      }
      fchownSync(output, owner.uid, owner.gid);
      fchmodSync(output, seen.mode & 0o777);
    } finally {
      closeSync(output);
    }
  } finally {
    closeSync(input);
  }
}

// --- reading after the run -------------------------------------------------------------------

/** Linux's PATH_MAX: longer paths cannot be passed to a system call. */
const PATH_MAX = 4096;

export interface WorkspaceEntry {
  /** Path relative to /workspace. */
  readonly path: string;
  readonly type: 'file' | 'directory' | 'symlink' | 'other';
  readonly size: number;
}

/**
 * Read access to a finished job's workspace. Everything in it is the job's and therefore
 * hostile (DESIGN §5.7): every path is resolved component by component with lstat and
 * opened with O_NOFOLLOW, so no link leads out of the workspace. The job has been killed
 * entirely before this runs, so nothing can swap a component between check and open.
 */
export class WorkspaceReader {
  readonly #root: string;

  constructor(workDir: string) {
    this.#root = workDir;
  }

  /** Lists the workspace (depth-first), up to `maxEntries`. Links are reported, never followed. */
  async list(maxEntries: number = JOB_BOUNDS.maxFiles, maxDepth = 64): Promise<WorkspaceEntry[]> {
    const out: WorkspaceEntry[] = [];
    // Directories are read as a stream and the walk stops at maxEntries: a job that made a
    // million entries costs a bounded amount of Airlock's memory and time. Paths the kernel
    // cannot name (past PATH_MAX) and directories below maxDepth are reported, not entered.
    const walk = async (rel: string, depth: number): Promise<void> => {
      const dir = await opendir(rel === '' ? this.#root : join(this.#root, rel));
      for await (const entry of dir) {
        if (out.length >= maxEntries) break;
        const path = rel === '' ? entry.name : `${rel}/${entry.name}`;
        if (Buffer.byteLength(join(this.#root, path)) >= PATH_MAX) {
          out.push({ path, type: 'other', size: 0 });
          continue;
        }
        const info = await lstat(join(this.#root, path)).catch(() => null);
        if (info === null) continue;
        const type = info.isSymbolicLink()
          ? 'symlink'
          : info.isDirectory()
            ? 'directory'
            : info.isFile()
              ? 'file'
              : 'other';
        out.push({ path, type, size: info.size });
        if (type === 'directory' && depth < maxDepth) await walk(path, depth + 1);
      }
    };
    await walk('', 1);
    return out;
  }

  /** Reads a regular file of the workspace, refusing links anywhere on the path and files over `maxBytes`. */
  async readFile(path: string, maxBytes: number): Promise<Buffer> {
    const rel = checkWorkspacePath('path', path);
    let current = this.#root;
    const parts = rel.split('/');
    for (const [index, part] of parts.entries()) {
      current = join(current, part);
      const info = await lstat(current).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT' || error.code === 'ENOTDIR') {
          throw new AirlockError('INPUT_REJECTED', `workspace path ${rel} does not exist`);
        }
        if (error.code === 'ENAMETOOLONG')
          throw new AirlockError('INPUT_REJECTED', `workspace path ${rel} is too long`);
        throw error;
      });
      if (info.isSymbolicLink()) {
        throw new AirlockError(
          'INPUT_REJECTED',
          `workspace path ${rel} goes through a symbolic link; not followed`,
        );
      }
      if (index < parts.length - 1 && !info.isDirectory()) {
        throw new AirlockError('INPUT_REJECTED', `workspace path ${rel}: ${part} is not a directory`);
      }
    }
    const handle = await open(current, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const info = await handle.stat();
      if (!info.isFile())
        throw new AirlockError('INPUT_REJECTED', `workspace path ${rel} is not a regular file`);
      if (info.size > maxBytes) {
        throw new AirlockError(
          'INPUT_REJECTED',
          `workspace file ${rel} has ${info.size} bytes, more than ${maxBytes}`,
        );
      }
      const buffer = Buffer.alloc(info.size);
      let offset = 0;
      while (offset < info.size) {
        const { bytesRead } = await handle.read(buffer, offset, info.size - offset, offset);
        if (bytesRead === 0) break;
        offset += bytesRead;
      }
      return buffer.subarray(0, offset);
    } finally {
      await handle.close();
    }
  }
}

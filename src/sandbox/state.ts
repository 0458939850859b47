import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { AirlockError } from '../errors.js';

/**
 * Airlock's own sandbox state directory, and who owns what in it.
 *
 *   <root>/jobs/<id>/          one job: owner.json, config.json (the bundle), disk.img, disk/
 *   /run/airlock/ids/<n>       lease on host UID/GID range n (see idmap.ts): host-wide, shared
 *                              by every Airlock state directory, since host IDs are host-wide
 *   <root>/runtime/<runtime>/  the OCI runtime's --root (container state)
 *   <root>/rootfs/host-<digest>/  the shared read-only root of `image: host`
 *   <root>/images/<hex>/       digest-pinned images (src/images/cache.ts)
 *
 * Every job and lease records the process that created it (pid + kernel start time, so a
 * reused pid is not mistaken for the owner). The sweep (sweep.ts) removes what belongs to
 * dead owners and never touches what a live Airlock process is using.
 */

export interface SandboxDirs {
  readonly root: string;
  readonly jobs: string;
  readonly ids: string;
  readonly runtime: string;
  readonly rootfs: string;
}

/** Host-wide directory of ID range leases (on tmpfs: a reboot ends every lease with its jobs). */
export const ID_LEASE_DIR = '/run/airlock/ids';

export function sandboxDirs(root: string, idLeaseDir = ID_LEASE_DIR): SandboxDirs {
  return {
    root,
    jobs: join(root, 'jobs'),
    ids: idLeaseDir,
    runtime: join(root, 'runtime'),
    rootfs: join(root, 'rootfs'),
  };
}

export async function ensureSandboxDirs(dirs: SandboxDirs): Promise<void> {
  // 0711: the job's user namespace must traverse to its bind-mount sources (it is "other" on
  // the host); listing and writing stay root's.
  for (const dir of [dirs.root, dirs.jobs, dirs.rootfs]) {
    await mkdir(dir, { recursive: true, mode: 0o711 });
    await chmod(dir, 0o711);
  }
  for (const dir of [dirs.ids, dirs.runtime]) await mkdir(dir, { recursive: true, mode: 0o700 });
  // Mount points are compared with /proc/self/mountinfo, which shows real paths: a state
  // directory reached through a link would leave its disks mounted for good.
  const real = await realpath(dirs.root);
  if (real !== dirs.root) {
    throw new AirlockError(
      'INVALID_CONFIG',
      `AIRLOCK_SANDBOX_DIR ${dirs.root} goes through a symbolic link; name the directory itself: ${real}`,
    );
  }
  for (let dir = dirname(dirs.root); ; dir = dirname(dir)) {
    const info = await stat(dir);
    // Root works in this tree as root: no other user may be able to rename or replace a part
    // of it (unless the sticky bit stops them, as on /tmp).
    const writableByOthers = (info.mode & 0o022) !== 0 && (info.mode & 0o1000) === 0;
    if (info.uid !== 0 || writableByOthers) {
      throw new AirlockError(
        'HOST_UNSUPPORTED',
        `${dir} (above the sandbox directory ${dirs.root}) is owned by uid ${info.uid} with mode ${(info.mode & 0o7777).toString(8)}; every directory above it must be root's and not writable by others: choose another AIRLOCK_SANDBOX_DIR`,
      );
    }
    // Every ancestor must let "other" traverse too, or the runtime cannot reach the job's
    // files from inside its user namespace (a mkdtemp directory is 0700, say).
    if ((info.mode & 0o001) === 0) {
      throw new AirlockError(
        'HOST_UNSUPPORTED',
        `${dir} (above the sandbox directory ${dirs.root}) is not searchable by other users (mode ${(info.mode & 0o777).toString(8)}); jobs' user namespaces must traverse it: chmod o+x ${dir} or choose another AIRLOCK_SANDBOX_DIR`,
      );
    }
    if (dir === '/') break;
  }
}

export interface Owner {
  readonly pid: number;
  /** Start time of the process in clock ticks since boot (/proc/PID/stat field 22). */
  readonly startTime: string;
}

export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may contain spaces and parentheses: parse after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

export function currentOwner(): Owner {
  const startTime = processStartTime(process.pid);
  if (startTime === null) throw new Error('cannot read /proc/self/stat');
  return { pid: process.pid, startTime };
}

export function ownerAlive(owner: Owner): boolean {
  return processStartTime(owner.pid) === owner.startTime;
}

export function parseOwner(text: string): Owner | null {
  try {
    const value = JSON.parse(text) as Partial<Owner>;
    if (typeof value.pid === 'number' && Number.isInteger(value.pid) && typeof value.startTime === 'string') {
      return { pid: value.pid, startTime: value.startTime };
    }
  } catch {
    // fall through: an unreadable record has no live owner
  }
  return null;
}

export async function readOwner(path: string): Promise<Owner | null> {
  try {
    return parseOwner(await readFile(path, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * Creates `path` holding the owner record, failing with EEXIST if it exists. The record is
 * written to a temporary file first and linked into place, so nobody (the sweep of another
 * process, say) ever sees the file without its owner.
 */
export async function writeOwner(
  path: string,
  owner: Owner,
  extra: Record<string, unknown> = {},
): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  // Synchronous: a small local file, written for every job (a thread-pool round trip each
  // would cost more than the calls themselves).
  writeFileSync(temp, `${JSON.stringify({ ...owner, ...extra })}\n`, { mode: 0o600, flag: 'wx' });
  try {
    linkSync(temp, path);
  } finally {
    try {
      unlinkSync(temp);
    } catch {
      // already gone
    }
  }
}

/** Temporary files of writeOwner() whose writer died between write and link. */
export function isOwnerTempFile(name: string): boolean {
  return name.startsWith('.') && name.endsWith('.tmp');
}

/** A fresh job id; also the container id and the cgroup name. */
export function newJobId(): string {
  return `al-${randomBytes(8).toString('hex')}`;
}

export const JOB_ID_PATTERN = /^al-[0-9a-f]{16}$/;

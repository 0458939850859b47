import { constants } from 'node:fs';
import { chmod, lstat, mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AirlockError } from '../errors.js';
import { JOB_GID, JOB_UID, TMP_PATH, WORKSPACE_PATH } from '../sandbox/process.js';
import { GENERATED_ETC } from '../sandbox/rootfs.js';

/**
 * Makes an unpacked image ready to be a job's read-only root, once, at import:
 *
 * - every directory Airlock mounts on (/proc, /dev, /sys, /tmp, /workspace) exists as a
 *   real directory, so the runtime never has to create a mount point in the shared cache;
 * - /etc is a real directory holding a plain file at each of passwd, group, hosts, hostname
 *   and resolv.conf, the mount points of Airlock's own versions of them;
 * - those versions are generated beside the tree (<image>/etc/), and bound read-only over
 *   the image's at each job: the job user (uid 1000) has a passwd entry in any image, the
 *   sandbox's name and resolver are Airlock's, and the image's own tree stays what its
 *   digest says apart from these mount points.
 */

/**
 * Directories of the image that Airlock mounts on (or, for run/airlock, will: decision 0009
 * puts the egress socket there, and a tmpfs on this directory lets the runtime create the
 * socket's mount point without touching the image). A new mount destination must be added
 * here; an image imported before lacks it, and checkMountPoints() then fails its jobs cleanly.
 */
export const IMAGE_MOUNT_DIRS: readonly string[] = [
  'proc',
  'dev',
  'sys',
  TMP_PATH.slice(1),
  WORKSPACE_PATH.slice(1),
  'run/airlock',
];
/** Files of /etc that Airlock binds over the image's (read-only). */
export const BOUND_ETC_FILES: readonly string[] = ['passwd', 'group', 'hosts', 'hostname', 'resolv.conf'];

const MAX_ACCOUNT_FILE = 1024 * 1024;

function refuse(message: string): never {
  throw new AirlockError('IMAGE_INVALID', message);
}

async function lstatOrNull(path: string): Promise<import('node:fs').Stats | null> {
  return lstat(path).catch(() => null);
}

/** Reads the image's own passwd or group (a plain file, bounded), or null. */
async function readAccountFile(path: string): Promise<string | null> {
  const info = await lstatOrNull(path);
  if (info === null || !info.isFile() || info.size > MAX_ACCOUNT_FILE) return null;
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    return (await handle.readFile()).toString('utf8');
  } finally {
    await handle.close();
  }
}

/**
 * The image's account lines, minus any that would claim the job's name or id, plus the
 * job's own line. Without an image file: Airlock's own (root, job, nobody).
 */
export function mergeAccounts(image: string | null, generated: string, id: number): string {
  if (image === null) return generated;
  const ours = generated.split('\n').find((line) => line.startsWith('job:'));
  const kept = image
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.includes('\0'))
    .filter((line) => {
      const fields = line.split(':');
      return fields[0] !== 'job' && fields[2] !== String(id);
    });
  return `${[...kept, ours].join('\n')}\n`;
}

/** Prepares `rootfs` (unpacked) and writes the bound /etc files into `etcDir`. */
export async function prepareImageRoot(rootfs: string, etcDir: string): Promise<void> {
  await chmod(rootfs, 0o755);
  for (const name of IMAGE_MOUNT_DIRS) {
    let path = rootfs;
    // Component by component, never through a link: a link or file in the way is replaced
    // (the mount hides whatever the image had there).
    for (const part of name.split('/')) {
      path = join(path, part);
      const info = await lstatOrNull(path);
      if (info !== null && !info.isDirectory()) await rm(path, { recursive: true, force: true });
      if (info === null || !info.isDirectory()) await mkdir(path, { mode: 0o755 });
    }
    await chmod(path, 0o755);
  }
  const etc = join(rootfs, 'etc');
  const etcInfo = await lstatOrNull(etc);
  if (etcInfo === null) await mkdir(etc, { mode: 0o755 });
  else if (!etcInfo.isDirectory())
    refuse(
      "the image's /etc is not a directory (a link?): Airlock binds its passwd, group, hosts, hostname and resolv.conf there",
    );

  const passwd = mergeAccounts(
    await readAccountFile(join(etc, 'passwd')),
    GENERATED_ETC.passwd as string,
    JOB_UID,
  );
  const group = mergeAccounts(
    await readAccountFile(join(etc, 'group')),
    GENERATED_ETC.group as string,
    JOB_GID,
  );
  for (const name of BOUND_ETC_FILES) {
    const path = join(etc, name);
    const info = await lstatOrNull(path);
    if (info?.isFile() === true) continue;
    // A link (resolv.conf -> ../run/…, say) or directory becomes an empty file: the bind
    // needs a plain file to land on, and must never follow a link out of the tree.
    if (info !== null) await rm(path, { recursive: true, force: true });
    await writeFile(path, '', { mode: 0o644, flag: 'wx' });
  }
  await mkdir(etcDir, { mode: 0o755 });
  const contents: Record<string, string> = {
    passwd,
    group,
    hosts: GENERATED_ETC.hosts as string,
    hostname: GENERATED_ETC.hostname as string,
    'resolv.conf': GENERATED_ETC['resolv.conf'] as string,
  };
  for (const name of BOUND_ETC_FILES)
    await writeFile(join(etcDir, name), contents[name] ?? '', { mode: 0o644 });
}

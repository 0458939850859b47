import { constants } from 'node:fs';
import { chmod, link, lstat, mkdir, open, readdir, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { AirlockError } from '../errors.js';
import type { TarEntry } from './tar.js';

/**
 * Applies the entries of image layers to a directory tree, refusing anything that could
 * write outside it or smuggle in what a shared, read-only image must not hold.
 *
 * The tree is Airlock's own (a root-only temporary directory in the cache), so the only
 * hostile party is the layer: checking each parent with lstat() before using it is not
 * racy here, and nothing is ever opened through a link (O_NOFOLLOW, O_EXCL on creation).
 *
 * Rules, and the threat each stops:
 * - absolute names, `..` components, NUL, non-UTF-8: a name that leaves the tree or is
 *   read differently by two tools;
 * - an entry whose path goes through a symbolic link (`link -> /etc`, then `link/passwd`):
 *   the classic tar escape; a symbolic link is stored verbatim and only ever resolved later,
 *   inside the job's own root, by the kernel of the job's mount namespace;
 * - hard links: the target must be a regular file already in the tree, reached without a
 *   link (a hard link to a host file would hand that inode to every job);
 * - device nodes and FIFOs: refused (a device node in a shared root would be a door to a
 *   host device if a mount ever lacked nodev; /dev is the runtime's tmpfs anyway);
 * - set-user-ID and set-group-ID bits: cleared (jobs run with no_new_privs, and the cache
 *   on the host must hold no set-id program); group and other write bits: cleared (the
 *   cache is shared by every job; jobs see it read-only in any case);
 * - ownership: everything is owned by host root, whatever the layer says (the job's user
 *   namespace does not map host root: the job sees "nobody" and can change nothing);
 * - xattrs (file capabilities, SELinux labels) are not applied.
 */

export interface UnpackLimits {
  /** Entries (of all layers) at most. */
  readonly maxEntries: number;
  /** Longest entry name, in bytes; each component at most 255 bytes. */
  readonly maxPathBytes: number;
}

/** What the unpacker keeps between entries; one per image. */
export interface UnpackState {
  readonly root: string;
  readonly limits: UnpackLimits;
  entries: number;
  fileBytes: number;
  /** Paths (relative, normalised) created by the current layer: whiteouts only hide lower layers. */
  layerPaths: Set<string>;
}

export function newUnpackState(root: string, limits: UnpackLimits): UnpackState {
  return { root, limits, entries: 0, fileBytes: 0, layerPaths: new Set() };
}

/** Call before the first entry of each layer. */
export function startLayer(state: UnpackState): void {
  state.layerPaths = new Set();
}

function refuse(message: string): never {
  throw new AirlockError('IMAGE_INVALID', message);
}

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';
/** Permission bits kept: no set-id, no group or other write. */
const KEPT_MODE = 0o1755;

/**
 * A layer entry's name as components inside the tree: relative, no `..`, no NUL, bounded.
 * `./a//b/` is ["a", "b"]; the root itself is [].
 */
export function entryComponents(name: string, what: string, limits: UnpackLimits): string[] {
  if (name.includes('\0')) refuse(`${what} contains a NUL byte`);
  if (Buffer.byteLength(name) > limits.maxPathBytes)
    refuse(`${what} is longer than ${limits.maxPathBytes} bytes`);
  if (name.startsWith('/')) refuse(`${what} is an absolute path: ${JSON.stringify(name)}`);
  const parts = name.split('/').filter((part) => part !== '' && part !== '.');
  for (const part of parts) {
    if (part === '..') refuse(`${what} contains "..": ${JSON.stringify(name)}`);
    if (Buffer.byteLength(part) > 255) refuse(`${what} has a component longer than 255 bytes`);
  }
  return parts;
}

async function lstatOrNull(path: string): Promise<import('node:fs').Stats | null> {
  try {
    return await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/**
 * Makes sure every parent of `parts` is a real directory in the tree, creating missing
 * ones (as tar does); refuses a parent that is a link or not a directory. Returns the host
 * path of the entry.
 */
async function parentsOf(state: UnpackState, parts: readonly string[], name: string): Promise<string> {
  let path = state.root;
  for (let i = 0; i < parts.length - 1; i += 1) {
    path = join(path, parts[i] as string);
    const info = await lstatOrNull(path);
    if (info === null) {
      // Counted like an entry: one deep name must not create thousands of inodes for free.
      countEntry(state);
      await mkdir(path, { mode: 0o755 });
      state.layerPaths.add(parts.slice(0, i + 1).join('/'));
    } else if (info.isSymbolicLink()) {
      refuse(
        `${JSON.stringify(name)} goes through the symbolic link ${parts.slice(0, i + 1).join('/')}: an entry may not be written through a link`,
      );
    } else if (!info.isDirectory()) {
      refuse(
        `${JSON.stringify(name)} goes through ${parts.slice(0, i + 1).join('/')}, which is not a directory`,
      );
    }
  }
  return join(state.root, ...parts);
}

function countEntry(state: UnpackState): void {
  state.entries += 1;
  if (state.entries > state.limits.maxEntries)
    refuse(`the image has more than ${state.limits.maxEntries} entries (directories made for them included)`);
}

/** Removes what is at `path` (a link itself, never its target; a directory with its content). */
async function removeExisting(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
}

/** Applies one entry of the current layer. `content` must be read for files. */
export async function applyEntry(
  state: UnpackState,
  entry: TarEntry,
  content: AsyncIterable<Buffer>,
): Promise<void> {
  countEntry(state);
  const name = entry.path;
  const parts = entryComponents(name, `entry ${JSON.stringify(name)}`, state.limits);
  const base = parts[parts.length - 1];

  if (base?.startsWith(WHITEOUT) === true) {
    await applyWhiteout(state, parts, name);
    return;
  }
  if (entry.type === 'char' || entry.type === 'block')
    refuse(`entry ${JSON.stringify(name)} is a device node; images may not contain devices`);
  if (entry.type === 'fifo') refuse(`entry ${JSON.stringify(name)} is a FIFO; images may not contain FIFOs`);

  if (parts.length === 0) {
    // The root itself ("./"): its mode is Airlock's (0755), whatever the layer says.
    if (entry.type !== 'dir')
      refuse(`entry ${JSON.stringify(name)} names the image root but is not a directory`);
    return;
  }
  const path = await parentsOf(state, parts, name);
  const relative = parts.join('/');
  const mode = entry.mode & KEPT_MODE;
  const existing = await lstatOrNull(path);

  if (entry.type === 'dir') {
    if (existing?.isDirectory() !== true) {
      if (existing !== null) await removeExisting(path);
      await mkdir(path, { mode: 0o700 });
    }
    // lstat said directory, and nobody else writes in this tree: chmod cannot follow a link.
    await chmod(path, mode);
    state.layerPaths.add(relative);
    return;
  }
  if (existing !== null) await removeExisting(path);
  state.layerPaths.add(relative);

  if (entry.type === 'symlink') {
    // Stored verbatim, never followed here: it is resolved inside the job's root.
    if (entry.linkpath === '') refuse(`symbolic link ${JSON.stringify(name)} has an empty target`);
    if (entry.linkpath.includes('\0')) refuse(`symbolic link ${JSON.stringify(name)} target contains NUL`);
    await symlink(entry.linkpath, path);
    return;
  }
  if (entry.type === 'hardlink') {
    const targetParts = entryComponents(
      entry.linkpath,
      `hard link target of ${JSON.stringify(name)}`,
      state.limits,
    );
    if (targetParts.length === 0) refuse(`hard link ${JSON.stringify(name)} points at the image root`);
    let targetPath = state.root;
    for (const [index, part] of targetParts.entries()) {
      targetPath = join(targetPath, part);
      const info = await lstatOrNull(targetPath);
      const last = index === targetParts.length - 1;
      if (info === null)
        refuse(
          `hard link ${JSON.stringify(name)} points at ${JSON.stringify(entry.linkpath)}, which is not in the image`,
        );
      if (info.isSymbolicLink())
        refuse(
          `hard link ${JSON.stringify(name)} target ${JSON.stringify(entry.linkpath)} goes through or is a symbolic link`,
        );
      if (!last && !info.isDirectory())
        refuse(`hard link ${JSON.stringify(name)} target goes through a non-directory`);
      if (last && !info.isFile())
        refuse(
          `hard link ${JSON.stringify(name)} target ${JSON.stringify(entry.linkpath)} is not a regular file`,
        );
    }
    await link(targetPath, path);
    return;
  }
  // A regular file: created new (O_EXCL), never through a link (O_NOFOLLOW).
  const handle = await open(
    path,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    let written = 0;
    for await (const chunk of content) {
      let offset = 0;
      while (offset < chunk.length) {
        const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
        offset += bytesWritten;
      }
      written += chunk.length;
    }
    if (written !== entry.size) refuse(`entry ${JSON.stringify(name)} is shorter than its size`);
    state.fileBytes += written;
    await handle.chmod(mode);
    await handle.utimes(entry.mtime, entry.mtime);
  } finally {
    await handle.close();
  }
}

async function applyWhiteout(state: UnpackState, parts: readonly string[], name: string): Promise<void> {
  const base = parts[parts.length - 1] as string;
  const dirParts = parts.slice(0, -1);
  // Whiteouts only delete; a parent that is missing means there is nothing to delete.
  let dir = state.root;
  for (const [index, part] of dirParts.entries()) {
    dir = join(dir, part);
    const info = await lstatOrNull(dir);
    if (info === null) return;
    if (info.isSymbolicLink())
      refuse(
        `whiteout ${JSON.stringify(name)} goes through the symbolic link ${dirParts.slice(0, index + 1).join('/')}`,
      );
    if (!info.isDirectory()) return;
  }
  const prefix = dirParts.join('/');
  if (base === OPAQUE) {
    await clearOpaque(state, dir, prefix);
    return;
  }
  // Other ".wh..wh." names are aufs bookkeeping (hard-link directories): nothing to apply.
  if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) return;
  const hidden = base.slice(WHITEOUT.length);
  if (hidden === '' || hidden === '.' || hidden === '..')
    refuse(`whiteout ${JSON.stringify(name)} names no entry`);
  const relative = prefix === '' ? hidden : `${prefix}/${hidden}`;
  // A whiteout hides lower layers only, never what this layer itself added.
  if (state.layerPaths.has(relative)) return;
  await removeExisting(join(dir, hidden));
}

/** An opaque directory: everything of lower layers below it goes, what this layer added stays. */
async function clearOpaque(state: UnpackState, dir: string, prefix: string): Promise<void> {
  for (const child of await readdir(dir)) {
    const relative = prefix === '' ? child : `${prefix}/${child}`;
    const path = join(dir, child);
    if (!state.layerPaths.has(relative)) {
      await removeExisting(path);
      continue;
    }
    const info = await lstat(path);
    if (info.isDirectory()) await clearOpaque(state, path, relative);
  }
}

import { randomBytes } from 'node:crypto';
import { lstat, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AirlockError } from '../errors.js';
import { currentOwner, ownerAlive, readOwner, writeOwner } from '../sandbox/state.js';
import { BOUND_ETC_FILES } from './prepare.js';
import { digestHex, type PinnedImage } from './reference.js';

/**
 * The image cache of one worker host, under the sandbox state directory:
 *
 *   <sandbox>/images/<hex>/            one image, named by its manifest digest; present only
 *                                      when complete (built elsewhere, renamed into place)
 *     image.json                       its record: names, digests, sizes, when imported
 *     rootfs/                          the unpacked tree, owned by root, read-only to jobs
 *     etc/                             passwd, group, hosts, hostname, resolv.conf bound over the image's
 *     .removing                        while `airlock image remove` decides (owner record)
 *   <sandbox>/images/.import-<rand>/   an import under way (owner.json: the importing process)
 *   <sandbox>/images/.removed-<rand>/  an image being deleted
 *
 * Each image's record is its own file, written with the image (and rewritten atomically
 * when a name is added), so there is no shared index for two imports to race on: the
 * directory listing is the index.
 *
 * A job that uses an image leaves a marker in its own job directory (jobs/<id>/image,
 * removed with the job); `remove` refuses while a live job's marker names the image.
 */

export interface ImageRecord {
  readonly version: 1;
  /** `sha256:<hex>` of the manifest. */
  readonly digest: string;
  /** Names it was imported under (labels; the digest decides). */
  readonly names: readonly string[];
  readonly importedAt: string;
  readonly platform: string;
  readonly manifestMediaType: string;
  readonly config: string;
  readonly layers: readonly { digest: string; diffId: string; size: number; mediaType: string }[];
  /** Bytes of the layer blobs as stored (compressed). */
  readonly compressedBytes: number;
  /** Bytes of regular-file content in the unpacked tree. */
  readonly unpackedBytes: number;
  readonly entries: number;
}

export interface CachedImage {
  readonly record: ImageRecord;
  readonly dir: string;
  readonly rootfs: string;
  /** Host files bound read-only at /etc/<name> in the job. */
  readonly etcBinds: readonly { source: string; destination: string }[];
}

export function imagesDir(sandboxRoot: string): string {
  return join(sandboxRoot, 'images');
}

export function imageDir(sandboxRoot: string, digest: string): string {
  return join(imagesDir(sandboxRoot), digestHex(digest));
}

const RECORD = 'image.json';
const TOMBSTONE = '.removing';
/** The marker in a job's directory naming the image it runs on. */
export const JOB_IMAGE_MARKER = 'image';
/** An import directory without an owner record younger than this may be mid-creation. */
const CREATION_GRACE_MS = 60_000;

function cachedImage(dir: string, record: ImageRecord): CachedImage {
  return {
    record,
    dir,
    rootfs: join(dir, 'rootfs'),
    etcBinds: BOUND_ETC_FILES.map((name) => ({
      source: join(dir, 'etc', name),
      destination: `/etc/${name}`,
    })),
  };
}

async function readRecord(dir: string): Promise<ImageRecord | null> {
  try {
    const value = JSON.parse(await readFile(join(dir, RECORD), 'utf8')) as ImageRecord;
    return value.version === 1 && typeof value.digest === 'string' ? value : null;
  } catch {
    return null;
  }
}

/** Writes a record atomically (temporary file, then rename). */
export async function writeRecord(dir: string, record: ImageRecord): Promise<void> {
  const temp = join(dir, `.${RECORD}.${randomBytes(6).toString('hex')}`);
  await writeFile(temp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o644, flag: 'wx' });
  await rename(temp, join(dir, RECORD));
}

/** The image with this digest, if it is in the cache and not being removed. */
export async function findImage(sandboxRoot: string, digest: string): Promise<CachedImage | null> {
  const dir = imageDir(sandboxRoot, digest);
  const record = await readRecord(dir);
  if (record === null || record.digest !== digest) return null;
  const tombstone = await readOwner(join(dir, TOMBSTONE));
  if (tombstone !== null && ownerAlive(tombstone)) return null;
  return cachedImage(dir, record);
}

/**
 * For a job about to run on `image`: marks the job directory as using it, then looks it
 * up. The marker is written first and `remove` writes its tombstone first, then each reads
 * the other's: whichever comes second sees the first, so a removal and a job start never
 * both go ahead.
 */
export async function acquireImage(
  sandboxRoot: string,
  jobDir: string,
  image: PinnedImage,
): Promise<CachedImage> {
  await writeFile(join(jobDir, JOB_IMAGE_MARKER), `${digestHex(image.digest)}\n`, { mode: 0o600 });
  const found = await findImage(sandboxRoot, image.digest);
  if (found === null)
    throw new AirlockError(
      'IMAGE_NOT_FOUND',
      `image ${image.ref} is not in this worker's image cache (${imagesDir(sandboxRoot)}): import it with airlock image import`,
    );
  return found;
}

/** Every complete image in the cache, newest import first. */
export async function listImages(sandboxRoot: string): Promise<ImageRecord[]> {
  const names = await readdir(imagesDir(sandboxRoot)).catch(() => [] as string[]);
  const records: ImageRecord[] = [];
  for (const name of names) {
    if (!/^[0-9a-f]{64}$/.test(name)) continue;
    const record = await readRecord(join(imagesDir(sandboxRoot), name));
    if (record !== null) records.push(record);
  }
  return records.sort((a, b) => b.importedAt.localeCompare(a.importedAt));
}

/** Job directories of live processes whose marker names this image. */
async function jobsUsing(sandboxRoot: string, hex: string): Promise<string[]> {
  const jobs = join(sandboxRoot, 'jobs');
  const users: string[] = [];
  for (const id of await readdir(jobs).catch(() => [] as string[])) {
    const marker = await readFile(join(jobs, id, JOB_IMAGE_MARKER), 'utf8').catch(() => null);
    if (marker?.trim() !== hex) continue;
    const owner = await readOwner(join(jobs, id, 'owner.json'));
    if (owner !== null && ownerAlive(owner)) users.push(id);
  }
  return users;
}

/** Removes an image from the cache; refuses (IMAGE_IN_USE) while a live job uses it. */
export async function removeImage(sandboxRoot: string, digest: string): Promise<ImageRecord> {
  const dir = imageDir(sandboxRoot, digest);
  const record = await readRecord(dir);
  if (record === null) throw new AirlockError('IMAGE_NOT_FOUND', `image ${digest} is not in the image cache`);
  const tombstone = join(dir, TOMBSTONE);
  await rm(tombstone, { force: true });
  await writeOwner(tombstone, currentOwner());
  const users = await jobsUsing(sandboxRoot, digestHex(digest));
  if (users.length > 0) {
    await rm(tombstone, { force: true });
    throw new AirlockError(
      'IMAGE_IN_USE',
      `image ${digest} is used by running job${users.length > 1 ? 's' : ''} ${users.join(', ')}; remove it when they have ended`,
    );
  }
  const doomed = join(imagesDir(sandboxRoot), `.removed-${randomBytes(6).toString('hex')}`);
  await rename(dir, doomed);
  await rm(doomed, { recursive: true, force: true });
  return record;
}

/**
 * Removes what crashed imports and removals left: import directories of dead processes,
 * half-deleted images, tombstones of dead removers. Never touches a live import.
 */
export async function sweepImageCache(sandboxRoot: string): Promise<string[]> {
  const dir = imagesDir(sandboxRoot);
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const path = join(dir, name);
    if (name.startsWith('.removed-')) {
      await rm(path, { recursive: true, force: true });
      removed.push(name);
    } else if (name.startsWith('.import-')) {
      const owner = await readOwner(join(path, 'owner.json'));
      const live = owner !== null ? ownerAlive(owner) : await youngerThan(path, CREATION_GRACE_MS);
      if (!live) {
        await rm(path, { recursive: true, force: true });
        removed.push(name);
      }
    } else if (/^[0-9a-f]{64}$/.test(name)) {
      const tombstone = await readOwner(join(path, TOMBSTONE));
      if (tombstone !== null && !ownerAlive(tombstone)) await rm(join(path, TOMBSTONE), { force: true });
    }
  }
  return removed;
}

async function youngerThan(path: string, ms: number): Promise<boolean> {
  return stat(path).then(
    (info) => Date.now() - info.mtimeMs < ms,
    () => false,
  );
}

/**
 * Refuses a job whose mounts would need a mount point the image lacks: the runtime would
 * otherwise try to create it inside the shared, read-only cache. Checked without following
 * links (a mount point reached through a link could land outside the image root).
 */
export async function checkMountPoints(rootfs: string, destinations: readonly string[]): Promise<void> {
  for (const destination of destinations) {
    // Below another mount (/dev/shm in /dev's tmpfs): not the image's to provide.
    if (destinations.some((other) => destination.startsWith(`${other}/`))) continue;
    let path = rootfs;
    for (const part of destination.split('/').filter((p) => p !== '')) {
      path = join(path, part);
      const info = await lstat(path).catch(() => null);
      if (info === null || info.isSymbolicLink())
        throw new AirlockError(
          'SANDBOX_SETUP_FAILED',
          `the image has no mount point for ${destination} (${info === null ? 'missing' : 'a symbolic link'}); re-import it with this Airlock version`,
        );
    }
  }
}

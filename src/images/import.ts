import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { AirlockError, describeError } from '../errors.js';
import { currentOwner, ensureSandboxDirs, sandboxDirs, writeOwner } from '../sandbox/state.js';
import { findImage, type ImageRecord, imageDir, imagesDir, sweepImageCache, writeRecord } from './cache.js';
import { directorySource, type LayoutSource, openBlob, tarSource, VerifyingStream } from './layout.js';
import {
  DEFAULT_IMAGE_LIMITS,
  type ImageLimits,
  type ImagePlan,
  type Layer,
  planImage,
  selectManifest,
} from './manifest.js';
import { prepareImageRoot } from './prepare.js';
import { checkImageName } from './reference.js';
import { readTar } from './tar.js';
import { applyEntry, newUnpackState, startLayer, type UnpackState } from './unpack.js';

/**
 * `airlock image import PATH`: an OCI image layout (a directory or a tar of one) into the
 * worker's image cache. Every blob is verified (SHA-256 and size against its descriptor)
 * before anything is unpacked, and again while it is unpacked; the layers are applied in
 * order to a tree in a root-only temporary directory of the cache, which is renamed into
 * place only when complete. A refusal anywhere removes the temporary tree: nothing of a
 * refused image is ever in the cache, and nothing is ever written outside it.
 */

export interface ImportOptions {
  /** Label for people (default: the layout's file or directory name, made valid, or "image"). */
  readonly name?: string;
  /** Pick this manifest when the layout holds several. */
  readonly manifest?: string;
  readonly limits?: Partial<ImageLimits>;
  /** Defaults to this host's (tests). */
  readonly architecture?: string;
}

export interface ImportResult {
  readonly record: ImageRecord;
  /** `name@sha256:…`, what jobs name. */
  readonly ref: string;
  /** False when the image was in the cache already (only the name was added). */
  readonly imported: boolean;
}

function refuse(message: string): never {
  throw new AirlockError('IMAGE_INVALID', message);
}

async function openLayout(path: string): Promise<LayoutSource> {
  const info = await lstat(path).catch(() => null);
  if (info === null) throw new AirlockError('INVALID_OPTION', `${path} does not exist`);
  if (info.isDirectory()) return directorySource(path);
  if (info.isFile()) return tarSource(path);
  throw new AirlockError('INVALID_OPTION', `${path} is neither a directory nor a tar file`);
}

/** Hashes the decompressed layer (its diff_id) and bounds the bytes of all layers together. */
class DiffIdStream extends Transform {
  readonly #hash = createHash('sha256');
  readonly #layer: Layer;
  readonly #what: string;
  readonly #budget: { left: number; limit: number };

  constructor(layer: Layer, what: string, budget: { left: number; limit: number }) {
    super();
    this.#layer = layer;
    this.#what = what;
    this.#budget = budget;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#budget.left -= chunk.length;
    if (this.#budget.left < 0) {
      callback(
        new AirlockError(
          'IMAGE_INVALID',
          `the layers decompress to more than ${this.#budget.limit} bytes (at ${this.#what}); raise --max-size if this image is expected to be that large`,
        ),
      );
      return;
    }
    this.#hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    const digest = `sha256:${this.#hash.digest('hex')}`;
    callback(
      digest === this.#layer.diffId
        ? null
        : new AirlockError(
            'IMAGE_INVALID',
            `${this.#what} ${this.#layer.digest} decompresses to ${digest}, not the diff_id ${this.#layer.diffId} its config says`,
          ),
    );
  }
}

/** Reads a blob once, only to check its digest and size (before any byte of it is parsed). */
async function verifyBlob(source: LayoutSource, layer: Layer, what: string): Promise<void> {
  await pipeline(await openBlob(source, layer, what), new VerifyingStream(layer, what), async (stream) => {
    for await (const _ of stream) {
      // hashing only
    }
  });
}

async function unpackLayer(
  source: LayoutSource,
  layer: Layer,
  what: string,
  state: UnpackState,
  budget: { left: number; limit: number },
  maxPathBytes: number,
): Promise<void> {
  startLayer(state);
  const decompressed = new DiffIdStream(layer, what, budget);
  const piping = pipeline(
    await openBlob(source, layer, what),
    // Verified again as it is unpacked: the file may have changed since the first read.
    new VerifyingStream(layer, what),
    layer.compression === 'gzip' ? createGunzip() : new PassThrough(),
    decompressed,
  );
  const reading = readTar(decompressed, (entry, content) => applyEntry(state, entry, content), {
    maxPathBytes,
    maxExtensionBytes: 1024 * 1024,
  }).catch((error: unknown) => {
    // A refused entry stops the reading: stop the streams too, or they wait for a reader.
    decompressed.destroy(error instanceof Error ? error : new Error(String(error)));
    throw error;
  });
  // Both are waited for, so that no write into the tree is still under way when the caller
  // removes it. A verification failure (the bytes are not what the digests say) is the cause
  // to report over whatever the unpacking made of those bytes.
  const [piped, read] = await Promise.allSettled([piping, reading]);
  const failure =
    piped.status === 'rejected' && piped.reason instanceof AirlockError
      ? piped.reason
      : read.status === 'rejected'
        ? read.reason
        : piped.status === 'rejected'
          ? piped.reason
          : undefined;
  if (failure === undefined) return;
  if (failure instanceof AirlockError) throw failure;
  // zlib and stream errors: the layer's bytes are not what its media type says.
  throw new AirlockError(
    'IMAGE_INVALID',
    `${what} ${layer.digest} cannot be read: ${describeError(failure)}`,
    {
      cause: failure,
    },
  );
}

function defaultName(path: string): string {
  const base = path.replace(/\/+$/, '').split('/').pop() ?? '';
  const cleaned = base
    .toLowerCase()
    .replace(/\.(tar|oci)$/, '')
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[._-]+|[._-]+$/g, '')
    .replace(/[._-]{2,}/g, '-');
  return cleaned === '' ? 'image' : cleaned.slice(0, 128).replace(/[._-]+$/, '');
}

/** Imports the layout at `path` into the cache of the sandbox state directory `sandboxRoot`. */
export async function importImage(
  sandboxRoot: string,
  path: string,
  options: ImportOptions = {},
): Promise<ImportResult> {
  const limits: ImageLimits = { ...DEFAULT_IMAGE_LIMITS, ...options.limits };
  const name = checkImageName(options.name ?? defaultName(path));
  if (options.manifest !== undefined && !/^sha256:[0-9a-f]{64}$/.test(options.manifest))
    throw new AirlockError('INVALID_OPTION', '--manifest must be sha256:<64 lower-case hex>');
  await ensureSandboxDirs(sandboxDirs(sandboxRoot));
  const cache = imagesDir(sandboxRoot);
  await mkdir(cache, { recursive: true, mode: 0o711 });
  await chmod(cache, 0o711);
  await sweepImageCache(sandboxRoot);

  const source = await openLayout(path);
  const manifest = await selectManifest(source, limits, options.manifest, options.architecture);
  const plan = await planImage(source, manifest, limits, options.architecture);

  const existing = await findImage(sandboxRoot, manifest.digest);
  if (existing !== null) {
    const record = existing.record.names.includes(name)
      ? existing.record
      : { ...existing.record, names: [...existing.record.names, name] };
    if (record !== existing.record) await writeRecord(existing.dir, record);
    return { record, ref: `${name}@${manifest.digest}`, imported: false };
  }

  for (const [index, layer] of plan.layers.entries()) await verifyBlob(source, layer, `layer ${index + 1}`);

  // Root only (0700) until complete: no job and no other user sees a half-built tree.
  const temp = join(cache, `.import-${randomBytes(8).toString('hex')}`);
  await mkdir(temp, { mode: 0o700 });
  try {
    await writeOwner(join(temp, 'owner.json'), currentOwner());
    const record = await build(temp, source, plan, name, limits);
    await rm(join(temp, 'owner.json'), { force: true });
    await chmod(temp, 0o711);
    try {
      await rename(temp, imageDir(sandboxRoot, manifest.digest));
    } catch (error) {
      // Another import of the same image finished first: theirs is as good.
      if (!['ENOTEMPTY', 'EEXIST'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error;
      await rm(temp, { recursive: true, force: true });
    }
    return { record, ref: `${name}@${manifest.digest}`, imported: true };
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
}

async function build(
  temp: string,
  source: LayoutSource,
  plan: ImagePlan,
  name: string,
  limits: ImageLimits,
): Promise<ImageRecord> {
  const rootfs = join(temp, 'rootfs');
  await mkdir(rootfs, { mode: 0o755 });
  const state = newUnpackState(rootfs, { maxEntries: limits.maxEntries, maxPathBytes: limits.maxPathBytes });
  const budget = { left: limits.maxUnpackedBytes, limit: limits.maxUnpackedBytes };
  for (const [index, layer] of plan.layers.entries()) {
    await unpackLayer(source, layer, `layer ${index + 1}`, state, budget, limits.maxPathBytes);
  }
  if (plan.layers.length === 0) refuse('the image has no layers');
  await prepareImageRoot(rootfs, join(temp, 'etc'));
  const record: ImageRecord = {
    version: 1,
    digest: plan.manifest.digest,
    names: [name],
    importedAt: new Date().toISOString(),
    platform: plan.platform,
    manifestMediaType: plan.manifest.mediaType,
    config: plan.config.digest,
    layers: plan.layers.map((layer) => ({
      digest: layer.digest,
      diffId: layer.diffId,
      size: layer.size,
      mediaType: layer.mediaType,
    })),
    compressedBytes: plan.layers.reduce((sum, layer) => sum + layer.size, 0),
    unpackedBytes: state.fileBytes,
    entries: state.entries,
  };
  await writeRecord(temp, record);
  return record;
}

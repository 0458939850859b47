import { createHash } from 'node:crypto';
import { closeSync, constants, createReadStream, fstatSync, openSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { AirlockError } from '../errors.js';
import { readTar } from './tar.js';

/**
 * An OCI image layout (image-spec layout.md), read from a directory or from a tar file of
 * one: the `oci-layout` marker, `index.json`, and blobs under `blobs/sha256/<hex>`. Every
 * blob is read through a check of its descriptor: the bytes are hashed and counted as they
 * stream, and a blob whose SHA-256 or size differs from what its descriptor says fails the
 * read, naming the blob. The layout itself (a directory or a tar) is the operator's input,
 * but its content is treated as hostile.
 */

export interface Descriptor {
  readonly mediaType: string;
  /** `sha256:<64 hex>`. */
  readonly digest: string;
  readonly size: number;
  readonly platform?: {
    readonly os: string | undefined;
    readonly architecture: string | undefined;
    readonly variant: string | undefined;
  };
}

export interface LayoutSource {
  /** What the operator named (for messages). */
  readonly description: string;
  /** The bytes of a file of the layout (`index.json`, `blobs/sha256/…`), or null if absent. */
  open(name: string): Promise<{ size: number; stream: () => NodeJS.ReadableStream } | null>;
}

function refuse(message: string): never {
  throw new AirlockError('IMAGE_INVALID', message);
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** A descriptor from untrusted JSON, checked: only sha256 digests, a size within bounds. */
export function parseDescriptor(value: unknown, what: string, maxSize: number): Descriptor {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) refuse(`${what} is not an object`);
  const record = value as Record<string, unknown>;
  const { mediaType, digest, size, platform } = record;
  if (typeof mediaType !== 'string' || mediaType.length > 255) refuse(`${what} has no valid mediaType`);
  if (typeof digest !== 'string' || !DIGEST.test(digest))
    refuse(`${what} digest must be sha256:<64 lower-case hex> (other algorithms are not accepted)`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0)
    refuse(`${what} (${digest}) has no valid size`);
  if (size > maxSize) refuse(`${what} (${digest}) is ${size} bytes, more than the limit of ${maxSize}`);
  let checkedPlatform: Descriptor['platform'];
  if (platform !== undefined) {
    if (typeof platform !== 'object' || platform === null) refuse(`${what} has an invalid platform`);
    const p = platform as Record<string, unknown>;
    const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
    checkedPlatform = { os: str(p.os), architecture: str(p.architecture), variant: str(p.variant) };
  }
  return { mediaType, digest, size, ...(checkedPlatform !== undefined ? { platform: checkedPlatform } : {}) };
}

export function blobName(digest: string): string {
  return `blobs/sha256/${digest.slice('sha256:'.length)}`;
}

/** A layout in a directory. Files must be regular files (a link in the layout is refused). */
export function directorySource(dir: string): LayoutSource {
  return {
    description: dir,
    async open(name) {
      let path = dir;
      for (const part of name.split('/')) {
        path = join(path, part);
        const info = await lstat(path).catch(() => null);
        if (info === null) return null;
        if (info.isSymbolicLink())
          refuse(`${path} is a symbolic link; the layout's files must be plain files`);
      }
      const info = await lstat(path);
      if (!info.isFile()) refuse(`${path} is not a regular file`);
      // Each read opens the file again without following a link, and checks what it opened:
      // a layout directory someone else can write may swap a blob for a link or a FIFO meanwhile.
      return { size: info.size, stream: () => createReadStream('', { fd: openRegularFile(path) }) };
    },
  };
}

/** Opens a regular file for reading: never through a final symbolic link, never a FIFO or device. */
function openRegularFile(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    refuse(code === 'ELOOP' ? `${path} became a symbolic link` : `cannot open ${path}: ${code ?? 'error'}`);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    refuse(`${path} is not a regular file`);
  }
  return fd;
}

/**
 * A layout in a tar file (`docker save`, `skopeo copy oci-archive:`): the members are found
 * in one pass, and each is then read in place from its offset. Only regular-file members
 * count; a name that appears twice is refused (which one would be meant?).
 */
export async function tarSource(file: string, maxMembers = 100_000): Promise<LayoutSource> {
  const members = new Map<string, { offset: number; size: number }>();
  // Opened once: every member is then read from this same file, whatever happens to the name.
  const fd = openRegularFile(file);
  await readTar(createReadStream('', { fd, start: 0, autoClose: false }), async (entry, _content, offset) => {
    if (entry.type !== 'file') return;
    const name = entry.path.replace(/^(\.\/)+/, '').replace(/^\/+/, '');
    if (members.has(name)) refuse(`${file} holds ${name} twice`);
    if (members.size >= maxMembers) refuse(`${file} has more than ${maxMembers} members`);
    members.set(name, { offset, size: entry.size });
  });
  return {
    description: file,
    async open(name) {
      const member = members.get(name);
      if (member === undefined) return null;
      return {
        size: member.size,
        stream: () =>
          member.size === 0
            ? createReadStream('/dev/null')
            : createReadStream('', {
                fd,
                autoClose: false,
                start: member.offset,
                end: member.offset + member.size - 1,
              }),
      };
    },
  };
}

/** Counts and hashes a blob's bytes as they pass; fails at the end if either differs from the descriptor. */
export class VerifyingStream extends Transform {
  readonly #descriptor: Descriptor;
  readonly #what: string;
  readonly #hash = createHash('sha256');
  #bytes = 0;

  constructor(descriptor: Descriptor, what: string) {
    super();
    this.#descriptor = descriptor;
    this.#what = what;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#descriptor.size) {
      callback(
        new AirlockError(
          'IMAGE_INVALID',
          `${this.#what} ${this.#descriptor.digest} is larger than the ${this.#descriptor.size} bytes its descriptor says`,
        ),
      );
      return;
    }
    this.#hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    callback(verifyEnd(this.#descriptor, this.#what, this.#bytes, this.#hash.digest('hex')));
  }
}

function verifyEnd(descriptor: Descriptor, what: string, bytes: number, hex: string): AirlockError | null {
  if (bytes !== descriptor.size)
    return new AirlockError(
      'IMAGE_INVALID',
      `${what} ${descriptor.digest} has ${bytes} bytes, but its descriptor says ${descriptor.size}`,
    );
  if (`sha256:${hex}` !== descriptor.digest)
    return new AirlockError(
      'IMAGE_INVALID',
      `${what} ${descriptor.digest} does not match its digest (its content hashes to sha256:${hex}): the blob is corrupt or was altered`,
    );
  return null;
}

/** Opens a blob for streaming through a VerifyingStream; a missing blob is refused. */
export async function openBlob(
  source: LayoutSource,
  descriptor: Descriptor,
  what: string,
): Promise<NodeJS.ReadableStream> {
  const file = await source.open(blobName(descriptor.digest));
  if (file === null) refuse(`${what} ${descriptor.digest} is missing from ${source.description}`);
  if (file.size !== descriptor.size)
    refuse(`${what} ${descriptor.digest} has ${file.size} bytes, but its descriptor says ${descriptor.size}`);
  return file.stream();
}

/** Reads a small file of the layout whole (bounded), e.g. index.json. */
export async function readSmallFile(source: LayoutSource, name: string, maxBytes: number): Promise<Buffer> {
  const file = await source.open(name);
  if (file === null) refuse(`${source.description} has no ${name}: it is not an OCI image layout`);
  if (file.size > maxBytes) refuse(`${name} is ${file.size} bytes, more than the limit of ${maxBytes}`);
  return collect(file.stream(), maxBytes, name);
}

/** Reads a blob whole (manifests, configs), verified, bounded. */
export async function readSmallBlob(
  source: LayoutSource,
  descriptor: Descriptor,
  what: string,
  maxBytes: number,
): Promise<Buffer> {
  if (descriptor.size > maxBytes)
    refuse(`${what} ${descriptor.digest} is ${descriptor.size} bytes, more than the limit of ${maxBytes}`);
  const stream = await openBlob(source, descriptor, what);
  const data = await collect(stream, maxBytes, what);
  const error = verifyEnd(descriptor, what, data.length, createHash('sha256').update(data).digest('hex'));
  if (error !== null) throw error;
  return data;
}

async function collect(stream: NodeJS.ReadableStream, maxBytes: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > maxBytes) refuse(`${what} is larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Parses bounded JSON into an object, naming the file on failure. */
export function parseJsonObject(data: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data));
  } catch {
    refuse(`${what} is not valid JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    refuse(`${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

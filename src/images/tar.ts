import { AirlockError } from '../errors.js';

/**
 * A streaming reader of tar archives (POSIX ustar, with GNU long names `L`/`K` and PAX
 * extended headers for path, linkpath and size), written here so that every byte of a
 * hostile image layer is parsed by code that bounds it: header checksums verified, names
 * decoded as strict UTF-8, extension records capped, sizes checked before anything is read.
 * It only parses; what an entry may do to the file system is decided by unpack.ts.
 */

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarEntry {
  readonly type: TarEntryType;
  /** The name as written in the archive (not yet checked or normalised). */
  readonly path: string;
  /** Target of a symbolic or hard link ('' otherwise). */
  readonly linkpath: string;
  /** Bytes of content (files only; 0 for everything else). */
  readonly size: number;
  /** Permission bits, set-id and sticky bits included (mode & 0o7777). */
  readonly mode: number;
  /** Modification time, seconds since the epoch. */
  readonly mtime: number;
}

export interface TarLimits {
  /** Longest name or link target accepted, in bytes. */
  readonly maxPathBytes: number;
  /** Largest PAX extended header or GNU long name record. */
  readonly maxExtensionBytes: number;
}

export const DEFAULT_TAR_LIMITS: TarLimits = Object.freeze({
  maxPathBytes: 4096,
  maxExtensionBytes: 1024 * 1024,
});

const BLOCK = 512;

function refuse(message: string): never {
  throw new AirlockError('IMAGE_INVALID', message);
}

/** Pulls exact byte counts out of a stream of chunks. */
export class ByteReader {
  readonly #iterator: AsyncIterator<Uint8Array>;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #ended = false;
  /** Bytes handed out so far. */
  position = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.#iterator = source[Symbol.asyncIterator]();
  }

  async #fill(wanted: number): Promise<void> {
    while (this.#buffered < wanted && !this.#ended) {
      const next = await this.#iterator.next();
      if (next.done === true) {
        this.#ended = true;
        break;
      }
      const chunk = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
      if (chunk.length === 0) continue;
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
  }

  /** Exactly n bytes, or null at a clean end (nothing left); a partial read is an error. */
  async take(n: number, what: string): Promise<Buffer | null> {
    await this.#fill(n);
    if (this.#buffered === 0 && this.#ended) return null;
    if (this.#buffered < n) refuse(`the archive ends in the middle of ${what}`);
    const joined = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks);
    const out = joined.subarray(0, n);
    const rest = joined.subarray(n);
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#buffered = rest.length;
    this.position += n;
    return out;
  }

  /** Between 1 and max bytes (whatever is at hand); the archive must not end first. */
  async some(max: number, what: string): Promise<Buffer> {
    await this.#fill(1);
    const first = this.#chunks[0];
    if (first === undefined) refuse(`the archive ends in the middle of ${what}`);
    const n = Math.min(max, first.length);
    const out = first.subarray(0, n);
    if (n === first.length) this.#chunks.shift();
    else this.#chunks[0] = first.subarray(n);
    this.#buffered -= n;
    this.position += n;
    return out;
  }

  /** Reads and discards everything left (the caller's hash still sees it). */
  async drain(): Promise<number> {
    let count = this.#buffered;
    this.#chunks = [];
    this.#buffered = 0;
    while (!this.#ended) {
      const next = await this.#iterator.next();
      if (next.done === true) this.#ended = true;
      else count += next.value.byteLength;
    }
    this.position += count;
    return count;
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

function decodeName(bytes: Uint8Array, what: string): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    refuse(`${what} is not valid UTF-8`);
  }
}

/** A NUL-terminated string field (the rest after the first NUL is padding). */
function field(header: Buffer, offset: number, length: number): Buffer {
  const raw = header.subarray(offset, offset + length);
  const end = raw.indexOf(0);
  return end < 0 ? raw : raw.subarray(0, end);
}

/** An octal number field, or GNU base-256 (high bit of the first byte set). */
function numeric(header: Buffer, offset: number, length: number, what: string): number {
  const raw = header.subarray(offset, offset + length);
  const first = raw[0] ?? 0;
  if ((first & 0x80) !== 0) {
    if (first !== 0x80) refuse(`${what} is a negative or oversized base-256 number`);
    let value = 0;
    for (const byte of raw.subarray(1)) {
      value = value * 256 + byte;
      if (value > Number.MAX_SAFE_INTEGER) refuse(`${what} is too large`);
    }
    return value;
  }
  const text = raw.toString('latin1').replace(/\0.*$/s, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) refuse(`${what} is not an octal number: ${JSON.stringify(text)}`);
  const value = Number.parseInt(text, 8);
  if (!Number.isSafeInteger(value)) refuse(`${what} is too large`);
  return value;
}

function checksumMatches(header: Buffer): boolean {
  const stored = numeric(header, 148, 8, 'header checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i += 1) {
    const byte = i >= 148 && i < 156 ? 0x20 : (header[i] as number);
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  // POSIX says unsigned; some historic writers summed signed bytes.
  return stored === unsigned || stored === signed;
}

/** PAX records "LEN key=value\n"; only path, linkpath and size matter here. */
function parsePax(data: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let offset = 0;
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset);
    if (space < 0 || space - offset > 12) refuse('a PAX extended header record has no valid length');
    const lengthText = data.toString('latin1', offset, space);
    if (!/^[1-9][0-9]*$/.test(lengthText)) refuse('a PAX extended header record has no valid length');
    const length = Number(lengthText);
    const end = offset + length;
    if (end > data.length || data[end - 1] !== 0x0a) refuse('a PAX extended header record is truncated');
    const record = data.subarray(space + 1, end - 1);
    const equals = record.indexOf(0x3d);
    if (equals < 0) refuse('a PAX extended header record has no "="');
    const key = decodeName(record.subarray(0, equals), 'a PAX key');
    const value = record.subarray(equals + 1);
    if (key === 'path' || key === 'linkpath') {
      if (value.includes(0)) refuse(`PAX ${key} contains a NUL byte`);
      records.set(key, decodeName(value, `PAX ${key}`));
    } else if (key === 'size') {
      records.set(key, value.toString('latin1'));
    }
    offset = end;
  }
  return records;
}

const TYPES: Readonly<Record<string, TarEntryType>> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file', // contiguous file: a regular file everywhere that matters
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/**
 * Reads the archive entry by entry. For each file entry, `onEntry` receives a function that
 * reads its content in chunks, and the content's offset in the archive; content it does not
 * read is skipped. After the end-of-archive
 * blocks, the rest of the stream is drained (so that a digest computed over it covers every
 * byte) and its length returned.
 */
export async function readTar(
  source: AsyncIterable<Uint8Array>,
  onEntry: (entry: TarEntry, content: AsyncIterable<Buffer>, contentOffset: number) => Promise<void>,
  limits: TarLimits = DEFAULT_TAR_LIMITS,
): Promise<{ archiveBytes: number; trailingBytes: number }> {
  const reader = new ByteReader(source);
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax: Map<string, string> | undefined;
  let sawEnd = false;

  const readExtension = async (size: number, what: string): Promise<Buffer> => {
    if (size > limits.maxExtensionBytes)
      refuse(`${what} of ${size} bytes is larger than ${limits.maxExtensionBytes}`);
    const data = (await reader.take(size, what)) ?? refuse(`the archive ends before ${what}`);
    const copy = Buffer.from(data);
    await reader.take(padding(size), what);
    return copy;
  };

  for (;;) {
    const header = await reader.take(BLOCK, 'a header');
    if (header === null) {
      // No end-of-archive blocks: tolerated (some writers stop at the last entry), unless an
      // extension header was waiting for its entry.
      if (longName !== undefined || longLink !== undefined || pax !== undefined)
        refuse('the archive ends after an extension header, before its entry');
      break;
    }
    if (header.every((byte) => byte === 0)) {
      sawEnd = true;
      break;
    }
    if (!checksumMatches(header))
      refuse(`tar header at byte ${reader.position - BLOCK} has a wrong checksum (corrupt or not a tar)`);
    const typeflag = String.fromCharCode(header[156] as number);
    const headerSize = numeric(header, 124, 12, 'size');

    if (typeflag === 'L' || typeflag === 'K') {
      const data = await readExtension(headerSize, 'a GNU long name');
      const end = data.indexOf(0);
      const bytes = end < 0 ? data : data.subarray(0, end);
      if (end >= 0 && data.subarray(end).some((byte) => byte !== 0))
        refuse('a GNU long name contains a NUL byte');
      const name = decodeName(bytes, 'a GNU long name');
      if (typeflag === 'L') longName = name;
      else longLink = name;
      continue;
    }
    if (typeflag === 'x') {
      pax = parsePax(await readExtension(headerSize, 'a PAX extended header'));
      continue;
    }
    if (typeflag === 'g') {
      // A global header that renames or resizes every later entry is refused; other global
      // keys (times, charset) change nothing here.
      const global = parsePax(await readExtension(headerSize, 'a PAX global header'));
      if (global.size > 0) refuse('a PAX global header sets path, linkpath or size for every entry');
      continue;
    }
    const type = TYPES[typeflag];
    if (type === undefined)
      refuse(`unsupported tar entry type ${JSON.stringify(typeflag)} (sparse, multi-volume...)`);

    const magic = header.toString('latin1', 257, 263);
    const ustar = magic === 'ustar\0';
    let path = decodeName(field(header, 0, 100), 'an entry name');
    if (ustar) {
      const prefix = field(header, 345, 155);
      if (prefix.length > 0) path = `${decodeName(prefix, 'an entry name prefix')}/${path}`;
    }
    let linkpath = decodeName(field(header, 157, 100), 'a link name');
    let size = headerSize;
    if (longName !== undefined) path = longName;
    if (longLink !== undefined) linkpath = longLink;
    if (pax !== undefined) {
      path = pax.get('path') ?? path;
      linkpath = pax.get('linkpath') ?? linkpath;
      const paxSize = pax.get('size');
      if (paxSize !== undefined) {
        if (!/^[0-9]{1,16}$/.test(paxSize)) refuse(`PAX size is not a number: ${JSON.stringify(paxSize)}`);
        size = Number(paxSize);
        if (!Number.isSafeInteger(size)) refuse('PAX size is too large');
      }
    }
    longName = undefined;
    longLink = undefined;
    pax = undefined;
    if (Buffer.byteLength(path) > limits.maxPathBytes)
      refuse(`an entry name is longer than ${limits.maxPathBytes} bytes`);
    if (Buffer.byteLength(linkpath) > limits.maxPathBytes)
      refuse(`the link target of ${path} is longer than ${limits.maxPathBytes} bytes`);

    const entry: TarEntry = {
      type,
      path,
      linkpath,
      // Only regular files have content; a size on anything else is data to skip.
      size: type === 'file' ? size : 0,
      mode: numeric(header, 100, 8, 'mode') & 0o7777,
      mtime: numeric(header, 136, 12, 'mtime'),
    };
    let left = size;
    const content = async function* (): AsyncGenerator<Buffer> {
      while (left > 0 && type === 'file') {
        const chunk = await reader.some(Math.min(left, 1024 * 1024), `the content of ${path}`);
        left -= chunk.length;
        yield chunk;
      }
    };
    await onEntry(entry, content(), reader.position);
    // What the caller did not read (and the content of non-files) is skipped.
    while (left > 0)
      left -= (await reader.some(Math.min(left, 1024 * 1024), `the content of ${path}`)).length;
    if ((await reader.take(padding(size), `the padding of ${path}`)) === null && padding(size) > 0)
      refuse(`the archive ends in the padding of ${path}`);
  }
  const archiveBytes = reader.position;
  const trailingBytes = await reader.drain();
  if (!sawEnd && trailingBytes > 0) refuse('the archive has data after its last entry');
  return { archiveBytes, trailingBytes };
}

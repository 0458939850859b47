import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

/**
 * Test fixtures for the image importer: a tiny tar writer (ustar, with PAX or GNU long
 * names) and an OCI image layout writer. They write real bytes, including hostile ones:
 * the importer under test must refuse them.
 */

export interface TarSpec {
  name: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';
  content?: string | Buffer;
  linkname?: string;
  mode?: number;
  /** How a name longer than 100 bytes is written (default pax). */
  longNames?: 'pax' | 'gnu';
}

const TYPE_FLAGS = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

function octal(value: number, length: number): string {
  return `${value.toString(8).padStart(length - 1, '0')}\0`;
}

export function tarHeader(
  name: string,
  typeflag: string,
  size: number,
  options: { mode?: number; linkname?: string } = {},
): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 100, 'utf8');
  header.write(octal(options.mode ?? 0o644, 8), 100, 'latin1');
  header.write(octal(0, 8), 108, 'latin1');
  header.write(octal(0, 8), 116, 'latin1');
  header.write(octal(size, 12), 124, 'latin1');
  header.write(octal(1_700_000_000, 12), 136, 'latin1');
  header.write(typeflag, 156, 'latin1');
  header.write(options.linkname ?? '', 157, 100, 'utf8');
  header.write('ustar\0', 257, 'latin1');
  header.write('00', 263, 'latin1');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return header;
}

function padded(data: Buffer): Buffer {
  const pad = (512 - (data.length % 512)) % 512;
  return Buffer.concat([data, Buffer.alloc(pad)]);
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body) + 1;
  while (String(length).length + Buffer.byteLength(body) !== length) length += 1;
  return `${length}${body}`;
}

export function makeTar(entries: readonly TarSpec[], options: { end?: boolean } = {}): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const type = entry.type ?? 'file';
    const content = Buffer.from(entry.content ?? '');
    const size = type === 'file' ? content.length : 0;
    let name = entry.name;
    let linkname = entry.linkname ?? '';
    const long = Buffer.byteLength(name) > 100 || Buffer.byteLength(linkname) > 100;
    if (long && entry.longNames === 'gnu') {
      if (Buffer.byteLength(name) > 100) {
        const data = Buffer.from(`${name}\0`);
        blocks.push(tarHeader('././@LongLink', 'L', data.length), padded(data));
        name = name.slice(0, 99);
      }
      if (Buffer.byteLength(linkname) > 100) {
        const data = Buffer.from(`${linkname}\0`);
        blocks.push(tarHeader('././@LongLink', 'K', data.length), padded(data));
        linkname = linkname.slice(0, 99);
      }
    } else if (long) {
      let records = '';
      if (Buffer.byteLength(name) > 100) records += paxRecord('path', name);
      if (Buffer.byteLength(linkname) > 100) records += paxRecord('linkpath', linkname);
      const data = Buffer.from(records);
      blocks.push(tarHeader('PaxHeader', 'x', data.length), padded(data));
      name = name.slice(0, 99);
      linkname = linkname.slice(0, 99);
    }
    const mode = entry.mode ?? (type === 'dir' ? 0o755 : 0o644);
    blocks.push(tarHeader(name, TYPE_FLAGS[type], size, { mode, linkname }));
    if (size > 0) blocks.push(padded(content));
  }
  if (options.end !== false) blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export interface LayoutOptions {
  /** gzip the layers (default true). */
  gzip?: boolean;
  /** Change a blob after its digest was taken. */
  corrupt?: 'layer' | 'config' | 'manifest';
  /** Declare a layer size different from the blob's. */
  layerSizeDelta?: number;
  architecture?: string;
  mediaType?: string;
}

/** Writes an OCI image layout of these layers into `dir`; returns the manifest digest. */
export async function writeLayout(
  dir: string,
  layers: readonly Buffer[],
  options: LayoutOptions = {},
): Promise<string> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (data: Buffer, corrupt = false): Promise<string> => {
    const digest = sha256(data);
    const stored = corrupt ? Buffer.from(data) : data;
    const middle = Math.floor(stored.length / 2);
    if (corrupt) stored[middle] = (stored[middle] ?? 0) ^ 0xff;
    await writeFile(join(blobs, digest.slice(7)), stored);
    return digest;
  };
  const gzip = options.gzip ?? true;
  const layerDescriptors = [];
  for (const [index, tar] of layers.entries()) {
    const blob = gzip ? gzipSync(tar) : tar;
    const digest = await put(blob, options.corrupt === 'layer' && index === layers.length - 1);
    layerDescriptors.push({
      mediaType:
        options.mediaType ??
        (gzip ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar'),
      digest,
      size: blob.length + (options.layerSizeDelta ?? 0),
    });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: options.architecture ?? 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: layers.map((tar) => sha256(tar)) },
    }),
  );
  const configDigest = await put(config, options.corrupt === 'config');
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: layerDescriptors,
    }),
  );
  const manifestDigest = await put(manifest, options.corrupt === 'manifest');
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: manifestDigest,
          size: manifest.length,
          platform: { os: 'linux', architecture: options.architecture ?? 'amd64' },
        },
      ],
    }),
  );
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  return manifestDigest;
}

/** A small, harmless base layer. */
export function baseLayer(): Buffer {
  return makeTar([
    { name: './', type: 'dir' },
    { name: 'etc/', type: 'dir' },
    { name: 'etc/os-release', content: 'ID=fixture\n' },
    {
      name: 'etc/passwd',
      content: 'root:x:0:0:root:/root:/bin/sh\nubuntu:x:1000:1000::/home/ubuntu:/bin/sh\n',
    },
    { name: 'bin/', type: 'dir' },
    { name: 'bin/tool', content: '#!/bin/sh\n', mode: 0o4755 },
    { name: 'usr/', type: 'dir' },
    { name: 'usr/share/', type: 'dir' },
    { name: 'usr/share/a.txt', content: 'a' },
    { name: 'usr/share/b.txt', content: 'b' },
    { name: 'usr/share/sub/', type: 'dir' },
    { name: 'usr/share/sub/c.txt', content: 'c' },
  ]);
}

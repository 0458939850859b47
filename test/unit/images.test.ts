import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, beforeEach, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { imageImportCommand, imageListCommand, imageRemoveCommand } from '../../src/cli/image-command.js';
import type { CliContext } from '../../src/cli/io.js';
import { isAirlockError } from '../../src/errors.js';
import {
  acquireImage,
  checkMountPoints,
  findImage,
  listImages,
  removeImage,
  sweepImageCache,
} from '../../src/images/cache.js';
import { importImage } from '../../src/images/import.js';
import { directorySource } from '../../src/images/layout.js';
import { type PinnedImage, parseImageRef } from '../../src/images/reference.js';
import { readTar, type TarEntry } from '../../src/images/tar.js';
import { entryComponents } from '../../src/images/unpack.js';
import { currentOwner, writeOwner } from '../../src/sandbox/state.js';
import { baseLayer, makeTar, sha256, type TarSpec, tarHeader, writeLayout } from './image-fixtures.js';

const isRoot = process.getuid?.() === 0;

async function entriesOf(tar: Buffer): Promise<{ entry: TarEntry; content: string }[]> {
  const out: { entry: TarEntry; content: string }[] = [];
  await readTar(Readable.from([tar]), async (entry, content) => {
    const chunks: Buffer[] = [];
    for await (const chunk of content) chunks.push(chunk);
    out.push({ entry, content: Buffer.concat(chunks).toString() });
  });
  return out;
}

async function refusedWith(
  promise: Promise<unknown>,
  pattern: RegExp,
  code = 'IMAGE_INVALID',
): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isAirlockError(error), `not an AirlockError: ${String(error)}`);
    assert.equal(error.code, code, error.message);
    assert.match(error.message, pattern);
    return error.message;
  }
  assert.fail(`expected a refusal matching ${pattern}`);
}

describe('tar reader', () => {
  test('reads ustar entries, PAX and GNU long names and link names', async () => {
    const long = `${'d'.repeat(90)}/${'f'.repeat(60)}`;
    const entries = await entriesOf(
      makeTar([
        { name: 'a.txt', content: 'hello' },
        { name: long, content: 'pax', longNames: 'pax' },
        { name: `gnu/${long}`, content: 'gnu', longNames: 'gnu' },
        { name: 'l', type: 'symlink', linkname: `/${'t'.repeat(150)}`, longNames: 'gnu' },
        { name: 'dir/', type: 'dir', mode: 0o4755 },
      ]),
    );
    assert.deepEqual(
      entries.map(({ entry, content }) => [entry.type, entry.path, content]),
      [
        ['file', 'a.txt', 'hello'],
        ['file', long, 'pax'],
        ['file', `gnu/${long}`, 'gnu'],
        ['symlink', 'l', ''],
        ['dir', 'dir/', ''],
      ],
    );
    assert.equal(entries[3]?.entry.linkpath, `/${'t'.repeat(150)}`);
    assert.equal(entries[4]?.entry.mode, 0o4755);
  });

  test('a header with a wrong checksum is refused', async () => {
    const tar = makeTar([{ name: 'a.txt', content: 'hello' }]);
    tar[0] = 'b'.charCodeAt(0);
    await refusedWith(entriesOf(tar), /wrong checksum/);
  });

  test('an archive cut in the middle of a file is refused', async () => {
    const tar = makeTar([{ name: 'a.txt', content: 'x'.repeat(2000) }]);
    await refusedWith(entriesOf(tar.subarray(0, 1024)), /ends in the middle/);
  });

  test('names that are not UTF-8, PAX paths with NUL and unknown types are refused', async () => {
    const bad = tarHeader('x', '0', 0);
    bad[0] = 0xff;
    let sum = 0;
    bad.fill(0x20, 148, 156);
    for (const byte of bad) sum += byte;
    bad.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    await refusedWith(entriesOf(Buffer.concat([bad, Buffer.alloc(1024)])), /not valid UTF-8/);

    const record = '16 path=a\0b.txt\n';
    const pax = Buffer.concat([
      tarHeader('p', 'x', record.length),
      Buffer.from(record),
      Buffer.alloc(512 - record.length),
    ]);
    await refusedWith(entriesOf(Buffer.concat([pax, makeTar([{ name: 'z' }])])), /NUL/);

    await refusedWith(
      entriesOf(Buffer.concat([tarHeader('s', 'S', 0), Buffer.alloc(1024)])),
      /unsupported tar entry type/,
    );
  });
});

describe('properties', () => {
  const limits = { maxEntries: 10, maxPathBytes: 4096 };
  const component = fc.constantFrom('a', 'b', '.', '..', '', 'c.d', '...', '.wh.x', 'é');

  test('an accepted entry name always stays inside the tree', () => {
    fc.assert(
      fc.property(fc.array(component, { maxLength: 8 }), fc.boolean(), (parts, absolute) => {
        const name = `${absolute ? '/' : ''}${parts.join('/')}`;
        let accepted: string[];
        try {
          accepted = entryComponents(name, 'entry', limits);
        } catch (error) {
          assert.ok(isAirlockError(error, 'IMAGE_INVALID'));
          assert.ok(name.startsWith('/') || parts.includes('..'), `refused without reason: ${name}`);
          return;
        }
        assert.ok(!name.startsWith('/') && !parts.includes('..'));
        assert.ok(accepted.every((part) => part !== '' && part !== '.' && part !== '..'));
        const root = '/cache/rootfs';
        const resolved = resolve(root, ...accepted);
        assert.ok(resolved === root || resolved.startsWith(`${root}/`), resolved);
      }),
    );
  });

  test('tar: names written (short, PAX or GNU long) are read back exactly', async () => {
    const name = fc
      .array(fc.constantFrom('a', 'bb', 'ccc', 'é', 'x'.repeat(40)), { minLength: 1, maxLength: 8 })
      .map((parts) => parts.join('/'));
    await fc.assert(
      fc.asyncProperty(fc.array(name, { minLength: 1, maxLength: 5 }), fc.boolean(), async (names, gnu) => {
        const tar = makeTar(names.map((n) => ({ name: n, content: n, longNames: gnu ? 'gnu' : 'pax' })));
        const read = await entriesOf(tar);
        assert.deepEqual(
          read.map(({ entry, content }) => [entry.path, content]),
          names.map((n) => [n, n]),
        );
      }),
      { numRuns: 50 },
    );
  });
});

describe('image import', { skip: isRoot ? false : 'needs root (the cache is root-owned)' }, () => {
  let base: string;
  let sandbox: string;
  let canary: string;
  let layouts: string;

  before(async () => {
    base = await mkdtemp('/tmp/airlock-images-test-');
    await chmod(base, 0o711);
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });
  beforeEach(async () => {
    sandbox = await mkdtemp(join(base, 'sandbox-'));
    await chmod(sandbox, 0o711);
    canary = await mkdtemp(join(base, 'canary-'));
    layouts = await mkdtemp(join(base, 'layouts-'));
  });

  async function layout(layers: Buffer[], options: Parameters<typeof writeLayout>[2] = {}): Promise<string> {
    const dir = await mkdtemp(join(layouts, 'l-'));
    await writeLayout(dir, layers, options);
    return dir;
  }

  /** After a refusal: nothing in the cache, nothing half-built, nothing in the canary. */
  async function assertNothingWritten(): Promise<void> {
    assert.deepEqual(await readdir(canary), [], 'something was written outside the cache');
    const cache = await readdir(join(sandbox, 'images')).catch(() => [] as string[]);
    assert.deepEqual(cache, [], `the cache holds ${cache.join(', ')}`);
  }

  test('imports a layout: verified, unpacked, set-id stripped, mount points and /etc binds ready', async () => {
    const dir = await layout([baseLayer()]);
    const result = await importImage(sandbox, dir, { name: 'fixture' });
    assert.equal(result.imported, true);
    assert.match(result.ref, /^fixture@sha256:[0-9a-f]{64}$/);
    const image = parseImageRef(result.ref) as PinnedImage;
    const found = await findImage(sandbox, image.digest);
    assert.ok(found !== null);
    assert.equal(await readFile(join(found.rootfs, 'etc/os-release'), 'utf8'), 'ID=fixture\n');
    const tool = await lstat(join(found.rootfs, 'bin/tool'));
    assert.equal(tool.mode & 0o7777, 0o755, 'the set-uid bit must be cleared');
    assert.equal(tool.uid, 0);
    for (const point of ['proc', 'dev', 'sys', 'tmp', 'workspace', 'run/airlock'])
      assert.ok((await lstat(join(found.rootfs, point))).isDirectory(), point);
    for (const bind of found.etcBinds) {
      assert.ok((await lstat(join(found.rootfs, bind.destination))).isFile(), bind.destination);
      assert.ok((await lstat(bind.source)).isFile(), bind.source);
    }
    // The job's passwd: the image's users, minus the one that held uid 1000, plus the job.
    const passwd = await readFile(join(found.dir, 'etc/passwd'), 'utf8');
    assert.match(passwd, /^root:x:0:0:/m);
    assert.match(passwd, /^job:x:1000:1000:/m);
    assert.doesNotMatch(passwd, /ubuntu/);
    // The image's own /etc/passwd is untouched (the job's is bound over it).
    assert.match(await readFile(join(found.rootfs, 'etc/passwd'), 'utf8'), /ubuntu/);

    const listed = await listImages(sandbox);
    assert.deepEqual(
      listed.map((record) => [record.digest, record.names]),
      [[image.digest, ['fixture']]],
    );
    const again = await importImage(sandbox, dir, { name: 'other' });
    assert.equal(again.imported, false);
    assert.deepEqual((await listImages(sandbox))[0]?.names, ['fixture', 'other']);
    assert.deepEqual(await readdir(canary), []);
  });

  test('imports a layout given as a tar file, uncompressed layers', async () => {
    const dir = await layout([baseLayer()], { gzip: false });
    const specs: TarSpec[] = [
      { name: 'oci-layout', content: await readFile(join(dir, 'oci-layout')) },
      { name: 'index.json', content: await readFile(join(dir, 'index.json')) },
    ];
    for (const name of await readdir(join(dir, 'blobs/sha256')))
      specs.push({ name: `blobs/sha256/${name}`, content: await readFile(join(dir, 'blobs/sha256', name)) });
    const file = join(layouts, 'image.tar');
    await writeFile(file, makeTar(specs));
    const result = await importImage(sandbox, file);
    assert.match(result.ref, /^image@sha256:/);
  });

  for (const part of ['layer', 'config', 'manifest'] as const) {
    test(`a corrupted ${part} blob is refused, naming the blob, and nothing is cached`, async () => {
      const dir = await layout([baseLayer()], { corrupt: part });
      const message = await refusedWith(importImage(sandbox, dir), /does not match its digest/);
      assert.match(message, new RegExp(part === 'layer' ? 'layer 1 sha256:[0-9a-f]{64}' : `${part} sha256:`));
      await assertNothingWritten();
    });
  }

  test('a blob whose size differs from its descriptor is refused', async () => {
    const dir = await layout([baseLayer()], { layerSizeDelta: -1 });
    await refusedWith(importImage(sandbox, dir), /has \d+ bytes, but its descriptor says \d+/);
    await assertNothingWritten();
  });

  test('a layer whose content does not match its diff_id is refused', async () => {
    const dir = await layout([baseLayer()]);
    // Replace the config's diff_id: same manifest shape, so rewrite the whole layout.
    const other = await layout([makeTar([{ name: 'x', content: 'y' }])]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
    const manifest = JSON.parse(
      await readFile(join(dir, 'blobs/sha256', index.manifests[0].digest.slice(7)), 'utf8'),
    );
    const config = JSON.parse(
      await readFile(join(dir, 'blobs/sha256', manifest.config.digest.slice(7)), 'utf8'),
    );
    config.rootfs.diff_ids = [sha256('not this')];
    const configBytes = Buffer.from(JSON.stringify(config));
    await writeFile(join(dir, 'blobs/sha256', sha256(configBytes).slice(7)), configBytes);
    manifest.config = { ...manifest.config, digest: sha256(configBytes), size: configBytes.length };
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    await writeFile(join(dir, 'blobs/sha256', sha256(manifestBytes).slice(7)), manifestBytes);
    index.manifests[0] = { ...index.manifests[0], digest: sha256(manifestBytes), size: manifestBytes.length };
    await writeFile(join(dir, 'index.json'), JSON.stringify(index));
    await rm(other, { recursive: true });
    await refusedWith(importImage(sandbox, dir), /not the diff_id/);
    await assertNothingWritten();
  });

  test('an entry with ../ is refused and nothing lands outside the cache', async () => {
    // From <sandbox>/images/.import-x/rootfs up to the canary directory.
    const up = relative(join(sandbox, 'images', '.import-x', 'rootfs'), canary);
    const dir = await layout([
      makeTar([
        { name: 'ok.txt', content: 'fine' },
        { name: `${up}/pwned`, content: 'x' },
      ]),
    ]);
    await refusedWith(importImage(sandbox, dir), /contains "\.\."/);
    await assertNothingWritten();
  });

  test('an absolute entry name is refused', async () => {
    const dir = await layout([makeTar([{ name: `${canary}/pwned`, content: 'x' }])]);
    await refusedWith(importImage(sandbox, dir), /absolute path/);
    await assertNothingWritten();
  });

  test('a symlink to an absolute path used to write outside is refused', async () => {
    const dir = await layout([
      makeTar([
        { name: 'escape', type: 'symlink', linkname: canary },
        { name: 'escape/pwned', content: 'x' },
      ]),
    ]);
    await refusedWith(importImage(sandbox, dir), /goes through the symbolic link escape/);
    await assertNothingWritten();
  });

  test('a relative symlink climbing out, used by a later layer, is refused', async () => {
    const dir = await layout([
      makeTar([{ name: 'up', type: 'symlink', linkname: '../../../../../../../../..' }]),
      makeTar([{ name: `up${canary}/pwned`, content: 'x' }]),
    ]);
    await refusedWith(importImage(sandbox, dir), /goes through the symbolic link up/);
    await assertNothingWritten();
  });

  test('hard links out of the tree or through a symlink are refused', async () => {
    await writeFile(join(canary, 'secret'), 'host file');
    const cases: [TarSpec[], RegExp][] = [
      [[{ name: 'hl', type: 'hardlink', linkname: `${canary}/secret` }], /absolute path/],
      [[{ name: 'hl', type: 'hardlink', linkname: '../../../../../../../etc/passwd' }], /contains "\.\."/],
      [
        [
          { name: 'escape', type: 'symlink', linkname: canary },
          { name: 'hl', type: 'hardlink', linkname: 'escape/secret' },
        ],
        /goes through or is a symbolic link/,
      ],
      [[{ name: 'hl', type: 'hardlink', linkname: 'missing' }], /not in the image/],
    ];
    for (const [specs, pattern] of cases) {
      const dir = await layout([makeTar(specs)]);
      await refusedWith(importImage(sandbox, dir), pattern);
      assert.deepEqual(await readdir(canary), ['secret']);
      assert.equal(await readFile(join(canary, 'secret'), 'utf8'), 'host file');
      assert.deepEqual(await readdir(join(sandbox, 'images')), []);
    }
    // A hard link inside the tree is fine.
    const ok = await layout([
      makeTar([
        { name: 'a', content: 'A' },
        { name: 'b', type: 'hardlink', linkname: 'a' },
      ]),
    ]);
    const { ref } = await importImage(sandbox, ok);
    const found = await findImage(sandbox, (parseImageRef(ref) as PinnedImage).digest);
    assert.equal((await lstat(join(found?.rootfs ?? '', 'b'))).nlink, 2);
  });

  test('device nodes and FIFOs are refused', async () => {
    for (const type of ['char', 'block', 'fifo'] as const) {
      const dir = await layout([
        makeTar([
          { name: 'dev/', type: 'dir' },
          { name: 'dev/node', type },
        ]),
      ]);
      await refusedWith(importImage(sandbox, dir), type === 'fifo' ? /FIFO/ : /device node/);
      await assertNothingWritten();
    }
  });

  test('a regular file replaces a lower symlink without following it', async () => {
    await writeFile(join(canary, 'target'), 'host');
    const dir = await layout([
      makeTar([{ name: 'f', type: 'symlink', linkname: join(canary, 'target') }]),
      makeTar([{ name: 'f', content: 'image' }]),
    ]);
    const { ref } = await importImage(sandbox, dir);
    const found = await findImage(sandbox, (parseImageRef(ref) as PinnedImage).digest);
    assert.equal(await readFile(join(found?.rootfs ?? '', 'f'), 'utf8'), 'image');
    assert.equal(await readFile(join(canary, 'target'), 'utf8'), 'host');
  });

  test('symlinks are stored verbatim, absolute ones included', async () => {
    const dir = await layout([
      makeTar([
        { name: 'etc/', type: 'dir' },
        { name: 'etc/localtime', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC' },
      ]),
    ]);
    const { ref } = await importImage(sandbox, dir);
    const found = await findImage(sandbox, (parseImageRef(ref) as PinnedImage).digest);
    assert.equal(await readlink(join(found?.rootfs ?? '', 'etc/localtime')), '/usr/share/zoneinfo/UTC');
  });

  test('whiteouts delete lower entries; an opaque directory keeps only what its layer adds', async () => {
    const dir = await layout([
      baseLayer(),
      makeTar([{ name: 'usr/share/.wh.a.txt' }, { name: 'etc/.wh.os-release' }]),
      makeTar([
        { name: 'usr/share/', type: 'dir' },
        { name: 'usr/share/new.txt', content: 'new' },
        { name: 'usr/share/.wh..wh..opq' },
      ]),
    ]);
    const { ref } = await importImage(sandbox, dir);
    const found = await findImage(sandbox, (parseImageRef(ref) as PinnedImage).digest);
    const root = found?.rootfs ?? '';
    assert.deepEqual(await readdir(join(root, 'usr/share')), ['new.txt']);
    assert.deepEqual((await readdir(join(root, 'etc'))).sort(), [
      'group',
      'hostname',
      'hosts',
      'passwd',
      'resolv.conf',
    ]);
    assert.ok(!(await readdir(join(root, 'usr/share'))).some((name) => name.startsWith('.wh.')));
  });

  test('bounds: entries, decompressed bytes, layers, path length', async () => {
    const many = await layout([
      makeTar(Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, content: '' }))),
    ]);
    await refusedWith(importImage(sandbox, many, { limits: { maxEntries: 10 } }), /more than 10 entries/);
    await assertNothingWritten();
    // One entry whose name makes 30 directories counts as 31.
    const implicit = await layout([makeTar([{ name: `${'d/'.repeat(30)}f`, content: '' }])]);
    await refusedWith(importImage(sandbox, implicit, { limits: { maxEntries: 20 } }), /more than 20 entries/);
    await assertNothingWritten();

    // A gzip bomb: 64 MiB of zeros compress to ~64 KiB.
    const bomb = makeTar([{ name: 'zeros', content: Buffer.alloc(64 * 1024 * 1024) }]);
    const bombDir = await layout([bomb]);
    await refusedWith(
      importImage(sandbox, bombDir, { limits: { maxUnpackedBytes: 1024 * 1024 } }),
      /decompress to more than 1048576 bytes/,
    );
    await assertNothingWritten();

    const layers = await layout([baseLayer(), baseLayer(), baseLayer()]);
    await refusedWith(
      importImage(sandbox, layers, { limits: { maxLayers: 2 } }),
      /3 layers, more than the limit of 2/,
    );

    const deep = await layout([makeTar([{ name: `${'a/'.repeat(60)}f`, content: '' }])]);
    await refusedWith(importImage(sandbox, deep, { limits: { maxPathBytes: 100 } }), /longer than 100 bytes/);
    await assertNothingWritten();
  });

  test('zstd layers, other architectures and non-layouts are refused with a clear message', async () => {
    const zstd = await layout([baseLayer()], { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' });
    await refusedWith(importImage(sandbox, zstd), /zstd-compressed/);
    const arm = await layout([baseLayer()], { architecture: 'riscv64' });
    await refusedWith(importImage(sandbox, arm), /no image manifest for linux\/amd64/);
    await refusedWith(importImage(sandbox, canary), /not an OCI image layout/);
    await assertNothingWritten();
  });

  test('several images in one layout: refused unless --manifest names one; other platforms ignored', async () => {
    const dir = await layout([baseLayer()]);
    const other = await layout([makeTar([{ name: 'other.txt', content: 'other' }])]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
    const otherIndex = JSON.parse(await readFile(join(other, 'index.json'), 'utf8'));
    for (const name of await readdir(join(other, 'blobs/sha256')))
      await writeFile(join(dir, 'blobs/sha256', name), await readFile(join(other, 'blobs/sha256', name)));
    const arm = { ...otherIndex.manifests[0], platform: { os: 'linux', architecture: 'arm64' } };
    await writeFile(
      join(dir, 'index.json'),
      JSON.stringify({ ...index, manifests: [...index.manifests, arm] }),
    );
    // Only one manifest is for this host: it is chosen.
    const chosen = await importImage(sandbox, dir, { name: 'one' });
    assert.equal(
      parseImageRef(chosen.ref).kind === 'pinned' && (parseImageRef(chosen.ref) as PinnedImage).digest,
      index.manifests[0].digest,
    );

    const both = [index.manifests[0], otherIndex.manifests[0]];
    await writeFile(join(dir, 'index.json'), JSON.stringify({ ...index, manifests: both }));
    await refusedWith(
      importImage(sandbox, dir),
      /2 image manifests for linux\/amd64: choose one with --manifest/,
    );
    const picked = await importImage(sandbox, dir, { manifest: otherIndex.manifests[0].digest, name: 'two' });
    assert.equal((parseImageRef(picked.ref) as PinnedImage).digest, otherIndex.manifests[0].digest);
  });

  test('remove refuses while a live job uses the image, then removes it', async () => {
    const { ref } = await importImage(sandbox, await layout([baseLayer()]), { name: 'fixture' });
    const image = parseImageRef(ref) as PinnedImage;
    const jobDir = join(sandbox, 'jobs', 'al-0000000000000001');
    await mkdir(jobDir, { recursive: true });
    await writeOwner(join(jobDir, 'owner.json'), currentOwner());
    const acquired = await acquireImage(sandbox, jobDir, image);
    assert.equal(acquired.record.digest, image.digest);
    await refusedWith(
      removeImage(sandbox, image.digest),
      /used by running job al-0000000000000001/,
      'IMAGE_IN_USE',
    );
    assert.ok((await findImage(sandbox, image.digest)) !== null, 'a refused removal leaves the image usable');
    await rm(jobDir, { recursive: true });
    await removeImage(sandbox, image.digest);
    assert.equal(await findImage(sandbox, image.digest), null);
    assert.deepEqual(await listImages(sandbox), []);
    await mkdir(jobDir, { recursive: true });
    await refusedWith(
      acquireImage(sandbox, jobDir, image),
      /not in this worker's image cache/,
      'IMAGE_NOT_FOUND',
    );
  });

  test('the sweep removes imports of dead processes and leaves live ones', async () => {
    const images = join(sandbox, 'images');
    await mkdir(join(images, '.import-dead'), { recursive: true });
    await writeFile(
      join(images, '.import-dead', 'owner.json'),
      JSON.stringify({ pid: 999_999_999, startTime: '1' }),
    );
    await mkdir(join(images, '.import-live'), { recursive: true });
    await writeOwner(join(images, '.import-live', 'owner.json'), currentOwner());
    assert.deepEqual(await sweepImageCache(sandbox), ['.import-dead']);
    assert.deepEqual(await readdir(images), ['.import-live']);
  });

  test('mount points: links at /tmp and /etc/resolv.conf are replaced, a linked /etc is refused', async () => {
    const dir = await layout([
      makeTar([
        { name: 'tmp', type: 'symlink', linkname: canary },
        { name: 'run', type: 'symlink', linkname: canary },
        { name: 'etc/', type: 'dir' },
        { name: 'etc/resolv.conf', type: 'symlink', linkname: '../run/systemd/resolve/stub-resolv.conf' },
      ]),
    ]);
    const { ref } = await importImage(sandbox, dir);
    const found = await findImage(sandbox, (parseImageRef(ref) as PinnedImage).digest);
    const rootfs = found?.rootfs ?? '';
    assert.ok((await lstat(join(rootfs, 'tmp'))).isDirectory());
    assert.ok((await lstat(join(rootfs, 'run'))).isDirectory());
    assert.ok((await lstat(join(rootfs, 'run/airlock'))).isDirectory());
    assert.ok((await lstat(join(rootfs, 'etc/resolv.conf'))).isFile());
    assert.deepEqual(await readdir(canary), []);

    const linkedEtc = await layout([makeTar([{ name: 'etc', type: 'symlink', linkname: canary }])]);
    await refusedWith(importImage(sandbox, linkedEtc), /\/etc is not a directory/);
    assert.deepEqual(await readdir(canary), []);
  });

  test('a mount point missing from an image, or a link, fails the job before the runtime runs', async () => {
    const { ref } = await importImage(sandbox, await layout([baseLayer()]));
    const found = await findImage(sandbox, (parseImageRef(ref) as PinnedImage).digest);
    const rootfs = found?.rootfs ?? '';
    await checkMountPoints(rootfs, ['/proc', '/dev', '/dev/shm', '/etc/passwd', '/workspace']);
    await refusedWith(
      checkMountPoints(rootfs, ['/run/airlock/egress.sock']),
      /no mount point for \/run\/airlock/,
      'SANDBOX_SETUP_FAILED',
    );
    await refusedWith(checkMountPoints(rootfs, ['/bin/x']), /no mount point/, 'SANDBOX_SETUP_FAILED');
    await symlink(canary, join(rootfs, 'linked'));
    await mkdir(join(canary, 'x'));
    await refusedWith(checkMountPoints(rootfs, ['/linked/x']), /a symbolic link/, 'SANDBOX_SETUP_FAILED');
  });

  test('CLI: import prints the reference, list shows it, remove takes NAME@sha256 or the bare digest, tags refused', async () => {
    const out: string[] = [];
    const sink = { write: (text: string) => out.push(text) } as unknown as NodeJS.WritableStream;
    const context = {
      stdout: sink,
      stderr: sink,
      config: { sandbox: { dir: sandbox } },
    } as unknown as CliContext;
    const dir = await layout([baseLayer()]);
    assert.equal(await imageImportCommand(context, dir, { name: 'cli' }), 0);
    const ref = out.join('').trim();
    assert.match(ref, /^cli@sha256:[0-9a-f]{64}$/);
    out.length = 0;
    await imageListCommand(context, {});
    assert.match(out.join(''), /^NAMES +DIGEST +LAYERS +SIZE +IMPORTED\ncli +sha256:/);
    await refusedWith(imageRemoveCommand(context, 'cli:latest', {}), /tags are not accepted/, 'INVALID_JOB');
    await refusedWith(imageImportCommand(context, dir, { maxSize: 'lots' }), /--max-size/, 'INVALID_OPTION');
    await refusedWith(
      imageImportCommand(context, join(base, 'missing'), {}),
      /does not exist/,
      'INVALID_OPTION',
    );
    out.length = 0;
    assert.equal(await imageRemoveCommand(context, ref.slice(ref.indexOf('@') + 1), {}), 0);
    assert.match(out.join(''), /^removed cli@sha256:/);
    assert.deepEqual(await listImages(sandbox), []);
  });

  test('a gzip layer that is not gzip is refused', async () => {
    const dir = await layout([baseLayer()], {
      gzip: false,
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    });
    await refusedWith(importImage(sandbox, dir), /cannot be read/);
    await assertNothingWritten();
    assert.ok(gzipSync(Buffer.alloc(1)).length > 0);
  });
});

describe('layout sources read what they checked', () => {
  test('a blob swapped for a symbolic link or a FIFO after the check is refused, not followed', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'airlock-layout-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    const blob = join(dir, 'blobs', 'sha256', 'a'.repeat(64));
    await writeFile(blob, 'layer bytes');
    await writeFile(join(dir, 'secret'), 'not part of the layout');
    const source = directorySource(dir);
    const opened = await source.open(`blobs/sha256/${'a'.repeat(64)}`);
    assert.ok(opened !== null);
    // Swapped between the check and the read.
    await rm(blob);
    await symlink(join(dir, 'secret'), blob);
    assert.throws(
      () => opened.stream(),
      (error: unknown) => isAirlockError(error, 'IMAGE_INVALID'),
    );
    await rm(blob);
    execFileSync('mkfifo', [blob]);
    assert.throws(
      () => opened.stream(),
      (error: unknown) => isAirlockError(error, 'IMAGE_INVALID'),
    );
  });
});

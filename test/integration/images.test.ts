import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, rmdir } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { isAirlockError } from '../../src/errors.js';
import { findImage, type ImageRecord, removeImage } from '../../src/images/cache.js';
import { type PinnedImage, parseImageRef } from '../../src/images/reference.js';
import type { SandboxEngine } from '../../src/sandbox/engine.js';
import type { RuntimeName } from '../../src/sandbox/job.js';
import { openTestEngine, outputCollector, REPO_ROOT, runCli, runtimeSkipReason } from './helpers.js';

/**
 * Digest-pinned images end to end: a Debian image built by scripts/build-debian-image.sh
 * (mmdebstrap from this machine's Debian mirror), imported with `airlock image import`, and
 * real jobs on it under runc and gVisor. The built layout is kept in
 * /var/cache/airlock-test-images, keyed by the script's digest, so reruns skip the ~35 s build.
 */

const run = promisify(execFile);
const SCRIPT = join(REPO_ROOT, 'scripts/build-debian-image.sh');
const CACHE = '/var/cache/airlock-test-images';
const skip = process.getuid?.() !== 0 ? 'needs root (mmdebstrap, the image cache, sandboxes)' : false;

/** The layout of the script at its current content, built once per content. */
async function debianLayout(): Promise<string> {
  const key = createHash('sha256').update(readFileSync(SCRIPT)).digest('hex').slice(0, 16);
  const layout = join(CACHE, `debian-${key}`);
  if (existsSync(join(layout, 'index.json'))) return layout;
  await mkdir(CACHE, { recursive: true, mode: 0o700 });
  const temp = `${layout}.build-${process.pid}`;
  await rm(temp, { recursive: true, force: true });
  await run('sh', [SCRIPT, temp, '--name', 'debian'], {
    // A fixed date: the same script and mirror state give the same digest.
    env: { ...process.env, SOURCE_DATE_EPOCH: '1767225600' },
    timeout: 600_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  await rename(temp, layout).catch(async (error: NodeJS.ErrnoException) => {
    // Built meanwhile by another run: keep theirs.
    if (!existsSync(join(layout, 'index.json'))) throw error;
    await rm(temp, { recursive: true, force: true });
  });
  // Layouts of earlier versions of the script are not used again.
  for (const name of await readdir(CACHE))
    if (/^debian-[0-9a-f]{16}$/.test(name) && join(CACHE, name) !== layout)
      await rm(join(CACHE, name), { recursive: true, force: true });
  return layout;
}

describe('digest-pinned images: a Debian image from scripts/build-debian-image.sh', { skip }, () => {
  let engine: SandboxEngine;
  let root: string;
  let cleanup: () => Promise<void>;
  let image: PinnedImage;
  let record: ImageRecord;
  let rootfs: string;

  before(async () => {
    const layout = await debianLayout();
    ({ engine, root, cleanup } = await openTestEngine('images'));
    const imported = await runCli(['image', 'import', layout, '--name', 'debian', '--json'], {
      AIRLOCK_SANDBOX_DIR: root,
    });
    assert.equal(imported.code, 0, imported.stderr);
    const result = JSON.parse(imported.stdout) as { ref: string; image: ImageRecord };
    image = parseImageRef(result.ref) as PinnedImage;
    record = result.image;
    const found = await findImage(root, image.digest);
    assert.ok(found !== null);
    rootfs = found.rootfs;
  });
  after(async () => {
    await cleanup?.();
  });

  test('import verified and unpacked the layout; list shows it', async () => {
    assert.equal(image.name, 'debian');
    assert.equal(record.layers.length, 1);
    assert.ok(record.unpackedBytes > 50 * 1024 * 1024, `only ${record.unpackedBytes} bytes unpacked`);
    const listed = await runCli(['image', 'list', '--json'], { AIRLOCK_SANDBOX_DIR: root });
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      (JSON.parse(listed.stdout) as { images: ImageRecord[] }).images.map((r) => r.digest),
      [image.digest],
    );
  });

  async function runOn(runtime: RuntimeName, script: string): Promise<{ code: number | null; out: string }> {
    const output = outputCollector();
    const result = await engine.run(
      { command: ['sh', '-c', script], image: image.ref, runtime },
      { onOutput: output.onOutput },
    );
    assert.equal(result.imageDigest, image.digest);
    return { code: result.exitCode, out: output.stdout() + output.stderr() };
  }

  const PROBE = [
    'cat /etc/os-release',
    // The host runs Node.js from /usr/bin/node; the image has none.
    'test -e /usr/bin/node && echo HOST-NODE-VISIBLE || echo no-host-node',
    'id -un',
    'touch /usr/airlock-write-test 2>&1 || echo read-only-root',
    'echo from-job > /workspace/out && cat /workspace/out',
  ].join('; ');

  for (const runtime of ['runc', 'gvisor'] as const) {
    test(`a job under ${runtime} runs with the image's userland, not the host's`, {
      skip: runtimeSkipReason(runtime) ?? false,
    }, async () => {
      assert.ok(
        existsSync('/usr/bin/node') || !process.execPath.startsWith('/usr/'),
        'the probe needs a host-only file',
      );
      const { code, out } = await runOn(runtime, PROBE);
      assert.equal(code, 0, out);
      // The image's own os-release, byte for byte, and nothing of the host's /usr.
      const osRelease = await readFile(join(rootfs, 'usr/lib/os-release'), 'utf8');
      assert.ok(out.startsWith(osRelease), out);
      assert.match(out, /Debian GNU\/Linux 12/);
      if (existsSync('/usr/bin/node')) assert.match(out, /no-host-node/);
      assert.doesNotMatch(out, /HOST-NODE-VISIBLE/);
      assert.match(out, /^job$/m);
      assert.match(out, /Read-only file system|read-only-root/);
      assert.match(out, /^from-job$/m);
      assert.equal(existsSync(join(rootfs, 'usr/airlock-write-test')), false);
    });
  }

  test('the same probe on image: host sees the host userland (the contrast that makes the test mean something)', {
    skip: existsSync('/usr/bin/node') ? false : 'the host has no /usr/bin/node to tell the two apart',
  }, async () => {
    const output = outputCollector();
    const result = await engine.run({ command: ['sh', '-c', PROBE] }, { onOutput: output.onOutput });
    assert.equal(result.exitCode, 0, output.stderr());
    assert.equal(result.imageDigest, undefined);
    assert.match(output.stdout(), /HOST-NODE-VISIBLE/);
  });

  test("egress works on a pinned image: the forwarder runs on the image's own perl", async () => {
    const registry = createServer((_request, response) => response.end('from-the-registry'));
    await new Promise<void>((resolve) => registry.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = registry.address() as AddressInfo;
      const output = outputCollector();
      const client =
        'use Socket; socket(my $s, PF_INET, SOCK_STREAM, 0) or die; ' +
        'connect($s, sockaddr_in(3128, inet_aton(\'127.0.0.1\'))) or die "connect: $!"; ' +
        `syswrite($s, "GET http://registry.test:${port}/ HTTP/1.1\\r\\nHost: registry.test\\r\\n\\r\\n"); ` +
        'my $a = ""; while (sysread($s, my $c, 65536)) { $a .= $c } print((split /\\r\\n\\r\\n/, $a, 2)[1], "\\n");';
      const result = await engine.run(
        { command: ['perl', '-e', client], image: image.ref, egress: [`registry.test:${port}`] },
        {
          onOutput: output.onOutput,
          egressSettings: { resolve: async () => ['127.0.0.1'], grantAddresses: ['127.0.0.1/32'] },
        },
      );
      assert.equal(result.exitCode, 0, output.stderr());
      assert.equal(output.stdout(), 'from-the-registry\n');
      assert.equal(result.egress?.attempts[0]?.reason, 'allowed');
    } finally {
      registry.close();
    }
  });

  test('an image that is not in the cache fails the job with IMAGE_NOT_FOUND', async () => {
    const missing = `debian@sha256:${'0'.repeat(64)}`;
    await assert.rejects(engine.run({ command: ['true'], image: missing }), (error: unknown) => {
      assert.ok(isAirlockError(error, 'IMAGE_NOT_FOUND'), String(error));
      return true;
    });
  });

  test('an image missing a mount point fails the job before the runtime could create it in the cache', async () => {
    await rmdir(join(rootfs, 'workspace'));
    try {
      await assert.rejects(engine.run({ command: ['true'], image: image.ref }), (error: unknown) => {
        assert.ok(isAirlockError(error, 'SANDBOX_SETUP_FAILED'), String(error));
        assert.match((error as Error).message, /no mount point for \/workspace/);
        return true;
      });
      assert.equal(
        existsSync(join(rootfs, 'workspace')),
        false,
        'something created the mount point in the cache',
      );
    } finally {
      await mkdir(join(rootfs, 'workspace'), { mode: 0o755 });
    }
  });

  test('remove is refused while a job uses the image, and works once it has ended', async () => {
    let refusal: unknown;
    const job = engine.run(
      { command: ['sleep', '2'], image: image.ref },
      {
        onStarted: () => {
          refusal = removeImage(root, image.digest).then(
            () => null,
            (error: unknown) => error,
          );
        },
      },
    );
    const result = await job;
    assert.equal(result.exitCode, 0);
    const error = await refusal;
    assert.ok(isAirlockError(error, 'IMAGE_IN_USE'), String(error));
    await engine.settle();
    const removed = await runCli(['image', 'remove', image.ref], { AIRLOCK_SANDBOX_DIR: root });
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(await findImage(root, image.digest), null);
  });
});

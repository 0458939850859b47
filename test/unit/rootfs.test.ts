import assert from 'node:assert/strict';
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
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  buildHostImage,
  GENERATED_ETC,
  type HostImagePlan,
  planHostImage,
} from '../../src/sandbox/rootfs.js';

/**
 * The host image is planned and built from a fake host root in a temporary directory, holding
 * the kinds of files a real /etc has: some to copy, some that must never reach a job.
 */

let tmp: string;
let host: string;

async function put(path: string, content: string, mode = 0o644): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, content);
  await chmod(path, mode);
}

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'airlock-rootfs-test-'));
  host = join(tmp, 'host');
  const etc = join(host, 'etc');
  await mkdir(join(host, 'usr', 'bin'), { recursive: true });
  await mkdir(join(host, 'usr', 'lib'), { recursive: true });
  await symlink('usr/bin', join(host, 'bin'));
  await mkdir(join(host, 'lib'));
  // Secrets and host identity: none of these may be copied.
  await put(join(etc, 'shadow'), 'root:$6$secret:19000:0:99999:7:::\n', 0o640);
  await put(join(etc, 'gshadow'), 'root:*::\n', 0o640);
  await put(join(etc, 'sudoers'), 'root ALL=(ALL) ALL\n', 0o440);
  await put(join(etc, 'machine-id'), '0123456789abcdef0123456789abcdef\n', 0o444);
  await put(join(etc, 'hostname'), 'build-host-17\n');
  await put(join(etc, 'resolv.conf'), 'nameserver 10.0.0.1\n');
  await put(join(etc, 'passwd'), 'root:x:0:0::/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n');
  await put(join(etc, 'ssh', 'ssh_host_ed25519_key'), 'PRIVATE KEY\n', 0o600);
  await put(join(etc, 'ssh', 'ssh_host_ed25519_key.pub'), 'ssh-ed25519 AAAA\n');
  await put(join(etc, 'ssl', 'private', 'key.pem'), 'PRIVATE KEY\n', 0o644);
  // What a job's userland needs.
  await put(join(etc, 'ssl', 'certs', 'ca.pem'), 'CERTIFICATE\n', 0o644);
  await symlink('ca.pem', join(etc, 'ssl', 'certs', 'a1b2c3d4.0'));
  await put(join(etc, 'ssl', 'certs', 'private-to-root.pem'), 'not for jobs\n', 0o600);
  await mkdir(join(etc, 'alternatives'));
  await symlink('/usr/bin/mawk', join(etc, 'alternatives', 'awk'));
  await put(join(etc, 'ld.so.cache'), 'ld.so-1.7.0\n');
  await put(join(etc, 'protocols'), 'ip\t0\tIP\n');
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function etcEntry(plan: HostImagePlan, path: string) {
  return plan.etc.find((entry) => entry.path === path);
}

describe('planHostImage', () => {
  test('binds /usr and the real userland directories, keeps links as links', async () => {
    const plan = await planHostImage(host);
    assert.deepEqual(plan.binds, ['/usr', '/lib']);
    assert.deepEqual(plan.links, [{ name: 'bin', target: 'usr/bin' }]);
  });

  test('copies what userland needs from /etc, links as links with the same target', async () => {
    const plan = await planHostImage(host);
    assert.deepEqual(etcEntry(plan, 'alternatives/awk'), {
      path: 'alternatives/awk',
      kind: 'link',
      data: '/usr/bin/mawk',
    });
    assert.deepEqual(etcEntry(plan, 'ssl/certs/a1b2c3d4.0'), {
      path: 'ssl/certs/a1b2c3d4.0',
      kind: 'link',
      data: 'ca.pem',
    });
    for (const path of ['ld.so.cache', 'ssl/certs/ca.pem', 'protocols']) {
      assert.equal(etcEntry(plan, path)?.kind, 'file', path);
      assert.equal(etcEntry(plan, path)?.source?.path, join(host, 'etc', path), path);
    }
  });

  test("never copies the host's secrets or identity", async () => {
    const plan = await planHostImage(host);
    const copied = plan.etc.filter((entry) => entry.source !== undefined || entry.kind === 'link');
    const paths = plan.etc.map((entry) => entry.path);
    for (const path of ['shadow', 'gshadow', 'sudoers', 'machine-id']) {
      assert.ok(!paths.includes(path), path);
    }
    for (const path of paths) {
      assert.ok(!path.startsWith('ssh'), path);
      assert.ok(!path.startsWith('ssl/private'), path);
    }
    // A file only root may read stays out even where its directory is copied.
    assert.ok(!paths.includes('ssl/certs/private-to-root.pem'));
    // Nothing copied comes from the host's hostname, resolv.conf or passwd.
    for (const path of ['hostname', 'resolv.conf', 'passwd']) {
      assert.ok(!copied.some((entry) => entry.path === path), path);
    }
  });

  test('generates resolv.conf without a nameserver and passwd with root, job and nobody only', async () => {
    const plan = await planHostImage(host);
    const resolv = etcEntry(plan, 'resolv.conf');
    assert.equal(resolv?.kind, 'file');
    assert.doesNotMatch(resolv?.data ?? '', /^\s*nameserver/m);
    const passwd = etcEntry(plan, 'passwd')?.data ?? '';
    const users = passwd
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split(':')[0]);
    assert.deepEqual(users, ['root', 'job', 'nobody']);
    assert.equal(etcEntry(plan, 'hostname')?.data, 'sandbox\n');
  });

  test('each path appears once', async () => {
    const plan = await planHostImage(host);
    const paths = plan.etc.map((entry) => entry.path);
    assert.equal(new Set(paths).size, paths.length);
  });

  test('a host without /usr/bin is HOST_UNSUPPORTED', async () => {
    const bare = join(tmp, 'bare');
    await mkdir(join(bare, 'usr'), { recursive: true });
    await assert.rejects(planHostImage(bare), { name: 'AirlockError', code: 'HOST_UNSUPPORTED' });
  });
});

describe('buildHostImage', () => {
  test('builds the tree once and reuses it for the same host', async () => {
    const dir = join(tmp, 'images-same');
    await mkdir(dir);
    const first = await buildHostImage(dir, host);
    const second = await buildHostImage(dir, host);
    assert.equal(second.rootfs, first.rootfs);
    assert.equal(second.digest, first.digest);
    assert.deepEqual(first.binds, ['/usr', '/lib']);
    assert.deepEqual(await readdir(dir), [`host-${first.digest}`], 'one tree, no leftover build directory');
  });

  test('the tree: generated /etc, an empty /usr mount point, links and mount points', async () => {
    const dir = join(tmp, 'images-tree');
    await mkdir(dir);
    const { rootfs } = await buildHostImage(dir, host);
    assert.equal(
      await readFile(join(rootfs, 'etc', 'passwd'), 'utf8'),
      GENERATED_ETC.passwd,
      'the generated passwd, not the host one',
    );
    assert.ok((await lstat(join(rootfs, 'usr'))).isDirectory());
    assert.deepEqual(await readdir(join(rootfs, 'usr')), []);
    assert.equal(await readlink(join(rootfs, 'var', 'tmp')), '../tmp');
    assert.equal(await readlink(join(rootfs, 'bin')), 'usr/bin');
    assert.ok((await lstat(join(rootfs, 'lib'))).isDirectory());
    for (const mountPoint of ['proc', 'dev', 'sys', 'tmp', 'workspace']) {
      assert.ok((await lstat(join(rootfs, mountPoint))).isDirectory(), mountPoint);
    }
    assert.equal(await readlink(join(rootfs, 'etc', 'alternatives', 'awk')), '/usr/bin/mawk');
    assert.equal(await readFile(join(rootfs, 'etc', 'ssl', 'certs', 'ca.pem'), 'utf8'), 'CERTIFICATE\n');
    assert.doesNotMatch(await readFile(join(rootfs, 'etc', 'resolv.conf'), 'utf8'), /nameserver/);
    for (const secret of ['shadow', 'gshadow', 'sudoers', 'machine-id', 'ssh', 'ssl/private']) {
      await assert.rejects(lstat(join(rootfs, 'etc', secret)), { code: 'ENOENT' }, secret);
    }
  });

  test('a change in /etc/alternatives gives a new digest and a new tree', async () => {
    const dir = join(tmp, 'images-change');
    await mkdir(dir);
    const original = await buildHostImage(dir, host);
    const awk = join(host, 'etc', 'alternatives', 'awk');
    await rm(awk);
    await symlink('/usr/bin/gawk', awk);
    try {
      const changed = await buildHostImage(dir, host);
      assert.notEqual(changed.digest, original.digest);
      assert.notEqual(changed.rootfs, original.rootfs);
      assert.equal(await readlink(join(changed.rootfs, 'etc', 'alternatives', 'awk')), '/usr/bin/gawk');
    } finally {
      await rm(awk);
      await symlink('/usr/bin/mawk', awk);
    }
  });

  test('a change of a copied file gives a new digest', async () => {
    const dir = join(tmp, 'images-file');
    await mkdir(dir);
    const first = await buildHostImage(dir, host);
    const protocols = join(host, 'etc', 'protocols');
    const original = await readFile(protocols, 'utf8');
    await writeFile(protocols, `${original}icmp\t1\tICMP\n`);
    try {
      assert.notEqual((await buildHostImage(dir, host)).digest, first.digest);
    } finally {
      await writeFile(protocols, original);
    }
  });
});

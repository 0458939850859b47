import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import {
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  rmdir,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { detectCgroupLayout } from '../../src/sandbox/cgroup.js';
import { HostHelper } from '../../src/sandbox/host-helper.js';
import { readMountInfo } from '../../src/sandbox/mountinfo.js';
import { startWatchdog } from '../../src/sandbox/watchdog.js';

/**
 * The host helper (decision 0012) on its own, against the real kernel: processes it starts,
 * the disks it makes, the deadlines it keeps, and what happens when it dies.
 */

const ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
const isRoot = process.getuid?.() === 0;

async function run(file: string, args: string[]) {
  const child = HostHelper.shared().spawn(file, args, { env: ENV });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.onData((stream, chunk) => (stream === 'stdout' ? out : err).push(chunk));
  const exit = await child.closed;
  return { ...exit, stdout: Buffer.concat(out), stderr: Buffer.concat(err) };
}

/** Whether `pid` runs (a zombie waiting for its reaper does not). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe('host helper: processes', () => {
  test('relays stdout and stderr byte for byte, and the exit code', async () => {
    const result = await run('/bin/sh', ['-c', 'printf "a\\000b\\n"; printf err >&2; exit 3']);
    assert.equal(result.code, 3);
    assert.equal(result.signal, null);
    assert.deepEqual(result.stdout, Buffer.from('a\0b\n'));
    assert.equal(result.stderr.toString(), 'err');
  });

  test('relays a large output whole and in order', async () => {
    const result = await run('/bin/sh', ['-c', 'head -c 3000000 /dev/zero | tr "\\000" x; echo end']);
    assert.equal(result.code, 0);
    assert.equal(result.stdout.length, 3_000_004);
    assert.equal(result.stdout.subarray(-4).toString(), 'end\n');
  });

  test('passes argv as it is, never through a shell, with only the given environment', async () => {
    const marker = join(tmpdir(), `airlock-helper-${process.pid}`);
    const result = await run('/bin/echo', [`$(touch ${marker})`, '; rm -rf /', 'ünïcode']);
    assert.equal(result.stdout.toString(), `$(touch ${marker}) ; rm -rf / ünïcode\n`);
    assert.equal(existsSync(marker), false);
    const env = await run('/usr/bin/env', []);
    assert.equal(env.stdout.toString(), `PATH=${ENV.PATH}\n`);
  });

  test('reports a program that cannot be started with its errno', async () => {
    const missing = await run('/nonexistent/tool', []);
    assert.equal(missing.error?.code, 'ENOENT');
    assert.equal(missing.code, null);
    const child = HostHelper.shared().spawn('/nonexistent/tool', [], { env: ENV });
    await assert.rejects(child.started, { code: 'ENOENT' });
  });

  test('reports death by a signal, and kills a whole process group', async () => {
    const child = HostHelper.shared().spawn('/bin/sh', ['-c', 'sleep 100 & echo $!; wait'], {
      env: ENV,
      setsid: true,
    });
    let text = '';
    child.onData((_stream, chunk) => {
      text += chunk.toString();
    });
    await child.started;
    for (let i = 0; i < 100 && !text.includes('\n'); i += 1) await sleep(20);
    const grandchild = Number(text.trim());
    assert.ok(alive(grandchild));
    child.kill('KILL', true);
    const exit = await child.closed;
    assert.equal(exit.signal, 'SIGKILL');
    for (let i = 0; i < 50 && alive(grandchild); i += 1) await sleep(20);
    assert.equal(alive(grandchild), false, 'the group was killed, not only its leader');
  });

  test('what the helper would refuse fails that call alone, before anything is sent', async () => {
    const helper = HostHelper.shared();
    const running = helper.spawn('/bin/sleep', ['30'], { env: ENV });
    await running.started;
    assert.throws(() => helper.spawn('', [], { env: ENV }), RangeError);
    assert.throws(() => helper.spawn('/bin/echo', ['a\0b'], { env: ENV }), /NUL/);
    assert.throws(() => helper.spawn('/bin/echo', ['\uD800'], { env: ENV }), /Unicode/);
    assert.throws(() => helper.spawn('/bin/echo', [], { env: { 'A=B': 'c' } }), RangeError);
    await assert.rejects(helper.arm('/sys/fs/cgroup/none', Number.POSITIVE_INFINITY), RangeError);
    assert.equal(HostHelper.shared(), helper, 'the helper is still the same');
    assert.equal((await run('/bin/echo', ['still here'])).stdout.toString(), 'still here\n');
    running.kill('KILL');
    assert.equal((await running.closed).signal, 'SIGKILL');
  });

  test('loads with the modules of perl-base alone (what every Debian and Ubuntu system has)', async (t) => {
    const inc = execFileSync('perl', ['-e', 'print join("\\n", @INC)'], { encoding: 'utf8' });
    if (!inc.split('\n').some((dir) => /perl-base$/.test(dir))) {
      t.skip('this perl has no perl-base directory');
      return;
    }
    // stdin ends at once: the helper starts, finds nothing to do, and exits 0.
    const result = spawnSync(
      'perl',
      ['-e', 'BEGIN { @INC = grep { m{perl-base$} } @INC } do $ARGV[0]; die $@ if $@', HELPER],
      { input: '', encoding: 'utf8' },
    );
    assert.equal(result.stderr, '');
    assert.equal(result.status, 0);
  });

  test('a helper that does not answer in time is declared dead, killed and replaced', {
    timeout: 30_000,
  }, async (t) => {
    const helper = HostHelper.shared();
    const pid = helper.pid ?? 0;
    // A helper that hangs (as on a disk that never answers): stopped, it reads nothing.
    process.kill(pid, 'SIGSTOP');
    t.after(() => {
      // Whatever happened, the stopped helper does not outlive the test.
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    });
    const started = performance.now();
    await assert.rejects(helper.arm('/sys/fs/cgroup/none', 60_000), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'EHOSTHELPER');
      assert.match(error.message, /no answer to arm within 10 s/);
      return true;
    });
    assert.ok(performance.now() - started >= 9_900, 'not before its deadline');
    for (let i = 0; i < 100 && alive(pid); i += 1) await sleep(20);
    assert.equal(alive(pid), false, 'the hung helper was killed');
    assert.notEqual(HostHelper.shared(), helper);
    assert.equal((await run('/bin/echo', ['replaced'])).stdout.toString(), 'replaced\n');
  });

  test('a helper that dies fails what it was running, and the next call starts a new one', async () => {
    const helper = HostHelper.shared();
    const child = helper.spawn('/bin/sleep', ['100'], { env: ENV });
    const pid = await child.started;
    process.kill(helper.pid ?? 0, 'SIGKILL');
    const exit = await child.closed;
    assert.equal(exit.error?.code, 'EHOSTHELPER');
    assert.match(exit.error?.message ?? '', /host helper exited \(killed by SIGKILL\)/);
    // What it started dies with it (PR_SET_PDEATHSIG): nothing runs unsupervised.
    for (let i = 0; i < 100 && alive(pid); i += 1) await sleep(20);
    assert.equal(alive(pid), false, 'the process died with its helper');
    assert.notEqual(HostHelper.shared(), helper);
    assert.equal((await run('/bin/echo', ['again'])).stdout.toString(), 'again\n');
  });
});

describe('host helper: disks', { skip: !isRoot && 'needs root' }, () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join('/var/tmp', 'airlock-helper-disk-'));
  });
  after(async () => {
    for (const entry of readMountInfo().filter((mount) => mount.mountPoint.startsWith(dir)))
      await HostHelper.disks()
        .unmount(entry.mountPoint)
        .catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  /** A disk as the helper hands it out: root 0700, work/ and tmp/ 0700 and root's, nothing else. */
  const assertLaidOut = async (mountPoint: string): Promise<void> => {
    const root = await stat(mountPoint);
    assert.equal(root.mode & 0o7777, 0o700);
    assert.equal(root.uid, 0);
    assert.deepEqual((await readdir(mountPoint)).sort(), ['tmp', 'work']);
    for (const name of ['work', 'tmp']) {
      const entry = await lstat(join(mountPoint, name));
      assert.ok(entry.isDirectory(), name);
      assert.equal(entry.mode & 0o7777, 0o700, name);
      assert.equal(entry.uid, 0, name);
      assert.deepEqual(await readdir(join(mountPoint, name)), [], name);
    }
  };

  test('makes an ext4 disk of the size asked, mounted nosuid and nodev and laid out, and unmounts it', async () => {
    const image = join(dir, 'a.img');
    const mountPoint = join(dir, 'a');
    await (await open(image, 'wx', 0o600)).close();
    await mkdir(mountPoint);
    await HostHelper.disks().makeDisk(image, 64 * 1024 * 1024, mountPoint);
    const entry = readMountInfo().find((mount) => mount.mountPoint === mountPoint);
    assert.ok(entry, 'mounted');
    assert.equal(entry.type, 'ext4');
    assert.match(entry.source, /^\/dev\/loop\d+$/);
    // The per-mount options are the sixth field of mountinfo.
    const line = (await readFile('/proc/self/mountinfo', 'utf8'))
      .split('\n')
      .find((l) => l.split(' ')[4] === mountPoint);
    const options = (line ?? '').split(' ')[5]?.split(',') ?? [];
    for (const option of ['nosuid', 'nodev', 'noatime']) assert.ok(options.includes(option), option);
    // Allocated in full on the host (the job can never fill the host's disk instead).
    assert.ok((await stat(image)).blocks * 512 >= 64 * 1024 * 1024);
    // The first disk of a size makes the template (laid out through a mount of its own).
    await assertLaidOut(mountPoint);
    await writeFile(join(mountPoint, 'work', 'f'), 'data');
    await mkdir(join(mountPoint, 'tmp', 'd'));
    await HostHelper.disks().unmount(mountPoint);
    assert.equal(
      readMountInfo().some((mount) => mount.mountPoint === mountPoint),
      false,
    );
    // The mount point goes with the unmount.
    assert.equal(existsSync(mountPoint), false);
    // The second disk of the same size comes from the template: empty, not the first one's files.
    const image2 = join(dir, 'b.img');
    const mountPoint2 = join(dir, 'b');
    await (await open(image2, 'wx', 0o600)).close();
    await mkdir(mountPoint2);
    await HostHelper.disks().makeDisk(image2, 64 * 1024 * 1024, mountPoint2);
    await assertLaidOut(mountPoint2);
    await HostHelper.disks().unmount(mountPoint2);
  });

  test('never follows a link to the image, and names the failing step', async () => {
    const target = join(dir, 'target.img');
    await writeFile(target, '');
    const link = join(dir, 'link.img');
    await symlink(target, link);
    await mkdir(join(dir, 'c'));
    await assert.rejects(HostHelper.disks().makeDisk(link, 64 * 1024 * 1024, join(dir, 'c')), {
      code: 'ELOOP',
      step: 'allocate',
    });
    assert.equal((await stat(target)).size, 0, 'nothing was written through the link');
  });

  test('refuses a disk larger than the host can hold (ENOSPC at allocate)', async () => {
    const image = join(dir, 'huge.img');
    await (await open(image, 'wx', 0o600)).close();
    await mkdir(join(dir, 'huge'));
    await assert.rejects(HostHelper.disks().makeDisk(image, 2 ** 52, join(dir, 'huge')), (error: Error) => {
      const failure = error as Error & { step?: string; code?: string };
      return failure.step === 'allocate' && (failure.code === 'ENOSPC' || failure.code === 'EFBIG');
    });
  });
});

const HELPER = new URL('../../../src/sandbox/host-helper.pl', import.meta.url).pathname;

describe('host helper: deadlines', { skip: !isRoot && 'needs root' }, () => {
  const layout = detectCgroupLayout();
  const base = layout.version === 1 ? layout.controllers.pids : layout.mount;
  const groups: string[] = [];
  after(async () => {
    // A killed process leaves its cgroup a moment after it died: retry for up to 2 s.
    for (const group of groups) {
      for (let i = 0; i < 100 && existsSync(group); i += 1) {
        await rmdir(group).catch(() => sleep(20));
      }
      assert.equal(existsSync(group), false, `test cgroup ${group} removed`);
    }
  });

  /** A cgroup with one `sleep` in it. */
  async function sleeperIn(name: string): Promise<{ group: string; pid: number }> {
    const group = join(base, `airlock-helper-test-${process.pid}-${name}`);
    await mkdir(group);
    groups.push(group);
    const child = HostHelper.shared().spawn(
      '/bin/sh',
      ['-c', `echo $$ > ${group}/cgroup.procs && exec sleep 100`],
      {
        env: ENV,
      },
    );
    const pid = await child.started;
    for (let i = 0; i < 100; i += 1) {
      if ((await readFile(join(group, 'cgroup.procs'), 'utf8')).includes(String(pid))) break;
      await sleep(10);
    }
    return { group, pid };
  }

  test('kills every process of the cgroup when the deadline comes', async () => {
    const { group, pid } = await sleeperIn('armed');
    await HostHelper.shared().arm(group, 200);
    assert.ok(alive(pid));
    for (let i = 0; i < 150 && alive(pid); i += 1) await sleep(20);
    assert.equal(alive(pid), false, 'killed at its deadline');
    assert.equal((await readFile(join(group, 'cgroup.procs'), 'utf8')).trim(), '');
  });

  test("a watchdog is disarmed on the helper that armed it, never on its successor's", async () => {
    const first = HostHelper.shared();
    const a = startWatchdog(join(base, `airlock-helper-test-${process.pid}-none`));
    await a.arm(60_000);
    process.kill(first.pid ?? 0, 'SIGKILL');
    for (let i = 0; i < 100 && HostHelper.shared() === first; i += 1) await sleep(10);
    const { group, pid } = await sleeperIn('successor');
    const b = startWatchdog(group);
    await b.arm(300);
    a.stop();
    for (let i = 0; i < 150 && alive(pid); i += 1) await sleep(20);
    assert.equal(alive(pid), false, "job B's deadline was kept");
    b.stop();
  });

  test('a disarmed deadline kills nothing', async () => {
    const { pid } = await sleeperIn('disarmed');
    const helper = HostHelper.shared();
    const watch = await helper.arm(join(base, `airlock-helper-test-${process.pid}-disarmed`), 200);
    helper.disarm(watch);
    await sleep(600);
    assert.ok(alive(pid), 'still running after the deadline it no longer has');
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 100 && alive(pid); i += 1) await sleep(20);
  });
});

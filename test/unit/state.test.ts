import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  currentOwner,
  ensureSandboxDirs,
  isOwnerTempFile,
  JOB_ID_PATTERN,
  newJobId,
  ownerAlive,
  parseOwner,
  processStartTime,
  readOwner,
  sandboxDirs,
  writeOwner,
} from '../../src/sandbox/state.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-state-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('owners', () => {
  test('processStartTime of this process is its start time in clock ticks', () => {
    const start = processStartTime(process.pid);
    assert.equal(typeof start, 'string');
    assert.match(start ?? '', /^\d+$/);
    // Stable for the life of the process.
    assert.equal(processStartTime(process.pid), start);
  });

  test('processStartTime of a pid that does not exist is null', () => {
    assert.equal(processStartTime(2 ** 31 - 1), null);
  });

  test('the current process is a live owner', () => {
    const owner = currentOwner();
    assert.equal(owner.pid, process.pid);
    assert.equal(ownerAlive(owner), true);
  });

  test('the right pid with another start time is a dead owner (a reused pid)', () => {
    const owner = currentOwner();
    assert.equal(ownerAlive({ pid: owner.pid, startTime: String(Number(owner.startTime) + 1) }), false);
    assert.equal(ownerAlive({ pid: owner.pid, startTime: '' }), false);
  });

  test('a process that has exited is a dead owner', async () => {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      await once(child, 'spawn');
      const pid = child.pid;
      assert.ok(pid !== undefined);
      const startTime = processStartTime(pid);
      assert.ok(startTime !== null);
      assert.equal(ownerAlive({ pid, startTime }), true, 'alive while it runs');
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
      assert.equal(ownerAlive({ pid, startTime }), false, 'dead once it has exited');
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  test('a process that ran `true` and exited is a dead owner', async () => {
    const child = spawn('true', [], { stdio: 'ignore' });
    const [code] = await once(child, 'exit');
    assert.equal(code, 0);
    assert.ok(child.pid !== undefined);
    assert.equal(ownerAlive({ pid: child.pid, startTime: currentOwner().startTime }), false);
  });
});

describe('owner records', () => {
  test('writeOwner creates the record once; a second write fails with EEXIST; no temp file is left', async () => {
    const path = join(dir, 'lease-1');
    const owner = currentOwner();
    await writeOwner(path, owner, { jobId: 'al-0123456789abcdef' });
    assert.deepEqual(JSON.parse(await readFile(path, 'utf8')), { ...owner, jobId: 'al-0123456789abcdef' });
    assert.deepEqual(await readOwner(path), owner);
    assert.equal((await stat(path)).mode & 0o777, 0o600);

    await assert.rejects(writeOwner(path, { pid: 1, startTime: '1' }), { code: 'EEXIST' });
    // The first record is untouched.
    assert.deepEqual(await readOwner(path), owner);
    assert.deepEqual(await readdir(dir), ['lease-1']);
  });

  test('of many concurrent writers exactly one wins, and no temp file is left', async () => {
    const sub = join(dir, 'race');
    await mkdir(sub);
    const path = join(sub, 'lease');
    const outcomes = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => writeOwner(path, { pid: 1000 + i, startTime: String(i) })),
    );
    assert.equal(outcomes.filter((outcome) => outcome.status === 'fulfilled').length, 1);
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected')
        assert.equal((outcome.reason as NodeJS.ErrnoException).code, 'EEXIST');
    }
    assert.deepEqual(await readdir(sub), ['lease']);
    // The file holds one complete record, never a mix.
    const record = await readOwner(path);
    assert.ok(record !== null && record.pid >= 1000 && record.pid < 1020);
  });

  test('readOwner of a missing or unreadable record is null', async () => {
    assert.equal(await readOwner(join(dir, 'absent')), null);
  });

  test('parseOwner accepts only a pid number and a start time string', () => {
    assert.deepEqual(parseOwner('{"pid":12,"startTime":"345","jobId":"x"}'), { pid: 12, startTime: '345' });
    for (const text of [
      '',
      '{',
      'null',
      '{"pid":"12","startTime":"345"}',
      '{"pid":1.5,"startTime":"3"}',
      '{"pid":12,"startTime":345}',
    ]) {
      assert.equal(parseOwner(text), null, text);
    }
  });

  test('isOwnerTempFile recognises the names writeOwner uses for its temp files', () => {
    assert.equal(isOwnerTempFile('.lease-1.0a1b2c3d4e5f.tmp'), true);
    assert.equal(isOwnerTempFile('lease-1'), false);
    assert.equal(isOwnerTempFile('12345'), false);
  });
});

describe('job ids', () => {
  test('are al- and 16 hex digits, and distinct', () => {
    const ids = Array.from({ length: 100 }, () => newJobId());
    for (const id of ids) assert.match(id, JOB_ID_PATTERN);
    assert.equal(new Set(ids).size, ids.length);
  });
});

describe('sandbox directories', () => {
  test('sandboxDirs lays out the state directory, with the lease directory apart', () => {
    assert.deepEqual(sandboxDirs('/var/lib/airlock/sandbox', '/tmp/ids'), {
      root: '/var/lib/airlock/sandbox',
      jobs: '/var/lib/airlock/sandbox/jobs',
      ids: '/tmp/ids',
      runtime: '/var/lib/airlock/sandbox/runtime',
      rootfs: '/var/lib/airlock/sandbox/rootfs',
    });
    assert.equal(sandboxDirs('/x').ids, '/run/airlock/ids');
  });

  test('ensureSandboxDirs refuses a state directory below a parent others cannot traverse', async () => {
    const parent = join(dir, 'private');
    await mkdir(parent, { mode: 0o700 });
    await chmod(parent, 0o700);
    const dirs = sandboxDirs(join(parent, 'state'), join(parent, 'ids'));
    await assert.rejects(ensureSandboxDirs(dirs), {
      name: 'AirlockError',
      code: 'HOST_UNSUPPORTED',
      message: new RegExp(parent),
    });
  });

  test('ensureSandboxDirs creates the directories: traversable ones 0711, private ones 0700', async () => {
    const parent = join(dir, 'open');
    await mkdir(parent);
    await chmod(dir, 0o711);
    await chmod(parent, 0o711);
    const dirs = sandboxDirs(join(parent, 'state'), join(parent, 'ids'));
    await ensureSandboxDirs(dirs);
    for (const path of [dirs.root, dirs.jobs, dirs.rootfs])
      assert.equal((await stat(path)).mode & 0o777, 0o711, path);
    for (const path of [dirs.ids, dirs.runtime]) assert.equal((await stat(path)).mode & 0o777, 0o700, path);
  });
});

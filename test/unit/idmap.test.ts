import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  checkIdPool,
  type IdPool,
  leaseIdRange,
  RANGE_SIZE,
  rangeOfSlot,
  sweepIdLeases,
} from '../../src/sandbox/idmap.js';
import { currentOwner, type Owner, processStartTime } from '../../src/sandbox/state.js';

/**
 * ID range leases in a temporary directory of our own (never /run/airlock): each test makes
 * its own pool directory below it.
 */

const BASE = 2 ** 31;
let root: string;
let owner: Owner;
let counter = 0;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'airlock-idmap-test-'));
  owner = currentOwner();
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function pool(count: number, base = BASE): Promise<IdPool> {
  const dir = join(root, `pool-${counter++}`);
  await mkdir(dir);
  return { dir, base, count };
}

/** The owner record of a process that has exited. */
async function deadOwner(): Promise<Owner> {
  const child = spawn('true', [], { stdio: 'ignore' });
  await once(child, 'exit');
  assert.ok(child.pid !== undefined);
  return { pid: child.pid, startTime: '1' };
}

describe('leaseIdRange', () => {
  test('50 leases from a pool of 64 are distinct, aligned ranges inside the pool', async () => {
    const ids = await pool(64);
    const leases = [];
    for (let i = 0; i < 50; i += 1) leases.push(await leaseIdRange(ids, owner, `al-${i}`));
    const bases = leases.map((lease) => lease.base);
    assert.equal(new Set(bases).size, 50);
    for (const lease of leases) {
      assert.equal(lease.base % RANGE_SIZE, 0);
      assert.ok(lease.base >= BASE && lease.base + lease.size <= BASE + 64 * RANGE_SIZE, String(lease.base));
      assert.equal(lease.size, RANGE_SIZE);
      assert.deepEqual(rangeOfSlot(ids, lease.slot), { base: lease.base, size: lease.size });
    }
    assert.equal((await readdir(ids.dir)).length, 50, 'one lease file per lease, no temp files');
  });

  test('a full pool refuses with SANDBOX_SETUP_FAILED; release() frees the slot again', async () => {
    const ids = await pool(2);
    const first = await leaseIdRange(ids, owner, 'al-a');
    const second = await leaseIdRange(ids, owner, 'al-b');
    assert.notEqual(first.base, second.base);
    await assert.rejects(leaseIdRange(ids, owner, 'al-c'), {
      name: 'AirlockError',
      code: 'SANDBOX_SETUP_FAILED',
      retryable: true,
    });
    await first.release();
    const third = await leaseIdRange(ids, owner, 'al-c');
    assert.equal(third.slot, first.slot);
    assert.equal(third.base, first.base);
  });

  test('release() twice in a row is harmless', async () => {
    const ids = await pool(1);
    const first = await leaseIdRange(ids, owner, 'al-a');
    await first.release();
    await first.release();
    const second = await leaseIdRange(ids, owner, 'al-b');
    assert.equal(second.slot, 0);
    await assert.rejects(leaseIdRange(ids, owner, 'al-c'), { code: 'SANDBOX_SETUP_FAILED' });
  });

  test('a stale release() does not free a range another job has leased since', async () => {
    const ids = await pool(1);
    const first = await leaseIdRange(ids, owner, 'al-a');
    await first.release();
    await leaseIdRange(ids, owner, 'al-b');
    await first.release();
    await assert.rejects(leaseIdRange(ids, owner, 'al-c'), { code: 'SANDBOX_SETUP_FAILED' });
  });

  test('concurrent leases never share a range', async () => {
    const ids = await pool(40);
    const leases = await Promise.all(
      Array.from({ length: 40 }, (_, i) => leaseIdRange(ids, owner, `al-${i}`)),
    );
    assert.equal(new Set(leases.map((lease) => lease.base)).size, 40);
  });

  test('pools in one directory exclude each other exactly on the host ranges they share', async () => {
    const first = await pool(1, BASE);
    const second: IdPool = { dir: first.dir, base: BASE + RANGE_SIZE, count: 1 };
    const both: IdPool = { dir: first.dir, base: BASE, count: 2 };
    assert.equal((await leaseIdRange(first, owner, 'al-a')).base, BASE);
    // A different host range: free, though it is slot 0 of its pool too.
    assert.equal((await leaseIdRange(second, owner, 'al-b')).base, BASE + RANGE_SIZE);
    // Both ranges of this pool are taken, through the other two pools.
    await assert.rejects(leaseIdRange(both, owner, 'al-c'), { code: 'SANDBOX_SETUP_FAILED' });
  });

  test('a pool directory that does not exist is SANDBOX_SETUP_FAILED', async () => {
    await assert.rejects(leaseIdRange({ dir: join(root, 'absent'), base: BASE, count: 4 }, owner, 'al-a'), {
      code: 'SANDBOX_SETUP_FAILED',
    });
  });
});

describe('sweepIdLeases', () => {
  test("removes leases of dead owners and unreadable ones, keeps live owners'", async () => {
    const ids = await pool(8);
    const live = await leaseIdRange(ids, owner, 'al-live');
    const liveName = String(BASE / RANGE_SIZE + live.slot);
    const deadName = String(BASE / RANGE_SIZE + ((live.slot + 1) % 8));
    const brokenName = String(BASE / RANGE_SIZE + ((live.slot + 2) % 8));
    await writeFile(
      join(ids.dir, deadName),
      `${JSON.stringify({ ...(await deadOwner()), jobId: 'al-dead' })}\n`,
    );
    await writeFile(join(ids.dir, brokenName), 'not json');
    const reused = { pid: process.pid, startTime: String(Number(processStartTime(process.pid)) + 1) };
    const reusedName = String(BASE / RANGE_SIZE + ((live.slot + 3) % 8));
    await writeFile(join(ids.dir, reusedName), JSON.stringify(reused));

    assert.equal(await sweepIdLeases(ids), 3);
    assert.deepEqual(await readdir(ids.dir), [liveName]);
  });

  test('removes a writer temp file a minute old, keeps a fresh one', async () => {
    const ids = await pool(8);
    const old = join(ids.dir, '.2.0123456789ab.tmp');
    const fresh = join(ids.dir, '.3.0123456789ab.tmp');
    await writeFile(old, '{}');
    await writeFile(fresh, '{}');
    const longAgo = new Date(Date.now() - 5 * 60_000);
    await utimes(old, longAgo, longAgo);
    await sweepIdLeases(ids);
    assert.deepEqual(await readdir(ids.dir), ['.3.0123456789ab.tmp']);
  });

  test('a missing pool directory sweeps nothing', async () => {
    assert.equal(await sweepIdLeases({ dir: join(root, 'absent'), base: BASE, count: 1 }), 0);
  });
});

describe('checkIdPool', () => {
  test('accepts the default pool and the last one that fits', () => {
    assert.doesNotThrow(() => checkIdPool(BASE, 4096));
    assert.doesNotThrow(() => checkIdPool(0xfffe_0000, 1));
  });

  test('refuses a pool that passes the largest valid ID (0xfffffffe)', () => {
    assert.throws(() => checkIdPool(0xffff_0000, 1), RangeError);
    assert.throws(() => checkIdPool(BASE, 32_768), RangeError);
  });

  test('refuses a base below 65536 and a count below 1', () => {
    assert.throws(() => checkIdPool(0, 1), RangeError);
    assert.throws(() => checkIdPool(BASE, 0), RangeError);
    assert.throws(() => checkIdPool(BASE, 1.5), RangeError);
  });

  test('refuses a base that is not a multiple of 65536', () => {
    assert.throws(() => checkIdPool(BASE + 1, 1), RangeError);
    assert.throws(() => checkIdPool(BASE + RANGE_SIZE / 2, 4), RangeError);
  });
});

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { RANGE_SIZE } from '../../src/sandbox/idmap.js';
import type { RuntimeName } from '../../src/sandbox/job.js';
import { ID_LEASE_DIR } from '../../src/sandbox/state.js';
import { CLI, openTestEngine, removeStateDir, runtimeSkipReason, testStateDir } from './helpers.js';

/**
 * A fault test with a real crash: the Airlock process is SIGKILLed while its job runs; the
 * container, its processes, mounts, cgroups and lease stay behind; the next start's sweep
 * removes all of it.
 */

async function leaseBaseOf(jobId: string): Promise<number | null> {
  for (const name of await readdir(ID_LEASE_DIR).catch(() => [] as string[])) {
    const text = await readFile(join(ID_LEASE_DIR, name), 'utf8').catch(() => '');
    if (text.includes(jobId)) return Number(name) * RANGE_SIZE;
  }
  return null;
}

for (const runtime of ['runc', 'gvisor'] as RuntimeName[]) {
  const skip = runtimeSkipReason(runtime);
  describe(`crash recovery under ${runtime}`, { skip: skip ?? false, timeout: 120_000 }, () => {
    const root = testStateDir(`crash-${runtime}`);
    after(async () => {
      await removeStateDir(root);
    });

    test('a killed Airlock process leaves its job running; the next start sweeps all of it', async () => {
      const child = spawn(
        process.execPath,
        [CLI, 'sandbox', '--runtime', runtime, '--', 'sh', '-c', 'echo started; sleep 1000'],
        { env: { PATH: process.env.PATH, AIRLOCK_SANDBOX_DIR: root }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      for (let i = 0; i < 300 && !output.includes('started'); i += 1) await sleep(50);
      assert.match(output, /started/, 'the job is running');
      const jobs = (await readdir(join(root, 'jobs'))).filter((name) => name.startsWith('al-'));
      assert.equal(jobs.length, 1);
      const jobId = jobs[0] ?? '';
      const base = await leaseBaseOf(jobId);
      assert.notEqual(base, null, 'the job holds an ID lease');
      child.kill('SIGKILL');
      await new Promise((resolve) => child.on('close', resolve));
      await sleep(300);

      const { findLeftovers } = await import('../../src/sandbox/sweep.js');
      const { cgroupScope, detectCgroupLayout } = await import('../../src/sandbox/cgroup.js');
      const { sandboxDirs } = await import('../../src/sandbox/state.js');
      const dirs = sandboxDirs(root);
      const context = {
        dirs,
        cgroups: cgroupScope(detectCgroupLayout(), root),
        pool: { dir: dirs.ids, base: 2 ** 31, count: 4096 },
        runtimeRoots: [join(root, 'runtime', runtime)],
      };
      const orphaned = await findLeftovers(context, jobId, base);
      for (const kind of ['directory', 'mount', 'cgroup', 'runtime state', 'ID lease', 'process']) {
        assert.ok(
          orphaned.some((item) => item.startsWith(kind)),
          `expected a leftover ${kind} before the sweep; found: ${orphaned.join(', ')}`,
        );
      }

      // A fresh engine on the same state directory: its start-up sweep cleans up.
      const { engine } = await openTestEngine(`crash-${runtime}`, { preparedSlots: 0 });
      assert.deepEqual(await findLeftovers(context, jobId, base), []);
      assert.deepEqual((await engine.sweep()).jobs, [], 'a second sweep finds nothing');
      await engine.close();
    });
  });
}

describe('a job whose Airlock process died still ends at its deadline', {
  skip: runtimeSkipReason('runc') ?? false,
  timeout: 60_000,
}, () => {
  const root = testStateDir('deadline');
  after(async () => {
    await removeStateDir(root);
  });

  test('the watchdog kills the job at its timeout with no Airlock process left to do it', async () => {
    const child = spawn(
      process.execPath,
      [CLI, 'sandbox', '--timeout', '1s', '--', 'sh', '-c', 'echo started; sleep 1000'],
      {
        env: { PATH: process.env.PATH, AIRLOCK_SANDBOX_DIR: root, AIRLOCK_KILL_GRACE: '0' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    for (let i = 0; i < 300 && !output.includes('started'); i += 1) await sleep(50);
    assert.match(output, /started/);
    const jobId = (await readdir(join(root, 'jobs'))).find((name) => name.startsWith('al-')) ?? '';
    const base = await leaseBaseOf(jobId);
    assert.notEqual(base, null);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('close', resolve));

    const { processesWithUidIn } = await import('../../src/sandbox/procfs.js');
    const range = base ?? 0;
    assert.ok((await processesWithUidIn(range, range + RANGE_SIZE)).length > 0, 'the job outlived Airlock');
    // Timeout 1 s + grace 0 + the watchdog's 5 s margin, plus slack; no sweep runs meanwhile.
    let left: number[] = [];
    for (let i = 0; i < 40; i += 1) {
      await sleep(250);
      left = await processesWithUidIn(range, range + RANGE_SIZE);
      if (left.length === 0) break;
    }
    assert.deepEqual(left, [], 'no process of the job is left');
  });
});

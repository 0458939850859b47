import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { RuntimeName } from '../../src/sandbox/job.js';
import { DEFAULT_SECCOMP_PROFILE_PATH } from '../../src/sandbox/seccomp.js';
import type { SelftestReport } from '../../src/sandbox/selftest/selftest.js';
import { removeStateDir, runCli, runtimeSkipReason, testStateDir } from './helpers.js';

/** `airlock selftest` end to end, and proof that its probes notice a weakened sandbox. */

for (const runtime of ['runc', 'gvisor', 'crun'] as RuntimeName[]) {
  const skip = runtimeSkipReason(runtime);
  describe(`airlock selftest --runtime ${runtime}`, { timeout: 300_000 }, () => {
    const root = testStateDir(`selftest-${runtime}`);
    after(async () => {
      await removeStateDir(root);
    });

    test('every probe passes', { skip: skip ?? false }, async () => {
      const run = await runCli(['selftest', '--runtime', runtime, '--json'], { AIRLOCK_SANDBOX_DIR: root });
      const report = JSON.parse(run.stdout) as SelftestReport;
      const failed = report.probes.filter((probe) => !probe.pass);
      assert.deepEqual(failed, [], `failed probes: ${JSON.stringify(failed, null, 2)}`);
      assert.equal(run.code, 0);
      assert.ok(report.probes.length >= 30, `${report.probes.length} probes`);
      const names = new Set(report.probes.map((probe) => probe.name));
      for (const name of [
        'capabilities-empty',
        'no-new-privs',
        'seccomp-filter-active',
        'host-uid-unprivileged',
        'no-host-processes',
        'no-host-files',
        'root-read-only',
        'core-pattern-read-only',
        'sysrq-trigger-read-only',
        'modprobe-read-only',
        'no-block-devices',
        'mount-refused',
        'unshare-refused',
        'keyctl-refused',
        'bpf-refused',
        'ptrace-refused',
        'userfaultfd-refused',
        'io-uring-refused',
        'perf-event-refused',
        'kernel-module-refused',
        'only-loopback',
        'no-route-out',
        'no-dns',
        'fork-bomb-contained',
        'memory-hog-killed',
        'disk-filler-capped',
        'output-flood-capped',
        'timeout-kills-everything',
        'nothing-left-behind',
        'isolation-between-jobs',
        'egress-listed-host-works',
        'egress-unlisted-refused',
        'egress-ip-literal-refused',
        'egress-metadata-refused',
        'egress-dns-fails',
        'egress-direct-tcp-fails',
      ]) {
        assert.ok(names.has(name), `probe ${name} ran`);
      }
    });

    test('a runtime that cannot run here makes the selftest fail with the reason', {
      skip: skip === null ? `${runtime} runs here` : false,
    }, async () => {
      const run = await runCli(['selftest', '--runtime', runtime], { AIRLOCK_SANDBOX_DIR: root });
      assert.equal(run.code, 1);
      assert.match(run.stderr, /crun cannot run on this host|not installed/);
    });
  });
}

describe('the selftest notices a weakened seccomp profile', {
  skip: runtimeSkipReason('runc') ?? false,
  timeout: 300_000,
}, () => {
  const root = testStateDir('selftest-weakened');
  let dir: string;
  after(async () => {
    await removeStateDir(root);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  test('allowing keyctl, io_uring, ptrace, bpf, unshare and userfaultfd makes those probes fail', async () => {
    dir = await mkdtemp(join(tmpdir(), 'airlock-weak-'));
    const profile = JSON.parse(await readFile(DEFAULT_SECCOMP_PROFILE_PATH, 'utf8')) as {
      syscalls: { names: string[]; action: string }[];
    };
    profile.syscalls.push({
      names: ['keyctl', 'add_key', 'io_uring_setup', 'ptrace', 'bpf', 'unshare', 'userfaultfd'],
      action: 'SCMP_ACT_ALLOW',
    });
    const path = join(dir, 'weak.json');
    await writeFile(path, JSON.stringify(profile));
    const run = await runCli(['selftest', '--json'], {
      AIRLOCK_SANDBOX_DIR: root,
      AIRLOCK_SECCOMP_PROFILE: path,
    });
    assert.equal(run.code, 1, 'the selftest fails');
    const report = JSON.parse(run.stdout) as SelftestReport;
    const failed = new Set(report.probes.filter((probe) => !probe.pass).map((probe) => probe.name));
    for (const name of [
      'seccomp-filter-active',
      'keyctl-refused',
      'add-key-refused',
      'io-uring-refused',
      'ptrace-refused',
      'unshare-refused',
      'userfaultfd-refused',
    ]) {
      assert.ok(failed.has(name), `${name} should fail; failed: ${[...failed].join(', ')}`);
    }
    // Nothing else: the other layers still hold.
    assert.ok(failed.size <= 9, `unexpected failures: ${[...failed].join(', ')}`);
  });
});

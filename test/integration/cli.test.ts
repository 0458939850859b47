import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { removeStateDir, runCli, runtimeSkipReason, TEST_ROOT, testStateDir } from './helpers.js';

/** `airlock sandbox` as a user runs it: real process, real sandbox, exit codes of DESIGN §6. */

describe('airlock sandbox (CLI)', { timeout: 300_000 }, () => {
  const root = testStateDir('cli');
  const env = { AIRLOCK_SANDBOX_DIR: root };
  let input: string;

  before(async () => {
    input = await mkdtemp(join(tmpdir(), 'airlock-cli-input-'));
    await mkdir(join(input, 'src'));
    await writeFile(join(input, 'src', 'hello.txt'), 'hello from the input\n');
    await writeFile(join(input, 'run.sh'), '#!/bin/sh\ncat src/hello.txt\n');
    await chmod(join(input, 'run.sh'), 0o755);
    await writeFile(join(input, 'data.txt'), 'not a program\n');
  });
  after(async () => {
    await rm(input, { recursive: true, force: true });
    await removeStateDir(root);
  });

  test('streams the job output and exits with its code', async () => {
    const run = await runCli(['sandbox', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3'], env);
    assert.equal(run.code, 3);
    assert.equal(run.stdout, 'out\n');
    assert.equal(run.stderr, 'err\n');
  });

  test('--json prints one object with the documented fields', async () => {
    const run = await runCli(
      ['sandbox', '--json', '--env', 'A=1=2', '--', 'sh', '-c', 'printf "%s" "$A"; echo e >&2'],
      env,
    );
    assert.equal(run.code, 0);
    const doc = JSON.parse(run.stdout) as Record<string, unknown>;
    for (const field of [
      'exitCode',
      'signal',
      'timedOut',
      'oomKilled',
      'wallMs',
      'cpuMs',
      'peakMemoryBytes',
      'stdout',
      'stderr',
      'outputBytes',
      'outputTruncated',
      'runtime',
    ]) {
      assert.ok(field in doc, `field ${field}`);
    }
    assert.equal(doc.stdout, '1=2');
    assert.equal(doc.stderr, 'e\n');
    assert.equal(doc.exitCode, 0);
    assert.equal(doc.runtime, 'runc');
    assert.equal(run.stdout.trim().split('\n').length, 1, 'exactly one line');
  });

  test('--input copies a directory into the workspace', async () => {
    const run = await runCli(['sandbox', '--input', input, '--', './run.sh'], env);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, 'hello from the input\n');
  });

  test('exit codes: 124 timeout, 137 memory, 127 not found, 126 not executable, 128+N signal', async () => {
    const timeout = await runCli(['sandbox', '--timeout', '1s', '--', 'sleep', '30'], env);
    assert.equal(timeout.code, 124);
    assert.match(timeout.stderr, /timed out/);
    const memory = await runCli(
      ['sandbox', '--memory', '64M', '--', 'perl', '-e', 'my $x = "x" x (200 * 1024 * 1024)'],
      env,
    );
    assert.equal(memory.code, 137);
    assert.match(memory.stderr, /memory limit/);
    assert.equal((await runCli(['sandbox', '--', 'no-such-program'], env)).code, 127);
    assert.equal((await runCli(['sandbox', '--input', input, '--', './data.txt'], env)).code, 126);
    assert.equal((await runCli(['sandbox', '--', 'perl', '-e', 'unpack("p", pack("Q", 8))'], env)).code, 139);
  });

  test('--output-limit caps a flood and marks the cut', async () => {
    const run = await runCli(
      ['sandbox', '--output-limit', '1K', '--', 'head', '-c', '100000', '/dev/zero'],
      env,
    );
    assert.equal(run.code, 0);
    assert.ok(run.stdout.length < 1200, `kept ${run.stdout.length}`);
    assert.match(run.stdout, /output truncated: the limit of 1 KiB was reached/);
  });

  test('refuses bad options with exit 125 and a message naming the option', async () => {
    const bad = await runCli(['sandbox', '--memory', 'lots', '--', 'true'], env);
    assert.equal(bad.code, 125);
    assert.match(bad.stderr, /--memory: must be/);
    const tooSmall = await runCli(['sandbox', '--memory', '1M', '--', 'true'], env);
    assert.equal(tooSmall.code, 125);
    assert.match(tooSmall.stderr, /INVALID_JOB: resources.memoryBytes must be between/);
    const unknownRuntime = await runCli(['sandbox', '--runtime', 'docker', '--', 'true'], env);
    assert.equal(unknownRuntime.code, 125);
    const noCommand = await runCli(['sandbox'], env);
    assert.equal(noCommand.code, 125);
    const json = await runCli(['sandbox', '--json', '--timeout', 'soon', '--', 'true'], env);
    assert.equal(json.code, 125);
    assert.equal((JSON.parse(json.stdout) as { error: { code: string } }).error.code, 'INVALID_OPTION');
  });

  test('refuses an invalid or unknown AIRLOCK_ setting instead of falling back', async () => {
    const unknown = await runCli(['sandbox', '--', 'true'], { ...env, AIRLOCK_SANDBOX_DRI: '/x' });
    assert.equal(unknown.code, 125);
    assert.match(unknown.stderr, /INVALID_CONFIG: AIRLOCK_SANDBOX_DRI: is not an Airlock setting/);
    const relative = await runCli(['sandbox', '--', 'true'], { AIRLOCK_SANDBOX_DIR: 'relative/dir' });
    assert.equal(relative.code, 125);
    assert.match(relative.stderr, /must be an absolute path/);
  });

  test('refuses a state directory reached through a link, or below a directory others can write', async () => {
    await mkdir(TEST_ROOT, { recursive: true });
    const base = await mkdtemp(join(TEST_ROOT, 'statedir-'));
    try {
      await chmod(base, 0o755);
      await mkdir(join(base, 'real'));
      await symlink(join(base, 'real'), join(base, 'link'));
      const linked = await runCli(['sandbox', '--', 'true'], {
        AIRLOCK_SANDBOX_DIR: join(base, 'link', 'sandbox'),
      });
      assert.equal(linked.code, 125);
      assert.match(linked.stderr, /INVALID_CONFIG: AIRLOCK_SANDBOX_DIR .* goes through a symbolic link/);
      await mkdir(join(base, 'open'), { mode: 0o777 });
      await chmod(join(base, 'open'), 0o777);
      const open = await runCli(['sandbox', '--', 'true'], {
        AIRLOCK_SANDBOX_DIR: join(base, 'open', 'sandbox'),
      });
      assert.equal(open.code, 125);
      assert.match(open.stderr, /HOST_UNSUPPORTED: .*not writable by others/);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  test('--print-config prints the hardened OCI config and runs nothing', async () => {
    const run = await runCli(
      ['sandbox', '--print-config', '--memory', '256M', '--cpus', '0.5', '--', 'id'],
      env,
    );
    assert.equal(run.code, 0, run.stderr);
    const spec = JSON.parse(run.stdout) as {
      process: { args: string[]; noNewPrivileges: boolean; capabilities: Record<string, string[]> };
      linux: {
        resources: { memory: { limit: number; swap: number }; cpu: { quota: number } };
        seccomp: unknown;
      };
    };
    assert.deepEqual(spec.process.args, ['id']);
    assert.equal(spec.process.noNewPrivileges, true);
    assert.deepEqual(Object.values(spec.process.capabilities).flat(), []);
    assert.equal(spec.linux.resources.memory.limit, 256 * 1024 * 1024);
    assert.equal(spec.linux.resources.memory.swap, 256 * 1024 * 1024);
    assert.equal(spec.linux.resources.cpu.quota, 50_000);
    assert.ok(spec.linux.seccomp);
  });

  const crunReason = runtimeSkipReason('crun');
  test('a runtime that cannot run here is refused with the reason, or replaced only when allowed', {
    skip: crunReason === null ? 'crun works on this host: nothing to refuse' : false,
  }, async () => {
    const refused = await runCli(['sandbox', '--runtime', 'crun', '--', 'true'], env);
    assert.equal(refused.code, 125);
    assert.match(refused.stderr, /RUNTIME_UNAVAILABLE: crun cannot run on this host/);
    const fallback = await runCli(
      ['sandbox', '--runtime', 'crun', '--fallback-runtime', 'runc', '--', 'echo', 'ok'],
      env,
    );
    assert.equal(fallback.code, 0);
    assert.equal(fallback.stdout, 'ok\n');
    assert.match(fallback.stderr, /crun cannot run here; the job ran under runc/);
  });

  test('--version and --help exit 0', async () => {
    const version = await runCli(['--version'], env);
    assert.equal(version.code, 0);
    assert.match(version.stdout, /^\d+\.\d+\.\d+/);
    const help = await runCli(['sandbox', '--help'], env);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--output-limit/);
  });
});

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAirlockError } from '../../src/errors.js';
import type { RunningJob, SandboxEngine } from '../../src/sandbox/engine.js';
import type { RuntimeName } from '../../src/sandbox/job.js';
import { openTestEngine, outputCollector, runtimeSkipReason } from './helpers.js';

/**
 * One conformance suite for every runtime (CONVENTIONS: two implementations of an interface,
 * one suite). Real sandboxes, real limits, real kills: nothing here is mocked.
 */

const MiB = 1024 * 1024;

export function sandboxConformance(runtime: RuntimeName): void {
  const skip = runtimeSkipReason(runtime);
  describe(`sandbox engine under ${runtime}`, { skip: skip ?? false, timeout: 600_000 }, () => {
    let engine: SandboxEngine;
    let root: string;
    let cleanup: () => Promise<void>;

    before(async () => {
      ({ engine, root, cleanup } = await openTestEngine(`conformance-${runtime}`));
    });
    after(async () => {
      await cleanup();
    });

    /** Runs a shell command and returns the result with its output. */
    async function sh(script: string, extra: Parameters<SandboxEngine['run']>[0] = { command: [] }) {
      const out = outputCollector();
      const result = await engine.run(
        { runtime, ...extra, command: ['sh', '-c', script] },
        { onOutput: out.onOutput },
      );
      return { result, stdout: out.stdout(), stderr: out.stderr() };
    }

    async function assertNothingLeft(job: RunningJob | undefined): Promise<void> {
      assert.ok(job, 'the job started');
      await engine.settle();
      assert.deepEqual(await engine.leftovers(job.jobId, job.hostUidBase), []);
    }

    test('runs a command, keeps stdout and stderr apart and returns its exit code', async () => {
      const { result, stdout, stderr } = await sh('echo out; echo err >&2; exit 7');
      assert.equal(stdout, 'out\n');
      assert.equal(stderr, 'err\n');
      assert.equal(result.exitCode, 7);
      assert.equal(result.signal, null);
      assert.equal(result.runtime, runtime);
      assert.equal(result.timedOut, false);
      assert.equal(result.outputBytes, 8);
    });

    test('gives the job its environment, /workspace as working directory and a non-root user', async () => {
      const { stdout } = await sh('echo "$GREETING|$HOME|$PWD|$(id -u)|$(id -g)|$(hostname)"', {
        command: [],
        env: { GREETING: 'hello world' },
      });
      assert.equal(stdout, 'hello world|/tmp|/workspace|1000|1000|sandbox\n');
    });

    test('a job that dies of a signal reports the signal', async () => {
      // The job's first process is init of its pid namespace: it ignores signals sent from
      // inside, but not a fault. This reads address 8.
      const result = await engine.run({ runtime, command: ['perl', '-e', 'unpack("p", pack("Q", 8))'] });
      assert.equal(result.exitCode, null);
      assert.equal(result.signal, 'SIGSEGV');
    });

    test('copies files in, lets the job write, and reads results after the run without following links', async () => {
      let written = '';
      let linkRefused = false;
      let owner = -1;
      let running: RunningJob | undefined;
      const result = await engine.run(
        {
          runtime,
          command: [
            'sh',
            '-c',
            'sh ./build.sh && ln -s /etc/passwd /workspace/leak && ln -s / /workspace/rootlink',
          ],
          files: [
            { path: 'build.sh', content: 'cat src/in.txt | tr a-z A-Z > out.txt\n', mode: 0o755 },
            { path: 'src/in.txt', content: 'abc\n' },
          ],
        },
        {
          onStarted: (job) => {
            running = job;
          },
          inspect: async (workspace) => {
            written = (await workspace.readFile('out.txt', 1024)).toString();
            // On the host, the job's files belong to its own host UID (range base + 1000).
            owner = (await stat(`${root}/jobs/${running?.jobId}/disk/work/out.txt`)).uid;
            for (const path of ['leak', 'rootlink/etc/passwd']) {
              await workspace.readFile(path, 1024).then(
                () => undefined,
                (error: unknown) => {
                  linkRefused = isAirlockError(error, 'INPUT_REJECTED');
                  if (!linkRefused) throw error;
                },
              );
            }
            const entries = await workspace.list();
            assert.equal(entries.find((entry) => entry.path === 'leak')?.type, 'symlink');
          },
        },
      );
      assert.equal(result.exitCode, 0);
      assert.equal(written, 'ABC\n');
      assert.ok(linkRefused, 'links out of the workspace are refused');
      assert.equal(owner, (running?.hostUidBase ?? 0) + 1000);
      await assertNothingLeft(running);
    });

    test('reports a missing command as 127 and a non-executable file as 126', async () => {
      const missing = await engine.run({ runtime, command: ['no-such-command-airlock'] });
      assert.equal(missing.exitCode, 127);
      assert.equal(missing.startFailure?.kind, 'command-not-found');
      const notExecutable = await engine.run({
        runtime,
        command: ['/workspace/script.sh'],
        files: [{ path: 'script.sh', content: '#!/bin/sh\necho hi\n', mode: 0o644 }],
      });
      assert.equal(notExecutable.exitCode, 126);
      assert.equal(notExecutable.startFailure?.kind, 'not-executable');
    });

    test('the timeout kills every process: TERM ignored, setsid, double fork', async () => {
      let running: RunningJob | undefined;
      const script =
        'trap "" TERM; setsid sh -c \'trap "" TERM; while :; do sleep 1; done\' & ' +
        '(sh -c \'trap "" TERM; sleep 1000\' &); echo started; sleep 1000';
      const out = outputCollector();
      const started = performance.now();
      const result = await engine.run(
        { runtime, command: ['sh', '-c', script], resources: { timeoutMs: 1500 } },
        { onOutput: out.onOutput, onStarted: (job) => (running = job) },
      );
      const elapsed = performance.now() - started;
      assert.equal(out.stdout(), 'started\n');
      assert.equal(result.timedOut, true);
      assert.equal(result.signal, 'SIGKILL');
      assert.ok(result.wallMs >= 1500, `ran ${result.wallMs} ms`);
      assert.ok(elapsed < 10_000, `took ${elapsed} ms to stop`);
      await assertNothingLeft(running);
    });

    test('a job at its memory limit is killed and reported as a memory kill', async () => {
      let running: RunningJob | undefined;
      const result = await engine.run(
        {
          runtime,
          command: ['perl', '-e', 'my @a; push @a, "x" x (8 * 1024 * 1024) for 1 .. 64; print "survived\\n"'],
          resources: { memoryBytes: 96 * MiB, timeoutMs: 60_000 },
        },
        { onStarted: (job) => (running = job) },
      );
      assert.equal(result.oomKilled, true);
      assert.equal(result.signal, 'SIGKILL');
      assert.equal(result.timedOut, false);
      assert.ok(result.peakMemoryBytes >= 90 * MiB, `peak ${result.peakMemoryBytes}`);
      await assertNothingLeft(running);
    });

    test('records CPU time and peak memory', async () => {
      const { result } = await sh(
        // Busy until the process itself has used 0.6 s of CPU (times(), not the wall clock:
        // other tests may share the CPUs).
        'perl -e \'my $x = "y" x (48 * 1024 * 1024); my $i = 0; $i++ while (times)[0] < 0.6; print length($x), "\\n"\'',
      );
      assert.equal(result.exitCode, 0);
      assert.ok(result.cpuMs >= 550, `cpuMs ${result.cpuMs}`);
      assert.ok(result.peakMemoryBytes >= 48 * MiB, `peak ${result.peakMemoryBytes}`);
    });

    test('the CPU quota holds a busy job to its share', async () => {
      // Two seconds of wall time at a quarter of a CPU is about half a second of CPU.
      const { result } = await sh("perl -e 'my $t = time; 1 while time - $t < 3'", {
        command: [],
        resources: { cpus: 0.25 },
      });
      assert.equal(result.exitCode, 0);
      assert.ok(
        result.cpuMs < 0.25 * result.wallMs + 400,
        `cpuMs ${result.cpuMs} over ${result.wallMs} ms wall`,
      );
      assert.ok(result.cpuMs > 0.1 * result.wallMs, `cpuMs ${result.cpuMs} over ${result.wallMs} ms wall`);
    });

    test('the disk holds the workspace and /tmp together and stops a filler at its size', async () => {
      const { result, stdout } = await sh(
        'dd if=/dev/zero of=/tmp/a bs=1M count=20 2>/dev/null; dd if=/dev/zero of=/workspace/b bs=1M count=40 2>&1 | grep -o "No space left on device"; echo "$(($(wc -c < /tmp/a) + $(wc -c < /workspace/b)))"',
        { command: [], resources: { diskBytes: 32 * MiB } },
      );
      assert.equal(result.exitCode, 0);
      const [message, total] = stdout.trim().split('\n');
      assert.equal(message, 'No space left on device');
      assert.ok(Number(total) <= 32 * MiB && Number(total) > 16 * MiB, `wrote ${total} bytes`);
    });

    test('caps output, marks the cut and counts what was discarded', async () => {
      const out = outputCollector();
      const result = await engine.run(
        { runtime, command: ['head', '-c', '3000000', '/dev/zero'], resources: { outputBytes: 10_000 } },
        { onOutput: out.onOutput },
      );
      assert.equal(result.exitCode, 0);
      assert.equal(result.outputTruncated, true);
      assert.equal(result.outputBytes, 3_000_000);
      assert.match(out.stdout(), /\[airlock\] output truncated/);
      assert.equal(out.stdout().indexOf('[airlock]'), 10_001);
    });

    test('the pids limit stops a fork bomb', async () => {
      const { result, stdout } = await sh(
        'perl -e \'$| = 1; my $n = 0; while (1) { my $p = fork; last unless defined $p; if ($p == 0) { sleep 20; exit 0 } $n++ } print "forked $n\\n"\'',
        { command: [], resources: { pids: 32, timeoutMs: 30_000 } },
      );
      assert.equal(result.exitCode, 0, stdout);
      const forked = Number(/forked (\d+)/.exec(stdout)?.[1]);
      assert.ok(forked > 0 && forked < 32, `forked ${forked}`);
    });

    test('cancelling stops the job', async () => {
      const controller = new AbortController();
      let running: RunningJob | undefined;
      const pending = engine.run(
        { runtime, command: ['sleep', '100'] },
        {
          signal: controller.signal,
          onStarted: (job) => {
            running = job;
          },
        },
      );
      setTimeout(() => controller.abort(), 700);
      const result = await pending;
      assert.equal(result.cancelled, true);
      assert.ok(result.signal === 'SIGTERM' || result.signal === 'SIGKILL', `signal ${result.signal}`);
      await assertNothingLeft(running);
    });

    test('refuses a job beyond its bounds before creating anything', async () => {
      await assert.rejects(
        engine.run({ runtime, command: ['true'], resources: { memoryBytes: 1024 } }),
        (error: unknown) => isAirlockError(error, 'INVALID_JOB'),
      );
    });

    test('refuses a job that asks for more than the host has', async () => {
      await assert.rejects(
        engine.run({ runtime, command: ['true'], resources: { memoryBytes: totalmem() + 1024 ** 3 } }),
        (error: unknown) =>
          isAirlockError(error, 'INVALID_JOB') && /more than this host has/.test(error.message),
      );
      const pidMax = Number(await readFile('/proc/sys/kernel/pid_max', 'utf8'));
      await assert.rejects(
        engine.run({ runtime, command: ['true'], resources: { pids: Math.min(65_536, pidMax) } }),
        (error: unknown) => isAirlockError(error, 'INVALID_JOB') && /kernel.pid_max/.test(error.message),
      );
      // The disk is allocated up front: one larger than the host's free space is refused.
      await assert.rejects(
        engine.run({ runtime, command: ['true'], resources: { diskBytes: 16 * 1024 ** 4 } }),
        (error: unknown) =>
          isAirlockError(error, 'SANDBOX_SETUP_FAILED') && /less free disk/.test(error.message),
      );
    });

    test("no other host user can read or write the job's workspace while it runs", async () => {
      let running: RunningJob | undefined;
      const out = outputCollector();
      const pending = engine.run(
        { runtime, command: ['sh', '-c', 'echo secret > /workspace/creds; echo ready; sleep 2'] },
        { onOutput: out.onOutput, onStarted: (job) => (running = job) },
      );
      for (let i = 0; i < 100 && !out.stdout().includes('ready'); i += 1) await sleep(30);
      assert.ok(running);
      const disk = `${root}/jobs/${running.jobId}/disk`;
      // As the host's nobody (UID 65534), through setpriv from util-linux.
      const asNobody = (args: string[]): number =>
        spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...args]).status ?? -1;
      assert.notEqual(asNobody(['cat', `${disk}/work/creds`]), 0, 'nobody read the workspace');
      assert.notEqual(asNobody(['touch', `${disk}/tmp/planted`]), 0, 'nobody wrote into /tmp');
      assert.notEqual(asNobody(['ls', disk]), 0, 'nobody listed the disk');
      assert.equal((await pending).exitCode, 0);
    });
  });
}

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { jobFromOptions, resultDocument } from '../../src/cli/sandbox-command.js';
import type { SandboxResult } from '../../src/sandbox/engine.js';
import { validateJob } from '../../src/sandbox/job.js';

describe('jobFromOptions', () => {
  test('builds a job that validateJob accepts', () => {
    const job = jobFromOptions(['make', '-j4'], {
      runtime: 'gvisor',
      fallbackRuntime: ['runc', 'crun'],
      memory: '1G',
      disk: '2G',
      timeout: '30s',
      cpus: '2',
      pids: '128',
      outputLimit: '64K',
      env: ['CC=gcc', 'CFLAGS=-O2 -DX=1'],
      input: '/home/me/project',
    });
    assert.deepEqual(job, {
      command: ['make', '-j4'],
      env: { CC: 'gcc', CFLAGS: '-O2 -DX=1' },
      resources: {
        cpus: 2,
        memoryBytes: 2 ** 30,
        pids: 128,
        timeoutMs: 30_000,
        diskBytes: 2 ** 31,
        outputBytes: 64 * 1024,
      },
      runtime: 'gvisor',
      fallbackRuntimes: ['runc', 'crun'],
      inputDir: '/home/me/project',
    });
    assert.equal(validateJob(job).runtime, 'gvisor');
  });

  test('defaults: runc, no fallbacks, no env, no input', () => {
    const job = jobFromOptions(['true'], {});
    assert.equal(job.runtime, 'runc');
    assert.deepEqual(job.fallbackRuntimes, []);
    assert.deepEqual(job.env, {});
    assert.equal('inputDir' in job, false);
  });

  test('--image is carried to the job, and validated there (tags refused)', () => {
    const ref = `debian@sha256:${'c'.repeat(64)}`;
    assert.equal(jobFromOptions(['true'], { image: ref }).image, ref);
    assert.equal('image' in jobFromOptions(['true'], {}), false);
    assert.throws(() => validateJob(jobFromOptions(['true'], { image: 'debian:12' })), {
      name: 'AirlockError',
      code: 'INVALID_JOB',
    });
  });

  test('an empty command is INVALID_OPTION', () => {
    assert.throws(() => jobFromOptions([], {}), { name: 'AirlockError', code: 'INVALID_OPTION' });
  });

  test('a bad option is INVALID_OPTION naming it', () => {
    assert.throws(() => jobFromOptions(['true'], { memory: '12X' }), {
      code: 'INVALID_OPTION',
      message: /--memory/,
    });
    assert.throws(() => jobFromOptions(['true'], { env: ['=x'] }), {
      code: 'INVALID_OPTION',
      message: /--env/,
    });
    assert.throws(() => jobFromOptions(['true'], { runtime: 'docker' }), {
      code: 'INVALID_OPTION',
      message: /--runtime/,
    });
    assert.throws(() => jobFromOptions(['true'], { fallbackRuntime: ['runc', 'kata'] }), {
      code: 'INVALID_OPTION',
      message: /--fallback-runtime/,
    });
  });
});

describe('resultDocument', () => {
  const result: SandboxResult = {
    jobId: 'al-0123456789abcdef',
    egress: null,
    exitCode: 2,
    signal: null,
    timedOut: false,
    oomKilled: false,
    cancelled: false,
    wallMs: 40,
    cpuMs: 10,
    peakMemoryBytes: 4096,
    outputBytes: 9,
    outputTruncated: false,
    runtime: 'crun',
    startFailure: null,
    configSha256: 'c'.repeat(64),
    seccompSha256: 'd'.repeat(64),
  };

  test('has exactly the documented keys', () => {
    assert.deepEqual(Object.keys(resultDocument(result, 'out', 'err')).sort(), [
      'cancelled',
      'configSha256',
      'cpuMs',
      'exitCode',
      'jobId',
      'oomKilled',
      'outputBytes',
      'outputTruncated',
      'peakMemoryBytes',
      'runtime',
      'seccompSha256',
      'signal',
      'startFailure',
      'stderr',
      'stdout',
      'timedOut',
      'wallMs',
    ]);
  });

  test('carries the result and the output unchanged', () => {
    const { stdout, stderr, ...rest } = resultDocument(result, 'hello\n', 'oops\n');
    assert.equal(stdout, 'hello\n');
    assert.equal(stderr, 'oops\n');
    // The document has no egress: `airlock sandbox` grants none.
    const { egress: _egress, ...expected } = result;
    assert.deepEqual(rest, expected);
  });

  test('survives JSON with nulls kept (scripts rely on the keys being present)', () => {
    const parsed = JSON.parse(JSON.stringify(resultDocument(result, '', ''))) as Record<string, unknown>;
    assert.equal(parsed.signal, null);
    assert.equal(parsed.startFailure, null);
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { JobSpecV1 } from '../../src/api/types.js';
import { workerJobOf } from '../../src/worker/spec.js';

const INVALID_JOB = { name: 'AirlockError', code: 'INVALID_JOB' };

/** A spec with the given fields over a minimal valid one (the cast stands for what a server sends). */
function spec(fields: Record<string, unknown> = {}): JobSpecV1 {
  return { version: 1, project: 'web', command: ['true'], ...fields } as JobSpecV1;
}

describe('workerJobOf: mapping', () => {
  test('a minimal spec: the command, runc, no fallback, nothing else', () => {
    assert.deepEqual(workerJobOf(spec()), {
      sandbox: { command: ['true'], runtime: 'runc', fallbackRuntimes: [], egress: [] },
      outputs: [],
    });
  });

  test('an egress allowlist reaches the sandbox normalised; "none" is no egress', () => {
    const job = workerJobOf(
      spec({
        network: { egress: ['registry.npmjs.org:443', '[2001:db8:0::1]:443', 'registry.npmjs.org:443'] },
      }),
    );
    assert.deepEqual(job.sandbox.egress, ['registry.npmjs.org:443', '[2001:db8::1]:443']);
    assert.deepEqual(workerJobOf(spec({ network: 'none' })).sandbox.egress, []);
  });

  test('resources are converted to the sandbox units, only those given', () => {
    const job = workerJobOf(
      spec({
        resources: { cpus: 0.5, memoryMiB: 256, pids: 64, timeoutSeconds: 90, diskMiB: 100, outputKiB: 8 },
      }),
    );
    assert.deepEqual(job.sandbox.resources, {
      cpus: 0.5,
      memoryBytes: 256 * 1024 * 1024,
      pids: 64,
      timeoutMs: 90_000,
      diskBytes: 100 * 1024 * 1024,
      outputBytes: 8 * 1024,
    });
    assert.deepEqual(workerJobOf(spec({ resources: { memoryMiB: 64 } })).sandbox.resources, {
      memoryBytes: 64 * 1024 * 1024,
    });
  });

  test('env, runtime, inputs (text and base64, with mode) and outputs are carried over', () => {
    const job = workerJobOf(
      spec({
        runtime: 'gvisor',
        image: 'host',
        network: 'none',
        env: { CI: '1' },
        inputs: [
          { path: 'run.sh', content: 'echo hi\n', mode: 0o755 },
          { path: 'data/blob.bin', contentBase64: Buffer.from([0, 1, 255]).toString('base64') },
        ],
        outputs: ['dist/**', './out//a.bin'],
      }),
    );
    assert.equal(job.sandbox.runtime, 'gvisor');
    assert.deepEqual(job.sandbox.env, { CI: '1' });
    assert.deepEqual(job.sandbox.files, [
      { path: 'run.sh', content: 'echo hi\n', mode: 0o755 },
      { path: 'data/blob.bin', content: Buffer.from([0, 1, 255]) },
    ]);
    assert.deepEqual(job.outputs, ['dist/**', 'out/a.bin']);
    assert.equal(job.sandbox.image, 'host');
    assert.equal(workerJobOf(spec()).sandbox.image, undefined);
  });

  test('a digest-pinned image is carried over as written', () => {
    const ref = `debian@sha256:${'a'.repeat(64)}`;
    assert.equal(workerJobOf(spec({ image: ref })).sandbox.image, ref);
  });
});

describe('workerJobOf: refusals (INVALID_JOB)', () => {
  const refused: [string, Record<string, unknown>, RegExp][] = [
    ['a network that is neither "none" nor an allowlist', { network: 'host' }, /network must be "none" or/],
    ['an unknown network field', { network: { egress: [], dns: true } }, /network: unknown field "dns"/],
    ['a malformed egress entry', { network: { egress: ['https://example.com'] } }, /egress entry "https/],
    ['an image by tag', { image: 'docker.io/library/alpine' }, /pinned by digest as NAME@sha256/],
    ['an image with a short digest', { image: 'alpine@sha256:abc' }, /64 lower-case hex/],
    ['memory below the bound', { resources: { memoryMiB: 8 } }, /memoryMiB must be between 16 and/],
    ['a timeout above the bound', { resources: { timeoutSeconds: 8 * 24 * 3600 } }, /timeoutSeconds/],
    ['a fractional MiB', { resources: { diskMiB: 16.5 } }, /diskMiB must be a whole number/],
    ['a resource that is a string', { resources: { pids: '64' } }, /pids must be a number/],
    ['an unknown resource', { resources: { gpus: 1 } }, /unknown resource "gpus"/],
    ['pids outside the bound', { resources: { pids: 4 } }, /pids must be between 8 and 65536/],
    [
      'an input with both contents',
      { inputs: [{ path: 'a', content: 'x', contentBase64: 'eA==' }] },
      /exactly one/,
    ],
    ['an input with none', { inputs: [{ path: 'a' }] }, /exactly one/],
    ['an input that is not base64', { inputs: [{ path: 'a', contentBase64: 'not base64!' }] }, /base64/],
    ['an input outside the workspace', { inputs: [{ path: '../etc/passwd', content: 'x' }] }, /\.\./],
    ['an input with set-id bits', { inputs: [{ path: 'a', content: 'x', mode: 0o4755 }] }, /mode/],
    ['an absolute output pattern', { outputs: ['/etc/**'] }, /relative/],
    ['an output pattern going up', { outputs: ['../x'] }, /\.\./],
    ['outputs that are not an array', { outputs: 'dist/**' }, /outputs must be an array/],
    ['an empty command', { command: [] }, /command must be a non-empty array/],
    ['an unknown runtime', { runtime: 'kata' }, /runtime must be one of/],
    ['a bad env name', { env: { 'A=B': 'x' } }, /env name/],
  ];
  for (const [what, fields, message] of refused) {
    test(what, () => {
      assert.throws(() => workerJobOf(spec(fields)), { ...INVALID_JOB, message });
    });
  }

  test('resources at the exact bounds are accepted', () => {
    const job = workerJobOf(
      spec({ resources: { memoryMiB: 16, pids: 65_536, outputKiB: 0, timeoutSeconds: 0.1 } }),
    );
    assert.deepEqual(job.sandbox.resources, {
      memoryBytes: 16 * 1024 * 1024,
      pids: 65_536,
      outputBytes: 0,
      timeoutMs: 100,
    });
  });
});

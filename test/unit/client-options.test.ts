import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { parseJobsQuery } from '../../src/cli/jobs-command.js';
import { specFromRunOptions } from '../../src/cli/run-command.js';
import { tokenRequest } from '../../src/cli/token-command.js';
import { parseLogRecord } from '../../src/client/api-client.js';
import { exitCodeOfEnd } from '../../src/client/follow.js';
import { printable, table } from '../../src/client/format.js';
import { DEFAULT_INPUT_LIMITS, readInputDir } from '../../src/client/inputs.js';

const invalidOption = (option: string) => ({
  name: 'AirlockError',
  code: 'INVALID_OPTION',
  message: new RegExp(`--${option}\\b`),
});

describe('specFromRunOptions', () => {
  test('sizes and durations become the job spec units', () => {
    const spec = specFromRunOptions(['make'], {
      cpus: '0.5',
      memory: '1.5G',
      pids: '64',
      timeout: '2m',
      disk: '2048M',
      outputLimit: '1M',
      runtime: 'gvisor',
      project: 'web',
      environment: 'prod',
      env: ['A=1', 'B=x=y'],
    });
    assert.deepEqual(spec, {
      version: 1,
      project: 'web',
      environment: 'prod',
      runtime: 'gvisor',
      command: ['make'],
      env: { A: '1', B: 'x=y' },
      resources: {
        cpus: 0.5,
        memoryMiB: 1536,
        pids: 64,
        timeoutSeconds: 120,
        diskMiB: 2048,
        outputKiB: 1024,
      },
    });
  });

  test("--image and --egress become the spec's image and network, checked and normalised", () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const spec = specFromRunOptions(['npm', 'ci'], {
      image: `debian@${digest}`,
      egress: ['registry.npmjs.org:443', '[2001:db8:0::1]:443'],
    });
    assert.equal(spec.image, `debian@${digest}`);
    assert.deepEqual(spec.network, { egress: ['registry.npmjs.org:443', '[2001:db8::1]:443'] });
    assert.throws(() => specFromRunOptions(['true'], { image: 'debian:12' }), {
      code: 'INVALID_OPTION',
      message: /^--image: .*tags are not accepted/,
    });
    assert.throws(() => specFromRunOptions(['true'], { egress: ['https://example.com'] }), {
      code: 'INVALID_OPTION',
      message: /^--egress: egress entry "https/,
    });
  });

  test('defaults: project "default", environment "dev", no runtime (the server picks), no resources or env', () => {
    assert.deepEqual(specFromRunOptions(['true'], {}), {
      version: 1,
      project: 'default',
      environment: 'dev',
      command: ['true'],
    });
  });

  const notWhole: [string, Parameters<typeof specFromRunOptions>[1], RegExp][] = [
    ['memory', { memory: '1500K' }, /whole MiB.*use 2M/],
    ['disk', { disk: '100000000' }, /whole MiB.*use 96M/],
    ['output-limit', { outputLimit: '1000' }, /whole KiB.*use 1K/],
    ['timeout', { timeout: '1500ms' }, /whole seconds.*use 2s/],
  ];
  for (const [option, options, message] of notWhole) {
    test(`--${option} not whole in its unit is refused with the value that is`, () => {
      assert.throws(() => specFromRunOptions(['x'], options), { ...invalidOption(option), message });
    });
  }

  test('property: whole MiB memory is kept exactly', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1024 * 1024 }), (mib) => {
        assert.equal(specFromRunOptions(['x'], { memory: `${mib}M` }).resources?.memoryMiB, mib);
        assert.equal(specFromRunOptions(['x'], { memory: `${mib * 1024}K` }).resources?.memoryMiB, mib);
      }),
    );
  });

  test('--fallback-runtime is refused as local-only; bad names and no command are INVALID_OPTION', () => {
    assert.throws(() => specFromRunOptions(['x'], { fallbackRuntime: ['crun'] }), {
      ...invalidOption('fallback-runtime'),
      message: /airlock sandbox/,
    });
    assert.throws(() => specFromRunOptions(['x'], { project: 'Web!' }), invalidOption('project'));
    assert.throws(() => specFromRunOptions(['x'], { environment: '' }), invalidOption('environment'));
    assert.throws(() => specFromRunOptions(['x'], { runtime: 'docker' }), invalidOption('runtime'));
    assert.throws(() => specFromRunOptions([], {}), { code: 'INVALID_OPTION' });
  });
});

describe('readInputDir', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'airlock-inputs-test-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  async function dir(name: string): Promise<string> {
    const path = join(tmp, name);
    await mkdir(path);
    return path;
  }

  test('files of the tree, binary-safe, with their permission bits', async () => {
    const root = await dir('tree');
    await mkdir(join(root, 'src', 'deep'), { recursive: true });
    await mkdir(join(root, 'empty'));
    await writeFile(join(root, 'build.sh'), '#!/bin/sh\nmake\n');
    await chmod(join(root, 'build.sh'), 0o755);
    const binary = Buffer.from([0, 255, 1, 254, 10, 13]);
    await writeFile(join(root, 'src', 'deep', 'data.bin'), binary);
    await chmod(join(root, 'src', 'deep', 'data.bin'), 0o4640);
    const inputs = readInputDir(root);
    assert.deepEqual(
      inputs.map(({ path, mode }) => ({ path, mode })).sort((a, b) => a.path.localeCompare(b.path)),
      [
        { path: 'build.sh', mode: 0o755 },
        { path: 'src/deep/data.bin', mode: 0o640 },
      ],
    );
    const data = inputs.find((input) => input.path === 'src/deep/data.bin');
    assert.deepEqual(Buffer.from(data?.contentBase64 ?? '', 'base64'), binary);
  });

  test('a symbolic link is refused, not followed', async () => {
    const root = await dir('links');
    await symlink('/etc/passwd', join(root, 'passwd'));
    assert.throws(() => readInputDir(root), { code: 'INPUT_REJECTED', message: /symbolic link/ });
  });

  test('the input itself being a link, missing or a file is refused', async () => {
    const target = await dir('real');
    await symlink(target, join(tmp, 'link-to-dir'));
    assert.throws(() => readInputDir(join(tmp, 'link-to-dir')), { code: 'INPUT_REJECTED' });
    assert.throws(() => readInputDir(join(tmp, 'absent')), { code: 'INPUT_REJECTED' });
    await writeFile(join(tmp, 'file'), 'x');
    assert.throws(() => readInputDir(join(tmp, 'file')), {
      code: 'INPUT_REJECTED',
      message: /not a directory/,
    });
  });

  test('a FIFO is refused', async () => {
    const root = await dir('fifo');
    execFileSync('mkfifo', [join(root, 'pipe')]);
    assert.throws(() => readInputDir(root), { code: 'INPUT_REJECTED', message: /FIFO/ });
  });

  test('too many files, and too many bytes, are refused before anything is sent', async () => {
    const root = await dir('many');
    for (let index = 0; index < 6; index += 1) await writeFile(join(root, `f${index}`), 'x');
    assert.throws(() => readInputDir(root, { ...DEFAULT_INPUT_LIMITS, maxFiles: 5 }), {
      code: 'INPUT_REJECTED',
      message: /more than 5 files/,
    });
    const big = await dir('big');
    await writeFile(join(big, 'blob'), Buffer.alloc(64 * 1024));
    assert.throws(() => readInputDir(big, { ...DEFAULT_INPUT_LIMITS, maxEncodedBytes: 64 * 1024 }), {
      code: 'INPUT_REJECTED',
      message: /too large.*AIRLOCK_MAX_BODY/,
    });
  });
});

describe('exit status and log records', () => {
  test('the server exit status is the exit code; a missing or impossible one is 125 (124 for a timeout)', () => {
    assert.equal(exitCodeOfEnd({ state: 'succeeded', terminal: true, exitStatus: 0 }), 0);
    assert.equal(exitCodeOfEnd({ state: 'failed', terminal: true, exitStatus: 42 }), 42);
    assert.equal(exitCodeOfEnd({ state: 'killed', terminal: true, exitStatus: 137 }), 137);
    assert.equal(exitCodeOfEnd({ state: 'timed_out', terminal: true, exitStatus: null }), 124);
    assert.equal(exitCodeOfEnd({ state: 'failed', terminal: true, exitStatus: null }), 125);
    assert.equal(exitCodeOfEnd({ state: 'failed', terminal: true, exitStatus: 300 }), 125);
    assert.equal(exitCodeOfEnd({ state: 'failed', terminal: true, exitStatus: -1 }), 125);
  });

  test('log records are checked before use', () => {
    assert.deepEqual(parseLogRecord({ seq: 1, stream: 'stdout', data: 'aGk=' }), {
      seq: 1,
      stream: 'stdout',
      data: 'aGk=',
    });
    assert.deepEqual(parseLogRecord({ end: { state: 'succeeded', terminal: true, exitStatus: 0 } }), {
      end: { state: 'succeeded', terminal: true, exitStatus: 0 },
    });
    for (const bad of [
      null,
      [],
      { seq: -1, stream: 'stdout', data: '' },
      { seq: 1, stream: 'stdin', data: '' },
      { seq: 1.5, stream: 'stdout', data: '' },
      { seq: 1, stream: 'stdout', data: 5 },
      { end: { state: 'exploded', terminal: true, exitStatus: 0 } },
      { end: { state: 'failed', terminal: 'yes', exitStatus: 0 } },
      { end: null },
    ]) {
      assert.throws(() => parseLogRecord(bad), { code: 'INTERNAL' }, JSON.stringify(bad));
    }
  });
});

describe('other options', () => {
  test('token create: roles, projects (required for submitter and viewer), expiry in seconds', () => {
    assert.deepEqual(
      tokenRequest({ principal: 'ci', role: 'submitter', project: ['web', 'web', 'api'], expires: '90m' }),
      {
        principal: 'ci',
        role: 'submitter',
        projects: ['web', 'api'],
        expiresInSeconds: 5400,
      },
    );
    assert.deepEqual(tokenRequest({ principal: 'ops', role: 'admin' }), {
      principal: 'ops',
      role: 'admin',
      projects: ['*'],
    });
    assert.throws(() => tokenRequest({ principal: 'ci', role: 'submitter' }), invalidOption('project'));
    assert.throws(() => tokenRequest({ principal: 'ci', role: 'viewer' }), invalidOption('project'));
    assert.throws(() => tokenRequest({ principal: 'ci', role: 'root' }), invalidOption('role'));
    assert.throws(
      () => tokenRequest({ principal: 'ci', role: 'admin', expires: 'soon' }),
      invalidOption('expires'),
    );
  });

  test('jobs: --limit 1..200 and a known --state', () => {
    assert.deepEqual(parseJobsQuery({}), { limit: 50 });
    assert.deepEqual(parseJobsQuery({ all: true, state: 'running', project: 'web' }), {
      limit: 200,
      state: 'running',
      project: 'web',
    });
    assert.throws(() => parseJobsQuery({ limit: '0' }), invalidOption('limit'));
    assert.throws(() => parseJobsQuery({ limit: '201' }), invalidOption('limit'));
    assert.throws(() => parseJobsQuery({ state: 'done' }), invalidOption('state'));
  });

  test('server text is printed with control characters escaped', () => {
    assert.equal(printable('ok\x1b]0;pwned\x07\n'), 'ok\\x1b]0;pwned\\x07\\x0a');
    assert.equal(table(['A', 'B'], [['x\x1b', 'y']]), 'A      B\nx\\x1b  y\n');
  });
});

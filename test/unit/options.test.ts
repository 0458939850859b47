import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseEnvPairs, parseResources, parseRuntime } from '../../src/cli/options.js';

/** The AirlockError for a bad option: INVALID_OPTION, and the message names --option. */
function refusal(option: string): { name: string; code: string; message: RegExp } {
  return { name: 'AirlockError', code: 'INVALID_OPTION', message: new RegExp(`--${option}\\b`) };
}

describe('parseResources', () => {
  test('parses sizes, durations, counts and CPUs', () => {
    assert.deepEqual(
      parseResources({
        cpus: '0.5',
        memory: '256M',
        pids: '64',
        timeout: '2m',
        disk: '1G',
        outputLimit: '512K',
      }),
      {
        cpus: 0.5,
        memoryBytes: 256 * 1024 * 1024,
        pids: 64,
        timeoutMs: 120_000,
        diskBytes: 1024 * 1024 * 1024,
        outputBytes: 512 * 1024,
      },
    );
  });

  test('a bare timeout is seconds; no options give no resources', () => {
    assert.deepEqual(parseResources({ timeout: '90' }), { timeoutMs: 90_000 });
    assert.deepEqual(parseResources({}), {});
  });

  const invalid: [string, keyof Parameters<typeof parseResources>[0], string][] = [
    ['memory', 'memory', '12X'],
    ['memory', 'memory', '-1M'],
    ['disk', 'disk', 'big'],
    ['output-limit', 'outputLimit', '1e3'],
    ['timeout', 'timeout', 'soon'],
    ['timeout', 'timeout', '1d'],
    ['pids', 'pids', '1.5'],
    ['pids', 'pids', '-4'],
    ['pids', 'pids', 'many'],
    ['cpus', 'cpus', 'two'],
    ['cpus', 'cpus', '-1'],
    ['cpus', 'cpus', '1e3'],
    ['cpus', 'cpus', ''],
  ];
  for (const [option, key, value] of invalid) {
    test(`--${option} ${JSON.stringify(value)} is INVALID_OPTION naming --${option}`, () => {
      assert.throws(() => parseResources({ [key]: value }), refusal(option));
    });
  }
});

describe('parseEnvPairs', () => {
  test('splits at the first "=": the value may hold more', () => {
    assert.deepEqual(parseEnvPairs(['A=b=c', 'EMPTY=', 'URL=http://x/?q=1']), {
      A: 'b=c',
      EMPTY: '',
      URL: 'http://x/?q=1',
    });
  });

  test('the last of two equal names wins', () => {
    assert.deepEqual(parseEnvPairs(['A=1', 'A=2']), { A: '2' });
  });

  for (const pair of ['=x', 'NOVALUE', '']) {
    test(`refuses ${JSON.stringify(pair)}`, () => {
      assert.throws(() => parseEnvPairs([pair]), refusal('env'));
    });
  }
});

describe('parseRuntime', () => {
  test('accepts runc, crun and gvisor', () => {
    for (const name of ['runc', 'crun', 'gvisor']) assert.equal(parseRuntime('runtime', name), name);
  });

  test('refuses anything else, naming the option', () => {
    assert.throws(() => parseRuntime('runtime', 'runsc'), refusal('runtime'));
    assert.throws(() => parseRuntime('fallback-runtime', 'docker'), refusal('fallback-runtime'));
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EXIT, exitCodeOf } from '../../src/cli/exit-codes.js';
import type { SandboxResult } from '../../src/sandbox/engine.js';

/** A job that ran to completion with exit code 0; each test changes what it is about. */
function result(overrides: Partial<SandboxResult>): SandboxResult {
  return {
    jobId: 'al-0123456789abcdef',
    egress: null,
    exitCode: 0,
    signal: null,
    timedOut: false,
    oomKilled: false,
    cancelled: false,
    wallMs: 12,
    cpuMs: 3,
    peakMemoryBytes: 1 << 20,
    outputBytes: 0,
    outputTruncated: false,
    runtime: 'runc',
    startFailure: null,
    configSha256: 'c'.repeat(64),
    seccompSha256: 'd'.repeat(64),
    ...overrides,
  };
}

describe('exitCodeOf', () => {
  test('a job that exits gives its own exit code', () => {
    assert.equal(exitCodeOf(result({ exitCode: 0 })), 0);
    assert.equal(exitCodeOf(result({ exitCode: 3 })), 3);
    assert.equal(exitCodeOf(result({ exitCode: 255 })), 255);
  });

  test('a timed-out job gives 124, even though it was killed by a signal', () => {
    assert.equal(exitCodeOf(result({ timedOut: true, exitCode: null, signal: 'SIGKILL' })), 124);
    assert.equal(EXIT.TIMED_OUT, 124);
  });

  test('a memory kill gives 137', () => {
    assert.equal(exitCodeOf(result({ oomKilled: true, exitCode: null, signal: 'SIGKILL' })), 137);
  });

  test('a command that is not found gives 127, one that is not executable 126', () => {
    const notFound = { kind: 'command-not-found', message: 'exec: "x": executable file not found' } as const;
    const notExecutable = { kind: 'not-executable', message: 'exec: "/w/x": permission denied' } as const;
    assert.equal(exitCodeOf(result({ exitCode: 1, startFailure: notFound })), 127);
    assert.equal(exitCodeOf(result({ exitCode: 1, startFailure: notExecutable })), 126);
  });

  test('a job killed by signal N gives 128+N', () => {
    assert.equal(exitCodeOf(result({ exitCode: null, signal: 'SIGTERM' })), 143);
    assert.equal(exitCodeOf(result({ exitCode: null, signal: 'SIGKILL' })), 137);
    assert.equal(exitCodeOf(result({ exitCode: null, signal: 'SIGSEGV' })), 139);
    assert.equal(exitCodeOf(result({ exitCode: null, signal: 'SIGINT' })), 130);
  });

  test('a result with neither an exit code nor a signal is an Airlock failure (125)', () => {
    assert.equal(exitCodeOf(result({ exitCode: null, signal: null })), 125);
  });
});

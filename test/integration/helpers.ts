import { spawn } from 'node:child_process';
import { rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { cgroupScope, detectCgroupLayout } from '../../src/sandbox/cgroup.js';
import { SandboxEngine, type SandboxEngineOptions } from '../../src/sandbox/engine.js';
import type { RuntimeName } from '../../src/sandbox/job.js';
import { findExecutable, RUNTIME_DRIVERS } from '../../src/sandbox/runtimes.js';
import { loadSeccompProfile } from '../../src/sandbox/seccomp.js';

/**
 * Shared set-up of the integration tests: a real engine on a state directory of its own
 * (so its sweep never touches another test's jobs, nor a real installation's), removed with
 * everything below it when the test file ends.
 */

export const TEST_ROOT = '/var/lib/airlock-test';
export const REPO_ROOT = new URL('../../../', import.meta.url).pathname;
export const CLI = join(REPO_ROOT, 'dist/src/cli/bin.js');

export function testStateDir(name: string): string {
  return join(TEST_ROOT, `${name}-${process.pid}`);
}

export function testEngineOptions(root: string): SandboxEngineOptions {
  return {
    root,
    idBase: 2 ** 31,
    idRanges: 4096,
    killGraceMs: 500,
    runtimePaths: {},
    seccomp: loadSeccompProfile(),
  };
}

export async function openTestEngine(
  name: string,
  overrides: Partial<SandboxEngineOptions> = {},
): Promise<{ engine: SandboxEngine; root: string; cleanup: () => Promise<void> }> {
  const root = testStateDir(name);
  const engine = await SandboxEngine.open({ ...testEngineOptions(root), ...overrides });
  return {
    engine,
    root,
    cleanup: async () => {
      await engine.close().catch(() => undefined);
      await removeStateDir(root);
    },
  };
}

/** Removes a test state directory after sweeping it, and its cgroup scope. */
export async function removeStateDir(root: string): Promise<void> {
  // Opening an engine sweeps the directory: whatever a failed test left is removed.
  const sweeper = await SandboxEngine.open({ ...testEngineOptions(root), preparedSlots: 0 }).catch(
    () => null,
  );
  await sweeper?.close().catch(() => undefined);
  await rm(root, { recursive: true, force: true });
  const scope = cgroupScope(detectCgroupLayout(), root);
  for (const mount of scope.layout.allMounts) await rmdir(join(mount, scope.group)).catch(() => undefined);
}

/** Why a runtime cannot run on this host (null when it can): tests are skipped with this reason. */
export function runtimeSkipReason(runtime: RuntimeName): string | null {
  const driver = RUNTIME_DRIVERS[runtime];
  if (findExecutable(driver.binary) === null)
    return `${runtime} is not installed (${driver.binary} not in PATH)`;
  return driver.hostIncompatibility(detectCgroupLayout());
}

export interface CliRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the built `airlock` CLI with the given state directory. */
export function runCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 120_000,
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Collects a job's output. */
export function outputCollector(): {
  onOutput: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
  stdout: () => string;
  stderr: () => string;
} {
  const chunks = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  return {
    onOutput: (stream, chunk) => chunks[stream].push(chunk),
    stdout: () => Buffer.concat(chunks.stdout).toString('utf8'),
    stderr: () => Buffer.concat(chunks.stderr).toString('utf8'),
  };
}

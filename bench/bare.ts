import { spawn } from 'node:child_process';
import { mkdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { detectCgroupLayout } from '../src/sandbox/cgroup.js';
import type { SandboxEngine } from '../src/sandbox/engine.js';
import { type IdLease, leaseIdRange } from '../src/sandbox/idmap.js';
import type { SandboxJob } from '../src/sandbox/job.js';
import type { OciSpec } from '../src/sandbox/oci-spec.js';
import { JOB_GID, JOB_UID } from '../src/sandbox/process.js';
import { findExecutable, RUNTIME_DRIVERS } from '../src/sandbox/runtimes.js';
import { currentOwner } from '../src/sandbox/state.js';
import { assignWorkspace, createWorkspace, removeWorkspace } from '../src/sandbox/workspace.js';

/**
 * The bare baseline: the very bundle Airlock would write for a job (same config, same
 * hardening, same host image root, a disk prepared the same way), run with `runc run` and
 * nothing else — no Airlock set-up, supervision or clean-up. Prepared once; each run uses a
 * fresh container id and cgroup path.
 */

/** How many bare runs were retried after runc's known cgroup v1 start failure. */
export const bareRetries = { count: 0 };

export interface BareBundle {
  run(): Promise<number>;
  close(): Promise<void>;
}

export async function prepareBareBundle(
  engine: SandboxEngine,
  job: SandboxJob,
  dir: string,
): Promise<BareBundle> {
  const driver = RUNTIME_DRIVERS[job.runtime ?? 'runc'];
  const binary = findExecutable(driver.binary);
  if (binary === null) throw new Error(`${driver.binary} is not installed`);
  // What an interrupted earlier run left: its disk may still be mounted.
  await removeWorkspace(dir).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o711 });
  const lease: IdLease = await leaseIdRange(
    { dir: '/run/airlock/ids', base: 2 ** 31, count: 4096 },
    currentOwner(),
    'bench',
  );
  const workspace = await createWorkspace(dir, job.resources?.diskBytes ?? 1024 ** 3);
  await assignWorkspace(
    workspace,
    { uid: lease.base + JOB_UID, gid: lease.base + JOB_GID },
    { uid: lease.base, gid: lease.base },
  );
  const spec: OciSpec = await engine.describeBundle(job);
  for (const mount of spec.mounts) {
    if (mount.destination === '/workspace') mount.source = workspace.workDir;
    if (mount.destination === '/tmp') mount.source = workspace.tmpDir;
  }
  spec.linux.uidMappings = [{ containerID: 0, hostID: lease.base, size: lease.size }];
  spec.linux.gidMappings = [{ containerID: 0, hostID: lease.base, size: lease.size }];
  const stateRoot = join(dir, 'state');
  await mkdir(stateRoot, { mode: 0o700 });
  let counter = 0;
  const runOnce = async (): Promise<number> => {
    counter += 1;
    // Unique across bundles too: bundles run side by side, each in a cgroup of its own.
    const id = `bench-${process.pid}-${basename(dir)}-${counter}`;
    spec.linux.cgroupsPath = `/airlock/bench/${id}`;
    await writeFile(join(dir, 'config.json'), JSON.stringify(spec));
    const started = performance.now();
    let stderr = '';
    const code = await new Promise<number | null>((resolve) => {
      const args = [...driver.globalArgs(stateRoot, null), ...driver.runArgs(dir, id)];
      const child = spawn(binary, args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      child.stdout.resume();
      child.stderr.on('data', (chunk: Buffer) => {
        if (stderr.length < 4096) stderr += chunk.toString();
      });
      child.on('close', resolve);
    });
    const elapsed = performance.now() - started;
    if (code !== 0)
      throw new Error(`bare ${driver.binary} run exited ${code}: ${stderr.trim().slice(0, 2000)}`);
    return elapsed;
  };
  return {
    run: async () => {
      // runc 1.1 sometimes fails a start under load on a cgroup v1 host ("resulting devices
      // cgroup doesn't precisely match target"): that attempt is retried, and its time not
      // counted (which, if anything, favours the bare side).
      for (let attempt = 1; ; attempt += 1) {
        try {
          return await runOnce();
        } catch (error) {
          if (attempt >= 3 || !/precisely match target/.test((error as Error).message)) throw error;
          bareRetries.count += 1;
        }
      }
    },
    close: async () => {
      await removeWorkspace(dir);
      await rm(dir, { recursive: true, force: true });
      await lease.release();
      const layout = detectCgroupLayout();
      for (const mount of layout.allMounts)
        await rmdir(join(mount, 'airlock', 'bench')).catch(() => undefined);
    },
  };
}

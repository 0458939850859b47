import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { type CgroupScope, JobCgroup, jobCgroupDirs, listJobCgroups, removeJobCgroups } from './cgroup.js';
import { runHostCommand } from './host-command.js';
import { type IdPool, RANGE_SIZE, sweepIdLeases } from './idmap.js';
import { mountsBelow } from './mountinfo.js';
import { processesNaming, processesWithUidIn } from './procfs.js';
import type { RuntimeDriver } from './runtimes.js';
import { JOB_ID_PATTERN, ownerAlive, readOwner, type SandboxDirs } from './state.js';
import { workspacePaths } from './workspace.js';

/**
 * The sweep: removes everything of jobs whose Airlock process died (SIGKILL, power loss,
 * OOM) — processes, containers, mounts, loop devices, cgroups, bundles, ID leases — and
 * never touches a job whose owner is alive, so several Airlock processes on one host (a
 * worker and an `airlock sandbox` run, or tests in parallel) sweep safely.
 */

export interface SweepContext {
  readonly dirs: SandboxDirs;
  readonly cgroups: CgroupScope;
  readonly pool: IdPool;
  readonly runtimes: readonly { driver: RuntimeDriver; path: string; stateRoot: string }[];
  /** The host image root in use by this process; others are removed once no live engine uses them. */
  readonly currentImage: string;
}

export interface SweepReport {
  /** Jobs of dead owners that were removed. */
  readonly jobs: string[];
  /** Jobs left alone because their owner process is alive. */
  readonly live: number;
  readonly containers: number;
  readonly cgroups: number;
  readonly leases: number;
}

/** A job directory without an owner record younger than this may be mid-creation. */
const CREATION_GRACE_MS = 60_000;

async function ageMs(path: string): Promise<number> {
  return stat(path).then(
    (info) => Date.now() - info.mtimeMs,
    () => Number.POSITIVE_INFINITY,
  );
}

/**
 * Whether job `id` belongs to a live Airlock process, decided from its owner record at the
 * moment of asking. Every resource of a job (cgroup, container) is created after its job
 * directory and owner record, so a job another process is starting right now is live here,
 * whenever the sweep looks at it.
 */
async function isLive(dirs: SandboxDirs, id: string): Promise<boolean> {
  const jobDir = join(dirs.jobs, id);
  const owner = await readOwner(join(jobDir, 'owner.json'));
  if (owner !== null) return ownerAlive(owner);
  // A directory without its record yet is being created (younger than the grace period).
  return (await ageMs(jobDir)) < CREATION_GRACE_MS;
}

export async function sweepSandboxState(context: SweepContext): Promise<SweepReport> {
  const { dirs, cgroups } = context;
  const dead: string[] = [];
  let live = 0;
  for (const name of await readdir(dirs.jobs).catch(() => [] as string[])) {
    if (!JOB_ID_PATTERN.test(name)) continue;
    if (await isLive(dirs, name)) live += 1;
    else dead.push(name);
  }

  // Containers the runtimes still know about, of jobs that are not alive.
  let containers = 0;
  for (const { driver, path, stateRoot } of context.runtimes) {
    const names = await readdir(stateRoot).catch(() => [] as string[]);
    const ids = new Set(names.flatMap((name) => name.match(/al-[0-9a-f]{16}/g) ?? []));
    for (const id of ids) {
      if (await isLive(dirs, id)) continue;
      // Kill from the host first: a runtime cannot always signal a paused (OOM) sandbox.
      await new JobCgroup(cgroups, id).killAll();
      await runHostCommand(path, [...driver.globalArgs(stateRoot, null), ...driver.deleteArgs(id)], {
        timeoutMs: 30_000,
      });
      containers += 1;
    }
  }

  // Cgroups of jobs that are not alive (with or without a job directory).
  let removedCgroups = 0;
  for (const id of await listJobCgroups(cgroups)) {
    if (!JOB_ID_PATTERN.test(id) || (await isLive(dirs, id))) continue;
    await new JobCgroup(cgroups, id).killAll();
    await removeJobCgroups(cgroups, id);
    removedCgroups += 1;
  }

  for (const id of dead) {
    // The runtime's own processes for the job (an orphaned `runc run`).
    for (const pid of await processesNaming(id)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    const jobDir = join(dirs.jobs, id);
    // Its disk (and anything else mounted below it) is unmounted, deepest first; every process
    // of the job is dead by now, so nothing holds the mount.
    for (const point of mountsBelow(jobDir)) {
      const result = await runHostCommand('umount', [point]);
      if (result.code !== 0) await runHostCommand('umount', ['-l', point]);
    }
    await detachLoopDevices(workspacePaths(jobDir).image);
    await rm(jobDir, { recursive: true, force: true });
  }

  const leases = await sweepIdLeases(context.pool);
  await sweepHostImages(dirs.rootfs, context.currentImage);
  return { jobs: dead, live, containers, cgroups: removedCgroups, leases };
}

/** The marker by which a live engine says it uses a host image root: rootfs/.in-use-<name>-<pid>. */
export function imageInUseMarker(rootfsDir: string, image: string, pid: number): string {
  return join(rootfsDir, `.in-use-${basename(image)}-${pid}`);
}

/** Removes host image roots that no live engine uses (and markers of dead engines). */
async function sweepHostImages(rootfsDir: string, currentImage: string): Promise<void> {
  const names = await readdir(rootfsDir).catch(() => [] as string[]);
  const inUse = new Set([basename(currentImage)]);
  for (const name of names) {
    const marker = /^\.in-use-(host-[0-9a-f]+)-\d+$/.exec(name);
    if (marker === null || marker[1] === undefined) continue;
    const owner = await readOwner(join(rootfsDir, name));
    if (owner !== null && ownerAlive(owner)) inUse.add(marker[1]);
    else await rm(join(rootfsDir, name), { force: true });
  }
  for (const name of names) {
    if (!name.startsWith('host-') || inUse.has(name)) continue;
    const path = join(rootfsDir, name);
    if ((await ageMs(path)) > CREATION_GRACE_MS) await rm(path, { recursive: true, force: true });
  }
}

/** Detaches loop devices still bound to a (deleted) disk image, left by a crash mid-mount. */
async function detachLoopDevices(image: string): Promise<void> {
  const result = await runHostCommand('losetup', ['-j', image]);
  if (result.code !== 0) return;
  for (const line of result.stdout.split('\n')) {
    const device = line.split(':')[0];
    if (device?.startsWith('/dev/loop')) await runHostCommand('losetup', ['-d', device]);
  }
}

export interface LeftoverContext {
  readonly dirs: SandboxDirs;
  readonly cgroups: CgroupScope;
  readonly pool: IdPool;
  readonly runtimeRoots: readonly string[];
}

/**
 * Everything of one job that is still on the host: its directory, mounts, cgroups in any
 * hierarchy, runtime state, ID lease and any process running as one of its host IDs.
 * Empty means the job left nothing behind (the selftest and the fault tests check this).
 */
export async function findLeftovers(
  context: LeftoverContext,
  jobId: string,
  hostUidBase: number | null,
): Promise<string[]> {
  const found: string[] = [];
  const jobDir = join(context.dirs.jobs, jobId);
  if (await exists(jobDir)) found.push(`directory ${jobDir}`);
  for (const point of mountsBelow(jobDir)) found.push(`mount ${point}`);
  for (const dir of jobCgroupDirs(context.cgroups, jobId)) {
    if (await exists(dir)) found.push(`cgroup ${dir}`);
  }
  for (const root of context.runtimeRoots) {
    for (const name of await readdir(root).catch(() => [] as string[])) {
      if (name.includes(jobId)) found.push(`runtime state ${join(root, name)}`);
    }
  }
  for (const name of await readdir(context.pool.dir).catch(() => [] as string[])) {
    const owner = await readFile(join(context.pool.dir, name), 'utf8').catch(() => '');
    if (owner.includes(jobId)) found.push(`ID lease ${name}`);
  }
  if (hostUidBase !== null) {
    for (const pid of await processesWithUidIn(hostUidBase, hostUidBase + RANGE_SIZE)) {
      found.push(`process ${pid}`);
    }
  }
  // The runtime's own processes for the job (runc run, runsc gofer and sandbox) name it in argv.
  for (const pid of await processesNaming(jobId)) found.push(`runtime process ${pid}`);
  return found;
}

function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

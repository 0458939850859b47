import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AirlockError } from '../errors.js';
import type { SandboxResources } from './job.js';
import { type MountEntry, readMountInfo } from './mountinfo.js';
import { CPU_PERIOD_US, cpuQuotaUs } from './resources.js';

/**
 * Airlock's own cgroup per job. The runtime puts the container at <parent>/ctr and removes
 * that leaf when the container ends; the parent is Airlock's. It is what lets Airlock
 *  - read the job's CPU time and peak memory after the runtime has deleted its cgroup
 *    (parents count their children's usage),
 *  - see a job reach its memory limit (cgroup v1: the OOM killer is disabled in the job's
 *    cgroup, so the job pauses and Airlock kills all of it; v2: memory.events),
 *  - kill every process of the job from the host, whatever the runtime does (freeze, then
 *    SIGKILL each process; cgroup.kill on v2),
 *  - hold the memory, pids and CPU limits a second time, as a backstop should a runtime
 *    apply the bundle's limits differently.
 */

/** Name of Airlock's top-level cgroup in every hierarchy. */
export const CGROUP_ROOT_NAME = 'airlock';

/**
 * Where one Airlock state directory keeps its jobs' cgroups: airlock/<tag>/, the tag derived
 * from the state directory. Two Airlock installations on one host (a worker and a test run,
 * say) therefore never sweep each other's jobs.
 */
export interface CgroupScope {
  readonly layout: CgroupLayout;
  /** Relative path below each hierarchy's mount, e.g. "airlock/s3f2a9c01b2". */
  readonly group: string;
}

export function cgroupScope(layout: CgroupLayout, stateDir: string): CgroupScope {
  const tag = createHash('sha256').update(stateDir).digest('hex').slice(0, 10);
  return { layout, group: `${CGROUP_ROOT_NAME}/s${tag}` };
}
/** Leaf below the job's cgroup where the runtime puts the container. */
export const CONTAINER_LEAF = 'ctr';

export type CgroupLayout =
  | {
      readonly version: 1;
      /** Mount point of each v1 controller we use (memory, cpu, cpuacct, pids, freezer). */
      readonly controllers: Readonly<Record<V1Controller, string>>;
      /** Every cgroup mount (v1 hierarchies, named ones, and a hybrid v2), for clean-up. */
      readonly allMounts: readonly string[];
      /** The hybrid v2 mount and its enabled controllers, if any. */
      readonly unified: { readonly mount: string; readonly controllers: readonly string[] } | null;
    }
  | { readonly version: 2; readonly mount: string; readonly allMounts: readonly string[] };

const V1_CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'pids', 'freezer'] as const;
type V1Controller = (typeof V1_CONTROLLERS)[number];

export function layoutFromMounts(
  all: readonly MountEntry[],
  readControllers: (dir: string) => string,
): CgroupLayout {
  const mounts = all.filter((entry) => entry.type === 'cgroup' || entry.type === 'cgroup2');
  const allMounts = mounts.map((mount) => mount.mountPoint);
  const v1 = mounts.filter((mount) => mount.type === 'cgroup');
  const v2 = mounts.find((mount) => mount.type === 'cgroup2');
  if (v1.length === 0) {
    if (v2 === undefined) {
      throw new AirlockError(
        'HOST_UNSUPPORTED',
        'no cgroup filesystem is mounted; Airlock needs cgroups to limit jobs',
      );
    }
    return { version: 2, mount: v2.mountPoint, allMounts };
  }
  const controllers: Partial<Record<V1Controller, string>> = {};
  for (const name of V1_CONTROLLERS) {
    const mount = v1.find((candidate) => candidate.superOptions.includes(name));
    if (mount === undefined) {
      throw new AirlockError(
        'HOST_UNSUPPORTED',
        `the cgroup v1 "${name}" controller is not mounted; Airlock needs memory, cpu, cpuacct, pids and freezer`,
      );
    }
    controllers[name] = mount.mountPoint;
  }
  const unified =
    v2 === undefined
      ? null
      : { mount: v2.mountPoint, controllers: readControllers(v2.mountPoint).split(/\s+/).filter(Boolean) };
  return { version: 1, controllers: controllers as Record<V1Controller, string>, allMounts, unified };
}

export function detectCgroupLayout(): CgroupLayout {
  return layoutFromMounts(readMountInfo(), (dir) => {
    try {
      return readFileSync(join(dir, 'cgroup.controllers'), 'utf8');
    } catch {
      return '';
    }
  });
}

/**
 * Why memory+swap cannot be limited on this host, or null. With swap on and no per-cgroup
 * swap accounting, a job could use swap beyond its memory limit: Airlock refuses to start.
 */
export function swapAccountingProblem(layout: CgroupLayout): string | null {
  const swapKb = Number(/^SwapTotal:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
  if (swapKb === 0) return null;
  const accounted =
    layout.version === 1
      ? existsSync(join(layout.controllers.memory, 'memory.memsw.limit_in_bytes'))
      : !/\bswapaccount=0\b/.test(readFileSync('/proc/cmdline', 'utf8'));
  if (accounted) return null;
  return (
    'this host has swap but the kernel does not account it per cgroup, so a job could use swap beyond its ' +
    'memory limit: turn swap off (swapoff -a) or boot with swapaccount=1'
  );
}

/** Human description for `selftest` and docs: "v1 (hybrid: v2 has hugetlb)". */
export function describeLayout(layout: CgroupLayout): string {
  if (layout.version === 2) return `cgroup v2 (unified) at ${layout.mount}`;
  if (layout.unified === null) return 'cgroup v1 (legacy)';
  const enabled =
    layout.unified.controllers.length > 0 ? layout.unified.controllers.join(' ') : 'no controllers';
  return `cgroup v1+v2 hybrid (v2 at ${layout.unified.mount} has ${enabled})`;
}

export interface CgroupUsage {
  /** CPU time of every process of the job, in milliseconds. */
  readonly cpuMs: number;
  /** Highest memory use of the job in bytes (0 where the kernel does not record it). */
  readonly peakMemoryBytes: number;
}

/*
 * Files of the cgroup filesystems are read and written with synchronous calls: they are the
 * kernel's in-memory state (microseconds each), and a job takes dozens of them, each of
 * which would otherwise be a round trip through libuv's thread pool.
 */

async function readText(path: string): Promise<string | null> {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function keyedValue(text: string | null, key: string): number {
  if (text === null) return 0;
  for (const line of text.split('\n')) {
    const [name, value] = line.split(/\s+/);
    if (name === key && value !== undefined) return Number(value) || 0;
  }
  return 0;
}

/** The file is absent where the kernel does not account swap (and the host has none: checked at start). */
function ignoreMissing(error: NodeJS.ErrnoException): void {
  if (error.code !== 'ENOENT') throw error;
}

async function write(path: string, value: string): Promise<void> {
  writeFileSync(path, value);
}

/** Every cgroup directory below `dir`, deepest first, then `dir` itself. */
async function treeDeepestFirst(dir: string): Promise<string[]> {
  const out: string[] = [];
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const entry of entries) {
    if (entry.isDirectory()) out.push(...(await treeDeepestFirst(join(dir, entry.name))));
  }
  out.push(dir);
  return out;
}

async function processesIn(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const group of await treeDeepestFirst(dir)) {
    const text = await readText(join(group, 'cgroup.procs'));
    if (text === null) continue;
    for (const line of text.split('\n')) if (line.trim() !== '') pids.push(Number(line));
  }
  return pids;
}

export class JobCgroup {
  readonly layout: CgroupLayout;
  readonly scope: CgroupScope;
  readonly jobId: string;

  constructor(scope: CgroupScope, jobId: string) {
    this.scope = scope;
    this.layout = scope.layout;
    this.jobId = jobId;
  }

  /** The `linux.cgroupsPath` for the bundle. */
  get containerPath(): string {
    return `/${this.scope.group}/${this.jobId}/${CONTAINER_LEAF}`;
  }

  private dirIn(mount: string): string {
    return join(mount, this.scope.group, this.jobId);
  }

  private v1(controller: V1Controller): string {
    if (this.layout.version !== 1) throw new TypeError('not a cgroup v1 layout');
    return this.dirIn(this.layout.controllers[controller]);
  }

  /**
   * Creates the job's cgroup and writes the backstop limits. `hostPids` is the runtime's
   * host pids limit for the job (see RuntimeDriver.hostPids).
   */
  async create(resources: SandboxResources, hostPids: number): Promise<void> {
    try {
      if (this.layout.version === 1) await this.createV1(resources, hostPids);
      else await this.createV2(resources, hostPids);
    } catch (error) {
      if (error instanceof AirlockError) throw error;
      throw new AirlockError(
        'SANDBOX_SETUP_FAILED',
        `cannot create the job's cgroup: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }

  private async createV1(resources: SandboxResources, hostPids: number): Promise<void> {
    const dirs = new Set(V1_CONTROLLERS.map((name) => this.v1(name)));
    for (const dir of dirs) mkdirSync(dir, { recursive: true });
    const memory = this.v1('memory');
    await write(join(memory, 'memory.limit_in_bytes'), String(resources.memoryBytes));
    // memory+swap = memory: no swap (the file exists only where swap accounting is on).
    await write(join(memory, 'memory.memsw.limit_in_bytes'), String(resources.memoryBytes)).catch(
      ignoreMissing,
    );
    // Pause instead of killing one process at the limit; Airlock then kills the whole job.
    await write(join(memory, 'memory.oom_control'), '1');
    await write(join(this.v1('pids'), 'pids.max'), String(hostPids));
    const cpu = this.v1('cpu');
    await write(join(cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
    await write(join(cpu, 'cpu.cfs_quota_us'), String(cpuQuotaUs(resources.cpus)));
  }

  private async createV2(resources: SandboxResources, hostPids: number): Promise<void> {
    if (this.layout.version !== 2) throw new TypeError('not a cgroup v2 layout');
    const top = join(this.layout.mount, CGROUP_ROOT_NAME);
    const scoped = join(this.layout.mount, this.scope.group);
    const dir = this.dirIn(this.layout.mount);
    mkdirSync(dir, { recursive: true });
    // Delegate the controllers down to the job's cgroup and its container leaf.
    for (const parent of [this.layout.mount, top, scoped, dir]) {
      await write(join(parent, 'cgroup.subtree_control'), '+memory +pids +cpu');
    }
    await write(join(dir, 'memory.max'), String(resources.memoryBytes));
    await write(join(dir, 'memory.swap.max'), '0').catch(ignoreMissing);
    await write(join(dir, 'memory.oom.group'), '1');
    await write(join(dir, 'pids.max'), String(hostPids));
    await write(join(dir, 'cpu.max'), `${cpuQuotaUs(resources.cpus)} ${CPU_PERIOD_US}`);
  }

  /** True while the job sits at its memory limit with nothing left to reclaim (cgroup v1). */
  async atMemoryLimit(): Promise<boolean> {
    if (this.layout.version !== 1) return false;
    const memory = this.v1('memory');
    for (const dir of [join(memory, CONTAINER_LEAF), memory]) {
      if (keyedValue(await readText(join(dir, 'memory.oom_control')), 'under_oom') > 0) return true;
    }
    return false;
  }

  /** Whether the kernel killed a process of the job for memory (cgroup v2; v1 pauses instead). */
  async oomKilled(): Promise<boolean> {
    if (this.layout.version !== 2) return false;
    const events = await readText(join(this.dirIn(this.layout.mount), 'memory.events'));
    return keyedValue(events, 'oom_kill') > 0;
  }

  async usage(): Promise<CgroupUsage> {
    if (this.layout.version === 1) {
      const cpuNs = Number((await readText(join(this.v1('cpuacct'), 'cpuacct.usage')))?.trim() ?? 0) || 0;
      const peak =
        Number((await readText(join(this.v1('memory'), 'memory.max_usage_in_bytes')))?.trim() ?? 0) || 0;
      return { cpuMs: Math.round(cpuNs / 1e6), peakMemoryBytes: peak };
    }
    const dir = this.dirIn(this.layout.mount);
    const cpuUs = keyedValue(await readText(join(dir, 'cpu.stat')), 'usage_usec');
    const peak = Number((await readText(join(dir, 'memory.peak')))?.trim() ?? 0) || 0;
    return { cpuMs: Math.round(cpuUs / 1000), peakMemoryBytes: peak };
  }

  /** The directory whose tree lists every process of the job (pids hierarchy on v1). */
  get processDir(): string {
    return this.layout.version === 1 ? this.v1('pids') : this.dirIn(this.layout.mount);
  }

  /** Host PIDs of every process in the job's cgroup tree. */
  async processes(): Promise<number[]> {
    return processesIn(this.processDir);
  }

  /**
   * Kills every process of the job from the host: freeze (so nothing forks while we look),
   * SIGKILL each, thaw, and repeat until the cgroup is empty or `timeoutMs` passes.
   * Returns the number of processes left (0 on success).
   */
  async killAll(timeoutMs = 5000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    if (this.layout.version === 2) {
      // cgroup.kill (Linux 5.14+) kills the whole subtree atomically.
      await write(join(this.dirIn(this.layout.mount), 'cgroup.kill'), '1').catch(() => undefined);
    }
    for (;;) {
      // The common case after a job ended: nothing left, nothing to freeze.
      if ((await this.processes()).length === 0) return 0;
      const frozen = await this.freeze(true);
      const pids = await this.processes();
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      if (frozen) await this.freeze(false);
      if (pids.length === 0) return 0;
      if (Date.now() > deadline) return pids.length;
      await sleep(20);
    }
  }

  private async freeze(on: boolean): Promise<boolean> {
    try {
      if (this.layout.version === 1) {
        const state = join(this.v1('freezer'), 'freezer.state');
        await write(state, on ? 'FROZEN' : 'THAWED');
        if (!on) return true;
        // Bounded wait: a task in uninterruptible sleep may never freeze; we kill anyway.
        for (let i = 0; i < 10; i += 1) {
          if ((await readText(state))?.trim() === 'FROZEN') return true;
          await sleep(10);
        }
        return true;
      }
      await write(join(this.dirIn(this.layout.mount), 'cgroup.freeze'), on ? '1' : '0');
      return true;
    } catch {
      return false;
    }
  }

  /** Removes the job's cgroup from every hierarchy. Returns the directories that could not be removed. */
  async remove(): Promise<string[]> {
    return removeJobCgroups(this.scope, this.jobId);
  }
}

/** The job's cgroup directory in each hierarchy (whether it exists or not). */
export function jobCgroupDirs(scope: CgroupScope, jobId: string): string[] {
  return scope.layout.allMounts.map((mount) => join(mount, scope.group, jobId));
}

/** Removes the job's cgroup (and anything the runtime left below it) in every hierarchy. */
export async function removeJobCgroups(scope: CgroupScope, jobId: string): Promise<string[]> {
  const left: string[] = [];
  for (const top of jobCgroupDirs(scope, jobId)) {
    for (const dir of await treeDeepestFirst(top)) {
      let removed = false;
      for (let attempt = 0; attempt < 50 && !removed; attempt += 1) {
        try {
          rmdirSync(dir);
          removed = true;
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') removed = true;
          else if (code === 'EBUSY') await sleep(10);
          else break;
        }
      }
      if (!removed) left.push(dir);
    }
  }
  return left;
}

/** Names of the cgroups in this scope, in any hierarchy (job ids, and the kernel's files). */
export async function listJobCgroups(scope: CgroupScope): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const mount of scope.layout.allMounts) {
    try {
      for (const name of readdirSync(join(mount, scope.group))) ids.add(name);
    } catch {
      // this hierarchy has no airlock cgroup
    }
  }
  return ids;
}

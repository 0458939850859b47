import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { AirlockError, describeError } from '../errors.js';
import { buildOciSpec, writeBundleConfig } from './bundle.js';
import { type CgroupLayout, detectCgroupLayout, JobCgroup } from './cgroup.js';
import { runHostCommand } from './host-command.js';
import { type IdPool, leaseIdRange, rangeOfSlot } from './idmap.js';
import { type RuntimeName, type SandboxJob, type ValidJob, validateJob } from './job.js';
import type { OciSpec } from './oci-spec.js';
import type { OutputListener } from './output.js';
import { JOB_GID, JOB_UID } from './process.js';
import { buildHostImage, digestOfPlan, type HostImage, planHostImage } from './rootfs.js';
import {
  classifyStartFailure,
  findExecutable,
  RUNTIME_DRIVERS,
  type RuntimeDriver,
  runtimeLogErrors,
  type StartFailure,
} from './runtimes.js';
import type { SeccompProfile } from './seccomp.js';
import {
  currentOwner,
  ensureSandboxDirs,
  newJobId,
  type Owner,
  type SandboxDirs,
  sandboxDirs,
  writeOwner,
} from './state.js';
import { type SuperviseOutcome, superviseContainer } from './supervise.js';
import { findLeftovers, type SweepReport, sweepSandboxState } from './sweep.js';
import {
  copyInputDir,
  createWorkspace,
  removeWorkspace,
  WorkspaceReader,
  writeWorkspaceFiles,
} from './workspace.js';

/**
 * The sandbox engine: the library the CLI (`airlock sandbox`, `airlock selftest`) and the
 * worker call. One run() = one fresh sandbox: prepare (ID range, cgroup, disk, bundle), run
 * under the runtime, collect the result, remove everything. Nothing of a job outlives run(),
 * and open() sweeps whatever a crashed Airlock process left behind.
 */

export interface SandboxEngineOptions {
  /** Airlock's sandbox state directory (AIRLOCK_SANDBOX_DIR). */
  readonly root: string;
  /** First host UID of the per-job ID ranges, and how many ranges of 65536 there are. */
  readonly idBase: number;
  readonly idRanges: number;
  /** Time between SIGTERM and SIGKILL when a job is stopped (timeout, cancel). */
  readonly killGraceMs: number;
  /** Absolute paths of runtime binaries, where they are not found through PATH. */
  readonly runtimePaths: Partial<Record<RuntimeName, string>>;
  readonly seccomp: SeccompProfile;
  /** Overrides cgroup detection (tests). */
  readonly cgroupLayout?: CgroupLayout;
}

export interface RunOptions {
  /** Receives the job's output as it arrives, already capped. */
  readonly onOutput?: OutputListener;
  /** Aborting stops the job (SIGTERM, then SIGKILL after the grace period). */
  readonly signal?: AbortSignal;
  /** Called while the job runs, with what a host-side observer needs (selftest probes). */
  readonly onStarted?: (running: RunningJob) => void;
  /** Called after the job has ended and before its disk is removed: read outputs here. */
  readonly inspect?: (workspace: WorkspaceReader) => Promise<void>;
}

export interface RunningJob {
  readonly jobId: string;
  readonly runtime: RuntimeName;
  readonly cgroup: JobCgroup;
  readonly hostUidBase: number;
}

export interface SandboxResult {
  readonly jobId: string;
  /** The job's exit code; null when it was ended by a signal. */
  readonly exitCode: number | null;
  /** The signal that ended the job (e.g. "SIGKILL"); null when it exited. */
  readonly signal: string | null;
  readonly timedOut: boolean;
  readonly oomKilled: boolean;
  readonly cancelled: boolean;
  readonly wallMs: number;
  readonly cpuMs: number;
  readonly peakMemoryBytes: number;
  /** Bytes the job wrote to stdout and stderr, including any discarded beyond the cap. */
  readonly outputBytes: number;
  readonly outputTruncated: boolean;
  readonly runtime: RuntimeName;
  /** Set when the command could not be started: not found (exit 127) or not executable (126). */
  readonly startFailure: {
    readonly kind: 'command-not-found' | 'not-executable';
    readonly message: string;
  } | null;
}

export interface RuntimeStatus {
  readonly name: RuntimeName;
  readonly available: boolean;
  readonly path: string | null;
  /** Why it cannot run here (null when available). */
  readonly reason: string | null;
}

/** How often a job is checked for being paused at its memory limit (cgroup v1). */
const MEMORY_POLL_MS = 50;
const MAX_RUNTIME_LOG_BYTES = 256 * 1024;

export class SandboxEngine {
  readonly #options: SandboxEngineOptions;
  readonly #dirs: SandboxDirs;
  readonly #layout: CgroupLayout;
  readonly #image: HostImage;
  readonly #owner: Owner;
  readonly #pool: IdPool;
  readonly #running = new Set<Promise<unknown>>();
  /** Runtimes found unusable by a real start attempt in this process (reason). */
  readonly #failedRuntimes = new Map<RuntimeName, string>();

  private constructor(
    options: SandboxEngineOptions,
    dirs: SandboxDirs,
    layout: CgroupLayout,
    image: HostImage,
  ) {
    this.#options = options;
    this.#dirs = dirs;
    this.#layout = layout;
    this.#image = image;
    this.#owner = currentOwner();
    this.#pool = { dir: dirs.ids, base: options.idBase, count: options.idRanges };
  }

  /** Checks the host, prepares the state directory and sweeps what crashed runs left. */
  static async open(options: SandboxEngineOptions): Promise<SandboxEngine> {
    checkHost();
    const dirs = sandboxDirs(options.root);
    await ensureSandboxDirs(dirs);
    const layout = options.cgroupLayout ?? detectCgroupLayout();
    const image = await buildHostImage(dirs.rootfs);
    const engine = new SandboxEngine(options, dirs, layout, image);
    await engine.sweep();
    return engine;
  }

  get cgroupLayout(): CgroupLayout {
    return this.#layout;
  }

  /** Airlock's sandbox state directory on the host. */
  get stateDir(): string {
    return this.#dirs.root;
  }

  get seccompDigest(): string {
    return this.#options.seccomp.digest;
  }

  /** Removes what dead Airlock processes left: containers, processes, mounts, cgroups, leases. */
  sweep(): Promise<SweepReport> {
    return sweepSandboxState({
      dirs: this.#dirs,
      layout: this.#layout,
      pool: this.#pool,
      runtimes: Object.values(RUNTIME_DRIVERS).flatMap((driver) => {
        const path = this.#binaryPath(driver);
        return path === null ? [] : [{ driver, path, stateRoot: this.#stateRoot(driver) }];
      }),
      currentImage: this.#image.rootfs,
    });
  }

  /** What of a finished job is still on the host (empty: nothing). */
  leftovers(jobId: string, hostUidBase: number | null): Promise<string[]> {
    return findLeftovers(
      {
        dirs: this.#dirs,
        layout: this.#layout,
        pool: this.#pool,
        runtimeRoots: Object.values(RUNTIME_DRIVERS).map((driver) => this.#stateRoot(driver)),
      },
      jobId,
      hostUidBase,
    );
  }

  /** Which runtimes can run here, judged without starting a container. */
  runtimes(): RuntimeStatus[] {
    return Object.values(RUNTIME_DRIVERS).map((driver) => {
      const path = this.#binaryPath(driver);
      const reason = this.#unavailableReason(driver, path);
      return { name: driver.name, available: reason === null, path, reason };
    });
  }

  /** The OCI config a job would get (`airlock sandbox --print-config`); creates nothing. */
  async describeBundle(input: SandboxJob): Promise<OciSpec> {
    const job = validateJob(input);
    const driver = RUNTIME_DRIVERS[job.runtime];
    const plan = await planHostImage();
    const jobDir = join(this.#dirs.jobs, '<job-id>');
    const spec = buildOciSpec({
      job,
      rootfsPath: join(this.#dirs.rootfs, `host-${digestOfPlan(plan)}`),
      mounts: {
        imageBinds: plan.binds,
        workspaceDir: join(jobDir, 'disk', 'work'),
        tmpDir: join(jobDir, 'disk', 'tmp'),
        shmBytes: shmBytes(job),
      },
      ids: rangeOfSlot(this.#pool, 0),
      cgroupsPath: new JobCgroup(this.#layout, '<job-id>').containerPath,
      cgroupVersion: this.#layout.version,
      seccomp: this.#options.seccomp.seccomp,
    });
    return driver.adaptSpec(spec);
  }

  /** Runs one job in a fresh sandbox and removes the sandbox afterwards. */
  async run(input: SandboxJob, options: RunOptions = {}): Promise<SandboxResult> {
    const job = validateJob(input);
    const candidates = [job.runtime, ...job.fallbackRuntimes.filter((name) => name !== job.runtime)];
    const refusals: string[] = [];
    for (const name of candidates) {
      const driver = RUNTIME_DRIVERS[name];
      const path = this.#binaryPath(driver);
      const reason = this.#unavailableReason(driver, path);
      if (reason !== null || path === null) {
        refusals.push(reason ?? `${name} is not installed`);
        continue;
      }
      const attempt = this.#runWith(job, driver, path, options);
      this.#running.add(attempt);
      try {
        return await attempt;
      } catch (error) {
        // A runtime that fails at start because of the host (crun on a hybrid cgroup host)
        // is remembered; the job moves to its next allowed runtime, if it named one.
        if (error instanceof AirlockError && error.code === 'RUNTIME_UNAVAILABLE') {
          this.#failedRuntimes.set(name, error.message);
          refusals.push(error.message);
          continue;
        }
        throw error;
      } finally {
        this.#running.delete(attempt);
      }
    }
    const allowed =
      job.fallbackRuntimes.length > 0 ? '' : ' The job allows no fallback runtime (fallbackRuntimes).';
    throw new AirlockError('RUNTIME_UNAVAILABLE', `${refusals.join(' ')}${allowed}`);
  }

  /** Waits for every running job to finish (their own timeouts still apply). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#running]);
  }

  #binaryPath(driver: RuntimeDriver): string | null {
    return findExecutable(this.#options.runtimePaths[driver.name] ?? driver.binary);
  }

  #stateRoot(driver: RuntimeDriver): string {
    return join(this.#dirs.runtime, driver.name);
  }

  #unavailableReason(driver: RuntimeDriver, path: string | null): string | null {
    if (path === null) {
      const configured = this.#options.runtimePaths[driver.name];
      return configured !== undefined
        ? `${driver.name}: ${configured} is not an executable file.`
        : `${driver.name} is not installed: "${driver.binary}" is not in PATH (Debian/Ubuntu: apt-get install ${driver.binary}).`;
    }
    return driver.hostIncompatibility(this.#layout) ?? this.#failedRuntimes.get(driver.name) ?? null;
  }

  async #runWith(
    job: ValidJob,
    driver: RuntimeDriver,
    binaryPath: string,
    options: RunOptions,
  ): Promise<SandboxResult> {
    const jobId = newJobId();
    const cgroup = new JobCgroup(this.#layout, jobId);
    const cleanups: (() => Promise<void>)[] = [];
    let result: SandboxResult | undefined;
    let failure: unknown;
    try {
      result = await this.#prepareAndRun(job, driver, binaryPath, options, jobId, cgroup, cleanups);
    } catch (error) {
      failure =
        error instanceof AirlockError
          ? error
          : new AirlockError(
              'SANDBOX_SETUP_FAILED',
              `sandbox for job ${jobId} failed: ${describeError(error)}`,
              {
                cause: error,
              },
            );
    }
    // Kill first (a failure may have struck while the job ran), then undo in reverse order.
    await cgroup.killAll().catch(() => undefined);
    const problems: string[] = [];
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        problems.push(describeError(error));
      }
    }
    // The job's own error wins; a leak is reported when there is no other error to report.
    if (failure !== undefined) throw failure;
    if (problems.length > 0)
      throw new AirlockError('SANDBOX_CLEANUP_FAILED', `job ${jobId}: ${problems.join('; ')}`);
    if (result === undefined)
      throw new AirlockError('SANDBOX_SETUP_FAILED', `job ${jobId} produced no result`);
    return result;
  }

  async #prepareAndRun(
    job: ValidJob,
    driver: RuntimeDriver,
    binaryPath: string,
    options: RunOptions,
    jobId: string,
    cgroup: JobCgroup,
    cleanups: (() => Promise<void>)[],
  ): Promise<SandboxResult> {
    const jobDir = join(this.#dirs.jobs, jobId);
    const stateRoot = this.#stateRoot(driver);
    // The owner record comes first: from here on a crash leaves nothing the sweep cannot find.
    await mkdir(jobDir, { mode: 0o711 });
    cleanups.push(() => rm(jobDir, { recursive: true, force: true }));
    await writeOwner(join(jobDir, 'owner.json'), this.#owner, { runtime: driver.name });

    const ids = await leaseIdRange(this.#pool, this.#owner, jobId);
    cleanups.push(() => ids.release());
    const jobUser = { uid: ids.base + JOB_UID, gid: ids.base + JOB_GID };

    await cgroup.create(job.resources, driver.hostPids(job.resources.pids));
    cleanups.push(async () => {
      const left = await cgroup.remove();
      if (left.length > 0)
        throw new AirlockError('SANDBOX_CLEANUP_FAILED', `cgroups left: ${left.join(', ')}`);
    });

    cleanups.push(() => removeWorkspace(jobDir));
    const workspace = await createWorkspace(jobDir, job.resources.diskBytes, jobUser);
    await writeWorkspaceFiles(workspace, job.files, jobUser);
    if (job.inputDir !== undefined) {
      await copyInputDir(workspace, job.inputDir, jobUser, {
        maxFiles: 100_000,
        maxBytes: job.resources.diskBytes,
      });
    }

    const spec = driver.adaptSpec(
      buildOciSpec({
        job,
        rootfsPath: this.#image.rootfs,
        mounts: {
          imageBinds: this.#image.binds,
          workspaceDir: workspace.workDir,
          tmpDir: workspace.tmpDir,
          shmBytes: shmBytes(job),
        },
        ids,
        cgroupsPath: cgroup.containerPath,
        cgroupVersion: this.#layout.version,
        seccomp: this.#options.seccomp.seccomp,
      }),
    );
    await writeBundleConfig(jobDir, spec);
    await mkdir(stateRoot, { recursive: true, mode: 0o711 });
    cleanups.push(() => this.#deleteContainer(driver, binaryPath, jobId));

    const logFile = join(jobDir, 'runtime.log');
    const outcome = await superviseContainer({
      driver,
      binaryPath,
      stateRoot,
      logFile,
      bundleDir: jobDir,
      containerId: jobId,
      cgroup,
      timeoutMs: job.resources.timeoutMs,
      outputLimitBytes: job.resources.outputBytes,
      killGraceMs: this.#options.killGraceMs,
      memoryPollMs: this.#layout.version === 1 ? MEMORY_POLL_MS : 0,
      onOutput: options.onOutput ?? (() => undefined),
      signal: options.signal,
      onSpawn: () => options.onStarted?.({ jobId, runtime: driver.name, cgroup, hostUidBase: ids.base }),
    });
    if (outcome.spawnError !== null) {
      throw new AirlockError(
        'SANDBOX_START_FAILED',
        `cannot start ${binaryPath}: ${outcome.spawnError.message}`,
      );
    }

    // Nothing of the job may outlive it: processes a runtime left behind are killed here.
    const left = await cgroup.killAll();
    if (left > 0)
      throw new AirlockError('SANDBOX_CLEANUP_FAILED', `${left} processes of job ${jobId} survived SIGKILL`);
    const usage = await cgroup.usage();
    const oomKilled = outcome.reason === 'memory' || (await cgroup.oomKilled());

    const failure = outcome.reason === 'exited' ? await this.#startFailure(logFile) : null;
    if (failure?.kind === 'runtime-unavailable') {
      throw new AirlockError('RUNTIME_UNAVAILABLE', `${driver.name}: ${failure.message}`);
    }
    if (failure?.kind === 'runtime-error') {
      throw new AirlockError(
        'SANDBOX_START_FAILED',
        `${driver.name} could not run the job: ${failure.message}`,
      );
    }
    const startFailure = failure === null ? null : { kind: failure.kind, message: failure.message };

    if (options.inspect !== undefined) await options.inspect(new WorkspaceReader(workspace.workDir));

    return {
      jobId,
      ...exitStatus(outcome, startFailure, oomKilled),
      timedOut: outcome.reason === 'timeout',
      oomKilled,
      cancelled: outcome.reason === 'cancelled',
      wallMs: Math.round(outcome.wallMs),
      cpuMs: usage.cpuMs,
      peakMemoryBytes: usage.peakMemoryBytes,
      outputBytes: outcome.outputBytes,
      outputTruncated: outcome.outputTruncated,
      runtime: driver.name,
      startFailure,
    };
  }

  async #startFailure(logFile: string): Promise<StartFailure | null> {
    let text: string;
    try {
      text = (await readFile(logFile)).subarray(0, MAX_RUNTIME_LOG_BYTES).toString('utf8');
    } catch {
      return null;
    }
    const errors = runtimeLogErrors(text);
    return errors.length === 0 ? null : classifyStartFailure(errors.join('; '));
  }

  async #deleteContainer(driver: RuntimeDriver, binaryPath: string, jobId: string): Promise<void> {
    // The runtime normally deletes its container when `run` returns; only ask when state remains.
    const stateRoot = this.#stateRoot(driver);
    const names = await readdir(stateRoot).catch(() => [] as string[]);
    if (!names.some((name) => name.includes(jobId))) return;
    const result = await runHostCommand(
      binaryPath,
      [...driver.globalArgs(stateRoot, null), ...driver.deleteArgs(jobId)],
      {
        timeoutMs: 30_000,
      },
    );
    if (result.code !== 0 && existsSync(join(stateRoot, jobId))) {
      throw new AirlockError(
        'SANDBOX_CLEANUP_FAILED',
        `${driver.name} delete ${jobId} failed: ${result.stderr.trim()}`,
      );
    }
  }
}

function shmBytes(job: ValidJob): number {
  return Math.min(64 * 1024 * 1024, job.resources.memoryBytes);
}

function exitStatus(
  outcome: SuperviseOutcome,
  failure: SandboxResult['startFailure'],
  oomKilled: boolean,
): { exitCode: number | null; signal: string | null } {
  if (failure?.kind === 'command-not-found') return { exitCode: 127, signal: null };
  if (failure?.kind === 'not-executable') return { exitCode: 126, signal: null };
  if (oomKilled) return { exitCode: null, signal: 'SIGKILL' };
  if (outcome.runtimeCode === null) return { exitCode: null, signal: outcome.runtimeSignal ?? 'SIGKILL' };
  // runc, crun and runsc report death by signal N as 128+N (so a job that itself exits 137
  // reads as SIGKILL: the runtime CLI gives no way to tell the two apart).
  const code = outcome.runtimeCode;
  if (code > 128 && code < 128 + 65) {
    const name = Object.entries(osConstants.signals).find(([, number]) => number === code - 128)?.[0];
    return { exitCode: null, signal: name ?? `SIG${code - 128}` };
  }
  return { exitCode: code, signal: null };
}

/** What every sandbox needs from the host, checked before anything is created. */
export function checkHost(): void {
  if (process.platform !== 'linux')
    throw new AirlockError('HOST_UNSUPPORTED', 'Airlock sandboxes need Linux');
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new AirlockError(
      'HOST_UNSUPPORTED',
      'Airlock sandboxes need root on the host (to create user namespaces with per-job ID ranges, cgroups and loop-mounted disks); run as root',
    );
  }
  for (const tool of ['mkfs.ext4', 'mount', 'umount']) {
    if (findExecutable(tool, `${process.env.PATH ?? ''}:/usr/sbin:/sbin`) === null) {
      throw new AirlockError(
        'HOST_UNSUPPORTED',
        `${tool} is missing; it prepares each job's disk (Debian/Ubuntu: apt-get install e2fsprogs mount)`,
      );
    }
  }
  if (!existsSync('/dev/loop-control')) {
    throw new AirlockError(
      'HOST_UNSUPPORTED',
      '/dev/loop-control is missing: the kernel has no loop device support (modprobe loop)',
    );
  }
}

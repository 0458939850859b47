import { existsSync, lstatSync, readFileSync } from 'node:fs';
import { mkdir, open, readdir, rm } from 'node:fs/promises';
import { constants as osConstants, totalmem } from 'node:os';
import { join } from 'node:path';
import { AirlockError, describeError } from '../errors.js';
import {
  acquireImage,
  type CachedImage,
  checkMountPoints,
  findImage,
  sweepImageCache,
} from '../images/cache.js';
import type { PinnedImage } from '../images/reference.js';
import type { EgressRecord } from '../network/egress-proxy.js';
import { buildOciSpec, writeBundleConfig } from './bundle.js';
import {
  type CgroupLayout,
  type CgroupScope,
  cgroupScope,
  detectCgroupLayout,
  JobCgroup,
  swapAccountingProblem,
} from './cgroup.js';
import {
  type EgressSettings,
  type EgressSummary,
  FORWARDER_INTERPRETER,
  type JobEgress,
  openJobEgress,
} from './egress.js';
import { runHostCommand } from './host-command.js';
import { checkIdPool, type IdPool, rangeOfSlot } from './idmap.js';
import { JOB_BOUNDS, type RuntimeName, type SandboxJob, type ValidJob, validateJob } from './job.js';
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
import { destroySlot, type JobSlot, SlotPool } from './slots.js';
import {
  currentOwner,
  ensureSandboxDirs,
  type Owner,
  type SandboxDirs,
  sandboxDirs,
  writeOwner,
} from './state.js';
import { type SuperviseOutcome, superviseContainer } from './supervise.js';
import { findLeftovers, imageInUseMarker, type SweepReport, sweepSandboxState } from './sweep.js';
import { copyInputDir, WorkspaceReader, writeWorkspaceFiles } from './workspace.js';

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
  /**
   * Job slots (directory + formatted, mounted disk) kept prepared ahead of the next job, to
   * take disk set-up off its critical path. Default 1; a one-shot caller (`airlock sandbox`)
   * sets 0, so that no disk is prepared only to be thrown away.
   */
  readonly preparedSlots?: number;
  /** Settings of every job's egress proxy (grants, resolver, caps); default: the proxy's own. */
  readonly egress?: EgressSettings;
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
  /**
   * Called with each egress attempt of a job granted egress, as it ends. If it throws, the
   * proxy refuses everything after (egress that cannot be recorded does not happen).
   */
  readonly onEgress?: (record: EgressRecord) => void;
  /** This run's egress settings instead of the engine's (the selftest's own test server). */
  readonly egressSettings?: EgressSettings;
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
  /** SHA-256 (hex) of the job's OCI config.json as the runtime read it, and of its seccomp section. */
  readonly configSha256: string;
  readonly seccompSha256: string;
  /** A job granted egress: its allowlist, the attempts kept and the totals; null without egress. */
  readonly egress: EgressSummary | null;
  /** The manifest digest (`sha256:…`) of the job's pinned image; absent for `image: host`. */
  readonly imageDigest?: string;
}

export interface RuntimeStatus {
  readonly name: RuntimeName;
  readonly available: boolean;
  readonly path: string | null;
  /** Why it cannot run here (null when available). */
  readonly reason: string | null;
}

/** How long after the engine's own SIGKILL the watchdog of a job strikes. */
const WATCHDOG_MARGIN_MS = 5000;
/** How often a job is checked for being paused at its memory limit (cgroup v1). */
const MEMORY_POLL_MS = 50;
const MAX_RUNTIME_LOG_BYTES = 256 * 1024;

export class SandboxEngine {
  readonly #options: SandboxEngineOptions;
  readonly #dirs: SandboxDirs;
  readonly #layout: CgroupLayout;
  readonly #cgroups: CgroupScope;
  readonly #image: HostImage;
  readonly #owner: Owner;
  readonly #pool: IdPool;
  readonly #running = new Set<Promise<unknown>>();
  /** Runtimes found unusable by a real start attempt in this process (reason). */
  readonly #failedRuntimes = new Map<RuntimeName, string>();
  /** Removals of finished jobs still under way, and what failed in them. */
  readonly #pending = new Set<Promise<void>>();
  readonly #cleanupProblems: string[] = [];
  readonly #slots: SlotPool;

  private constructor(
    options: SandboxEngineOptions,
    dirs: SandboxDirs,
    layout: CgroupLayout,
    image: HostImage,
  ) {
    this.#options = options;
    this.#dirs = dirs;
    this.#layout = layout;
    this.#cgroups = cgroupScope(layout, dirs.root);
    this.#image = image;
    this.#owner = currentOwner();
    this.#pool = { dir: dirs.ids, base: options.idBase, count: options.idRanges };
    this.#slots = new SlotPool(
      dirs.jobs,
      this.#owner,
      this.#pool,
      (jobId) => new JobCgroup(this.#cgroups, jobId).processDir,
      options.preparedSlots ?? 1,
    );
  }

  /** Checks the host, prepares the state directory and sweeps what crashed runs left. */
  static async open(options: SandboxEngineOptions): Promise<SandboxEngine> {
    checkHost();
    checkIdPool(options.idBase, options.idRanges);
    const dirs = sandboxDirs(options.root);
    await ensureSandboxDirs(dirs);
    for (const driver of Object.values(RUNTIME_DRIVERS)) {
      await mkdir(join(dirs.runtime, driver.name), { recursive: true, mode: 0o711 });
    }
    const layout = options.cgroupLayout ?? detectCgroupLayout();
    const swap = swapAccountingProblem(layout);
    if (swap !== null) throw new AirlockError('HOST_UNSUPPORTED', swap);
    const image = await buildHostImage(dirs.rootfs);
    const engine = new SandboxEngine(options, dirs, layout, image);
    // Tells other processes' sweeps that this image root is in use.
    const marker = imageInUseMarker(dirs.rootfs, image.rootfs, process.pid);
    await rm(marker, { force: true });
    await writeOwner(marker, engine.#owner);
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
  async sweep(): Promise<SweepReport> {
    // Image imports that died half-way (the cache itself is never swept: images stay until removed).
    await sweepImageCache(this.#dirs.root);
    return sweepSandboxState({
      dirs: this.#dirs,
      cgroups: this.#cgroups,
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
        cgroups: this.#cgroups,
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
    const jobDir = join(this.#dirs.jobs, '<job-id>');
    let root: JobRoot;
    if (job.image.kind === 'pinned') {
      const image = await findImage(this.#dirs.root, job.image.digest);
      if (image === null) throw imageNotFound(job.image);
      root = pinnedRoot(image);
    } else {
      const plan = await planHostImage();
      root = {
        rootfs: join(this.#dirs.rootfs, `host-${digestOfPlan(plan)}`),
        binds: plan.binds,
        fileBinds: [],
      };
    }
    const spec = buildOciSpec({
      job,
      rootfsPath: root.rootfs,
      mounts: {
        imageBinds: root.binds,
        fileBinds: root.fileBinds,
        workspaceDir: join(jobDir, 'disk', 'work'),
        tmpDir: join(jobDir, 'disk', 'tmp'),
        shmBytes: shmBytes(job),
      },
      ids: rangeOfSlot(this.#pool, 0),
      cgroupsPath: new JobCgroup(this.#cgroups, '<job-id>').containerPath,
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
      checkHostCapacity(job, driver);
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

  /**
   * Waits until every finished job's sandbox has been removed from the host (and prepared
   * slots are ready: the engine is quiet). Rejects with
   * SANDBOX_CLEANUP_FAILED, naming what could not be removed, if any removal failed since
   * the last call (the sweep removes it at the next start).
   */
  async settle(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
    await this.#slots.ready();
    const problems = this.#cleanupProblems.splice(0);
    if (problems.length > 0) throw new AirlockError('SANDBOX_CLEANUP_FAILED', problems.join('; '));
  }

  /** Waits for running jobs (their own timeouts still apply), then removes their sandboxes and the prepared slots. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#running]);
    await this.#slots.drain();
    await this.settle();
    await rm(imageInUseMarker(this.#dirs.rootfs, this.#image.rootfs, process.pid), { force: true });
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
    const slot = await this.#slots.take(job.resources.diskBytes);
    const cgroup = new JobCgroup(this.#cgroups, slot.jobId);
    // Undone in reverse order; the slot (disk, then job directory) goes last, after its
    // watchdog (armed or not) is stopped.
    const cleanups: (() => Promise<void>)[] = [
      () => destroySlot(slot.jobDir),
      async () => slot.watchdog.stop(),
    ];
    let result: SandboxResult | undefined;
    let failure: unknown;
    try {
      result = await this.#prepareAndRun(job, driver, binaryPath, options, slot, cgroup, cleanups);
    } catch (error) {
      failure =
        error instanceof AirlockError
          ? error
          : new AirlockError(
              'SANDBOX_SETUP_FAILED',
              `sandbox for job ${slot.jobId} failed: ${describeError(error)}`,
              {
                cause: error,
              },
            );
    }
    // Whatever went wrong, no process of the job survives this line (a job that ran to its
    // result was emptied and checked already).
    if (failure !== undefined || result === undefined) await cgroup.killAll().catch(() => undefined);
    const teardown = runCleanups(cleanups.reverse());
    if (failure !== undefined || result === undefined) {
      const problems = await teardown;
      if (failure !== undefined) throw failure;
      throw new AirlockError(
        'SANDBOX_SETUP_FAILED',
        `job ${slot.jobId} produced no result (${problems.join('; ')})`,
      );
    }
    // The result goes back as soon as the job is dead; removing its disk, cgroup and bundle
    // overlaps with whatever the caller does next. settle() and close() wait for it, and a
    // removal that fails is reported there.
    const pending = teardown.then((problems) => {
      if (problems.length > 0) this.#cleanupProblems.push(`job ${slot.jobId}: ${problems.join('; ')}`);
    });
    this.#pending.add(pending);
    void pending.finally(() => this.#pending.delete(pending));
    this.#slots.refill(job.resources.diskBytes);
    return result;
  }

  async #prepareAndRun(
    job: ValidJob,
    driver: RuntimeDriver,
    binaryPath: string,
    options: RunOptions,
    slot: JobSlot,
    cgroup: JobCgroup,
    cleanups: (() => Promise<void>)[],
  ): Promise<SandboxResult> {
    const { jobId, jobDir, workspace } = slot;
    const stateRoot = this.#stateRoot(driver);

    const { ids } = slot;
    const jobUser = { uid: ids.base + JOB_UID, gid: ids.base + JOB_GID };
    cleanups.push(async () => {
      // A process of the job that survived SIGKILL still runs as these host IDs: the range
      // stays leased (the sweep frees it once nothing is left) so no other job gets it.
      if ((await cgroup.processes()).length > 0) {
        throw new AirlockError(
          'SANDBOX_CLEANUP_FAILED',
          `processes of job ${jobId} remain; its host ID range stays leased`,
        );
      }
      await ids.release();
    });
    cleanups.push(async () => {
      const left = await cgroup.remove();
      if (left.length > 0)
        throw new AirlockError('SANDBOX_CLEANUP_FAILED', `cgroups left: ${left.join(', ')}`);
    });
    await cgroup.create(job.resources, driver.hostPids(job.resources.pids));

    // A pinned image: the job's directory names it before it is looked up, so that
    // `airlock image remove` cannot take it away while the job runs (images/cache.ts).
    const root: JobRoot =
      job.image.kind === 'pinned'
        ? pinnedRoot(await acquireImage(this.#dirs.root, jobDir, job.image))
        : { rootfs: this.#image.rootfs, binds: this.#image.binds, fileBinds: [] };

    let egress: JobEgress | undefined;
    if (job.egress.length > 0) {
      // The forwarder runs on the job's own userland: without its interpreter there is no egress.
      // (The host image binds the host's /usr; a pinned image has its own.)
      // In a pinned image it is looked at without following a link: a link there points into
      // the image's own tree, not the host's.
      const present = root.binds.includes('/usr')
        ? existsSync(FORWARDER_INTERPRETER)
        : lstatSync(join(root.rootfs, FORWARDER_INTERPRETER), { throwIfNoEntry: false }) !== undefined;
      if (!present) {
        throw new AirlockError(
          'SANDBOX_SETUP_FAILED',
          `egress needs ${FORWARDER_INTERPRETER} in the job's image (it runs the egress forwarder)`,
        );
      }
      egress = await openJobEgress({
        jobDir,
        allow: job.egress,
        jobUser,
        settings: options.egressSettings ?? this.#options.egress ?? {},
        ...(options.onEgress !== undefined ? { onAttempt: options.onEgress } : {}),
      });
      const opened = egress;
      cleanups.push(async () => {
        await opened.close();
      });
    }

    await writeWorkspaceFiles(workspace, job.files, jobUser);
    if (job.inputDir !== undefined) {
      await copyInputDir(workspace, job.inputDir, jobUser, {
        maxFiles: JOB_BOUNDS.maxInputEntries,
        maxBytes: job.resources.diskBytes,
      });
    }

    const spec = driver.adaptSpec(
      buildOciSpec({
        job,
        rootfsPath: root.rootfs,
        mounts: {
          imageBinds: root.binds,
          fileBinds: root.fileBinds,
          workspaceDir: workspace.workDir,
          tmpDir: workspace.tmpDir,
          shmBytes: shmBytes(job),
          ...(egress !== undefined ? { egressDir: egress.dir } : {}),
        },
        ids,
        cgroupsPath: cgroup.containerPath,
        cgroupVersion: this.#layout.version,
        seccomp: this.#options.seccomp.seccomp,
      }),
    );
    // The runtime must never create a mount point inside the shared image cache.
    if (job.image.kind === 'pinned')
      await checkMountPoints(
        root.rootfs,
        spec.mounts.map((mount) => mount.destination),
      );
    const configSha256 = await writeBundleConfig(jobDir, spec);
    cleanups.push(() => this.#deleteContainer(driver, binaryPath, jobId));

    // Keeps the deadline even if this process dies (the engine's own kill comes first). Armed
    // before the runtime starts, so there is no moment when the job runs without it.
    await slot.watchdog.arm(job.resources.timeoutMs + this.#options.killGraceMs + WATCHDOG_MARGIN_MS);
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
      hostSockets: egress !== undefined,
    });
    // The job is over: so is its egress (connections still open are cut and recorded).
    const egressSummary = egress === undefined ? null : await egress.close();
    if (outcome.spawnError !== null) {
      throw new AirlockError(
        'SANDBOX_START_FAILED',
        outcome.spawnError.code === 'EHOSTHELPER'
          ? `${driver.name} for job ${jobId} was lost: ${outcome.spawnError.message}`
          : `cannot start ${binaryPath}: ${outcome.spawnError.message}`,
      );
    }

    // Nothing of the job may outlive it: processes a runtime left behind are killed here.
    const left = await cgroup.killAll();
    if (left > 0)
      throw new AirlockError('SANDBOX_CLEANUP_FAILED', `${left} processes of job ${jobId} survived SIGKILL`);
    const [usage, oomEvent, failure] = await Promise.all([
      cgroup.usage(),
      cgroup.oomKilled(),
      outcome.reason === 'exited' ? this.#startFailure(logFile) : null,
    ]);
    const oomKilled = outcome.reason === 'memory' || oomEvent;
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
      configSha256,
      seccompSha256: this.#options.seccomp.digest.replace(/^sha256:/, ''),
      egress: egressSummary,
      ...(job.image.kind === 'pinned' ? { imageDigest: job.image.digest } : {}),
    };
  }

  async #startFailure(logFile: string): Promise<StartFailure | null> {
    // Only the head of the log is read: the runtime's start-up errors come first.
    let text: string;
    try {
      const handle = await open(logFile, 'r');
      try {
        const buffer = Buffer.alloc(MAX_RUNTIME_LOG_BYTES);
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
        text = buffer.subarray(0, bytesRead).toString('utf8');
      } finally {
        await handle.close();
      }
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

/** The root a job runs on: the host image, or a pinned image from the cache (no host binds). */
interface JobRoot {
  readonly rootfs: string;
  readonly binds: readonly string[];
  readonly fileBinds: readonly { readonly source: string; readonly destination: string }[];
}

function pinnedRoot(image: CachedImage): JobRoot {
  return { rootfs: image.rootfs, binds: [], fileBinds: image.etcBinds };
}

function imageNotFound(image: PinnedImage): AirlockError {
  return new AirlockError(
    'IMAGE_NOT_FOUND',
    `image ${image.ref} is not in this worker's image cache: import it with airlock image import`,
  );
}

/** Runs every clean-up step, even after one fails; returns what failed. */
async function runCleanups(steps: readonly (() => Promise<void>)[]): Promise<string[]> {
  const problems: string[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (error) {
      problems.push(describeError(error));
    }
  }
  return problems;
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

/**
 * A job may not ask for more than the host has: more memory than the host's RAM, or more host
 * processes than half of kernel.pid_max (one job must not be able to use up the host's PIDs).
 * Disk is reserved for real when the job's disk is allocated (workspace.ts).
 */
export function checkHostCapacity(job: ValidJob, driver: RuntimeDriver): void {
  const { memoryBytes, pids } = job.resources;
  if (memoryBytes > totalmem()) {
    throw new AirlockError(
      'INVALID_JOB',
      `resources.memoryBytes ${memoryBytes} is more than this host has (${totalmem()})`,
    );
  }
  const hostPids = driver.hostPids(pids);
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim()) || 32_768;
  if (hostPids > pidMax / 2) {
    throw new AirlockError(
      'INVALID_JOB',
      `resources.pids ${pids} needs ${hostPids} host processes under ${driver.name}, more than half of this host's kernel.pid_max (${pidMax})`,
    );
  }
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
  for (const tool of ['mkfs.ext4', 'mount', 'umount', 'losetup']) {
    if (findExecutable(tool, `${process.env.PATH ?? ''}:/usr/sbin:/sbin`) === null) {
      throw new AirlockError(
        'HOST_UNSUPPORTED',
        `${tool} is missing; it prepares each job's disk or removes what a crash left (Debian/Ubuntu: apt-get install e2fsprogs mount)`,
      );
    }
  }
  if (findExecutable('perl', '/usr/bin:/bin') === null) {
    throw new AirlockError(
      'HOST_UNSUPPORTED',
      'perl is missing; Airlock does its host work through a small Perl helper (Debian/Ubuntu: apt-get install perl-base)',
    );
  }
  if (!/^(x64|arm64)$/.test(process.arch)) {
    throw new AirlockError(
      'HOST_UNSUPPORTED',
      `Airlock sandboxes need an x86-64 or arm64 host, not ${process.arch}`,
    );
  }
  if (!existsSync('/dev/loop-control')) {
    throw new AirlockError(
      'HOST_UNSUPPORTED',
      '/dev/loop-control is missing: the kernel has no loop device support (modprobe loop)',
    );
  }
}

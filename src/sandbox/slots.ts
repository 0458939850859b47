import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { type IdLease, type IdPool, leaseIdRange } from './idmap.js';
import { JOB_GID, JOB_UID } from './process.js';
import { newJobId, type Owner, writeOwner } from './state.js';
import { startWatchdog, type Watchdog } from './watchdog.js';
import { assignWorkspace, createWorkspace, removeWorkspace, type Workspace } from './workspace.js';

/**
 * Job slots: a job directory with its owner record, a host ID range leased for it, and a
 * freshly formatted, mounted disk handed to that range — everything of a sandbox that does
 * not depend on the job itself. Allocating, formatting and mounting a disk costs ~15 ms of the
 * critical path, so the engine can keep a few slots prepared ahead
 * (docs/decisions/0003-prepared-job-slots.md). A slot is used by exactly one job and then
 * destroyed with it; nothing is ever reused between jobs. An unused slot is an ordinary job
 * directory of a live owner, so the sweep removes it if its process dies.
 */

export interface JobSlot {
  readonly jobId: string;
  readonly jobDir: string;
  readonly workspace: Workspace;
  readonly diskBytes: number;
  /** The job's own host UID/GID range. */
  readonly ids: IdLease;
  /** Keeps the job's deadline if Airlock dies (watchdog.ts); armed when the job starts. */
  readonly watchdog: Watchdog;
}

/** Where a job's processes are listed (its cgroup's process directory), for its watchdog. */
export type ProcessDirOf = (jobId: string) => string;

export async function prepareSlot(
  jobsDir: string,
  owner: Owner,
  pool: IdPool,
  processDirOf: ProcessDirOf,
  diskBytes: number,
): Promise<JobSlot> {
  const jobId = newJobId();
  const jobDir = join(jobsDir, jobId);
  // The owner record comes first: from here on a crash leaves nothing the sweep cannot find.
  mkdirSync(jobDir, { mode: 0o711 });
  let ids: IdLease | undefined;
  const watchdog = startWatchdog(processDirOf(jobId));
  try {
    await writeOwner(join(jobDir, 'owner.json'), owner);
    ids = await leaseIdRange(pool, owner, jobId);
    const workspace = await createWorkspace(jobDir, diskBytes);
    await assignWorkspace(
      workspace,
      { uid: ids.base + JOB_UID, gid: ids.base + JOB_GID },
      { uid: ids.base, gid: ids.base },
    );
    return { jobId, jobDir, workspace, diskBytes, ids, watchdog };
  } catch (error) {
    watchdog.stop();
    await destroySlot(jobDir).catch(() => undefined);
    await ids?.release();
    throw error;
  }
}

/** Unmounts and deletes the slot's disk, then its directory (last, so a crash midway is swept). */
export async function destroySlot(jobDir: string): Promise<void> {
  await removeWorkspace(jobDir);
  // What is left is small: the owner record, the bundle's config, the runtime's log.
  rmSync(jobDir, { recursive: true, force: true });
}

/** A slot no job ever used: nothing runs as its IDs, so its lease goes with it. */
async function destroyIdleSlot(slot: JobSlot): Promise<void> {
  slot.watchdog.stop();
  await destroySlot(slot.jobDir);
  await slot.ids.release();
}

export class SlotPool {
  readonly #jobsDir: string;
  readonly #owner: Owner;
  readonly #pool: IdPool;
  readonly #processDirOf: ProcessDirOf;
  readonly #maxIdle: number;
  readonly #idle: JobSlot[] = [];
  readonly #preparing = new Set<Promise<void>>();
  #closed = false;

  constructor(jobsDir: string, owner: Owner, pool: IdPool, processDirOf: ProcessDirOf, maxIdle: number) {
    this.#jobsDir = jobsDir;
    this.#owner = owner;
    this.#pool = pool;
    this.#processDirOf = processDirOf;
    this.#maxIdle = maxIdle;
  }

  /** A prepared slot for a disk of `diskBytes`, or a new one prepared now. */
  async take(diskBytes: number): Promise<JobSlot> {
    const index = this.#idle.findIndex((slot) => slot.diskBytes === diskBytes);
    if (index >= 0) {
      const [slot] = this.#idle.splice(index, 1);
      if (slot !== undefined) return slot;
    }
    return prepareSlot(this.#jobsDir, this.#owner, this.#pool, this.#processDirOf, diskBytes);
  }

  /** Prepares a slot of this size in the background, evicting the oldest idle one when full. */
  refill(diskBytes: number): void {
    if (this.#closed || this.#maxIdle === 0) return;
    if (this.#idle.some((slot) => slot.diskBytes === diskBytes) || this.#preparing.size > 0) return;
    const work = (async () => {
      const slot = await prepareSlot(this.#jobsDir, this.#owner, this.#pool, this.#processDirOf, diskBytes);
      if (this.#closed) {
        await destroyIdleSlot(slot);
        return;
      }
      this.#idle.push(slot);
      while (this.#idle.length > this.#maxIdle) {
        const oldest = this.#idle.shift();
        if (oldest !== undefined) await destroyIdleSlot(oldest);
      }
    })()
      // A failed preparation only costs the next job its head start; that job prepares its
      // own slot and reports the failure if it happens again.
      .catch(() => undefined)
      .finally(() => this.#preparing.delete(work));
    this.#preparing.add(work);
  }

  /** Resolves when no slot is being prepared. */
  async ready(): Promise<void> {
    while (this.#preparing.size > 0) await Promise.allSettled([...this.#preparing]);
  }

  /** Stops preparing and destroys the idle slots. */
  async drain(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#preparing]);
    const idle = this.#idle.splice(0);
    await Promise.all(idle.map(destroyIdleSlot));
  }
}

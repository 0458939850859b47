import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { newJobId, type Owner, writeOwner } from './state.js';
import { createWorkspace, removeWorkspace, type Workspace } from './workspace.js';

/**
 * Job slots: a job directory with its owner record and a freshly formatted, mounted disk —
 * everything of a sandbox that does not depend on the job itself. Formatting and mounting a
 * disk costs ~15 ms of the critical path, so the engine can keep a few slots prepared ahead
 * (docs/decisions/0003-prepared-job-slots.md). A slot is used by exactly one job and then
 * destroyed with it; nothing is ever reused between jobs. An unused slot is an ordinary job
 * directory of a live owner, so the sweep removes it if its process dies.
 */

export interface JobSlot {
  readonly jobId: string;
  readonly jobDir: string;
  readonly workspace: Workspace;
  readonly diskBytes: number;
}

export async function prepareSlot(jobsDir: string, owner: Owner, diskBytes: number): Promise<JobSlot> {
  const jobId = newJobId();
  const jobDir = join(jobsDir, jobId);
  // The owner record comes first: from here on a crash leaves nothing the sweep cannot find.
  await mkdir(jobDir, { mode: 0o711 });
  try {
    await writeOwner(join(jobDir, 'owner.json'), owner);
    const workspace = await createWorkspace(jobDir, diskBytes);
    return { jobId, jobDir, workspace, diskBytes };
  } catch (error) {
    await destroySlot(jobDir).catch(() => undefined);
    throw error;
  }
}

/** Unmounts and deletes the slot's disk, then its directory (last, so a crash midway is swept). */
export async function destroySlot(jobDir: string): Promise<void> {
  await removeWorkspace(jobDir);
  await rm(jobDir, { recursive: true, force: true });
}

export class SlotPool {
  readonly #jobsDir: string;
  readonly #owner: Owner;
  readonly #maxIdle: number;
  readonly #idle: JobSlot[] = [];
  readonly #preparing = new Set<Promise<void>>();
  #closed = false;

  constructor(jobsDir: string, owner: Owner, maxIdle: number) {
    this.#jobsDir = jobsDir;
    this.#owner = owner;
    this.#maxIdle = maxIdle;
  }

  /** A prepared slot for a disk of `diskBytes`, or a new one prepared now. */
  async take(diskBytes: number): Promise<JobSlot> {
    const index = this.#idle.findIndex((slot) => slot.diskBytes === diskBytes);
    if (index >= 0) {
      const [slot] = this.#idle.splice(index, 1);
      if (slot !== undefined) return slot;
    }
    return prepareSlot(this.#jobsDir, this.#owner, diskBytes);
  }

  /** Prepares a slot of this size in the background, evicting the oldest idle one when full. */
  refill(diskBytes: number): void {
    if (this.#closed || this.#maxIdle === 0) return;
    if (this.#idle.some((slot) => slot.diskBytes === diskBytes) || this.#preparing.size > 0) return;
    const work = (async () => {
      const slot = await prepareSlot(this.#jobsDir, this.#owner, diskBytes);
      if (this.#closed) {
        await destroySlot(slot.jobDir);
        return;
      }
      this.#idle.push(slot);
      while (this.#idle.length > this.#maxIdle) {
        const oldest = this.#idle.shift();
        if (oldest !== undefined) await destroySlot(oldest.jobDir);
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
    await Promise.all(idle.map((slot) => destroySlot(slot.jobDir)));
  }
}

/**
 * In-process wake-ups: a waiting claim learns that a job was queued, a log follower that
 * its job has new output or ended. They only shorten waits — every waiter re-reads the
 * store and also wakes on a timer — so a missed notice (another replica's submit) costs
 * latency, never correctness.
 */

type Listener = () => void;

export class JobEvents {
  readonly #queued = new Set<Listener>();
  readonly #jobs = new Map<string, Set<Listener>>();

  /** Calls `listener` at the next queued job; returns the unsubscribe. */
  onQueued(listener: Listener): () => void {
    this.#queued.add(listener);
    return () => this.#queued.delete(listener);
  }

  onJob(jobId: string, listener: Listener): () => void {
    let set = this.#jobs.get(jobId);
    if (set === undefined) {
      set = new Set();
      this.#jobs.set(jobId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#jobs.delete(jobId);
    };
  }

  queued(): void {
    for (const listener of [...this.#queued]) listener();
  }

  changed(jobId: string): void {
    for (const listener of [...(this.#jobs.get(jobId) ?? [])]) listener();
  }
}

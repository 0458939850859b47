import type { RuntimeName } from '../sandbox/job.js';

/**
 * Whether the claim loops may claim, and with which runtimes. Closed at start and while a
 * selftest runs or fails (DESIGN §4: a worker takes no jobs while its selftest fails); open
 * with the runtimes whose selftest passed. It also counts the loops that are busy (claiming
 * or running a job), so a scheduled selftest can wait until the host runs no job.
 */
export class ClaimGate {
  #runtimes: readonly RuntimeName[] | null = null;
  #stopped = false;
  #busy = 0;
  #openWaiters: (() => void)[] = [];
  #idleWaiters: (() => void)[] = [];

  get busy(): number {
    return this.#busy;
  }

  get isOpen(): boolean {
    return this.#runtimes !== null && !this.#stopped;
  }

  open(runtimes: readonly RuntimeName[]): void {
    this.#runtimes = [...runtimes];
    for (const wake of this.#openWaiters.splice(0)) wake();
  }

  close(): void {
    this.#runtimes = null;
  }

  /** For good: every waiting and later enter() returns null. */
  stop(): void {
    this.#stopped = true;
    for (const wake of this.#openWaiters.splice(0)) wake();
  }

  /**
   * Waits until claiming is allowed, then counts the caller busy (until leave()) and returns
   * the runtimes to offer; null once the gate is stopped.
   */
  async enter(): Promise<readonly RuntimeName[] | null> {
    while (!this.#stopped && this.#runtimes === null) {
      await new Promise<void>((resolve) => this.#openWaiters.push(resolve));
    }
    if (this.#stopped || this.#runtimes === null) return null;
    this.#busy += 1;
    return this.#runtimes;
  }

  leave(): void {
    if (this.#busy === 0) throw new RangeError('ClaimGate.leave() without enter()');
    this.#busy -= 1;
    if (this.#busy === 0) for (const wake of this.#idleWaiters.splice(0)) wake();
  }

  /** Resolves when no loop is busy. */
  idle(): Promise<void> {
    if (this.#busy === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }
}

/**
 * Output to the user's terminal. The progress line of a long wait on a terminal: "⠋ job_… queued 3s" on stderr, redrawn in
 * place, cleared for good when output starts or the job ends. Nothing at all when stderr
 * is not a terminal (a pipe or a log file gets no control characters).
 */

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/** Erase the whole line and return to its start. */
const CLEAR = '\r\x1b[2K';

export interface ProgressOptions {
  /** Nothing is drawn before this much time has passed (a fast job shows no flicker). Default 250 ms. */
  readonly delayMs?: number;
  readonly frameMs?: number;
  readonly now?: () => number;
}

export function isTerminal(stream: NodeJS.WritableStream): boolean {
  return (stream as { isTTY?: unknown }).isTTY === true;
}

export class ProgressLine {
  readonly #stream: NodeJS.WritableStream;
  readonly #label: string;
  readonly #now: () => number;
  readonly #started: number;
  #state: string;
  #frame = 0;
  #drawn = false;
  #stopped = false;
  #delay: NodeJS.Timeout | undefined;
  #ticker: NodeJS.Timeout | undefined;

  constructor(stream: NodeJS.WritableStream, label: string, state: string, options: ProgressOptions = {}) {
    this.#stream = stream;
    this.#label = label;
    this.#state = state;
    this.#now = options.now ?? Date.now;
    this.#started = this.#now();
    const frameMs = options.frameMs ?? 100;
    this.#delay = setTimeout(() => {
      this.#draw();
      this.#ticker = setInterval(() => this.#draw(), frameMs);
      this.#ticker.unref();
    }, options.delayMs ?? 250);
    this.#delay.unref();
  }

  get active(): boolean {
    return !this.#stopped;
  }

  setState(state: string): void {
    this.#state = state;
  }

  #draw(): void {
    if (this.#stopped) return;
    const seconds = Math.floor((this.#now() - this.#started) / 1000);
    const frame = FRAMES[this.#frame % FRAMES.length] ?? '';
    this.#frame += 1;
    this.#stream.write(`${CLEAR}${frame} ${this.#label} ${this.#state} ${seconds}s`);
    this.#drawn = true;
  }

  /** Erases the line (if drawn) and draws no more. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#delay);
    clearInterval(this.#ticker);
    if (this.#drawn) this.#stream.write(CLEAR);
  }
}

/**
 * Writes honouring back-pressure, so a slow terminal or pipe slows the reading of the log
 * stream down instead of piling output up in memory.
 */
export async function writeOut(stream: NodeJS.WritableStream, data: Uint8Array): Promise<void> {
  if (stream.write(data)) return;
  // A stream already closed (a reader that went away) will never drain: nothing to wait for.
  if ((stream as { destroyed?: unknown }).destroyed === true) return;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('error', done);
      stream.off('close', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('error', done);
    stream.once('close', done);
  });
}

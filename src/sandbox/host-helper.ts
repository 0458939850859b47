import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { AirlockError } from '../errors.js';
import { findExecutable } from './runtimes.js';

/**
 * The host helper (host-helper.pl, decision 0012): a small long-lived Perl process that does
 * the engine's host work without starting a tool for each step. It starts host processes
 * (the runtime, its kill and delete) and relays their output and exit; it allocates, formats
 * and mounts job disks and unmounts them with system calls; and it keeps every job's
 * deadline (watchdog.ts), also after this Node.js process died. Node.js starts a process by
 * forking itself, which costs in proportion to its memory (about 3 ms of CPU from a 100 MiB
 * worker), and each tool costs its own start-up besides. A Node.js process has two: one for
 * processes and deadlines (shared()), one for disks (disks(): a disk may keep it waiting);
 * each is started on first use and again if it ever dies. Processes are started by argv,
 * never by a shell.
 */

const HELPER_SOURCE = fileURLToPath(new URL('../../../src/sandbox/host-helper.pl', import.meta.url));
const SYSTEM_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
/** A report header line is small; anything longer means the stream is corrupt. */
const MAX_HEADER = 4096;
/** How much of the helper's own stderr is kept (the last of it), to explain its death. */
const MAX_HELPER_STDERR = 4096;
/**
 * How long the helper may take to answer a request before it is declared dead (and killed):
 * a disk operation that hangs (storage in trouble) must not hang the worker with it.
 */
const REQUEST_TIMEOUT_MS = { disk: 120_000, unmount: 120_000, arm: 10_000, disarm: null } as const;
/** What the helper accepts (it ends on anything else): checked here, so only that call fails. */
const MAX_REQUEST_BYTES = 1 << 20;
const MAX_ARGV = 99_999;
const MAX_DEADLINE_MS = 1e12 - 1;

type RequestOp = keyof typeof REQUEST_TIMEOUT_MS;

/** Request ids are unique across helpers: an answer can never be taken for another's. */
let nextId = 1;
function takeId(): number {
  const id = nextId;
  nextId += 1;
  return id;
}

/** Half of a UTF-16 surrogate pair alone: no UTF-8 encoding exists for it. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * A request as the helper reads it: its length in bytes, a newline, then the fields separated
 * by NUL bytes. A field with a NUL byte cannot be passed (nor could it be a path, an argument
 * or an environment entry).
 */
function frame(fields: readonly (string | number)[]): Buffer {
  const texts = fields.map(String);
  for (const text of texts) {
    if (text.includes('\0')) throw new RangeError('a NUL byte in a host command, path or environment entry');
    if (LONE_SURROGATE.test(text))
      throw new RangeError('a host command, path or environment entry that is not valid Unicode');
  }
  const payload = Buffer.from(texts.join('\0'), 'utf8');
  if (payload.length > MAX_REQUEST_BYTES)
    throw new RangeError(`a host request of more than ${MAX_REQUEST_BYTES} bytes`);
  return Buffer.concat([Buffer.from(`${payload.length}\n`), payload]);
}

/** The helper writes bytes past ASCII as \u00XX (Latin-1): the UTF-8 they were. */
function fromHelper(text: string | undefined): string | undefined {
  return text === undefined ? undefined : Buffer.from(text, 'latin1').toString('utf8');
}

export type HostSignal = 'KILL' | 'TERM' | 'INT' | 'HUP';

export interface HostSpawnOptions {
  readonly env: Readonly<Record<string, string>>;
  /** Its own session and process group (kill(..., true) signals the group). */
  readonly setsid?: boolean;
}

export interface HostExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Set when the process could not be started, or the helper died before it ended. */
  readonly error: NodeJS.ErrnoException | null;
}

export interface HostProcess {
  /** The process's PID once started; rejects if it could not be started. */
  readonly started: Promise<number>;
  /** Resolves once it was reaped and its stdout and stderr ended (Node's 'close'). */
  readonly closed: Promise<HostExit>;
  onData(listener: (stream: 'stdout' | 'stderr', chunk: Buffer) => void): void;
  /** Signals the process (or its group) if it has not been reaped yet. */
  kill(signal: HostSignal, group?: boolean): void;
}

/** A disk or unmount request the helper failed: `step` names where (allocate, format, mount, unmount). */
export interface HostRequestError extends NodeJS.ErrnoException {
  step?: string;
}

interface Live {
  readonly started: { resolve: (pid: number) => void; reject: (error: Error) => void };
  readonly closed: (exit: HostExit) => void;
  listeners: ((stream: 'stdout' | 'stderr', chunk: Buffer) => void)[];
  pid: number | null;
}

interface Report {
  readonly t: string;
  readonly id?: number;
  readonly pid?: number;
  readonly s?: number;
  readonly n?: number;
  readonly code?: number | null;
  readonly signal?: string | null;
  readonly errno?: string;
  readonly step?: string;
  readonly message?: string;
}

/** The pipes of a child process are sockets, which can be ref'd and unref'd. */
function handle(stream: Readable | Writable): { ref?: () => void; unref?: () => void } {
  return stream as unknown as { ref?: () => void; unref?: () => void };
}

function errnoError(code: string, message: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(message);
  error.code = code;
  return error;
}

export class HostHelper {
  readonly #child: ChildProcessByStdio<Writable, Readable, Readable>;
  readonly #live = new Map<number, Live>();
  readonly #requests = new Map<
    number,
    { resolve: () => void; reject: (error: HostRequestError) => void; op: RequestOp; timer?: NodeJS.Timeout }
  >();
  /** Requests with a deadline, in the order sent: the helper answers them in that order. */
  readonly #queue: number[] = [];
  #pending: Buffer = Buffer.alloc(0);
  /** The header of an output report whose bytes have not all arrived. */
  #awaiting: { id: number; stream: 'stdout' | 'stderr'; bytes: number } | null = null;
  #dead: string | null = null;
  #stderr = '';

  private constructor(perl: string) {
    this.#child = spawn(perl, [HELPER_SOURCE], {
      stdio: ['pipe', 'pipe', 'pipe'],
      // Its own process group: a Ctrl-C at the terminal reaches Airlock, which stops its jobs
      // properly; the helper and the runtimes it started are not signalled directly.
      detached: true,
      env: { PATH: SYSTEM_PATH, LANG: 'C' },
    });
    this.#child.on('error', (error) => this.#die(`cannot start the host helper: ${error.message}`));
    this.#child.stdin.on('error', () => undefined);
    this.#child.stdout.on('data', (chunk: Buffer) => this.#read(chunk));
    this.#child.stderr.on('data', (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString('utf8')).slice(-MAX_HELPER_STDERR);
    });
    // 'close', not 'exit': the reports it wrote before it ended are read first.
    this.#child.on('close', (code, signal) => {
      const how = signal !== null ? `killed by ${signal}` : `exit code ${code}`;
      const detail = this.#stderr.trim().split('\n').slice(-2).join(' | ');
      this.#die(`Airlock's host helper exited (${how})${detail === '' ? '' : `: ${detail}`}`);
    });
    this.#idle();
  }

  static #shared: HostHelper | null = null;
  static #disks: HostHelper | null = null;

  /**
   * The helper of this process for processes and deadlines, started on first use and again
   * after it died. It never blocks on a disk: a job's output and every deadline go through it.
   */
  static shared(): HostHelper {
    if (HostHelper.#shared === null || HostHelper.#shared.#dead !== null)
      HostHelper.#shared = HostHelper.#start();
    return HostHelper.#shared;
  }

  /** The helper of this process for disks (an unmount may wait for the disk for a while). */
  static disks(): HostHelper {
    if (HostHelper.#disks === null || HostHelper.#disks.#dead !== null)
      HostHelper.#disks = HostHelper.#start();
    return HostHelper.#disks;
  }

  static #start(): HostHelper {
    const perl = findExecutable('perl', SYSTEM_PATH);
    if (perl === null) {
      throw new AirlockError(
        'HOST_UNSUPPORTED',
        'perl is missing; Airlock does its host work through a small Perl helper (Debian/Ubuntu: apt-get install perl-base)',
      );
    }
    return new HostHelper(perl);
  }

  /** The helper's PID (tests and the sweep's bookkeeping). */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  spawn(file: string, argv: readonly string[], options: HostSpawnOptions): HostProcess {
    if (file === '') throw new RangeError('no program to start');
    if (argv.length + 1 > MAX_ARGV) throw new RangeError(`more than ${MAX_ARGV} arguments`);
    const id = takeId();
    // argv[0] is the program's name, as a shell would set it.
    const request = frame([
      'spawn',
      id,
      options.setsid === true ? 1 : 0,
      file,
      argv.length + 1,
      file,
      ...argv,
      ...Object.entries(options.env).map(([name, value]) => {
        if (name === '' || name.includes('=')) throw new RangeError(`bad environment variable name ${name}`);
        return `${name}=${value}`;
      }),
    ]);
    let resolveStarted: (pid: number) => void = () => undefined;
    let rejectStarted: (error: Error) => void = () => undefined;
    const started = new Promise<number>((resolve, reject) => {
      resolveStarted = resolve;
      rejectStarted = reject;
    });
    // Callers that only wait for `closed` need not handle a failed start twice.
    started.catch(() => undefined);
    let resolveClosed: (exit: HostExit) => void = () => undefined;
    const closed = new Promise<HostExit>((resolve) => {
      resolveClosed = resolve;
    });
    const live: Live = {
      started: { resolve: resolveStarted, reject: rejectStarted },
      closed: resolveClosed,
      listeners: [],
      pid: null,
    };
    if (this.#dead !== null) {
      const error = errnoError('EHOSTHELPER', this.#dead);
      rejectStarted(error);
      resolveClosed({ code: null, signal: null, error });
    } else {
      this.#live.set(id, live);
      this.#busy();
      this.#send(request);
    }
    return {
      started,
      closed,
      onData: (listener) => {
        live.listeners.push(listener);
      },
      kill: (signal, group = false) => {
        if (this.#live.has(id)) this.#send(frame(['kill', id, signal, group ? 1 : 0]));
      },
    };
  }

  /**
   * Formats and mounts a job's disk: `image` (created empty by the caller) is allocated in full,
   * formatted ext4 and mounted on `mountPoint` through a loop device, nosuid, nodev, noatime.
   */
  makeDisk(image: string, bytes: number, mountPoint: string): Promise<void> {
    return this.#request('disk', [image, bytes, mountPoint]).answered;
  }

  /** Unmounts `path` (its last component is not followed if it is a link). */
  unmount(path: string): Promise<void> {
    return this.#request('unmount', [path]).answered;
  }

  /**
   * Arms a job's watchdog in the helper: `afterMs` from now every process under the job's
   * cgroup directory `dir` is killed, even if this Node.js process has died by then. Resolves
   * once it is armed; disarm() with the returned handle when the job ended first.
   */
  async arm(dir: string, afterMs: number): Promise<number> {
    if (!Number.isFinite(afterMs) || afterMs > MAX_DEADLINE_MS)
      throw new RangeError(`a deadline of ${afterMs} ms`);
    const { id, answered } = this.#request('arm', [dir, Math.max(0, Math.ceil(afterMs))]);
    await answered;
    return id;
  }

  /** Disarms a watchdog armed by this helper (nothing, if the helper died meanwhile). */
  disarm(watch: number): void {
    // Nothing waits for it: a watchdog that strikes after its job ended finds no process.
    if (this.#dead === null) this.#request('disarm', [watch]).answered.catch(() => undefined);
  }

  #request(op: RequestOp, fields: readonly (string | number)[]): { id: number; answered: Promise<void> } {
    const id = takeId();
    if (this.#dead !== null) return { id, answered: Promise.reject(errnoError('EHOSTHELPER', this.#dead)) };
    const request = frame([op, id, ...fields]);
    const answered = new Promise<void>((resolve, reject) => {
      this.#requests.set(id, { resolve, reject, op });
      if (REQUEST_TIMEOUT_MS[op] !== null) {
        this.#queue.push(id);
        if (this.#queue.length === 1) this.#startDeadline(id);
      }
      this.#busy();
      this.#send(request);
    });
    return { id, answered };
  }

  /**
   * A request's deadline runs from when the helper can start on it: the one before it was
   * answered. When it passes, the answer may already wait in the pipe (a stalled event loop
   * runs its timers before it reads): the helper is declared dead only if, after the next
   * read, there is still no answer.
   */
  #startDeadline(id: number): void {
    const request = this.#requests.get(id);
    const ms = request === undefined ? null : REQUEST_TIMEOUT_MS[request.op];
    if (request === undefined || ms === null || this.#dead !== null) return;
    request.timer = setTimeout(() => {
      setImmediate(() => {
        if (this.#requests.has(id)) this.#corrupt(`no answer to ${request.op} within ${ms / 1000} s`);
      });
    }, ms);
    // The request itself keeps the event loop alive while it waits (#busy), not its deadline.
    request.timer.unref();
  }

  #answer(id: number, error: HostRequestError | null): void {
    const request = this.#requests.get(id);
    if (request === undefined) return;
    this.#requests.delete(id);
    clearTimeout(request.timer);
    const queued = this.#queue.indexOf(id);
    if (queued >= 0) {
      this.#queue.splice(queued, 1);
      const next = this.#queue[0];
      if (queued === 0 && next !== undefined) this.#startDeadline(next);
    }
    if (error === null) request.resolve();
    else request.reject(error);
    if (this.#live.size === 0 && this.#requests.size === 0) this.#idle();
  }

  #send(request: Buffer): void {
    if (this.#dead === null) this.#child.stdin.write(request);
  }

  /** While processes run the helper keeps Node.js's event loop alive; idle, it does not. */
  #busy(): void {
    this.#child.ref();
    handle(this.#child.stdout).ref?.();
  }

  #idle(): void {
    this.#child.unref();
    for (const stream of [this.#child.stdout, this.#child.stderr, this.#child.stdin])
      handle(stream).unref?.();
  }

  #read(chunk: Buffer): void {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    for (;;) {
      if (this.#awaiting !== null) {
        const { id, stream, bytes } = this.#awaiting;
        if (this.#pending.length < bytes) return;
        const data = this.#pending.subarray(0, bytes);
        this.#pending = this.#pending.subarray(bytes);
        this.#awaiting = null;
        for (const listener of this.#live.get(id)?.listeners ?? []) listener(stream, data);
        continue;
      }
      const end = this.#pending.indexOf(10);
      if (end < 0) {
        if (this.#pending.length > MAX_HEADER) this.#corrupt('a report line is too long');
        return;
      }
      const line = this.#pending.subarray(0, end).toString('utf8');
      this.#pending = this.#pending.subarray(end + 1);
      let report: Report;
      try {
        report = JSON.parse(line) as Report;
      } catch {
        this.#corrupt('a report that is not JSON');
        return;
      }
      this.#handle(report);
    }
  }

  #handle(report: Report): void {
    const live = report.id === undefined ? undefined : this.#live.get(report.id);
    switch (report.t) {
      case 'spawned':
        if (live !== undefined && typeof report.pid === 'number') {
          live.pid = report.pid;
          live.started.resolve(report.pid);
        }
        return;
      case 'out':
        // The bytes that follow must be taken whole, or they would be read as reports.
        if (!Number.isSafeInteger(report.n) || (report.n ?? -1) < 0 || report.id === undefined) {
          this.#corrupt('an output report without its length');
          return;
        }
        this.#awaiting = {
          id: report.id,
          stream: report.s === 2 ? 'stderr' : 'stdout',
          bytes: report.n ?? 0,
        };
        return;
      case 'done':
        if (report.id !== undefined) this.#answer(report.id, null);
        return;
      case 'failed':
        if (report.id !== undefined && this.#requests.has(report.id)) {
          const error: HostRequestError = errnoError(
            report.errno ?? 'EIO',
            fromHelper(report.message) ?? 'failed',
          );
          if (report.step !== undefined) error.step = report.step;
          this.#answer(report.id, error);
          return;
        }
        if (live !== undefined && report.id !== undefined) {
          const error = errnoError(report.errno ?? 'EIO', fromHelper(report.message) ?? 'cannot start');
          this.#end(report.id, { code: null, signal: null, error });
        }
        return;
      case 'exit':
        if (live !== undefined && report.id !== undefined) {
          this.#end(report.id, {
            code: typeof report.code === 'number' ? report.code : null,
            signal: typeof report.signal === 'string' ? (report.signal as NodeJS.Signals) : null,
            error: null,
          });
        }
        return;
      default:
        this.#corrupt(`an unknown report ${JSON.stringify(report.t)}`);
    }
  }

  #end(id: number, exit: HostExit): void {
    const live = this.#live.get(id);
    if (live === undefined) return;
    this.#live.delete(id);
    if (live.pid === null) live.started.reject(exit.error ?? errnoError('EIO', 'not started'));
    live.closed(exit);
    if (this.#live.size === 0 && this.#requests.size === 0) this.#idle();
  }

  #corrupt(why: string): void {
    // Fail closed: a helper that cannot be understood is not used again.
    this.#die(`Airlock's host helper misbehaved (${why})`);
    try {
      this.#child.kill('SIGKILL');
    } catch {
      // gone
    }
  }

  #die(why: string): void {
    if (this.#dead !== null) return;
    this.#dead = why;
    for (const id of [...this.#live.keys()])
      this.#end(id, { code: null, signal: null, error: errnoError('EHOSTHELPER', why) });
    for (const id of [...this.#requests.keys()]) this.#answer(id, errnoError('EHOSTHELPER', why));
    this.#idle();
  }
}

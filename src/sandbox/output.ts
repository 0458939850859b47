/**
 * The job's stdout and stderr: passed on chunk by chunk as they arrive (never gathered
 * whole), up to a byte cap shared by both streams. At the cap a visible marker is written
 * to the stream that reached it; the rest is read (so the job never blocks on a full pipe)
 * and counted, then dropped.
 */

export type StreamName = 'stdout' | 'stderr';
export type OutputListener = (stream: StreamName, chunk: Buffer) => void;

export function truncationMarker(limitBytes: number): string {
  return `\n[airlock] output truncated: the limit of ${formatBytes(limitBytes)} was reached; further output is discarded\n`;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1 && Number.isInteger(value / 1024)) {
    value /= 1024;
    unit += 1;
  }
  return `${value} ${units[unit]}`;
}

export class OutputLimiter {
  readonly #limit: number;
  readonly #listener: OutputListener;
  #seen = 0;
  #kept = 0;
  #truncated = false;

  constructor(limitBytes: number, listener: OutputListener) {
    this.#limit = limitBytes;
    this.#listener = listener;
  }

  write(stream: StreamName, chunk: Buffer): void {
    this.#seen += chunk.length;
    if (this.#truncated) return;
    const room = this.#limit - this.#kept;
    if (chunk.length <= room) {
      this.#kept += chunk.length;
      if (chunk.length > 0) this.#listener(stream, chunk);
      return;
    }
    if (room > 0) this.#listener(stream, chunk.subarray(0, room));
    this.#kept = this.#limit;
    this.#truncated = true;
    this.#listener(stream, Buffer.from(truncationMarker(this.#limit)));
  }

  /** Bytes the job wrote to stdout and stderr, kept or not. */
  get totalBytes(): number {
    return this.#seen;
  }

  /** Bytes passed on (without the marker). */
  get keptBytes(): number {
    return this.#kept;
  }

  get truncated(): boolean {
    return this.#truncated;
  }
}

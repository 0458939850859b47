import { readFileSync } from 'node:fs';

/**
 * Parsing of /proc/self/mountinfo: which cgroup hierarchies exist, and whether a job's disk
 * is still mounted.
 */

export interface MountEntry {
  readonly mountPoint: string;
  readonly type: string;
  readonly source: string;
  readonly superOptions: readonly string[];
}

/** Unescapes the octal escapes (\040 for space, \134 for backslash) of mountinfo fields. */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const separator = line.indexOf(' - ');
    if (separator < 0) continue;
    const left = line.slice(0, separator).split(' ');
    const right = line.slice(separator + 3).split(' ');
    const mountPoint = left[4];
    const type = right[0];
    if (mountPoint === undefined || type === undefined) continue;
    entries.push({
      mountPoint: unescapeMountField(mountPoint),
      type,
      source: unescapeMountField(right[1] ?? ''),
      superOptions: (right[2] ?? '').split(','),
    });
  }
  return entries;
}

export function readMountInfo(): MountEntry[] {
  return parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** Mount points at or below `dir`, deepest first (the order to unmount them in). */
export function mountsBelow(dir: string, entries: readonly MountEntry[] = readMountInfo()): string[] {
  if (dir.length > 1 && dir.endsWith('/')) return mountsBelow(dir.replace(/\/+$/, ''), entries);
  const prefix = `${dir}/`;
  return entries
    .map((entry) => entry.mountPoint)
    .filter((point) => point === dir || point.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

import { AirlockError } from '../errors.js';

/**
 * A line diff of two versions of a policy or profile (`airlock policy diff`): the longest
 * common subsequence of their lines, shown in unified form — `-` for a line only the old
 * text has, `+` for one only the new text has, ` ` for context, `@@` hunks with 3 lines of
 * context. Pure; nothing here reads or prints.
 *
 * Bounded: the LCS table is quadratic, so each side may hold at most MAX_DIFF_LINES lines
 * (at most ~50 MB of table); a longer text is refused rather than allowed to exhaust the
 * CLI's memory.
 */

export const MAX_DIFF_LINES = 5000;
export const DEFAULT_CONTEXT = 3;

export type DiffOp = ' ' | '-' | '+';

export interface DiffLine {
  readonly op: DiffOp;
  /** The line with its "\n" — absent only on a last line that has none. */
  readonly text: string;
}

/** Lines with their terminators: "a\nb" → ["a\n", "b"]; "" → []. */
export function splitLines(text: string): string[] {
  const parts = text.split('\n');
  const last = parts.pop() ?? '';
  const lines = parts.map((part) => `${part}\n`);
  if (last !== '') lines.push(last);
  return lines;
}

function checkSize(lines: readonly string[], name: string): void {
  if (lines.length > MAX_DIFF_LINES)
    throw new AirlockError(
      'INVALID_OPTION',
      `${name} has ${lines.length} lines; a diff compares at most ${MAX_DIFF_LINES} lines a side (save both with \`show\` and use a diff tool)`,
    );
}

/**
 * The edit script from `older` to `newer`: every line of both, in order, each marked kept,
 * removed or added; the kept lines are a longest common subsequence. Removals come before
 * additions where a block was replaced. `names` name the texts in the size error.
 */
export function diffLines(
  older: string,
  newer: string,
  names: { readonly older: string; readonly newer: string } = {
    older: 'the old text',
    newer: 'the new text',
  },
): DiffLine[] {
  const a = splitLines(older);
  const b = splitLines(newer);
  checkSize(a, names.older);
  checkSize(b, names.newer);

  // A policy change is usually small: the common head and tail need no table.
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head += 1;
  let endA = a.length;
  let endB = b.length;
  while (endA > head && endB > head && a[endA - 1] === b[endB - 1]) {
    endA -= 1;
    endB -= 1;
  }

  // Lines as small integers: the table compares numbers, not strings.
  const ids = new Map<string, number>();
  const idOf = (line: string): number => {
    let id = ids.get(line);
    if (id === undefined) {
      id = ids.size;
      ids.set(line, id);
    }
    return id;
  };
  const x = Int32Array.from(a.slice(head, endA), idOf);
  const y = Int32Array.from(b.slice(head, endB), idOf);
  const n = x.length;
  const m = y.length;
  const width = m + 1;
  // lcs[i * width + j]: length of the LCS of x[i..] and y[j..]; at most MAX_DIFF_LINES, so 16 bits.
  const lcs = new Uint16Array((n + 1) * width);
  for (let i = n - 1; i >= 0; i -= 1)
    for (let j = m - 1; j >= 0; j -= 1)
      lcs[i * width + j] =
        x[i] === y[j]
          ? (lcs[(i + 1) * width + j + 1] ?? 0) + 1
          : Math.max(lcs[(i + 1) * width + j] ?? 0, lcs[i * width + j + 1] ?? 0);

  const result: DiffLine[] = a.slice(0, head).map((text) => ({ op: ' ', text }));
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) {
      result.push({ op: ' ', text: a[head + i] ?? '' });
      i += 1;
      j += 1;
    } else if (j >= m || (i < n && (lcs[(i + 1) * width + j] ?? 0) >= (lcs[i * width + j + 1] ?? 0))) {
      result.push({ op: '-', text: a[head + i] ?? '' });
      i += 1;
    } else {
      result.push({ op: '+', text: b[head + j] ?? '' });
      j += 1;
    }
  }
  for (const text of a.slice(endA)) result.push({ op: ' ', text });
  return result;
}

/** Whether an edit script changes anything. */
export function hasChanges(lines: readonly DiffLine[]): boolean {
  return lines.some((line) => line.op !== ' ');
}

function range(before: number, count: number): string {
  // Unified format: an empty range names the line before it (0 at the very start).
  const start = count === 0 ? before : before + 1;
  return count === 1 ? `${start}` : `${start},${count}`;
}

/**
 * The edit script in unified form: `--- older` / `+++ newer` headers, then `@@ -l,s +l,s @@`
 * hunks with `context` lines around each change (changes closer than twice that share a
 * hunk). A line without a final newline is followed by `\ No newline at end of file`.
 * "" when nothing changed.
 */
export function unifiedDiff(
  lines: readonly DiffLine[],
  labels: { readonly older: string; readonly newer: string },
  context: number = DEFAULT_CONTEXT,
): string {
  if (!Number.isInteger(context) || context < 0) throw new RangeError('context must be a whole number ≥ 0');
  const changes: number[] = [];
  lines.forEach((line, index) => {
    if (line.op !== ' ') changes.push(index);
  });
  if (changes.length === 0) return '';

  // Hunks as [start, end) index ranges over `lines`, merged where their context meets.
  const hunks: [number, number][] = [];
  for (const index of changes) {
    const start = Math.max(0, index - context);
    const end = Math.min(lines.length, index + context + 1);
    const last = hunks.at(-1);
    if (last !== undefined && start <= last[1]) last[1] = end;
    else hunks.push([start, end]);
  }

  const out = [`--- ${labels.older}\n`, `+++ ${labels.newer}\n`];
  let index = 0;
  let olderSeen = 0;
  let newerSeen = 0;
  for (const [start, end] of hunks) {
    for (; index < start; index += 1) {
      const op = lines[index]?.op;
      if (op !== '+') olderSeen += 1;
      if (op !== '-') newerSeen += 1;
    }
    const hunk = lines.slice(start, end);
    const olderCount = hunk.filter((line) => line.op !== '+').length;
    const newerCount = hunk.filter((line) => line.op !== '-').length;
    out.push(`@@ -${range(olderSeen, olderCount)} +${range(newerSeen, newerCount)} @@\n`);
    for (const line of hunk) {
      if (line.text.endsWith('\n')) out.push(`${line.op}${line.text}`);
      else out.push(`${line.op}${line.text}\n\\ No newline at end of file\n`);
    }
  }
  return out.join('');
}

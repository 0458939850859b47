import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isAirlockError } from '../../src/errors.js';
import {
  type DiffLine,
  diffLines,
  hasChanges,
  MAX_DIFF_LINES,
  splitLines,
  unifiedDiff,
} from '../../src/policy/diff.js';

/**
 * The line diff of `airlock policy diff`: exact outputs for known cases, the size bound, and
 * properties over random texts — the edit script rebuilds both texts, keeps a longest common
 * subsequence (checked against a naive LCS written here), and its unified form, applied as a
 * patch by the small applier below, turns the old text into the new one.
 */

const labels = { older: 'a', newer: 'b' };

/** Rebuilds a text from the lines of an edit script whose op is in `ops`. */
function rebuild(lines: readonly DiffLine[], ops: string): string {
  return lines
    .filter((line) => ops.includes(line.op))
    .map((line) => line.text)
    .join('');
}

/** Naive LCS length (memoised recursion on indices), independent of the module's table. */
function lcsLength(a: readonly string[], b: readonly string[]): number {
  const memo = new Map<number, number>();
  const go = (i: number, j: number): number => {
    if (i === a.length || j === b.length) return 0;
    const key = i * (b.length + 1) + j;
    const known = memo.get(key);
    if (known !== undefined) return known;
    const value = a[i] === b[j] ? 1 + go(i + 1, j + 1) : Math.max(go(i + 1, j), go(i, j + 1));
    memo.set(key, value);
    return value;
  };
  return go(0, 0);
}

/** Applies a unified diff to `older` as `patch` would: hunk by hunk, checking every context line. */
function applyUnified(older: string, diff: string): string {
  if (diff === '') return older;
  const source = splitLines(older);
  const patch = diff.split('\n');
  patch.pop(); // the diff ends with "\n"
  assert.match(patch[0] ?? '', /^--- /);
  assert.match(patch[1] ?? '', /^\+\+\+ /);
  const out: string[] = [];
  let at = 0; // next line of `source` not yet copied
  let k = 2;
  while (k < patch.length) {
    const header = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@$/.exec(patch[k] ?? '');
    assert.ok(header, `not a hunk header: ${patch[k]}`);
    const olderCount = header[2] === undefined ? 1 : Number(header[2]);
    const olderStart = Number(header[1]);
    // An empty old range names the line before it.
    const first = olderCount === 0 ? olderStart : olderStart - 1;
    assert.ok(first >= at, 'hunks overlap or go backwards');
    while (at < first) out.push(source[at++] ?? assert.fail('hunk beyond the end'));
    k += 1;
    let seenOlder = 0;
    let seenNewer = 0;
    const newerCount = header[4] === undefined ? 1 : Number(header[4]);
    while (k < patch.length && !(patch[k] ?? '').startsWith('@@')) {
      const line = patch[k] ?? '';
      const noNewline = patch[k + 1] === '\\ No newline at end of file';
      const text = `${line.slice(1)}${noNewline ? '' : '\n'}`;
      if (line[0] === ' ' || line[0] === '-') {
        assert.equal(source[at], text, `context or removed line does not match at ${at}`);
        at += 1;
        seenOlder += 1;
      }
      if (line[0] === ' ' || line[0] === '+') {
        out.push(text);
        seenNewer += 1;
      }
      assert.ok(' -+'.includes(line[0] ?? 'x'), `bad line in hunk: ${line}`);
      k += noNewline ? 2 : 1;
    }
    assert.equal(seenOlder, olderCount, 'old count in the hunk header');
    assert.equal(seenNewer, newerCount, 'new count in the hunk header');
  }
  while (at < source.length) out.push(source[at++] ?? '');
  return out.join('');
}

describe('policy diff', () => {
  test('splitLines keeps terminators and a last line without one', () => {
    assert.deepEqual(splitLines(''), []);
    assert.deepEqual(splitLines('a'), ['a']);
    assert.deepEqual(splitLines('a\n'), ['a\n']);
    assert.deepEqual(splitLines('a\n\nb'), ['a\n', '\n', 'b']);
  });

  test('identical texts: no changes, no output', () => {
    const lines = diffLines('x\ny\n', 'x\ny\n');
    assert.equal(hasChanges(lines), false);
    assert.equal(unifiedDiff(lines, labels), '');
  });

  test('a line added in the middle: one hunk with 3 lines of context each side', () => {
    const older = 'l1\nl2\nl3\nl4\nl5\nl6\nl7\nl8\n';
    const newer = 'l1\nl2\nl3\nl4\nnew\nl5\nl6\nl7\nl8\n';
    assert.equal(
      unifiedDiff(diffLines(older, newer), { older: 'policy v1', newer: 'policy v2' }),
      '--- policy v1\n+++ policy v2\n@@ -2,6 +2,7 @@\n l2\n l3\n l4\n+new\n l5\n l6\n l7\n',
    );
  });

  test('a replaced line: the removal comes before the addition', () => {
    assert.equal(
      unifiedDiff(diffLines('a\nb\nc\n', 'a\nB\nc\n'), labels),
      '--- a\n+++ b\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n',
    );
  });

  test('changes far apart get hunks of their own; close ones share one', () => {
    const older = Array.from({ length: 20 }, (_, i) => `line ${i}\n`);
    const far = [...older];
    far[1] = 'changed 1\n';
    far[18] = 'changed 18\n';
    const farDiff = unifiedDiff(diffLines(older.join(''), far.join('')), labels);
    assert.deepEqual(farDiff.match(/^@@ .* @@$/gm), ['@@ -1,5 +1,5 @@', '@@ -16,5 +16,5 @@']);
    const near = [...older];
    near[5] = 'changed 5\n';
    near[11] = 'changed 11\n'; // 5 unchanged lines between: ≤ 2 × 3, one hunk
    const nearDiff = unifiedDiff(diffLines(older.join(''), near.join('')), labels);
    assert.deepEqual(nearDiff.match(/^@@ .* @@$/gm), ['@@ -3,13 +3,13 @@']);
  });

  test('from and to an empty text: the empty range names line 0', () => {
    assert.equal(unifiedDiff(diffLines('', 'a\nb\n'), labels), '--- a\n+++ b\n@@ -0,0 +1,2 @@\n+a\n+b\n');
    assert.equal(unifiedDiff(diffLines('a\n', ''), labels), '--- a\n+++ b\n@@ -1 +0,0 @@\n-a\n');
  });

  test('a missing final newline is a change, and is marked', () => {
    assert.equal(
      unifiedDiff(diffLines('a\nb\n', 'a\nb'), labels),
      '--- a\n+++ b\n@@ -1,2 +1,2 @@\n a\n-b\n+b\n\\ No newline at end of file\n',
    );
  });

  test(`more than ${MAX_DIFF_LINES} lines a side is refused with INVALID_OPTION, naming the side`, () => {
    const big = 'x\n'.repeat(MAX_DIFF_LINES + 1);
    assert.throws(
      () => diffLines('a\n', big, { older: 'policy v1', newer: 'policy v9' }),
      (error: unknown) =>
        isAirlockError(error, 'INVALID_OPTION') && /policy v9 has 5001 lines/.test(error.message),
    );
    assert.throws(
      () => diffLines(big, ''),
      (error: unknown) => isAirlockError(error, 'INVALID_OPTION'),
    );
  });

  test(`${MAX_DIFF_LINES} entirely different lines a side: the worst case still finishes`, () => {
    const older = Array.from({ length: MAX_DIFF_LINES }, (_, i) => `old ${i}\n`).join('');
    const newer = Array.from({ length: MAX_DIFF_LINES }, (_, i) => `new ${i}\n`).join('');
    const started = performance.now();
    const lines = diffLines(older, newer);
    assert.ok(performance.now() - started < 10_000);
    assert.equal(lines.length, 2 * MAX_DIFF_LINES);
    assert.equal(rebuild(lines, ' +'), newer);
  });

  // Texts from a few distinct lines, so that they share lines often; the last newline may be missing.
  const text = fc
    .tuple(
      fc.array(fc.constantFrom('permit', 'forbid', '', '  when {', '};', 'x'), { maxLength: 30 }),
      fc.boolean(),
    )
    .map(([lines, finalNewline]) => {
      const joined = lines.join('\n');
      return finalNewline && joined !== '' ? `${joined}\n` : joined;
    });

  test('property: " "/"+" lines rebuild the new text, " "/"-" lines the old one', () => {
    fc.assert(
      fc.property(text, text, (older, newer) => {
        const lines = diffLines(older, newer);
        assert.equal(rebuild(lines, ' +'), newer);
        assert.equal(rebuild(lines, ' -'), older);
        assert.equal(hasChanges(lines), older !== newer);
      }),
      { numRuns: 500 },
    );
  });

  test('property: the kept lines are a longest common subsequence', () => {
    fc.assert(
      fc.property(text, text, (older, newer) => {
        const kept = diffLines(older, newer).filter((line) => line.op === ' ').length;
        assert.equal(kept, lcsLength(splitLines(older), splitLines(newer)));
      }),
      { numRuns: 300 },
    );
  });

  test('property: the unified diff, applied as a patch to the old text, gives the new one', () => {
    fc.assert(
      fc.property(text, text, fc.integer({ min: 0, max: 4 }), (older, newer, context) => {
        const diff = unifiedDiff(diffLines(older, newer), labels, context);
        assert.equal(diff === '', older === newer);
        assert.equal(applyUnified(older, diff), newer);
      }),
      { numRuns: 500 },
    );
  });

  test('property: with context covering everything, the hunk lines are the whole edit script', () => {
    fc.assert(
      fc.property(text, text, (older, newer) => {
        fc.pre(older !== newer);
        const diff = unifiedDiff(diffLines(older, newer), labels, 1000);
        const body = diff
          .split('\n')
          .slice(2, -1)
          .filter((line) => !line.startsWith('@@'));
        assert.equal((diff.match(/^@@/gm) ?? []).length, 1);
        // Marker lines belong to the line before them: drop that line's newline.
        const rebuilt = (ops: string): string => {
          let out = '';
          body.forEach((line, index) => {
            if (line === '\\ No newline at end of file' || !ops.includes(line[0] ?? '')) return;
            out += line.slice(1) + (body[index + 1] === '\\ No newline at end of file' ? '' : '\n');
          });
          return out;
        };
        assert.equal(rebuilt(' +'), newer);
        assert.equal(rebuilt(' -'), older);
      }),
      { numRuns: 300 },
    );
  });
});

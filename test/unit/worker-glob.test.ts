import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { compileGlob, compileGlobs, GLOB_BOUNDS, matchSegment, parseGlob } from '../../src/worker/glob.js';

const INVALID_JOB = { name: 'AirlockError', code: 'INVALID_JOB' };

/** A path segment without glob characters or "/" (nor "." / ".."). */
const literalSegment = fc
  .string({ unit: fc.constantFrom('a', 'b', 'Z', '0', '.', '-', '_', 'é', '😀'), minLength: 1, maxLength: 8 })
  .filter((segment) => segment !== '.' && segment !== '..');
const literalPath = fc.array(literalSegment, { minLength: 1, maxLength: 6 }).map((parts) => parts.join('/'));

describe('glob: examples', () => {
  const cases: [string, string, boolean][] = [
    ['out/a.bin', 'out/a.bin', true],
    ['out/a.bin', 'out/a.bin2', false],
    ['out/a.bin', 'x/out/a.bin', false],
    ['*.txt', 'notes.txt', true],
    ['*.txt', 'dir/notes.txt', false],
    ['*.txt', '.txt', true],
    ['dist/**', 'dist/app.js', true],
    ['dist/**', 'dist/js/deep/app.js', true],
    ['dist/**', 'dist', true],
    ['dist/**', 'distx/app.js', false],
    ['**/*.o', 'a.o', true],
    ['**/*.o', 'src/lib/a.o', true],
    ['**/*.o', 'src/lib/a.c', false],
    ['a/**/b', 'a/b', true],
    ['a/**/b', 'a/x/y/b', true],
    ['a/**/b', 'a/x/y/c', false],
    ['?.c', 'a.c', true],
    ['?.c', 'ab.c', false],
    ['?', '😀', true],
    ['a*b*c', 'abc', true],
    ['a*b*c', 'aXbYbZc', true],
    ['a*b*c', 'aXbYbZ', false],
    ['a**b', 'aXXb', true],
    ['a**b', 'aX/Xb', false],
    ['./dist//x', 'dist/x', true],
    ['[ab].c', '[ab].c', true],
    ['[ab].c', 'a.c', false],
  ];
  for (const [pattern, path, expected] of cases) {
    test(`${pattern} ${expected ? 'matches' : 'does not match'} ${path}`, () => {
      assert.equal(compileGlob(pattern)(path), expected);
    });
  }

  test('several patterns: a path matches when any does', () => {
    const match = compileGlobs(['*.txt', 'dist/**']);
    assert.equal(match('a.txt'), true);
    assert.equal(match('dist/x/y'), true);
    assert.equal(match('src/a.ts'), false);
  });

  test('a hostile pattern costs polynomial time, not exponential', () => {
    const pattern = `${'*a'.repeat(200)}b`;
    const started = performance.now();
    assert.equal(matchSegment(pattern, 'a'.repeat(255)), false);
    assert.ok(performance.now() - started < 1000);
  });
});

describe('glob: patterns that are refused', () => {
  for (const pattern of ['', '/', '/etc/**', '../x', 'a/../../b', '.', 'a\0b']) {
    test(JSON.stringify(pattern), () => {
      assert.throws(() => parseGlob(pattern), INVALID_JOB);
    });
  }
  test('not a string, too long, too many', () => {
    assert.throws(() => parseGlob(42), INVALID_JOB);
    assert.throws(() => parseGlob('a'.repeat(GLOB_BOUNDS.maxPatternBytes + 1)), INVALID_JOB);
    assert.throws(() => compileGlobs(new Array(GLOB_BOUNDS.maxPatterns + 1).fill('a')), INVALID_JOB);
  });
});

describe('glob: properties', () => {
  test('a literal path matches itself and no other literal path', () => {
    fc.assert(
      fc.property(literalPath, literalPath, (path, other) => {
        assert.equal(compileGlob(path)(path), true);
        assert.equal(compileGlob(path)(other), path === other);
      }),
    );
  });

  test('"**" matches every path', () => {
    fc.assert(fc.property(literalPath, (path) => assert.equal(compileGlob('**')(path), true)));
  });

  test('"*" matches exactly the paths of one segment', () => {
    fc.assert(fc.property(literalPath, (path) => assert.equal(compileGlob('*')(path), !path.includes('/'))));
  });

  test('"D/**" matches exactly D and the paths below it', () => {
    fc.assert(
      fc.property(literalSegment, literalPath, (dir, path) => {
        const match = compileGlob(`${dir}/**`);
        assert.equal(match(`${dir}/${path}`), true);
        assert.equal(match(path), path === dir || path.startsWith(`${dir}/`));
      }),
    );
  });

  test('"?" repeated n times matches the segments of exactly n characters', () => {
    fc.assert(
      fc.property(literalSegment, fc.integer({ min: 1, max: 9 }), (segment, n) => {
        assert.equal(matchSegment('?'.repeat(n), segment), [...segment].length === n);
      }),
    );
  });

  test('replacing any characters of a segment by "*" still matches it', () => {
    fc.assert(
      fc.property(literalSegment, fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }), (segment, mask) => {
        const pattern = [...segment].map((char, index) => (mask[index] === true ? '*' : char)).join('');
        assert.equal(matchSegment(pattern, segment), true);
      }),
    );
  });
});

import { AirlockError } from '../errors.js';

/**
 * The glob patterns of a job's `outputs` ("dist/**", "*.txt", "out/a.bin"), matched against
 * workspace-relative file paths ("dist/js/app.js"):
 *   `*`  any run of characters inside one path segment (never a "/");
 *   `?`  exactly one character inside a segment;
 *   `**` as a whole segment: any number of segments, zero included ("a/**" matches "a" and
 *        everything below it); inside a segment ("a**b") it is the same as `*`;
 *   anything else matches itself. No braces, classes or escapes; dot files are not special.
 *
 * Patterns come from the job, so from whoever submitted it: matching is iterative with one
 * backtracking point per level, O(pattern × path), never a regular expression that a
 * pattern like "*a*a*a*a*b" could send into exponential backtracking on the worker.
 */

/** Bounds on a job's output patterns (DESIGN §5.6: everything is bounded). */
export const GLOB_BOUNDS = Object.freeze({ maxPatterns: 256, maxPatternBytes: 1024 });

export type GlobMatcher = (path: string) => boolean;

function invalid(message: string): never {
  throw new AirlockError('INVALID_JOB', message);
}

/**
 * Checks a pattern and returns its segments. A pattern that could name anything outside the
 * workspace (absolute, "..") is refused: outputs are read inside the workspace only.
 */
export function parseGlob(pattern: unknown, what = 'an outputs pattern'): string[] {
  if (typeof pattern !== 'string') invalid(`${what} must be a string`);
  if (pattern.includes('\0')) invalid(`${what} must not contain a NUL byte`);
  if (Buffer.byteLength(pattern, 'utf8') > GLOB_BOUNDS.maxPatternBytes)
    invalid(`${what} is longer than ${GLOB_BOUNDS.maxPatternBytes} bytes`);
  if (pattern.startsWith('/')) invalid(`${what} must be relative to the workspace: ${pattern}`);
  const segments = pattern.split('/').filter((segment) => segment !== '' && segment !== '.');
  if (segments.length === 0) invalid(`${what} is empty: "${pattern}"`);
  if (segments.includes('..')) invalid(`${what} must not contain "..": ${pattern}`);
  return segments;
}

/** Whether one path segment matches one pattern segment (`*`, `?`, literal characters). */
export function matchSegment(pattern: string, text: string): boolean {
  // Code points, not UTF-16 units: `?` stands for one character, also outside the BMP.
  return matchSequence(
    [...pattern],
    [...text],
    (token) => token === '*',
    (token, char) => (token === '?' ? true : token === char),
  );
}

/** Compiles a pattern (checked by parseGlob) into a matcher of workspace-relative paths. */
export function compileGlob(pattern: string): GlobMatcher {
  const segments = parseGlob(pattern);
  return (path) => {
    const parts = path.split('/');
    return matchSequence(segments, parts, (segment) => segment === '**', matchSegment);
  };
}

/** A matcher for several patterns: a path matches when any of them does. */
export function compileGlobs(patterns: readonly string[]): GlobMatcher {
  if (patterns.length > GLOB_BOUNDS.maxPatterns)
    invalid(`more than ${GLOB_BOUNDS.maxPatterns} outputs patterns`);
  const matchers = patterns.map((pattern) => compileGlob(pattern));
  return (path) => matchers.some((match) => match(path));
}

/**
 * Wildcard matching over a sequence: `isStar` tokens match any run of items (zero
 * included), the others one item each through `matchOne`. The classic greedy algorithm:
 * on a mismatch, go back to the last star and let it swallow one more item. Linear in
 * practice, O(tokens × items) at worst.
 */
function matchSequence<T, U>(
  tokens: readonly T[],
  items: readonly U[],
  isStar: (token: T) => boolean,
  matchOne: (token: T, item: U) => boolean,
): boolean {
  let t = 0;
  let i = 0;
  let starT = -1;
  let starI = 0;
  while (i < items.length) {
    const token = tokens[t];
    const item = items[i] as U;
    if (token !== undefined && isStar(token)) {
      starT = t;
      starI = i;
      t += 1;
    } else if (token !== undefined && matchOne(token, item)) {
      t += 1;
      i += 1;
    } else if (starT !== -1) {
      t = starT + 1;
      starI += 1;
      i = starI;
    } else {
      return false;
    }
  }
  while (t < tokens.length && isStar(tokens[t] as T)) t += 1;
  return t === tokens.length;
}

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  AirlockError,
  type AirlockErrorCode,
  describeError,
  ERROR_CATALOGUE,
  isAirlockError,
} from '../../src/errors.js';

const CODES = Object.keys(ERROR_CATALOGUE) as AirlockErrorCode[];

describe('AirlockError', () => {
  for (const code of CODES) {
    test(`${code} carries the catalogue's status, exit code and retryability`, () => {
      const error = new AirlockError(code, 'what went wrong');
      const kind = ERROR_CATALOGUE[code];
      assert.equal(error.code, code);
      assert.equal(error.httpStatus, kind.httpStatus);
      assert.equal(error.exitCode, kind.exitCode);
      assert.equal(error.retryable, kind.retryable);
      assert.equal(error.message, 'what went wrong');
      assert.equal(error.name, 'AirlockError');
      assert.ok(error instanceof Error);
    });
  }

  test('keeps its cause', () => {
    const cause = new Error('EACCES');
    const error = new AirlockError('SANDBOX_SETUP_FAILED', 'cannot create', { cause });
    assert.equal(error.cause, cause);
    assert.equal(error.retryable, true);
  });

  test('the catalogue is sane: HTTP error statuses, a CLI exit code of 125, a summary each', () => {
    for (const code of CODES) {
      const kind = ERROR_CATALOGUE[code];
      assert.match(code, /^[A-Z]+(?:_[A-Z]+)*$/);
      assert.ok(kind.httpStatus >= 400 && kind.httpStatus <= 599, `${code} httpStatus ${kind.httpStatus}`);
      // 125 is reserved for "refused or Airlock's own failure": never a job's own code.
      assert.equal(kind.exitCode, 125, code);
      assert.ok(kind.summary.length > 0, code);
    }
  });
});

describe('isAirlockError', () => {
  const error = new AirlockError('INVALID_JOB', 'bad');

  test('recognises an AirlockError, optionally of one code', () => {
    assert.equal(isAirlockError(error), true);
    assert.equal(isAirlockError(error, 'INVALID_JOB'), true);
    assert.equal(isAirlockError(error, 'INVALID_OPTION'), false);
  });

  test('refuses look-alikes', () => {
    assert.equal(isAirlockError(new Error('bad')), false);
    assert.equal(isAirlockError({ name: 'AirlockError', code: 'INVALID_JOB', message: 'bad' }), false);
    assert.equal(isAirlockError(null), false);
    assert.equal(isAirlockError('INVALID_JOB'), false);
  });
});

test('describeError gives the message of an Error and the text of anything else', () => {
  assert.equal(describeError(new TypeError('nope')), 'nope');
  assert.equal(describeError('plain'), 'plain');
  assert.equal(describeError(42), '42');
});

describe('docs/errors.md', () => {
  // From dist/test/unit/errors.test.js to the repository's docs/.
  const docUrl = new URL('../../../docs/errors.md', import.meta.url);

  /** The rows of the doc's Markdown table(s), as arrays of trimmed cells (header and rule lines dropped). */
  function tableRows(): string[][] {
    const text = readFileSync(docUrl, 'utf8');
    return text
      .split('\n')
      .filter((line) => line.trimStart().startsWith('|'))
      .map((line) =>
        line
          .trim()
          .replace(/^\||\|$/g, '')
          .split('|')
          .map((cell) => cell.trim()),
      )
      .filter((cells) => !cells.every((cell) => /^:?-+:?$/.test(cell)));
  }

  /** Every backticked name in the table that looks like an error code (UPPER_CASE). */
  function documentedCodes(): Set<string> {
    const names = new Set<string>();
    for (const cells of tableRows()) {
      for (const cell of cells) {
        for (const match of cell.matchAll(/`([^`]+)`/g)) {
          const name = match[1] ?? '';
          if (/^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$/.test(name)) names.add(name);
        }
      }
    }
    return names;
  }

  test('lists every code of the catalogue', () => {
    const documented = documentedCodes();
    const missing = CODES.filter((code) => !documented.has(code));
    assert.deepEqual(missing, [], `codes missing from docs/errors.md: ${missing.join(', ')}`);
  });

  test('lists no code that is not in the catalogue', () => {
    const unknown = [...documentedCodes()].filter((name) => !(name in ERROR_CATALOGUE));
    assert.deepEqual(unknown, [], `docs/errors.md lists unknown codes: ${unknown.join(', ')}`);
  });

  test("gives each code the catalogue's HTTP status, exit code and retryability", () => {
    const rows = tableRows();
    const header = (rows[0] ?? []).map((cell) => cell.toLowerCase());
    const column = (name: string): number => {
      const index = header.indexOf(name);
      assert.ok(index >= 0, `docs/errors.md table has a "${name}" column`);
      return index;
    };
    const [codeAt, httpAt, exitAt, retryAt] = [
      column('code'),
      column('http'),
      column('exit'),
      column('retry helps'),
    ];
    for (const cells of rows.slice(1)) {
      const code = /^`([A-Z_]+)`$/.exec(cells[codeAt] ?? '')?.[1];
      if (code === undefined || !(code in ERROR_CATALOGUE)) continue;
      const kind = ERROR_CATALOGUE[code as AirlockErrorCode];
      assert.equal(cells[httpAt], String(kind.httpStatus), `${code} HTTP`);
      assert.equal(cells[exitAt], String(kind.exitCode), `${code} exit`);
      assert.equal(cells[retryAt], kind.retryable ? 'yes' : 'no', `${code} retry helps`);
    }
  });
});

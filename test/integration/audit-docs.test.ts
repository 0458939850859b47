import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { REPO_ROOT } from './helpers.js';
import { spec, startTestServer, type TestServer } from './server-helpers.js';

/**
 * docs/audit.md promises that an outside verifier needs only the documented formats: its
 * dependency-free snippet is taken from the document as written and run against a live
 * server's checkpoint and proof — and must refuse a changed entry, proof or checkpoint.
 */

async function snippet(): Promise<string> {
  const text = await readFile(join(REPO_ROOT, 'docs/audit.md'), 'utf8');
  const match = /```js verify-inclusion\n([\s\S]*?)\n```/.exec(text);
  assert.ok(match?.[1] !== undefined, 'docs/audit.md has the verify-inclusion snippet');
  return match[1];
}

function run(script: string, input: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [script, input], { timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({
        code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1,
        stdout,
        stderr,
      });
    });
  });
}

describe('docs/audit.md: verifying without Airlock', () => {
  let server: TestServer;
  let dir: string;
  let script: string;
  before(async () => {
    server = await startTestServer();
    dir = await mkdtemp(join(tmpdir(), 'airlock-verify-doc-'));
    script = join(dir, 'verify-inclusion.mjs');
    await writeFile(script, await snippet());
    for (let i = 0; i < 6; i++)
      await server.call('POST', '/v1/jobs', server.admin, spec('docs', ['echo', String(i)]));
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('the snippet verifies a real checkpoint and inclusion proof, and refuses changed ones', async () => {
    const checkpoint = (await server.call('POST', '/v1/audit/checkpoint', server.admin)).body;
    const verifierKey = (await server.call('GET', '/v1/audit/keys', server.admin)).body.keys[0].verifierKey;
    interface Input {
      verifierKey: string;
      checkpoint: string;
      proof: { entry: string; proof: string[]; leafIndex: number; treeSize: number };
    }
    const check = async (seq: number, change?: (input: Input) => void) => {
      const proof = (
        await server.call(
          'GET',
          `/v1/audit/proof/inclusion?seq=${seq}&treeSize=${checkpoint.treeSize}`,
          server.admin,
        )
      ).body;
      const input: Input = { verifierKey, checkpoint: checkpoint.note, proof };
      change?.(input);
      const file = join(dir, `input-${seq}.json`);
      await writeFile(file, JSON.stringify(input));
      return run(script, file);
    };
    for (const seq of [1, 2, 5, checkpoint.treeSize]) {
      const ok = await check(seq);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, new RegExp(`^OK: entry ${seq} is in airlock-audit/`));
    }
    const changedEntry = await check(3, (input) => {
      const entry = Buffer.from(input.proof.entry, 'base64').toString('utf8');
      const changed = entry.replace(/"actor":"[^"]*"/, '"actor":"mallory"');
      assert.notEqual(changed, entry);
      input.proof.entry = Buffer.from(changed).toString('base64');
    });
    assert.equal(changedEntry.code, 1);
    assert.match(changedEntry.stderr, /not in the signed tree/);
    const changedProof = await check(3, (input) => {
      input.proof.proof[0] = Buffer.alloc(32, 1).toString('base64');
    });
    assert.equal(changedProof.code, 1);
    const otherIndex = await check(3, (input) => {
      input.proof.leafIndex = 3;
    });
    assert.equal(otherIndex.code, 1);
    const forged = await check(3, (input) => {
      input.checkpoint = input.checkpoint.replace(
        `\n${checkpoint.treeSize}\n`,
        `\n${checkpoint.treeSize - 1}\n`,
      );
    });
    assert.equal(forged.code, 1);
    assert.match(forged.stderr, /not signed by this key/);
  });
});

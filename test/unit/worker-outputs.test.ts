import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { AirlockError } from '../../src/errors.js';
import { WorkspaceReader } from '../../src/sandbox/workspace.js';
import { collectOutputs, OUTPUT_BOUNDS } from '../../src/worker/outputs.js';

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

describe('collectOutputs (real WorkspaceReader on a temporary directory)', () => {
  test('matching regular files with digest and size, sorted; links and directories never', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'airlock-outputs-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    await mkdir(join(dir, 'dist', 'js'), { recursive: true });
    await writeFile(join(dir, 'dist', 'js', 'app.js'), 'app');
    await writeFile(join(dir, 'dist', 'index.html'), '<html>');
    await writeFile(join(dir, 'notes.txt'), 'notes');
    await writeFile(join(dir, 'src.ts'), 'src');
    // A job's attempt to make the worker hash a host file: a link is reported, never followed.
    await symlink('/etc/passwd', join(dir, 'dist', 'passwd'));
    await symlink('/etc', join(dir, 'etc.txt'));
    const notes: string[] = [];
    const outputs = await collectOutputs(new WorkspaceReader(dir), ['dist/**', '*.txt'], (line) =>
      notes.push(line),
    );
    assert.deepEqual(outputs, [
      { path: 'dist/index.html', sha256: sha256('<html>'), size: 6 },
      { path: 'dist/js/app.js', sha256: sha256('app'), size: 3 },
      { path: 'notes.txt', sha256: sha256('notes'), size: 5 },
    ]);
    assert.deepEqual(notes, []);
  });

  test('no patterns: nothing is listed or read', async () => {
    let listed = false;
    const outputs = await collectOutputs(
      {
        list: async () => {
          listed = true;
          return [];
        },
        readFile: async () => Buffer.alloc(0),
      },
      [],
      () => undefined,
    );
    assert.deepEqual(outputs, []);
    assert.equal(listed, false);
  });

  test('bounds: more matches than reported, too many entries, a file that cannot be read — each noted', async () => {
    const notes: string[] = [];
    const entries = ['a', 'b', 'c', 'big'].map((path) => ({ path, type: 'file' as const, size: 1 }));
    const outputs = await collectOutputs(
      {
        list: async () => entries,
        readFile: async (path) => {
          if (path === 'big') throw new AirlockError('INPUT_REJECTED', 'workspace file big is too large');
          return Buffer.from(path);
        },
      },
      ['*'],
      (line) => notes.push(line),
      { ...OUTPUT_BOUNDS, maxFiles: 3, maxListEntries: 4 },
    );
    // Sorted: a, b, big, c — the first three are kept, and big is left out.
    assert.deepEqual(
      outputs.map((file) => file.path),
      ['a', 'b'],
    );
    assert.equal(notes.length, 3);
    assert.match(notes[0] ?? '', /more than 4 entries/);
    assert.match(notes[1] ?? '', /4 files match; only the first 3/);
    assert.match(notes[2] ?? '', /big left out: workspace file big is too large/);
  });

  test('files left out are named up to 20 times, then counted', async () => {
    const notes: string[] = [];
    const entries = Array.from({ length: 50 }, (_, i) => ({ path: `f${i}`, type: 'file' as const, size: 1 }));
    const outputs = await collectOutputs(
      {
        list: async () => entries,
        readFile: async () => {
          throw new AirlockError('INPUT_REJECTED', 'too large');
        },
      },
      ['*'],
      (line) => notes.push(line),
    );
    assert.deepEqual(outputs, []);
    assert.equal(notes.length, 21);
    assert.match(notes[20] ?? '', /30 more matching files left out/);
  });

  test('a workspace that cannot be listed gives no outputs and a note, not an exception', async () => {
    const notes: string[] = [];
    const outputs = await collectOutputs(
      {
        list: async () => {
          throw new Error('EIO');
        },
        readFile: async () => Buffer.alloc(0),
      },
      ['**'],
      (line) => notes.push(line),
    );
    assert.deepEqual(outputs, []);
    assert.match(notes[0] ?? '', /could not be listed: EIO/);
  });
});

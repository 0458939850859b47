import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { JOB_BOUNDS } from '../../src/sandbox/job.js';
import {
  copyInputDir,
  type Workspace,
  WorkspaceReader,
  workspacePaths,
  writeWorkspaceFiles,
} from '../../src/sandbox/workspace.js';

/**
 * The workspace's host side, on plain temporary directories (no disk image, no mount).
 * copyInputDir and writeWorkspaceFiles chown to the job's host user, so those tests need root.
 */

const INPUT_REJECTED = { name: 'AirlockError', code: 'INPUT_REJECTED' };
const INVALID_JOB = { name: 'AirlockError', code: 'INVALID_JOB' };
const JOB_USER = { uid: 2_147_484_648, gid: 2_147_484_648 };
const isRoot = process.getuid?.() === 0;

let tmp: string;
let counter = 0;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'airlock-workspace-test-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** A fresh directory below the test's temp dir. */
async function freshDir(name: string): Promise<string> {
  const dir = join(tmp, `${name}-${counter++}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

/** A Workspace as createWorkspace() lays it out, but on a plain directory. */
async function freshWorkspace(): Promise<Workspace> {
  const ws = workspacePaths(await freshDir('job'));
  await mkdir(ws.workDir, { recursive: true });
  await mkdir(ws.tmpDir, { recursive: true });
  return ws;
}

test('workspacePaths puts work/ and tmp/ on the disk mounted in the job directory', () => {
  assert.deepEqual(workspacePaths('/s/jobs/al-1'), {
    image: '/s/jobs/al-1/disk.img',
    mountPoint: '/s/jobs/al-1/disk',
    workDir: '/s/jobs/al-1/disk/work',
    tmpDir: '/s/jobs/al-1/disk/tmp',
  });
});

describe('WorkspaceReader', () => {
  let work: string;
  let outside: string;
  let reader: WorkspaceReader;

  before(async () => {
    work = await freshDir('read-work');
    outside = await freshDir('read-outside');
    await writeFile(join(outside, 'secret'), 'host secret\n');
    await writeFile(join(work, 'result.txt'), 'built\n');
    await mkdir(join(work, 'dir'));
    await writeFile(join(work, 'dir', 'nested.txt'), 'nested\n');
    await writeFile(join(work, 'big.bin'), Buffer.alloc(1000, 1));
    await symlink(join(work, 'dir'), join(work, 'linkdir'));
    await symlink('result.txt', join(work, 'link.txt'));
    await symlink(outside, join(work, 'escape'));
    execFileSync('mkfifo', [join(work, 'fifo')]);
    reader = new WorkspaceReader(work);
  });

  test('reads a regular file, also in a subdirectory', async () => {
    assert.equal((await reader.readFile('result.txt', 100)).toString(), 'built\n');
    assert.equal((await reader.readFile('dir/nested.txt', 100)).toString(), 'nested\n');
    assert.equal((await reader.readFile('./dir//nested.txt', 100)).toString(), 'nested\n');
  });

  test('reads a file of exactly maxBytes, refuses one byte more', async () => {
    assert.equal((await reader.readFile('big.bin', 1000)).length, 1000);
    await assert.rejects(reader.readFile('big.bin', 999), INPUT_REJECTED);
  });

  test('refuses a path through a symlinked directory, even one pointing inside', async () => {
    await assert.rejects(reader.readFile('linkdir/nested.txt', 100), INPUT_REJECTED);
    await assert.rejects(reader.readFile('escape/secret', 100), INPUT_REJECTED);
  });

  test('refuses a symlink, even to a file inside the workspace', async () => {
    await assert.rejects(reader.readFile('link.txt', 100), INPUT_REJECTED);
  });

  test('refuses paths that leave the workspace', async () => {
    await assert.rejects(reader.readFile('../x', 100), INVALID_JOB);
    await assert.rejects(reader.readFile('dir/../../x', 100), INVALID_JOB);
    await assert.rejects(reader.readFile(join(outside, 'secret'), 100), INVALID_JOB);
  });

  test('refuses a FIFO without blocking on it', async () => {
    await assert.rejects(reader.readFile('fifo', 100), INPUT_REJECTED);
  });

  test('refuses a directory and a path through a file', async () => {
    await assert.rejects(reader.readFile('dir', 100), INPUT_REJECTED);
    await assert.rejects(reader.readFile('result.txt/x', 100), INPUT_REJECTED);
  });

  test('list() reports links as links, without following them', async () => {
    const entries = await reader.list();
    const byPath = new Map(entries.map((entry) => [entry.path, entry.type]));
    assert.deepEqual(Object.fromEntries([...byPath].sort()), {
      'big.bin': 'file',
      dir: 'directory',
      'dir/nested.txt': 'file',
      escape: 'symlink',
      fifo: 'other',
      'link.txt': 'symlink',
      linkdir: 'symlink',
      'result.txt': 'file',
    });
    assert.ok(
      !entries.some((entry) => entry.path.startsWith('linkdir/') || entry.path.startsWith('escape/')),
    );
  });

  test('list() stops at maxEntries', async () => {
    // list()'s parameter is typed as the literal 10000 (its default, JOB_BOUNDS.maxFiles, is a
    // frozen literal), so any other limit needs this cast; see the report.
    const listUpTo = (max: number) => reader.list(max as typeof JOB_BOUNDS.maxFiles);
    assert.equal((await listUpTo(3)).length, 3);
    assert.equal((await listUpTo(0)).length, 0);
  });
});

describe('copyInputDir', { skip: isRoot ? false : 'needs root (chown)' }, () => {
  let input: string;

  before(async () => {
    input = await freshDir('input');
    await writeFile(join(input, 'a.txt'), 'hello');
    await writeFile(join(input, 'run.sh'), '#!/bin/sh\necho hi\n');
    await chmod(join(input, 'run.sh'), 0o755);
    await writeFile(join(input, 'suid'), 'x');
    await chmod(join(input, 'suid'), 0o4755);
    await mkdir(join(input, 'sub'));
    await chmod(join(input, 'sub'), 0o2775);
    await writeFile(join(input, 'sub', 'b.txt'), 'world');
    await symlink('../a.txt', join(input, 'sub', 'rel-link'));
    await symlink('/etc/shadow', join(input, 'abs-link'));
  });

  test('copies files, directories and links, owned by the job user; counts them', async () => {
    const ws = await freshWorkspace();
    const count = await copyInputDir(ws, input, JOB_USER);
    assert.deepEqual(count, { files: 7, bytes: 5 + 18 + 1 + 5 });
    assert.equal(await readFile(join(ws.workDir, 'a.txt'), 'utf8'), 'hello');
    assert.equal(await readFile(join(ws.workDir, 'sub', 'b.txt'), 'utf8'), 'world');
    for (const path of ['a.txt', 'run.sh', 'suid', 'sub', 'sub/b.txt', 'sub/rel-link', 'abs-link']) {
      const info = await lstat(join(ws.workDir, path));
      assert.equal(info.uid, JOB_USER.uid, path);
      assert.equal(info.gid, JOB_USER.gid, path);
    }
    assert.equal((await stat(join(ws.workDir, 'run.sh'))).mode & 0o777, 0o755);
  });

  test('copies links as links with the same target, never following them', async () => {
    const ws = await freshWorkspace();
    await copyInputDir(ws, input, JOB_USER);
    for (const path of ['sub/rel-link', 'abs-link']) {
      assert.ok((await lstat(join(ws.workDir, path))).isSymbolicLink(), path);
      assert.equal(await readlink(join(ws.workDir, path)), await readlink(join(input, path)), path);
    }
  });

  test('drops set-id bits from files and directories', async () => {
    const ws = await freshWorkspace();
    await copyInputDir(ws, input, JOB_USER);
    assert.equal((await stat(join(ws.workDir, 'suid'))).mode & 0o7777, 0o755);
    assert.equal((await stat(join(ws.workDir, 'sub'))).mode & 0o7777, 0o775);
  });

  test('refuses a FIFO in the input', async () => {
    const withFifo = await freshDir('input-fifo');
    await writeFile(join(withFifo, 'ok.txt'), 'ok');
    execFileSync('mkfifo', [join(withFifo, 'pipe')]);
    await assert.rejects(copyInputDir(await freshWorkspace(), withFifo, JOB_USER), {
      ...INPUT_REJECTED,
      message: /pipe/,
    });
  });

  test('enforces maxFiles, counting directories and links too', async () => {
    await assert.rejects(
      copyInputDir(await freshWorkspace(), input, JOB_USER, { maxFiles: 6, maxBytes: 1e9 }),
      INPUT_REJECTED,
    );
    const count = await copyInputDir(await freshWorkspace(), input, JOB_USER, { maxFiles: 7, maxBytes: 1e9 });
    assert.equal(count.files, 7);
  });

  test('enforces maxBytes over all files', async () => {
    const total = 5 + 18 + 1 + 5;
    await assert.rejects(
      copyInputDir(await freshWorkspace(), input, JOB_USER, { maxFiles: 100, maxBytes: total - 1 }),
      INPUT_REJECTED,
    );
    const count = await copyInputDir(await freshWorkspace(), input, JOB_USER, {
      maxFiles: 100,
      maxBytes: total,
    });
    assert.equal(count.bytes, total);
  });

  test('refuses an input that is missing, a file, or a link to a directory', async () => {
    const ws = await freshWorkspace();
    await assert.rejects(copyInputDir(ws, join(tmp, 'absent'), JOB_USER), INPUT_REJECTED);
    await assert.rejects(copyInputDir(ws, join(input, 'a.txt'), JOB_USER), INPUT_REJECTED);
    const link = join(await freshDir('link-holder'), 'input-link');
    await symlink(input, link);
    await assert.rejects(copyInputDir(ws, link, JOB_USER), INPUT_REJECTED);
    assert.deepEqual(await readdir(ws.workDir), [], 'nothing was copied');
  });
});

describe('writeWorkspaceFiles', { skip: isRoot ? false : 'needs root (chown)' }, () => {
  test('writes files and their parent directories, owned by the job user, with their modes', async () => {
    const ws = await freshWorkspace();
    await writeWorkspaceFiles(
      ws,
      [
        { path: 'src/deep/main.c', content: 'int main(void) { return 0; }\n' },
        { path: 'run.sh', content: Buffer.from('#!/bin/sh\n'), mode: 0o755 },
      ],
      JOB_USER,
    );
    assert.equal(
      await readFile(join(ws.workDir, 'src', 'deep', 'main.c'), 'utf8'),
      'int main(void) { return 0; }\n',
    );
    const script = await stat(join(ws.workDir, 'run.sh'));
    assert.equal(script.mode & 0o7777, 0o755);
    assert.equal((await stat(join(ws.workDir, 'src', 'deep', 'main.c'))).mode & 0o7777, 0o644);
    for (const path of ['src', 'src/deep', 'src/deep/main.c', 'run.sh']) {
      const info = await stat(join(ws.workDir, path));
      assert.equal(info.uid, JOB_USER.uid, path);
      assert.equal(info.gid, JOB_USER.gid, path);
    }
  });

  test('refuses to write through a symlink already at the path', async () => {
    const ws = await freshWorkspace();
    const outside = await freshDir('write-outside');
    const target = join(outside, 'victim');
    await symlink(target, join(ws.workDir, 'evil'));
    // O_CREAT|O_EXCL|O_NOFOLLOW: an existing link fails the open instead of being followed.
    await assert.rejects(writeWorkspaceFiles(ws, [{ path: 'evil', content: 'pwned' }], JOB_USER), {
      code: /^(EEXIST|ELOOP)$/,
    });
    await assert.rejects(lstat(target), { code: 'ENOENT' }, 'nothing was created outside');
  });

  test('refuses to write through a symlinked directory', async () => {
    const ws = await freshWorkspace();
    const outside = await freshDir('write-outside-dir');
    await symlink(outside, join(ws.workDir, 'd'));
    await assert.rejects(
      writeWorkspaceFiles(ws, [{ path: 'd/f', content: 'pwned' }], JOB_USER),
      INPUT_REJECTED,
    );
    assert.deepEqual(await readdir(outside), []);
  });

  test('refuses to overwrite an existing file', async () => {
    const ws = await freshWorkspace();
    await writeFile(join(ws.workDir, 'exists'), 'original');
    await assert.rejects(writeWorkspaceFiles(ws, [{ path: 'exists', content: 'new' }], JOB_USER), {
      code: 'EEXIST',
    });
    assert.equal(await readFile(join(ws.workDir, 'exists'), 'utf8'), 'original');
  });

  test('refuses a path that leaves the workspace', async () => {
    const ws = await freshWorkspace();
    await assert.rejects(
      writeWorkspaceFiles(ws, [{ path: '../escape', content: 'x' }], JOB_USER),
      INVALID_JOB,
    );
    await assert.rejects(lstat(join(ws.mountPoint, 'escape')), { code: 'ENOENT' });
  });
});

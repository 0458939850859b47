import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { readTokenFile, resolveWorkerSettings } from '../../src/cli/worker-command.js';

const INVALID_OPTION = { name: 'AirlockError', code: 'INVALID_OPTION' };
const client = { url: undefined, token: undefined, configFile: '/nonexistent/client.json' };
const defaults = { hostname: 'host1', pid: 42 };

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-worker-cmd-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('resolveWorkerSettings', () => {
  test('defaults: AIRLOCK_URL and AIRLOCK_TOKEN, concurrency 1, HOST-PID, selftest every 6 h', async () => {
    const settings = await resolveWorkerSettings(
      { ...client, url: 'http://127.0.0.1:7340', token: 'tok' },
      {},
      defaults,
    );
    assert.deepEqual(settings, {
      url: 'http://127.0.0.1:7340',
      token: 'tok',
      tokenFile: undefined,
      concurrency: 1,
      name: 'host1-42',
      selftestIntervalMs: 6 * 3600 * 1000,
    });
  });

  test('options win over the environment; interval 0 = only at start', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'token');
    await writeFile(file, 'from-file\n', { mode: 0o600 });
    const settings = await resolveWorkerSettings(
      { ...client, url: 'http://a:1', token: 'from-env' },
      { server: 'https://b:2', tokenFile: file, concurrency: '8', name: 'w-1', selftestInterval: '0' },
      defaults,
    );
    assert.equal(settings.url, 'https://b:2');
    assert.equal(settings.token, 'from-file');
    assert.equal(settings.tokenFile, file);
    assert.equal(settings.concurrency, 8);
    assert.equal(settings.name, 'w-1');
    assert.equal(settings.selftestIntervalMs, 0);
  });

  const refused: [string, Parameters<typeof resolveWorkerSettings>[1], RegExp][] = [
    ['no URL', {}, /no server URL/],
    ['a URL that is not http', { server: 'ftp://x' }, /--server/],
    ['concurrency 0', { server: 'http://x', concurrency: '0' }, /--concurrency: must be between 1 and 64/],
    ['concurrency 65', { server: 'http://x', concurrency: '65' }, /--concurrency/],
    ['concurrency not a number', { server: 'http://x', concurrency: 'two' }, /--concurrency/],
    ['a name with a space', { server: 'http://x', name: 'a b' }, /--name/],
    ['a name too long', { server: 'http://x', name: 'a'.repeat(129) }, /--name/],
    ['an interval too short', { server: 'http://x', selftestInterval: '10s' }, /--selftest-interval/],
    [
      'an interval that is no duration',
      { server: 'http://x', selftestInterval: 'often' },
      /--selftest-interval/,
    ],
  ];
  for (const [what, options, message] of refused) {
    test(`refused: ${what}`, async () => {
      await assert.rejects(resolveWorkerSettings({ ...client, token: 'tok' }, options, defaults), {
        ...INVALID_OPTION,
        message,
      });
    });
  }

  test('refused: no token at all', async () => {
    await assert.rejects(resolveWorkerSettings(client, { server: 'http://x' }, defaults), {
      ...INVALID_OPTION,
      message: /no worker token/,
    });
  });
});

describe('readTokenFile', () => {
  test('a token file group or others can read is refused, and the message says how to fix it', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'token');
    await writeFile(file, 'secret-token');
    await chmod(file, 0o644);
    await assert.rejects(readTokenFile(file), { ...INVALID_OPTION, message: /mode 0644.*chmod 600/ });
    await chmod(file, 0o640);
    await assert.rejects(readTokenFile(file), INVALID_OPTION);
    await chmod(file, 0o600);
    assert.equal(await readTokenFile(file), 'secret-token');
  });

  test('empty, missing, or not a regular file: refused', async (t) => {
    const dir = await tempDir(t);
    const empty = join(dir, 'empty');
    await writeFile(empty, '\n', { mode: 0o600 });
    await assert.rejects(readTokenFile(empty), { ...INVALID_OPTION, message: /empty/ });
    await assert.rejects(readTokenFile(join(dir, 'missing')), INVALID_OPTION);
    await chmod(dir, 0o700);
    await assert.rejects(readTokenFile(dir), { ...INVALID_OPTION, message: /not a regular file/ });
  });

  test('the token never appears in an error message', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'token');
    await writeFile(file, 'very-secret-value', { mode: 0o666 });
    await chmod(file, 0o666);
    await assert.rejects(readTokenFile(file), (error: Error) => !error.message.includes('very-secret-value'));
  });
});

import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readClientConfig, resolveClientSettings, writeClientConfig } from '../../src/client/config-file.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'airlock-client-config-test-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

let counter = 0;
async function configFile(content: string, mode = 0o600): Promise<string> {
  counter += 1;
  const path = join(tmp, `client-${counter}.json`);
  await writeFile(path, content, { mode });
  await chmod(path, mode);
  return path;
}

const SECRET = 'alk_secret_token_value_0123456789';
const refused = { name: 'AirlockError', code: 'INVALID_CONFIG' };

describe('readClientConfig', () => {
  test('reads url and token from a 0600 file', async () => {
    const path = await configFile(JSON.stringify({ url: 'http://127.0.0.1:7340', token: SECRET }));
    assert.deepEqual(await readClientConfig(path), { url: 'http://127.0.0.1:7340', token: SECRET });
  });

  test('a missing file is null, not an error', async () => {
    assert.equal(await readClientConfig(join(tmp, 'absent.json')), null);
  });

  for (const mode of [0o644, 0o640, 0o604, 0o620, 0o602, 0o666]) {
    test(`mode ${mode.toString(8)} is refused, and the message says chmod 600 FILE`, async () => {
      const path = await configFile(JSON.stringify({ url: 'http://x', token: SECRET }), mode);
      await assert.rejects(readClientConfig(path), { ...refused, message: new RegExp(`chmod 600 ${path}`) });
    });
  }

  test('a symbolic link is refused (not followed), even to a 0600 file', async () => {
    const target = await configFile(JSON.stringify({ url: 'http://x', token: SECRET }));
    const link = join(tmp, 'link.json');
    await symlink(target, link);
    await assert.rejects(readClientConfig(link), { ...refused, message: /symbolic link/ });
  });

  test('a directory is refused', async () => {
    const dir = join(tmp, 'dir.json');
    await mkdir(dir, { mode: 0o700 });
    await assert.rejects(readClientConfig(dir), { ...refused, message: /not a regular file/ });
  });

  test('more than 64 KiB is refused', async () => {
    const path = await configFile(JSON.stringify({ url: 'http://x', token: 'a'.repeat(70_000) }));
    await assert.rejects(readClientConfig(path), { ...refused, message: /larger than 65536 bytes/ });
  });

  test('unknown fields, wrong types and non-JSON are refused; the token is never in the message', async () => {
    const cases = [
      JSON.stringify({ url: 'http://x', token: SECRET, extra: 1 }),
      JSON.stringify({ url: 'http://x', token: 42 }),
      JSON.stringify([SECRET]),
      `{"url": "http://x", "token": "${SECRET}"`,
    ];
    for (const content of cases) {
      const path = await configFile(content);
      await assert.rejects(readClientConfig(path), (error: Error & { code?: string }) => {
        assert.equal(error.code, 'INVALID_CONFIG');
        assert.ok(!error.message.includes(SECRET), error.message);
        return true;
      });
    }
  });
});

describe('resolveClientSettings', () => {
  test('AIRLOCK_URL and AIRLOCK_TOKEN win; the file is not even read when both are set', async () => {
    // A world-readable file would be refused if it were read.
    const path = await configFile(JSON.stringify({ url: 'http://file', token: 'file-token' }), 0o644);
    assert.deepEqual(
      await resolveClientSettings({ url: 'http://env', token: 'env-token', configFile: path }),
      {
        url: 'http://env',
        token: 'env-token',
      },
    );
  });

  test('the file fills what the environment leaves out', async () => {
    const path = await configFile(JSON.stringify({ url: 'http://file', token: 'file-token' }));
    assert.deepEqual(await resolveClientSettings({ url: 'http://env', token: undefined, configFile: path }), {
      url: 'http://env',
      token: 'file-token',
    });
    assert.deepEqual(await resolveClientSettings({ url: undefined, token: undefined, configFile: path }), {
      url: 'http://file',
      token: 'file-token',
    });
  });

  test('nothing configured: INVALID_CONFIG telling to run airlock up or set the variables', async () => {
    await assert.rejects(
      resolveClientSettings({ url: undefined, token: undefined, configFile: join(tmp, 'none.json') }),
      { ...refused, message: /no server configured: run `airlock up`, or set AIRLOCK_URL and AIRLOCK_TOKEN/ },
    );
  });

  test('a bad file is an error even when the environment gives half', async () => {
    const path = await configFile(JSON.stringify({ url: 'http://file', token: 'file-token' }), 0o640);
    await assert.rejects(
      resolveClientSettings({ url: 'http://env', token: undefined, configFile: path }),
      refused,
    );
  });
});

describe('writeClientConfig', () => {
  test('creates the directory 0700 and the file 0600, readable back, with no temporary left', async () => {
    const dir = join(tmp, 'new', 'airlock');
    const path = join(dir, 'client.json');
    await writeClientConfig(path, { url: 'http://127.0.0.1:7340', token: SECRET });
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.deepEqual(await readClientConfig(path), { url: 'http://127.0.0.1:7340', token: SECRET });
    assert.deepEqual(await readdir(dir), ['client.json']);
  });

  test('replaces an existing file atomically and tightens its mode', async () => {
    const path = await configFile(JSON.stringify({ url: 'http://old', token: 'old' }), 0o644);
    await writeClientConfig(path, { url: 'https://new.example', token: 'new-token' });
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.deepEqual(JSON.parse(await readFile(path, 'utf8')), {
      url: 'https://new.example',
      token: 'new-token',
    });
  });

  test('refuses a URL that is not http(s) and a token with spaces (programmer misuse)', async () => {
    await assert.rejects(writeClientConfig(join(tmp, 'x.json'), { url: 'ftp://x', token: 't' }), RangeError);
    await assert.rejects(
      writeClientConfig(join(tmp, 'x.json'), { url: 'http://x', token: 'a b' }),
      RangeError,
    );
  });
});

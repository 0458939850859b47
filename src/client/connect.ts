import { createPrivateKey, type KeyObject } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { AirlockConfig } from '../config/config.js';
import { AirlockError, describeError } from '../errors.js';
import { ApiClient } from './api-client.js';
import { resolveClientSettings } from './config-file.js';
import { HttpClient } from './http.js';

/** The API client of the CLI, from AIRLOCK_URL / AIRLOCK_TOKEN or the client config file. */
export async function connect(client: AirlockConfig['client']): Promise<ApiClient> {
  const settings = await resolveClientSettings(client);
  const requestKey =
    client.requestKeyFile === undefined
      ? undefined
      : await readRequestKey(client.requestKeyFile, settings.token);
  return new ApiClient(
    new HttpClient({
      url: settings.url,
      token: settings.token,
      ...(requestKey !== undefined ? { requestKey } : {}),
    }),
  );
}

/** The request-signing key: a regular file of at most 64 KiB holding an Ed25519 PKCS#8 PEM key. */
async function readRequestKey(
  path: string,
  token: string,
): Promise<{ keyId: string; privateKey: KeyObject }> {
  const id = /^alk_([0-9a-f]{16})_/.exec(token)?.[1];
  if (id === undefined)
    throw new AirlockError('INVALID_CONFIG', 'AIRLOCK_REQUEST_KEY: the token is not an Airlock token');
  let text: Buffer;
  try {
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const info = await handle.stat();
      if (!info.isFile() || info.size > 64 * 1024) throw new Error('not a key file');
      // A private key others can read is a key others hold.
      if ((info.mode & 0o077) !== 0) throw new Error(`readable by others: chmod 600 ${path}`);
      text = await handle.readFile();
    } finally {
      await handle.close();
    }
    const privateKey = createPrivateKey({ key: text, format: 'pem' });
    if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('not an Ed25519 key');
    return { keyId: `tok_${id}`, privateKey };
  } catch (error) {
    throw new AirlockError('INVALID_CONFIG', `AIRLOCK_REQUEST_KEY: ${path}: ${describeError(error)}`);
  }
}

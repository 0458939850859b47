import { readFile } from 'node:fs/promises';
import type { SigningKeyInfo } from '../api/types.js';
import { connect } from '../client/connect.js';
import { shortTime, table } from '../client/format.js';
import { AirlockError, describeError } from '../errors.js';
import type { CliContext, CommandResult } from './io.js';

/** `airlock keys add|list|revoke`: the keys trusted to sign a project's jobs. */

const MAX_PUBLIC_KEY_FILE = 16 * 1024;

function keyTable(keys: readonly SigningKeyInfo[]): string {
  return table(
    ['ID', 'PROJECT', 'OWNER', 'TYPE', 'FINGERPRINT', 'RELEASE', 'ADDED', 'REVOKED'],
    keys.map((key) => [
      key.id,
      key.project,
      key.owner,
      key.keyType,
      key.fingerprint,
      key.release ? 'yes' : 'no',
      shortTime(key.createdAt),
      key.revokedAt === null ? '-' : shortTime(key.revokedAt),
    ]),
  );
}

export async function keysAddCommand(
  context: CliContext,
  file: string,
  options: { project: string; owner: string; release?: boolean; json?: boolean },
): Promise<CommandResult> {
  let text: Buffer;
  try {
    text = await readFile(file);
  } catch (error) {
    throw new AirlockError('INVALID_OPTION', `cannot read the public key ${file}: ${describeError(error)}`);
  }
  if (text.length > MAX_PUBLIC_KEY_FILE)
    throw new AirlockError('INVALID_OPTION', `${file} is too large for a public key`);
  if (text.toString('utf8').includes('PRIVATE KEY'))
    throw new AirlockError('INVALID_OPTION', `${file} holds a private key: give the public one (.pub)`);
  const api = await connect(context.config.client);
  const key = await api.addSigningKey({
    project: options.project,
    owner: options.owner,
    publicKey: text.toString('utf8').trim(),
    ...(options.release === true ? { release: true } : {}),
  });
  context.stdout.write(
    options.json === true
      ? `${JSON.stringify(key)}\n`
      : `${key.id} ${key.fingerprint} may now sign jobs of ${key.project} (${key.owner}${key.release ? ', release key' : ''})\n`,
  );
  return 0;
}

export async function keysListCommand(
  context: CliContext,
  options: { project?: string; json?: boolean },
): Promise<CommandResult> {
  const api = await connect(context.config.client);
  const keys = await api.listSigningKeys(options.project);
  context.stdout.write(options.json === true ? `${JSON.stringify({ keys })}\n` : keyTable(keys));
  return 0;
}

export async function keysRevokeCommand(
  context: CliContext,
  id: string,
  options: { json?: boolean },
): Promise<CommandResult> {
  if (!/^key_[0-9a-f]{16}$/.test(id)) throw new AirlockError('INVALID_OPTION', `not a key id: "${id}"`);
  const api = await connect(context.config.client);
  const key = await api.revokeSigningKey(id);
  context.stdout.write(options.json === true ? `${JSON.stringify(key)}\n` : `${key.id} revoked\n`);
  return 0;
}

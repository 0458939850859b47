import { createHmac, createPrivateKey, generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AirlockError, describeError } from '../errors.js';
import { type NoteSigner, rawPublicKey, verifierKeyText } from './note.js';

/**
 * The audit log's two secrets, each a file in the data directory (0600, owned by the
 * server's user, never a link): the Ed25519 key that signs checkpoints and the HMAC key of
 * sensitive values. They are never in the database — a copy of the database handed to an
 * auditor, or stolen, can neither sign a checkpoint nor test guesses against the HMACs —
 * and never reach a worker or a sandbox (DESIGN §5.4): only the control plane reads them.
 */

export const SIGNING_KEY_FILE = 'audit-checkpoint.key';
/** A rotated-in key waits here until the database records it (see rotateSigningKey). */
export const NEXT_SIGNING_KEY_FILE = 'audit-checkpoint.key.next';
export const HMAC_KEY_FILE = 'audit-hmac.key';
const MAX_KEY_FILE_BYTES = 4096;

export interface SigningKey extends NoteSigner {
  /** The C2SP verifier key (name+id+key) of this key. */
  readonly verifierKey: string;
}

function keyError(path: string, message: string, cause?: unknown): AirlockError {
  return new AirlockError(
    'INVALID_CONFIG',
    `audit key ${path}: ${message}`,
    cause === undefined ? {} : { cause },
  );
}

/** Reads a key file: a regular file, not a link, ours, unreadable by anyone else. Null if absent. */
async function readKeyFile(path: string): Promise<Buffer | null> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw keyError(path, 'is a symbolic link; refusing to follow it');
    throw keyError(path, describeError(error), error);
  }
  try {
    const info = await handle.stat();
    // A key others could read is a key others hold; one others could write, a key they chose.
    if (!info.isFile()) throw keyError(path, 'is not a regular file');
    if (info.uid !== process.getuid?.() || (info.mode & 0o077) !== 0)
      throw keyError(path, `must belong to this user with mode 0600 (chmod 600 ${path})`);
    if (info.size > MAX_KEY_FILE_BYTES) throw keyError(path, 'is too large to be a key');
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

/** Writes a key file whole or not at all: a temporary file (0600), fsync, rename, fsync of the directory. */
async function writeKeyFile(dir: string, name: string, data: string): Promise<void> {
  const temporary = join(dir, `.${name}.${randomBytes(6).toString('hex')}`);
  const handle = await open(temporary, 'wx', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, join(dir, name));
  const directory = await open(dir, 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

function signingKey(name: string, privateKey: KeyObject): SigningKey {
  const publicKey = rawPublicKey(privateKey);
  return { name, privateKey, publicKey, verifierKey: verifierKeyText(name, publicKey) };
}

function parseSigningKey(path: string, name: string, pem: Buffer): SigningKey {
  try {
    const privateKey = createPrivateKey({ key: pem, format: 'pem' });
    if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('not an Ed25519 key');
    return signingKey(name, privateKey);
  } catch (error) {
    throw keyError(path, `is not an Ed25519 private key (PKCS#8 PEM): ${describeError(error)}`, error);
  }
}

function newKeyPem(): { pem: string; privateKey: KeyObject } {
  const { privateKey } = generateKeyPairSync('ed25519');
  return { pem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), privateKey };
}

/** The checkpoint signing key under key name `name` (the log's origin), made on first use. */
export async function loadOrCreateSigningKey(
  dataDir: string,
  name: string,
): Promise<{ key: SigningKey; created: boolean }> {
  const path = join(dataDir, SIGNING_KEY_FILE);
  const pem = await readKeyFile(path);
  if (pem !== null) return { key: parseSigningKey(path, name, pem), created: false };
  const made = newKeyPem();
  await writeKeyFile(dataDir, SIGNING_KEY_FILE, made.pem);
  return { key: signingKey(name, made.privateKey), created: true };
}

/**
 * Key rotation, in two steps so a crash between them loses nothing: prepareRotation() writes
 * the new key beside the current one; the caller records it in the database (with its audit
 * event) and then calls completeRotation(), which renames it into place. A start that finds
 * a prepared key settles it with settleRotation().
 */
export async function prepareRotation(dataDir: string, name: string): Promise<SigningKey> {
  const made = newKeyPem();
  await writeKeyFile(dataDir, NEXT_SIGNING_KEY_FILE, made.pem);
  return signingKey(name, made.privateKey);
}

export async function completeRotation(dataDir: string): Promise<void> {
  await rename(join(dataDir, NEXT_SIGNING_KEY_FILE), join(dataDir, SIGNING_KEY_FILE));
  const directory = await open(dataDir, 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

/**
 * At start: a prepared key the database knows as current finishes its rotation; one it does
 * not know (the crash came before the commit) is deleted. Returns whether one was found.
 */
export async function settleRotation(
  dataDir: string,
  name: string,
  isCurrent: (verifierKey: string) => boolean,
): Promise<'none' | 'completed' | 'discarded'> {
  const path = join(dataDir, NEXT_SIGNING_KEY_FILE);
  const pem = await readKeyFile(path);
  if (pem === null) return 'none';
  const next = parseSigningKey(path, name, pem);
  if (isCurrent(next.verifierKey)) {
    await completeRotation(dataDir);
    return 'completed';
  }
  await rm(path);
  return 'discarded';
}

/** The HMAC key of sensitive values (32 random bytes), made on first use. */
export async function loadOrCreateHmacKey(dataDir: string): Promise<Buffer> {
  const path = join(dataDir, HMAC_KEY_FILE);
  const text = await readKeyFile(path);
  if (text !== null) {
    const key = Buffer.from(text.toString('utf8').trim(), 'hex');
    if (key.length !== 32) throw keyError(path, 'must hold 32 bytes as 64 hex digits');
    return key;
  }
  const key = randomBytes(32);
  await writeKeyFile(dataDir, HMAC_KEY_FILE, `${key.toString('hex')}\n`);
  return key;
}

/** A short fingerprint of the HMAC key, kept in the database: a replaced key is noticed. */
export function hmacKeyId(key: Buffer): string {
  return createHmac('sha256', key).update('airlock-audit-hmac-key-id').digest('hex').slice(0, 16);
}

/**
 * The last checkpoint this server signed, kept beside the key (not in the database): the
 * server refuses to sign a tree that does not extend it, so whoever rolls back or rewrites
 * the database cannot get a genuine signature on the result.
 */
export const LAST_SIGNED_FILE = 'audit-checkpoint.last';

export interface LastSigned {
  readonly treeSize: number;
  readonly rootHash: Buffer;
}

export async function readLastSigned(dataDir: string): Promise<LastSigned | null> {
  const path = join(dataDir, LAST_SIGNED_FILE);
  const text = await readKeyFile(path);
  if (text === null) return null;
  try {
    const value = JSON.parse(text.toString('utf8')) as { treeSize?: unknown; rootHash?: unknown };
    const rootHash = Buffer.from(String(value.rootHash), 'base64');
    if (typeof value.treeSize !== 'number' || !Number.isSafeInteger(value.treeSize) || rootHash.length !== 32)
      throw new Error('malformed');
    return { treeSize: value.treeSize, rootHash };
  } catch (error) {
    throw keyError(path, `is not a record of the last signed checkpoint: ${describeError(error)}`, error);
  }
}

export async function writeLastSigned(dataDir: string, last: LastSigned): Promise<void> {
  await writeKeyFile(
    dataDir,
    LAST_SIGNED_FILE,
    `${JSON.stringify({ treeSize: last.treeSize, rootHash: last.rootHash.toString('base64') })}\n`,
  );
}

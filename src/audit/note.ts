import { createHash, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { AirlockError } from '../errors.js';

/**
 * Signed checkpoints in the formats of C2SP: `tlog-checkpoint` (origin line, tree size,
 * base64 root hash, each ending in a newline) inside a `signed-note` (the text, a blank
 * line, then one line per signature: "— NAME base64(key ID || Ed25519 signature)"). An
 * outside verifier needs only these formats, SHA-256 and Ed25519 (docs/audit.md).
 *
 * Verifier keys are written as Go's note package writes them:
 * NAME+KEYID(8 hex)+base64(0x01 || 32-byte public key).
 */

const ED25519 = 0x01;
const EM_DASH = '\u2014';
/** Bounds: a note is a few hundred bytes; anything near these is hostile. */
const MAX_NOTE_BYTES = 64 * 1024;
const MAX_SIGNATURES = 32;
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface Checkpoint {
  readonly origin: string;
  readonly treeSize: number;
  readonly rootHash: Buffer;
}

export interface NoteSigner {
  readonly name: string;
  readonly privateKey: KeyObject;
  readonly publicKey: Buffer;
}

export interface NoteVerifier {
  readonly name: string;
  /** 32-bit key ID, big-endian, as 8 hex digits. */
  readonly keyId: string;
  readonly publicKey: Buffer;
  /** The verifier key text this was parsed from. */
  readonly text: string;
}

/** Whether `text` holds an ASCII control character (newline allowed when asked). */
function hasControl(text: string, allowNewline = false): boolean {
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    if ((code < 0x20 && !(allowNewline && code === 0x0a)) || code === 0x7f) return true;
  }
  return false;
}

function invalid(message: string): never {
  throw new AirlockError('CHECKPOINT_INVALID', message);
}

function checkName(name: string): void {
  // Key names: non-empty, no spaces, no '+' (it separates the verifier key's fields).
  if (name.length === 0 || name.length > 256 || /[\s+]/u.test(name) || hasControl(name))
    throw new RangeError(`not a valid note key name: ${JSON.stringify(name)}`);
}

/** SHA-256(name || 0x0A || 0x01 || public key)[:4], as 8 hex digits. */
export function keyIdOf(name: string, publicKey: Buffer): string {
  return createHash('sha256')
    .update(name, 'utf8')
    .update(Buffer.from([0x0a, ED25519]))
    .update(publicKey)
    .digest()
    .subarray(0, 4)
    .toString('hex');
}

export function verifierKeyText(name: string, publicKey: Buffer): string {
  checkName(name);
  if (publicKey.length !== 32) throw new RangeError('an Ed25519 public key has 32 bytes');
  return `${name}+${keyIdOf(name, publicKey)}+${Buffer.concat([Buffer.from([ED25519]), publicKey]).toString('base64')}`;
}

/** Raw 32-byte public key of an Ed25519 KeyObject (private or public). */
export function rawPublicKey(key: KeyObject): Buffer {
  const der = createPublicKey(key).export({ format: 'der', type: 'spki' });
  if (der.length !== 44 || !der.subarray(0, 12).equals(ED25519_SPKI_PREFIX))
    throw new RangeError('not an Ed25519 key');
  return der.subarray(12);
}

export function parseVerifierKey(text: string): NoteVerifier {
  // The name holds no '+' and the key ID is hex, so the first two '+' split the fields; the
  // base64 key after them may hold more.
  const match = /^([^+]+)\+([^+]*)\+(.*)$/s.exec(text.trim());
  if (match === null) invalid(`not a verifier key (NAME+KEYID+KEY): ${JSON.stringify(text.slice(0, 100))}`);
  const [, name, keyId, encoded] = match as unknown as [string, string, string, string];
  if (
    name === '' ||
    /[\s]/u.test(name) ||
    !/^[0-9a-f]{8}$/.test(keyId) ||
    !/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)
  )
    invalid(`malformed verifier key ${JSON.stringify(text.slice(0, 100))}`);
  const raw = Buffer.from(encoded, 'base64');
  if (raw.length !== 33 || raw[0] !== ED25519)
    invalid(`verifier key ${name}: only Ed25519 keys (type 0x01, 32 bytes) are supported`);
  const publicKey = raw.subarray(1);
  if (keyIdOf(name, publicKey) !== keyId)
    invalid(`verifier key ${name}: the key ID ${keyId} does not match the key`);
  return { name, keyId, publicKey, text: text.trim() };
}

/** The checkpoint body; `extensions` are extra lines after the root (tlog-checkpoint allows them). */
export function formatCheckpoint(checkpoint: Checkpoint, extensions: readonly string[] = []): string {
  if (checkpoint.origin.length === 0 || hasControl(checkpoint.origin))
    throw new RangeError('a checkpoint origin is one non-empty line');
  if (!Number.isSafeInteger(checkpoint.treeSize) || checkpoint.treeSize < 0)
    throw new RangeError('tree size must be a whole number ≥ 0');
  if (checkpoint.rootHash.length !== 32) throw new RangeError('the root hash has 32 bytes');
  if (extensions.some((line) => line === '' || hasControl(line)))
    throw new RangeError('a checkpoint extension is one non-empty line');
  const extra = extensions.map((line) => `${line}\n`).join('');
  return `${checkpoint.origin}\n${checkpoint.treeSize}\n${checkpoint.rootHash.toString('base64')}\n${extra}`;
}

/**
 * The extension line of a rotation checkpoint: `airlock-key-rotation OLD NEW` (verifier keys).
 * It is part of the signed text, so a witness that trusts OLD learns NEW from OLD's signature
 * — never from a signature line someone appended (those sign only the text, not each other).
 */
export const ROTATION_EXTENSION = 'airlock-key-rotation';

export function rotationExtension(oldKey: string, newKey: string): string {
  return `${ROTATION_EXTENSION} ${oldKey} ${newKey}`;
}

export function rotationsIn(extensions: readonly string[]): Array<{ old: string; next: string }> {
  const found: Array<{ old: string; next: string }> = [];
  for (const line of extensions) {
    const match = /^airlock-key-rotation (\S+) (\S+)$/.exec(line);
    if (match?.[1] !== undefined && match[2] !== undefined) found.push({ old: match[1], next: match[2] });
  }
  return found;
}

/** Parses a checkpoint body (the note text, after its signatures are verified). */
export function parseCheckpoint(text: string): Checkpoint & { readonly extensions: readonly string[] } {
  if (!text.endsWith('\n')) invalid('a checkpoint ends with a newline');
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3) invalid('a checkpoint has an origin, a tree size and a root hash line');
  const [origin, size, root, ...extensions] = lines as [string, string, string, ...string[]];
  if (origin === '') invalid('the checkpoint origin line is empty');
  if (!/^(0|[1-9][0-9]{0,15})$/.test(size) || !Number.isSafeInteger(Number(size)))
    invalid(`the checkpoint tree size is not a decimal number: ${JSON.stringify(size.slice(0, 40))}`);
  const rootHash = Buffer.from(root, 'base64');
  if (rootHash.length !== 32 || rootHash.toString('base64') !== root)
    invalid('the checkpoint root hash is not 32 bytes of standard base64');
  if (extensions.some((line) => line === '')) invalid('a checkpoint has no empty lines');
  return { origin, treeSize: Number(size), rootHash, extensions };
}

export function signNote(text: string, signers: readonly NoteSigner[]): string {
  if (!text.endsWith('\n')) throw new RangeError('note text ends with a newline');
  if (signers.length === 0) throw new RangeError('a note needs at least one signer');
  const lines = signers.map((signer) => {
    checkName(signer.name);
    const signature = sign(null, Buffer.from(text, 'utf8'), signer.privateKey);
    const keyId = Buffer.from(keyIdOf(signer.name, signer.publicKey), 'hex');
    return `${EM_DASH} ${signer.name} ${Buffer.concat([keyId, signature]).toString('base64')}\n`;
  });
  return `${text}\n${lines.join('')}`;
}

export interface OpenedNote {
  readonly text: string;
  /** Verifier keys (text) whose signatures verified. */
  readonly signedBy: readonly string[];
}

/**
 * Verifies a signed note against trusted verifier keys, as C2SP signed-note asks: signatures
 * of unknown keys are ignored; a known key's signature that fails rejects the whole note; at
 * least one known key must have signed. Throws CHECKPOINT_INVALID, naming what was wrong.
 */
export function openNote(note: string, verifiers: readonly NoteVerifier[]): OpenedNote {
  if (Buffer.byteLength(note, 'utf8') > MAX_NOTE_BYTES)
    invalid(`the note is larger than ${MAX_NOTE_BYTES} bytes`);
  if (hasControl(note, true)) invalid('the note contains control characters');
  if (!note.endsWith('\n')) invalid('the note does not end with a newline');
  const split = note.lastIndexOf('\n\n');
  if (split < 0) invalid('the note has no blank line before its signatures');
  const text = note.slice(0, split + 1);
  const signatureLines = note.slice(split + 2, -1).split('\n');
  if (signatureLines.length > MAX_SIGNATURES) invalid(`the note has more than ${MAX_SIGNATURES} signatures`);
  const signedBy: string[] = [];
  for (const line of signatureLines) {
    const match = /^\u2014 (\S+) ([A-Za-z0-9+/]+={0,2})$/u.exec(line);
    if (match === null) invalid(`malformed signature line ${JSON.stringify(line.slice(0, 100))}`);
    const [, name, encoded] = match as unknown as [string, string, string];
    const raw = Buffer.from(encoded, 'base64');
    if (raw.length < 5) invalid(`signature by ${name} is too short`);
    const keyId = raw.subarray(0, 4).toString('hex');
    const known = verifiers.find((v) => v.name === name && v.keyId === keyId);
    if (known === undefined) continue;
    const publicKey = createPublicKey({
      key: Buffer.concat([ED25519_SPKI_PREFIX, known.publicKey]),
      format: 'der',
      type: 'spki',
    });
    if (raw.length !== 68 || !verify(null, Buffer.from(text, 'utf8'), publicKey, raw.subarray(4)))
      invalid(`the signature by ${name} (key ${keyId}) does not verify: the note was changed or forged`);
    signedBy.push(known.text);
  }
  if (signedBy.length === 0)
    invalid(
      `the note is not signed by any trusted key (trusted: ${verifiers.map((v) => `${v.name}+${v.keyId}`).join(', ') || 'none'})`,
    );
  return { text, signedBy };
}

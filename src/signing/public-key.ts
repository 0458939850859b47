import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { AirlockError } from '../errors.js';

/**
 * The public keys that may sign jobs: OpenSSH public key lines (what `ssh-keygen` writes to
 * KEY.pub) and, for plain Ed25519 signers, a PEM SubjectPublicKeyInfo. Every key is parsed
 * from its SSH wire encoding (RFC 4253 §6.6, RFC 5656 §3.1, RFC 8709) with exact framing, and
 * only then handed to node:crypto, so one key has one blob and one fingerprint whatever form
 * it came in.
 */

export type KeyType = 'ssh-ed25519' | 'ecdsa-sha2-nistp256' | 'ssh-rsa';

export interface SigningPublicKey {
  readonly type: KeyType;
  /** The SSH wire encoding of the public key (for Ed25519 keys given as PEM too: "ssh-ed25519" + string(32 bytes)). */
  readonly blob: Buffer;
  /** As `ssh-keygen -l -E sha256` prints it: "SHA256:" + unpadded base64 of SHA-256(blob). */
  readonly fingerprint: string;
  /** node:crypto public key for verification. */
  readonly key: KeyObject;
  /** One-line text form: "ssh-ed25519 AAAA…" (no comment). */
  readonly text: string;
}

/** Bounds the work done on hostile input before any parsing. */
export const MAX_PUBLIC_KEY_CHARS = 16 * 1024;
/** Weaker RSA keys are factorable by well-funded attackers (NIST SP 800-131A). */
export const MIN_RSA_BITS = 2048;
/** OpenSSH's own ceiling (SSH_RSA_MAXIMUM_MODULUS_SIZE): bounds the cost of one verification. */
const MAX_RSA_BITS = 16384;
/** OpenSSL refuses larger exponents for big moduli; real keys use 65537. */
const MAX_RSA_EXPONENT_BYTES = 8;
const ED25519_KEY_BYTES = 32;
const P256_COORDINATE_BYTES = 32;
/** DER of SubjectPublicKeyInfo { id-Ed25519 (1.3.101.112) } up to the 32 key bytes (RFC 8410). */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const SUPPORTED: readonly string[] = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ssh-rsa'] satisfies KeyType[];
const SUPPORTED_LIST = 'ssh-ed25519 (preferred), ecdsa-sha2-nistp256 and ssh-rsa of at least 2048 bits';

/**
 * Parses an OpenSSH public key line ("ssh-ed25519 AAAA… comment", also ecdsa-sha2-nistp256
 * and ssh-rsa with ≥ 2048-bit modulus) or a PEM SPKI Ed25519 public key. Throws
 * AirlockError('INVALID_REQUEST') for anything else.
 */
export function parsePublicKey(text: string): SigningPublicKey {
  if (text.length > MAX_PUBLIC_KEY_CHARS)
    invalid(`a public key is at most ${MAX_PUBLIC_KEY_CHARS} characters; this input is longer`);
  const trimmed = text.trim();
  if (trimmed.startsWith('-----BEGIN ')) return parsePem(trimmed);
  if (/[\r\n]/.test(trimmed))
    invalid('an OpenSSH public key is one line ("ssh-ed25519 AAAA… comment"); this input has several');
  const fields = trimmed.split(/[ \t]+/);
  const type = fields[0] ?? '';
  const encoded = fields[1];
  if (!SUPPORTED.includes(type)) invalid(unsupportedType(type));
  if (encoded === undefined || encoded === '')
    invalid(`the ${type} key line has no key after its type: give the whole line of the .pub file`);
  const blob = Buffer.from(encoded, 'base64');
  // Only canonical base64: anything the decoder would skip or repair is a second spelling of a key.
  if (blob.length === 0 || blob.toString('base64') !== encoded)
    invalid(`the ${type} key is not valid base64: copy the line of the .pub file unchanged`);
  const key = publicKeyFromBlob(blob);
  if (key.type !== type)
    invalid(`the key line says ${type} but the key inside is ${key.type}: the line was altered`);
  return key;
}

/** Parses an SSH wire-format public key blob (as embedded in an SSHSIG). Same rules. */
export function publicKeyFromBlob(blob: Buffer): SigningPublicKey {
  const reader = new SshWireReader(blob, (reason) => invalid(`the public key is malformed: ${reason}`));
  const type = reader.text('key type');
  if (!SUPPORTED.includes(type)) invalid(unsupportedType(type));
  let key: KeyObject;
  switch (type as KeyType) {
    case 'ssh-ed25519':
      key = ed25519Key(reader.string('Ed25519 key', ED25519_KEY_BYTES, ED25519_KEY_BYTES));
      break;
    case 'ecdsa-sha2-nistp256':
      key = p256Key(reader);
      break;
    case 'ssh-rsa':
      key = rsaKey(reader);
      break;
  }
  reader.end();
  return describe(type as KeyType, blob, key);
}

// ─── SSH wire format ───────────────────────────────────────────────────────────────────────────

/**
 * Reads the SSH wire types (RFC 4251 §5) from a buffer, refusing every length that points past
 * its end. `fail` decides which error a malformation becomes (the caller knows its context).
 */
export class SshWireReader {
  readonly #bytes: Buffer;
  readonly #fail: (reason: string) => never;
  #offset = 0;

  constructor(bytes: Buffer, fail: (reason: string) => never) {
    this.#bytes = bytes;
    this.#fail = fail;
  }

  /** Raw bytes without a length prefix. */
  raw(length: number, what: string): Buffer {
    if (length > this.#bytes.length - this.#offset) this.#fail(`${what} is cut short`);
    const out = this.#bytes.subarray(this.#offset, this.#offset + length);
    this.#offset += length;
    return out;
  }

  uint32(what: string): number {
    return this.raw(4, what).readUInt32BE(0);
  }

  /** string: uint32 length + bytes, optionally with bounds on the length. */
  string(what: string, minLength = 0, maxLength = Number.POSITIVE_INFINITY): Buffer {
    const length = this.uint32(`the length of ${what}`);
    if (length > this.#bytes.length - this.#offset) this.#fail(`the length of ${what} points past the end`);
    if (length < minLength || length > maxLength)
      this.#fail(
        minLength === maxLength
          ? `${what} has ${length} bytes, not ${minLength}`
          : `${what} has ${length} bytes, outside ${minLength}…${maxLength}`,
      );
    return this.raw(length, what);
  }

  /** A string holding UTF-8 text without NUL (a name, not data). */
  text(what: string): string {
    const bytes = this.string(what);
    let value: string;
    try {
      value = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
    } catch {
      return this.#fail(`${what} is not UTF-8`);
    }
    if (value.includes('\0')) this.#fail(`${what} contains a NUL byte`);
    return value;
  }

  /**
   * A positive mpint, returned as its big-endian magnitude without the sign byte. Negative,
   * zero and non-minimal encodings are refused: each number has one encoding.
   */
  mpint(what: string, maxBytes: number): Buffer {
    const bytes = this.string(what);
    if (bytes.length === 0) this.#fail(`${what} is zero`);
    const first = bytes[0] ?? 0;
    if (first & 0x80) this.#fail(`${what} is negative`);
    const magnitude = first === 0 ? bytes.subarray(1) : bytes;
    if (first === 0 && ((magnitude[0] ?? 0) & 0x80) === 0)
      this.#fail(`${what} has a superfluous leading zero byte`);
    if (magnitude.length > maxBytes) this.#fail(`${what} is longer than ${maxBytes} bytes`);
    return magnitude;
  }

  /** Refuses trailing bytes: a blob has exactly one reading. */
  end(): void {
    if (this.#offset !== this.#bytes.length)
      this.#fail(`${this.#bytes.length - this.#offset} unexpected bytes after the end`);
  }
}

/** Encodes an SSH string: uint32 length + bytes. */
export function sshString(value: Buffer | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length, 0);
  return Buffer.concat([length, bytes]);
}

// ─── Key types ─────────────────────────────────────────────────────────────────────────────────

function ed25519Key(raw: Buffer): KeyObject {
  return toKeyObject('Ed25519', () =>
    createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' }),
  );
}

function p256Key(reader: SshWireReader): KeyObject {
  const curve = reader.text('curve name');
  if (curve !== 'nistp256') invalid(`an ecdsa-sha2-nistp256 key names the curve "${printable(curve)}"`);
  // Only the uncompressed point form (SEC 1 §2.3.3), which is what OpenSSH writes.
  const point = reader.string('ECDSA point', 1 + 2 * P256_COORDINATE_BYTES, 1 + 2 * P256_COORDINATE_BYTES);
  if (point[0] !== 0x04) invalid('the ECDSA point is not in uncompressed form');
  const x = point.subarray(1, 1 + P256_COORDINATE_BYTES).toString('base64url');
  const y = point.subarray(1 + P256_COORDINATE_BYTES).toString('base64url');
  // OpenSSL refuses a point off the curve here (invalid-curve attacks).
  return toKeyObject('ECDSA P-256', () =>
    createPublicKey({ key: { kty: 'EC', crv: 'P-256', x, y }, format: 'jwk' }),
  );
}

function rsaKey(reader: SshWireReader): KeyObject {
  const e = reader.mpint('RSA exponent', MAX_RSA_EXPONENT_BYTES);
  const n = reader.mpint('RSA modulus', MAX_RSA_BITS / 8);
  const bits = bitLength(n);
  if (bits < MIN_RSA_BITS)
    invalid(
      `RSA keys need at least ${MIN_RSA_BITS} bits and this one has ${bits}: make a new key (ssh-keygen -t ed25519)`,
    );
  // An even or unit exponent makes no RSA key; e = 1 would make every "signature" the message itself.
  if (((e[e.length - 1] ?? 0) & 1) === 0 || (e.length === 1 && e[0] === 1))
    invalid('the RSA exponent is not an odd number greater than 1');
  return toKeyObject('RSA', () =>
    createPublicKey({
      key: { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') },
      format: 'jwk',
    }),
  );
}

function toKeyObject(what: string, build: () => KeyObject): KeyObject {
  try {
    return build();
  } catch (cause) {
    throw new AirlockError('INVALID_REQUEST', `the ${what} public key is not a valid key`, { cause });
  }
}

function bitLength(magnitude: Buffer): number {
  const first = magnitude[0] ?? 0;
  return first === 0 ? 0 : (magnitude.length - 1) * 8 + (32 - Math.clz32(first));
}

function describe(type: KeyType, blob: Buffer, key: KeyObject): SigningPublicKey {
  const digest = createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
  const copy = Buffer.from(blob); // never a view into the caller's (or the signature's) buffer
  return {
    type,
    blob: copy,
    fingerprint: `SHA256:${digest}`,
    key,
    text: `${type} ${copy.toString('base64')}`,
  };
}

// ─── PEM (Ed25519 only) ────────────────────────────────────────────────────────────────────────

const PEM_SPKI = /^-----BEGIN PUBLIC KEY-----\r?\n([A-Za-z0-9+/=\r\n]+?)\r?\n-----END PUBLIC KEY-----$/;

function parsePem(text: string): SigningPublicKey {
  if (/^-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text))
    invalid('this is a private key: give the public key (ssh-keygen -y -f KEY prints it)');
  const match = PEM_SPKI.exec(text);
  if (match === null)
    invalid(
      'a PEM public key must be one "-----BEGIN PUBLIC KEY-----" block (SubjectPublicKeyInfo) and nothing else',
    );
  const body = (match[1] ?? '').replace(/\r?\n/g, '');
  const der = Buffer.from(body, 'base64');
  if (der.toString('base64') !== body) invalid('the PEM public key is not valid base64');
  // Exactly the SPKI of an Ed25519 key: nothing else is accepted in PEM form.
  if (
    der.length !== ED25519_SPKI_PREFIX.length + ED25519_KEY_BYTES ||
    !der.subarray(0, ED25519_SPKI_PREFIX.length).equals(ED25519_SPKI_PREFIX)
  )
    invalid(
      'only Ed25519 keys are accepted in PEM form: give ECDSA and RSA keys as an OpenSSH line (ssh-keygen -i -m PKCS8 -f KEY converts one)',
    );
  const raw = der.subarray(ED25519_SPKI_PREFIX.length);
  return describe('ssh-ed25519', Buffer.concat([sshString('ssh-ed25519'), sshString(raw)]), ed25519Key(raw));
}

// ─── Messages ──────────────────────────────────────────────────────────────────────────────────

function unsupportedType(type: string): string {
  if (type.endsWith('-cert-v01@openssh.com'))
    return 'OpenSSH certificates are not accepted: register the plain public key (KEY.pub, not KEY-cert.pub)';
  if (type.startsWith('sk-'))
    return `security-key (FIDO) keys (${printable(type)}) are not supported yet: use ${SUPPORTED_LIST}`;
  if (type === 'ssh-dss')
    return `DSA keys (ssh-dss) are not supported: they are obsolete and disabled in OpenSSH; use ${SUPPORTED_LIST}`;
  if (type === 'ecdsa-sha2-nistp384' || type === 'ecdsa-sha2-nistp521')
    return `${type} keys are not supported yet: use ${SUPPORTED_LIST}`;
  if (type === '') return `no public key given: give an OpenSSH public key line (${SUPPORTED_LIST})`;
  return `unknown key type "${printable(type)}": supported are ${SUPPORTED_LIST}`;
}

/** Hostile input goes into messages only when short and printable. */
function printable(value: string): string {
  return /^[\x21-\x7e]{1,64}$/.test(value) ? value : '(unprintable)';
}

function invalid(message: string): never {
  throw new AirlockError('INVALID_REQUEST', message);
}

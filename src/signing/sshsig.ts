import { createHash, verify } from 'node:crypto';
import { AirlockError, isAirlockError } from '../errors.js';
import { publicKeyFromBlob, type SigningPublicKey, SshWireReader, sshString } from './public-key.js';

/**
 * SSH signatures as `ssh-keygen -Y sign -n airlock` makes them (OpenSSH PROTOCOL.sshsig).
 * Parsing is strict and throws; verification answers yes or no. The public key inside a
 * signature only says who claims to have signed: callers verify with the key they registered.
 */

/** The namespace of job signatures: a signature made for git, e-mail or files is not a job signature. */
export const SSHSIG_NAMESPACE = 'airlock';
export const MAX_SSHSIG_CHARS = 16 * 1024;

const MAGIC = Buffer.from('SSHSIG', 'ascii');
const VERSION = 1;
const BEGIN = '-----BEGIN SSH SIGNATURE-----';
const END = '-----END SSH SIGNATURE-----';
const P256_SCALAR_BYTES = 32;

export interface ParsedSshSig {
  readonly publicKey: SigningPublicKey;
  readonly namespace: string;
  readonly hashAlgorithm: 'sha256' | 'sha512';
  readonly signatureAlgorithm: string;
  /** The signature proper, without its algorithm name. */
  readonly signature: Buffer;
}

/**
 * Parses an armored SSH signature: magic "SSHSIG", version 1, publickey, namespace, reserved,
 * hash_algorithm, signature. Throws AirlockError('SIGNATURE_INVALID') on any malformation.
 */
export function parseSshSig(armored: string): ParsedSshSig {
  const bytes = dearmor(armored);
  const reader = new SshWireReader(bytes, (reason) => malformed(reason));
  if (!reader.raw(MAGIC.length, 'magic').equals(MAGIC)) malformed('it does not start with "SSHSIG"');
  const version = reader.uint32('version');
  if (version !== VERSION) malformed(`version ${version} is not supported (only ${VERSION})`);
  const keyBlob = reader.string('public key');
  const namespace = reader.text('namespace');
  if (namespace === '') malformed('the namespace is empty');
  // Not covered by the signature (OpenSSH signs an empty one): refused rather than ignored, so
  // no unsigned field can ever be read as meaning something.
  if (reader.string('reserved field').length !== 0) malformed('the reserved field is not empty');
  const hashAlgorithm = reader.text('hash algorithm');
  if (hashAlgorithm !== 'sha256' && hashAlgorithm !== 'sha512')
    malformed('the hash algorithm is neither sha256 nor sha512');
  const signatureBlob = reader.string('signature');
  reader.end();

  const inner = new SshWireReader(signatureBlob, (reason) => malformed(reason));
  const signatureAlgorithm = inner.text('signature algorithm');
  const signature = Buffer.from(inner.string('signature bytes'));
  inner.end();

  let publicKey: SigningPublicKey;
  try {
    publicKey = publicKeyFromBlob(keyBlob);
  } catch (cause) {
    if (!isAirlockError(cause)) throw cause;
    throw new AirlockError('SIGNATURE_INVALID', `the signature's key cannot be used: ${cause.message}`, {
      cause,
    });
  }
  return { publicKey, namespace, hashAlgorithm, signatureAlgorithm, signature };
}

/**
 * True iff `sig` is a valid signature over `message` in `namespace`. A different namespace, an
 * algorithm that does not fit the key, or a malformed signature is false, never an exception.
 */
export function verifySshSig(
  sig: ParsedSshSig,
  message: Buffer,
  namespace: string = SSHSIG_NAMESPACE,
): boolean {
  if (sig.namespace !== namespace) return false;
  // What OpenSSH signs (sshsig.c): the namespace expected, never the one the signature claims.
  const signed = Buffer.concat([
    MAGIC,
    sshString(namespace),
    sshString(''),
    sshString(sig.hashAlgorithm),
    sshString(createHash(sig.hashAlgorithm).update(message).digest()),
  ]);
  const { publicKey } = sig;
  try {
    switch (publicKey.type) {
      case 'ssh-ed25519':
        return (
          sig.signatureAlgorithm === 'ssh-ed25519' &&
          sig.signature.length === 64 &&
          verify(null, signed, publicKey.key, sig.signature)
        );
      case 'ecdsa-sha2-nistp256': {
        if (sig.signatureAlgorithm !== 'ecdsa-sha2-nistp256') return false;
        const p1363 = ecdsaToP1363(sig.signature);
        return (
          p1363 !== null && verify('sha256', signed, { key: publicKey.key, dsaEncoding: 'ieee-p1363' }, p1363)
        );
      }
      case 'ssh-rsa': {
        // Legacy "ssh-rsa" signatures hash with SHA-1, whose collisions are practical (SHAmbles).
        const hash =
          sig.signatureAlgorithm === 'rsa-sha2-256'
            ? 'sha256'
            : sig.signatureAlgorithm === 'rsa-sha2-512'
              ? 'sha512'
              : null;
        const modulusBits = publicKey.key.asymmetricKeyDetails?.modulusLength;
        if (hash === null || modulusBits === undefined) return false;
        // OpenSSH always writes a signature of the modulus' full length.
        if (sig.signature.length !== Math.ceil(modulusBits / 8)) return false;
        return verify(hash, signed, publicKey.key, sig.signature);
      }
    }
  } catch {
    // OpenSSL refusing a signature it cannot even decode is a signature that does not verify.
    return false;
  }
}

/** SSH's string(mpint r || mpint s) → r || s, 32 bytes each; null when malformed. */
function ecdsaToP1363(signature: Buffer): Buffer | null {
  const bad = new Error('malformed ECDSA signature');
  const reader = new SshWireReader(signature, () => {
    throw bad;
  });
  try {
    const r = reader.mpint('r', P256_SCALAR_BYTES);
    const s = reader.mpint('s', P256_SCALAR_BYTES);
    reader.end();
    const out = Buffer.alloc(2 * P256_SCALAR_BYTES);
    r.copy(out, P256_SCALAR_BYTES - r.length);
    s.copy(out, 2 * P256_SCALAR_BYTES - s.length);
    return out;
  } catch (error) {
    if (error === bad) return null;
    throw error;
  }
}

function dearmor(armored: string): Buffer {
  if (armored.length > MAX_SSHSIG_CHARS)
    malformed(`an SSH signature is at most ${MAX_SSHSIG_CHARS} characters; this one is longer`);
  const lines = armored.trim().split(/\r?\n/);
  if (lines.length < 3 || lines[0] !== BEGIN || lines[lines.length - 1] !== END)
    malformed(`it is not armored between "${BEGIN}" and "${END}"`);
  const body = lines.slice(1, -1).join('');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body)) malformed('its body is not base64');
  const bytes = Buffer.from(body, 'base64');
  if (bytes.toString('base64') !== body) malformed('its body is not canonical base64');
  return bytes;
}

function malformed(reason: string): never {
  throw new AirlockError('SIGNATURE_INVALID', `the SSH signature is malformed: ${reason}`);
}

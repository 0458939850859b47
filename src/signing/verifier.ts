import { verify } from 'node:crypto';
import { AirlockError } from '../errors.js';
import type { SigningKeyRow, Store } from '../store/store.js';
import {
  checkValidity,
  ed25519Message,
  parsePayload,
  type SignedJob,
  type SignedJobPayload,
  strictBase64,
} from './envelope.js';
import { parsePublicKey } from './public-key.js';
import { parseSshSig, SSHSIG_NAMESPACE, verifySshSig } from './sshsig.js';

/**
 * Checks a signed job before anything of it is used: the signer's key must be registered for
 * the job's project and not revoked; the signature must verify over the payload's exact
 * bytes; the payload must be inside its validity window. The nonce is consumed by the job
 * service in the transaction that creates the job (so a replay fails, also after a restart).
 */

export interface VerifiedSignature {
  readonly keyId: string;
  readonly fingerprint: string;
  readonly owner: string;
  readonly release: boolean;
  readonly nonce: string;
  /** Milliseconds since the epoch. */
  readonly expiresAt: number;
}

export interface VerifiedJob {
  readonly payload: SignedJobPayload;
  readonly signature: VerifiedSignature;
}

const MAX_SIGNATURE_CHARS = 16 * 1024;

export class JobSignatureVerifier {
  readonly #store: Pick<Store, 'read'>;
  readonly #now: () => number;

  readonly #parseJson: (bytes: Buffer) => unknown;

  /** parseJson: the strict JSON reading of request bodies (api/json-body.ts), injected. */
  constructor(options: {
    store: Pick<Store, 'read'>;
    parseJson: (bytes: Buffer) => unknown;
    now?: () => number;
  }) {
    this.#store = options.store;
    this.#parseJson = options.parseJson;
    this.#now = options.now ?? Date.now;
  }

  /**
   * `mayUse(project)` is called before any key is looked up: a caller outside the project
   * learns nothing about its keys (which are registered, which revoked).
   */
  async verify(envelope: SignedJob, mayUse: (project: string) => void): Promise<VerifiedJob> {
    const bytes = strictBase64(envelope.payload, 'payload');
    const payload = parsePayload(bytes, this.#parseJson);
    const project = payload.spec.project;
    if (typeof project !== 'string')
      throw new AirlockError('INVALID_JOB', 'the signed spec names no project');
    mayUse(project);
    const signature = envelope.signature;
    if (signature.value.length > MAX_SIGNATURE_CHARS)
      throw new AirlockError('SIGNATURE_INVALID', 'the signature is larger than any signature can be');
    // Who signed: the key an SSH signature carries, or the fingerprint an Ed25519 one names.
    const sshsig = signature.format === 'sshsig' ? parseSshSig(signature.value) : null;
    const fingerprint = sshsig !== null ? sshsig.publicKey.fingerprint : (signature as { key: string }).key;
    const key = await this.#store.read(async (tx) => tx.signingKeys.byFingerprint(project, fingerprint));
    if (key === null)
      throw new AirlockError(
        'SIGNATURE_KEY_UNKNOWN',
        `the key ${fingerprint} is not registered to sign jobs of project "${project}" (airlock keys add)`,
      );
    if (key.revokedAt !== null)
      throw new AirlockError(
        'SIGNATURE_KEY_REVOKED',
        `the key ${fingerprint} was revoked for project "${project}"`,
      );
    if (!this.#signatureHolds(key, bytes, envelope))
      throw new AirlockError(
        'SIGNATURE_INVALID',
        `the signature by ${fingerprint} does not verify over the payload: it was changed after signing, or signed for another purpose (namespace "${SSHSIG_NAMESPACE}")`,
      );
    const { expiresAt } = checkValidity(payload, this.#now());
    return {
      payload,
      signature: {
        keyId: key.id,
        fingerprint: key.fingerprint,
        owner: key.owner,
        release: key.release,
        nonce: payload.nonce,
        expiresAt,
      },
    };
  }

  #signatureHolds(key: SigningKeyRow, bytes: Buffer, envelope: SignedJob): boolean {
    // Always with the registered key, never with a key the request brings along.
    const registered = parsePublicKey(key.publicKey);
    const signature = envelope.signature;
    if (signature.format === 'sshsig') {
      const parsed = parseSshSig(signature.value);
      if (parsed.publicKey.fingerprint !== registered.fingerprint) return false;
      return verifySshSig({ ...parsed, publicKey: registered }, bytes, SSHSIG_NAMESPACE);
    }
    if (registered.type !== 'ssh-ed25519') return false;
    const raw = Buffer.from(signature.value, 'base64');
    if (raw.length !== 64 || raw.toString('base64') !== signature.value) return false;
    return verify(null, ed25519Message(bytes), registered.key, raw);
  }
}

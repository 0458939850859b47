import type { JobSpecV1 } from '../api/types.js';
import { canonicalJson } from '../audit/canonical.js';
import { AirlockError } from '../errors.js';

/**
 * A signed job: the signer signs the exact bytes of a payload — the canonical JSON (RFC 8785
 * for the values a job spec holds: sorted keys, no whitespace) of the whole job spec with a
 * nonce, an issue time and an expiry — and the server runs the spec parsed from those very
 * bytes, never a re-encoding of them (docs/signing.md).
 */

export const PAYLOAD_TYPE = 'airlock-job/v1';
/** How far the signer's clock may be from ours either way. */
export const CLOCK_SKEW_MS = 60_000;
/** Longest validity of one signature: a signed job is an order to run now, not a standing one. */
export const MAX_VALIDITY_MS = 24 * 3600 * 1000;
const NONCE = /^[A-Za-z0-9_-]{16,128}$/;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;

export interface SignedJobPayload {
  readonly type: typeof PAYLOAD_TYPE;
  readonly spec: JobSpecV1;
  readonly nonce: string;
  readonly issuedAt: string;
  readonly expiresAt: string;
}

export type JobSignature =
  | { readonly format: 'sshsig'; readonly value: string }
  | { readonly format: 'ed25519'; readonly key: string; readonly value: string };

/** POST /v1/jobs/signed body, and what `airlock sign` writes. */
export interface SignedJob {
  /** The payload's bytes, standard base64. */
  readonly payload: string;
  readonly signature: JobSignature;
}

/** Whether a document read from a file is a signed job rather than a plain spec. */
export function isSignedJob(value: unknown): value is SignedJob {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { payload?: unknown }).payload === 'string' &&
    typeof (value as { signature?: unknown }).signature === 'object'
  );
}

export function payloadBytes(payload: SignedJobPayload): Buffer {
  return Buffer.from(canonicalJson(payload), 'utf8');
}

/** A real UTC time written one way: 2026-02-31 or 24:00 are not rounded into another day. */
function isExactTime(text: string): boolean {
  if (!ISO_UTC.test(text)) return false;
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) return false;
  const iso = new Date(ms).toISOString();
  return iso === text || iso.replace(/\.000Z$/, 'Z') === text || iso.replace(/0+Z$/, 'Z') === text;
}

/**
 * Raw Ed25519 signatures sign this context and then the payload: a signature this key made
 * for anything else (an SSH login, another tool) can never read as a job signature.
 */
export const ED25519_CONTEXT = Buffer.from('airlock-job-signature/v1\n', 'utf8');

export function ed25519Message(payload: Buffer): Buffer {
  return Buffer.concat([ED25519_CONTEXT, payload]);
}

function malformed(message: string): never {
  throw new AirlockError('INVALID_REQUEST', `signed job payload: ${message}`);
}

/** Decodes standard base64 strictly (no whitespace, canonical padding). */
export function strictBase64(text: string, what: string): Buffer {
  const bytes = Buffer.from(text, 'base64');
  if (bytes.toString('base64') !== text) malformed(`${what} is not canonical standard base64`);
  return bytes;
}

/**
 * Parses payload bytes: UTF-8, canonical (re-encoding gives the same bytes, so there is one
 * reading of what was signed — no duplicate keys, no whitespace games), the payload fields.
 * The spec itself is checked against the job spec schema by the caller.
 */
export function parsePayload(bytes: Buffer, parseJson: (bytes: Buffer) => unknown): SignedJobPayload {
  // The same strict reading as any request body: UTF-8 without replacement, bounded depth, no
  // NUL, no lone surrogate, no reserved keys — what runs cannot differ from what was signed.
  let value: unknown;
  try {
    value = parseJson(bytes);
  } catch (error) {
    if (error instanceof AirlockError) malformed(error.message.replace('the request body', 'it'));
    throw error;
  }
  const text = bytes.toString('utf8');
  if (typeof value !== 'object' || value === null || Array.isArray(value)) malformed('not an object');
  let canonical: string;
  try {
    canonical = canonicalJson(value);
  } catch {
    malformed('not plain JSON');
  }
  if (canonical !== text)
    malformed('not in canonical form (sorted keys, no whitespace): sign it with airlock sign');
  const { type, spec, nonce, issuedAt, expiresAt, ...rest } = value as Record<string, unknown>;
  if (Object.keys(rest).length > 0) malformed(`unknown fields ${Object.keys(rest).join(', ')}`);
  if (type !== PAYLOAD_TYPE) malformed(`type must be "${PAYLOAD_TYPE}"`);
  if (typeof nonce !== 'string' || !NONCE.test(nonce))
    malformed('nonce must be 16–128 characters of A-Z a-z 0-9 _ -');
  for (const [name, time] of [
    ['issuedAt', issuedAt],
    ['expiresAt', expiresAt],
  ] as const)
    if (typeof time !== 'string' || !isExactTime(time))
      malformed(`${name} must be an ISO 8601 UTC time (2026-01-02T03:04:05Z)`);
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec))
    malformed('spec must be a job spec object');
  return {
    type,
    spec: spec as JobSpecV1,
    nonce,
    issuedAt: issuedAt as string,
    expiresAt: expiresAt as string,
  };
}

/** Refuses a payload outside its validity window (with the clock-skew allowance). */
export function checkValidity(payload: SignedJobPayload, now: number): { expiresAt: number } {
  const issued = Date.parse(payload.issuedAt);
  const expires = Date.parse(payload.expiresAt);
  if (expires <= issued) malformed('expiresAt must be after issuedAt');
  if (expires - issued > MAX_VALIDITY_MS)
    malformed(`a signature may be valid for at most ${MAX_VALIDITY_MS / 3_600_000} h`);
  if (issued > now + CLOCK_SKEW_MS)
    throw new AirlockError(
      'SIGNATURE_NOT_YET_VALID',
      `the signed job was issued at ${payload.issuedAt}, in the future (server time ${new Date(now).toISOString()}, ${CLOCK_SKEW_MS / 1000} s allowed)`,
    );
  if (expires < now - CLOCK_SKEW_MS)
    throw new AirlockError(
      'SIGNATURE_EXPIRED',
      `the signed job expired at ${payload.expiresAt} (server time ${new Date(now).toISOString()}); sign it anew`,
    );
  return { expiresAt: expires };
}

import { createHash, type KeyObject, randomBytes, sign, verify } from 'node:crypto';
import { AirlockError } from '../errors.js';

/**
 * HTTP Message Signatures (RFC 9421) for tokens that require them: a stolen bearer secret
 * alone cannot be used — every request must also be signed with the token's Ed25519 key.
 * Airlock signs and accepts one profile of the RFC, exactly:
 *
 *   Content-Digest: sha-256=:<base64 SHA-256 of the body>:            (RFC 9530; requests with a body)
 *   Signature-Input: sig1=("@method" "@target-uri" "content-digest");created=<unix s>;nonce="<16-128>";keyid="<token id>";alg="ed25519"
 *   Signature: sig1=:<base64 Ed25519 signature of the signature base>:
 *
 * "content-digest" is left out (of both) for a request without a body. Shared by the server
 * (verifyRequest, api/app.ts) and the client (signRequest, client/http.ts). The signature base
 * is RFC 9421 §2.5's: one line `"<component>": <value>` per covered component, then
 * `"@signature-params": <the inner list and parameters, as sent>`.
 */

export const REQUEST_SIGNATURE_LABEL = 'sig1';
/** How far `created` may be from the server's clock either way. */
export const REQUEST_SKEW_S = 60;
const MAX_HEADER = 2048;
const INPUT = new RegExp(
  `^${REQUEST_SIGNATURE_LABEL}=(\\(("[a-z@][a-z0-9@-]*"(?: "[a-z@][a-z0-9@-]*")*)\\)((?:;[a-z]+=(?:"[A-Za-z0-9_.:-]*"|[0-9]{1,12}))*))$`,
);
const SIGNATURE = new RegExp(`^${REQUEST_SIGNATURE_LABEL}=:([A-Za-z0-9+/]{86}==):$`);
const NONCE = /^[A-Za-z0-9_-]{16,128}$/;

export function contentDigest(body: Buffer | string): string {
  return `sha-256=:${createHash('sha256').update(body).digest('base64')}:`;
}

function signatureBase(
  components: readonly string[],
  values: Readonly<Record<string, string>>,
  params: string,
): Buffer {
  const lines = components.map((name) => `"${name}": ${values[name] ?? ''}`);
  lines.push(`"@signature-params": ${params}`);
  return Buffer.from(lines.join('\n'), 'utf8');
}

/** The headers that sign one request (client side). */
export function signRequest(input: {
  method: string;
  targetUri: string;
  body: string | undefined;
  /** Covered when given: a captured request cannot be replayed as another submission. */
  idempotencyKey?: string | undefined;
  keyId: string;
  privateKey: KeyObject;
  now?: number;
}): Record<string, string> {
  const created = Math.floor((input.now ?? Date.now()) / 1000);
  const components = [
    '@method',
    '@target-uri',
    ...(input.body !== undefined ? ['content-digest'] : []),
    ...(input.idempotencyKey !== undefined ? ['idempotency-key'] : []),
  ];
  const digest = input.body !== undefined ? contentDigest(input.body) : undefined;
  const params = `(${components.map((c) => `"${c}"`).join(' ')});created=${created};nonce="${randomBytes(18).toString('base64url')}";keyid="${input.keyId}";alg="ed25519"`;
  const base = signatureBase(
    components,
    {
      '@method': input.method.toUpperCase(),
      '@target-uri': input.targetUri,
      ...(digest !== undefined ? { 'content-digest': digest } : {}),
      ...(input.idempotencyKey !== undefined ? { 'idempotency-key': input.idempotencyKey } : {}),
    },
    params,
  );
  return {
    ...(digest !== undefined ? { 'content-digest': digest } : {}),
    'signature-input': `${REQUEST_SIGNATURE_LABEL}=${params}`,
    signature: `${REQUEST_SIGNATURE_LABEL}=:${sign(null, base, input.privateKey).toString('base64')}:`,
  };
}

function refuse(message: string): never {
  throw new AirlockError('SIGNATURE_INVALID', `request signature: ${message}`);
}

function header(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  name: string,
): string | undefined {
  const value = headers[name];
  if (Array.isArray(value)) refuse(`the ${name} header is given more than once`);
  if (value !== undefined && value.length > MAX_HEADER) refuse(`the ${name} header is too long`);
  return value;
}

const COMPONENTS = ['@method', '@target-uri', 'content-digest', 'idempotency-key'];
const PARAMS = ['created', 'nonce', 'keyid', 'alg'];

/**
 * Checks a request's signature against the token's key (server side), from its headers
 * alone — before the body is read, so a request without a valid signature costs nothing
 * more. The body is checked against the signed Content-Digest later (checkContentDigest).
 * Returns the nonce and `created` for the caller to spend the nonce durably; throws
 * UNAUTHENTICATED when no signature is there, SIGNATURE_INVALID / SIGNATURE_EXPIRED /
 * SIGNATURE_NOT_YET_VALID otherwise.
 */
export function verifyRequest(input: {
  method: string;
  /** null when the request's Host cannot form one (refused). */
  targetUri: string | null;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Whether the request carries a body (Content-Length > 0 or chunked). */
  hasBody: boolean;
  tokenId: string;
  publicKey: KeyObject;
  now: number;
}): { nonce: string; created: number } {
  const signatureInput = header(input.headers, 'signature-input');
  const signatureHeader = header(input.headers, 'signature');
  if (signatureInput === undefined || signatureHeader === undefined)
    throw new AirlockError(
      'UNAUTHENTICATED',
      'this token requires signed requests (RFC 9421): sign them with its key (AIRLOCK_REQUEST_KEY)',
    );
  if (input.targetUri === null) refuse('the Host header is not a host[:port]');
  const match = INPUT.exec(signatureInput);
  if (match === null)
    refuse(
      `Signature-Input is not one signature of the form ${REQUEST_SIGNATURE_LABEL}=("@method" "@target-uri" …);created=…;nonce="…"`,
    );
  const signed = SIGNATURE.exec(signatureHeader);
  if (signed === null) refuse('Signature is not one Ed25519 signature labelled sig1');
  const [, paramsText, list, paramText] = match as unknown as [string, string, string, string];
  const components = list.split(' ').map((c) => c.slice(1, -1));
  if (new Set(components).size !== components.length) refuse('a component is covered twice');
  const params = new Map<string, string>();
  for (const param of paramText.split(';').slice(1)) {
    const [name, value] = param.split('=') as [string, string];
    if (!PARAMS.includes(name)) refuse(`unsupported parameter "${name}"`);
    if (params.has(name)) refuse(`the parameter ${name} is given twice`);
    params.set(name, value.startsWith('"') ? value.slice(1, -1) : value);
  }
  const idempotencyKey = header(input.headers, 'idempotency-key');
  // Method, full target URI, the body's digest and the Idempotency-Key: a captured request
  // cannot be re-aimed, given another body, or replayed as another submission.
  const required = [
    '@method',
    '@target-uri',
    ...(input.hasBody ? ['content-digest'] : []),
    ...(idempotencyKey !== undefined ? ['idempotency-key'] : []),
  ];
  for (const name of required) if (!components.includes(name)) refuse(`"${name}" must be covered`);
  for (const name of components) if (!COMPONENTS.includes(name)) refuse(`unsupported component "${name}"`);
  if (params.get('alg') !== undefined && params.get('alg') !== 'ed25519') refuse('alg must be "ed25519"');
  if (params.get('keyid') !== undefined && params.get('keyid') !== input.tokenId)
    refuse('keyid names another token');
  const nonce = params.get('nonce');
  if (nonce === undefined || !NONCE.test(nonce))
    refuse('nonce (16–128 characters of A-Z a-z 0-9 _ -) is required');
  const createdText = params.get('created');
  if (createdText === undefined || !/^[0-9]+$/.test(createdText)) refuse('created is required');
  const created = Number(createdText);
  const now = Math.floor(input.now / 1000);
  if (created > now + REQUEST_SKEW_S)
    throw new AirlockError(
      'SIGNATURE_NOT_YET_VALID',
      'request signature: created is in the future: check the clock',
    );
  if (created < now - REQUEST_SKEW_S)
    throw new AirlockError(
      'SIGNATURE_EXPIRED',
      `request signature: created more than ${REQUEST_SKEW_S} s ago`,
    );
  const values: Record<string, string> = {
    '@method': input.method.toUpperCase(),
    '@target-uri': input.targetUri as string,
  };
  if (components.includes('content-digest')) {
    const digest = header(input.headers, 'content-digest');
    if (digest === undefined || !/^sha-256=:[A-Za-z0-9+/]{43}=:$/.test(digest))
      refuse('Content-Digest (sha-256=:…:) is covered but missing or malformed');
    values['content-digest'] = digest;
  }
  if (components.includes('idempotency-key')) {
    if (idempotencyKey === undefined) refuse('Idempotency-Key is covered but missing');
    values['idempotency-key'] = idempotencyKey;
  }
  const base = signatureBase(components, values, paramsText);
  const value = Buffer.from((signed as unknown as [string, string])[1], 'base64');
  if (!verify(null, base, input.publicKey, value))
    refuse(
      "the signature does not verify with the token's key: the request was changed, re-aimed or signed by another key",
    );
  return { nonce, created };
}

/** After the body is read: it must be the one the signed Content-Digest names. */
export function checkContentDigest(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  body: Buffer | null,
): void {
  const digest = header(headers, 'content-digest');
  const length = body?.length ?? 0;
  if (digest === undefined) {
    if (length > 0) refuse('a request with a body must cover its Content-Digest');
    return;
  }
  if (digest !== contentDigest(body ?? Buffer.alloc(0))) refuse('Content-Digest does not match the body');
}

import { createHash, createHmac } from 'node:crypto';

/**
 * AWS Signature Version 4 (header-based, single chunk) with node:crypto only, for the S3
 * checkpoint sink (sinks.ts). Checked against the examples of the Amazon S3 API Reference
 * (test/unit/audit-sinks.test.ts). S3's path rule: path segments are encoded once.
 */

export interface SigV4Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** Temporary credentials: sent, and signed, as x-amz-security-token. */
  readonly sessionToken?: string | undefined;
}

export interface SigV4Request {
  readonly method: string;
  readonly url: URL;
  /** Headers to send and sign, in any case (range, content-type, if-none-match, x-amz-*…). */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer | string;
  /** Signed instead of SHA-256(body): "UNSIGNED-PAYLOAD", or a digest computed elsewhere. */
  readonly payloadHash?: string;
}

/** The headers signV4 sets itself; a caller supplying them is a bug. */
const SIGNER_HEADERS = new Set([
  'host',
  'authorization',
  'x-amz-date',
  'x-amz-content-sha256',
  'x-amz-security-token',
]);

/**
 * Signs a request as AWS Signature Version 4 describes it for S3 (path segments URI-encoded
 * once, every supplied header signed) and returns the headers to send, lowercase: the
 * caller's, host, x-amz-content-sha256, x-amz-date, x-amz-security-token (with a session
 * token) and authorization.
 */
export function signV4(
  request: SigV4Request,
  credentials: SigV4Credentials,
  region: string,
  service: string,
  date: Date,
): Record<string, string> {
  const amzDate = amzDateOf(date);
  const scope = `${amzDate.slice(0, 8)}/${region}/${service}/aws4_request`;
  const payloadHash = request.payloadHash ?? sha256Hex(request.body);

  const headers: Record<string, string> = {};
  for (const [rawName, value] of Object.entries(request.headers)) {
    const name = rawName.toLowerCase();
    if (SIGNER_HEADERS.has(name)) throw new TypeError(`signV4 sets the ${name} header itself`);
    if (name in headers) throw new TypeError(`header ${name} is given twice`);
    if (/[\r\n\0]/.test(value)) throw new TypeError(`header ${name} has a line break or NUL in its value`);
    headers[name] = value;
  }
  headers.host = request.url.host;
  headers['x-amz-content-sha256'] = payloadHash;
  headers['x-amz-date'] = amzDate;
  if (credentials.sessionToken !== undefined) headers['x-amz-security-token'] = credentials.sessionToken;

  const names = Object.keys(headers).sort();
  const signedHeaders = names.join(';');
  const canonicalRequest = [
    request.method.toUpperCase(),
    canonicalPath(request.url),
    canonicalQuery(request.url),
    ...names.map((name) => `${name}:${(headers[name] ?? '').trim().replace(/\s+/g, ' ')}`),
    '',
    signedHeaders,
    payloadHash,
  ].join('\n');
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n');

  let key = hmac(`AWS4${credentials.secretAccessKey}`, amzDate.slice(0, 8));
  for (const part of [region, service, 'aws4_request']) key = hmac(key, part);
  const signature = createHmac('sha256', key).update(stringToSign, 'utf8').digest('hex');

  headers.authorization =
    `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope},` +
    `SignedHeaders=${signedHeaders},Signature=${signature}`;
  return headers;
}

function amzDateOf(date: Date): string {
  if (Number.isNaN(date.getTime())) throw new RangeError('signV4 needs a valid date');
  return date
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '');
}

function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/** RFC 3986 unreserved characters stay, everything else is %XX (uppercase), "/" included. */
function uriEncode(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function canonicalPath(url: URL): string {
  const path = url.pathname === '' ? '/' : url.pathname;
  return path
    .split('/')
    .map((segment) => {
      try {
        return uriEncode(decodeURIComponent(segment));
      } catch {
        throw new TypeError(`the URL path has a malformed %-escape: ${segment}`);
      }
    })
    .join('/');
}

function canonicalQuery(url: URL): string {
  return [...url.searchParams]
    .map(([name, value]) => [uriEncode(name), uriEncode(value)] as const)
    .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('&');
}

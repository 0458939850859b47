import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, link, open, rename, rm } from 'node:fs/promises';
import { isAbsolute, join, normalize } from 'node:path';
import { AirlockError, describeError, isAirlockError } from '../errors.js';
import { isWellFormedText } from './canonical.js';
import { type SigV4Credentials, signV4 } from './sigv4.js';

/**
 * Copies each signed audit checkpoint to a sink outside Airlock (a directory on another
 * mount, an HTTP endpoint, an S3 bucket), so that whoever holds the database cannot rewrite
 * history unnoticed: the exported notes pin the log, and a second, different note for a tree
 * size already exported is reported as what it is — a fork or a rewrite — never overwritten.
 *
 * The setting AIRLOCK_CHECKPOINT_SINK names the sink:
 *   dir:/absolute/path
 *   https://host/path            (token from AIRLOCK_CHECKPOINT_SINK_TOKEN)
 *   s3://bucket/prefix?endpoint=https://host&region=eu-west-1
 *                                (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 *                                 optional AWS_SESSION_TOKEN)
 */

export interface ExportedCheckpoint {
  readonly treeSize: number;
  readonly note: string;
}

export interface CheckpointSink {
  /** What and where, for logs and errors: never a secret (no credentials, no query secrets). */
  readonly description: string;
  /**
   * Writes the checkpoint; throws AirlockError('CHECKPOINT_EXPORT_FAILED', …) on any failure.
   * A malformed checkpoint (tree size not a safe integer, note not naming that size) is a
   * programmer error: RangeError / TypeError.
   */
  put(checkpoint: ExportedCheckpoint, signal?: AbortSignal): Promise<void>;
}

const SETTING = 'AIRLOCK_CHECKPOINT_SINK';
const TOKEN_SETTING = 'AIRLOCK_CHECKPOINT_SINK_TOKEN';
const LATEST = 'latest.txt';
const NOTE_CONTENT_TYPE = 'text/plain; charset=utf-8';
/** A note is a few hundred bytes; a caller handing over more has a bug. */
const MAX_NOTE_BYTES = 64 * 1024;
const REQUEST_TIMEOUT_MS = 10_000;
/** How much of an error answer goes into the message: enough for S3's <Code>, no more. */
const MAX_ERROR_EXCERPT = 1024;

/** "checkpoint-" + tree size zero-padded to 20 digits + ".txt": names sort as sizes do. */
export function checkpointObjectName(treeSize: number): string {
  if (!Number.isSafeInteger(treeSize) || treeSize < 0)
    throw new RangeError(`a tree size is a non-negative safe integer, got ${treeSize}`);
  return `checkpoint-${String(treeSize).padStart(20, '0')}.txt`;
}

/** The bytes to export. The note's own size line must agree with treeSize: a checkpoint
 * filed under the wrong size would raise a false fork alarm, or hide a real one. */
function noteBytes(checkpoint: ExportedCheckpoint): Buffer {
  checkpointObjectName(checkpoint.treeSize);
  if (typeof checkpoint.note !== 'string' || !isWellFormedText(checkpoint.note))
    throw new TypeError('a checkpoint note is well-formed text');
  const sizeLine = checkpoint.note.split('\n', 2)[1];
  if (sizeLine !== String(checkpoint.treeSize))
    throw new RangeError(`the note is not a checkpoint of tree size ${checkpoint.treeSize}`);
  const bytes = Buffer.from(checkpoint.note, 'utf8');
  if (bytes.length > MAX_NOTE_BYTES)
    throw new RangeError(`a checkpoint note has at most ${MAX_NOTE_BYTES} bytes`);
  return bytes;
}

function invalid(message: string): never {
  throw new AirlockError('INVALID_CONFIG', `${SETTING}: ${message}`);
}

function exportFailed(description: string, message: string, cause?: unknown): AirlockError {
  return new AirlockError(
    'CHECKPOINT_EXPORT_FAILED',
    `checkpoint sink ${description}: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

/** The alarm this whole module exists to raise. */
function forked(description: string, name: string): AirlockError {
  return exportFailed(
    description,
    `two different checkpoints of the same tree size exist: ${name} there holds other bytes than the ` +
      'checkpoint being exported. The audit log forked or was rewritten; the exported copy was left as ' +
      'it is — compare the two notes before doing anything else.',
  );
}

// ---------------------------------------------------------------------------------------
// Parsing the setting

/** Parses the AIRLOCK_CHECKPOINT_SINK setting; throws AirlockError('INVALID_CONFIG', msg naming AIRLOCK_CHECKPOINT_SINK) when malformed. */
export function parseCheckpointSink(text: string, env: NodeJS.ProcessEnv): CheckpointSink {
  if (text.startsWith('dir:')) return parseDirectory(text.slice('dir:'.length));
  if (/^https?:\/\//i.test(text)) return parseHttp(text, env);
  if (text.startsWith('s3://')) return parseS3(text.slice('s3://'.length), env);
  // The text is not echoed: a mistyped URL may carry a password or a query secret.
  const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(text)?.[0];
  invalid(
    `${scheme === undefined ? 'not a sink' : `unknown kind "${scheme}"`}: use dir:/absolute/path, ` +
      'an http:// or https:// URL, or s3://bucket/prefix',
  );
}

function parseDirectory(path: string): CheckpointSink {
  // A relative path would depend on the working directory of whoever starts Airlock.
  if (!isAbsolute(path)) invalid(`dir: needs an absolute path, got "${path}"`);
  if (path.includes('\0')) invalid('dir: path must not contain a NUL byte');
  return new DirectorySink(normalize(path).replace(/(.)\/+$/, '$1'));
}

const LOOPBACK_HOST = /^(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\])$/i;
/** Visible ASCII only: a CR or LF in a header value would let the value add headers. */
const HEADER_SAFE = /^[\x21-\x7e]+$/;

function parseHttp(text: string, env: NodeJS.ProcessEnv): CheckpointSink {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    invalid('not a valid http(s) URL');
  }
  // user:password@ in the URL would end up in every log line that names the sink.
  if (url.username !== '' || url.password !== '')
    invalid(`the URL must not carry credentials (user:password@); put a bearer token in ${TOKEN_SETTING}`);
  if (url.hash !== '') invalid('the URL must not have a #fragment');
  const token = env[TOKEN_SETTING];
  if (token !== undefined) {
    if (token === '') invalid(`${TOKEN_SETTING} is set but empty`);
    if (!HEADER_SAFE.test(token)) invalid(`${TOKEN_SETTING} contains characters a token never has`);
    // Over plain HTTP the token crosses the network readable by anyone on the path.
    if (url.protocol === 'http:' && !LOOPBACK_HOST.test(url.hostname))
      invalid(`${TOKEN_SETTING} is only sent over https:// (or http:// to this host's loopback)`);
  }
  return new HttpSink(url, token);
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const PREFIX_SEGMENT = /^[A-Za-z0-9._-]+$/;
const REGION = /^[a-z0-9-]{1,64}$/;

function parseS3(rest: string, env: NodeJS.ProcessEnv): CheckpointSink {
  if (rest.includes('#')) invalid('an s3:// sink has no #fragment');
  const queryAt = rest.indexOf('?');
  const location = queryAt === -1 ? rest : rest.slice(0, queryAt);
  const query = new URLSearchParams(queryAt === -1 ? '' : rest.slice(queryAt + 1));
  const slash = location.indexOf('/');
  const bucket = slash === -1 ? location : location.slice(0, slash);
  if (!BUCKET.test(bucket) || bucket.includes('..'))
    invalid(
      `"${bucket}" is not a bucket name: 3–63 lowercase letters, digits, dots and hyphens, ` +
        'starting and ending with a letter or digit',
    );
  const prefix = slash === -1 ? [] : location.slice(slash + 1).split('/');
  if (prefix.at(-1) === '') prefix.pop();
  for (const segment of prefix) {
    // "..", "." or "a//b" would make the objects land elsewhere than the setting says.
    if (segment === '.' || segment === '..' || !PREFIX_SEGMENT.test(segment))
      invalid(
        `the prefix "${prefix.join('/')}" may hold only letters, digits, ".", "_", "-" and single "/" ` +
          'between segments, and no "." or ".." segment',
      );
  }

  for (const key of new Set(query.keys())) {
    if (key !== 'endpoint' && key !== 'region')
      invalid(`unknown s3:// parameter "${key}" (known: endpoint, region)`);
    if (query.getAll(key).length > 1) invalid(`s3:// parameter "${key}" is given twice`);
  }
  const region = query.get('region') ?? 'us-east-1';
  if (!REGION.test(region)) invalid(`"${region}" is not a region name`);
  const endpoint = parseEndpoint(query.get('endpoint') ?? `https://s3.${region}.amazonaws.com`);

  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (
    accessKeyId === undefined ||
    accessKeyId === '' ||
    secretAccessKey === undefined ||
    secretAccessKey === ''
  )
    invalid('an s3:// sink needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment');
  if (!HEADER_SAFE.test(accessKeyId)) invalid('AWS_ACCESS_KEY_ID contains characters a key ID never has');
  const sessionToken = env.AWS_SESSION_TOKEN;
  if (sessionToken !== undefined && sessionToken !== '' && !HEADER_SAFE.test(sessionToken))
    invalid('AWS_SESSION_TOKEN contains characters a session token never has');
  const credentials: SigV4Credentials = {
    accessKeyId,
    secretAccessKey,
    sessionToken: sessionToken === '' ? undefined : sessionToken,
  };
  return new S3Sink({ bucket, prefix, endpoint, region, credentials });
}

function parseEndpoint(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    invalid('the s3:// endpoint is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    invalid('the s3:// endpoint must be an http:// or https:// URL');
  if (url.username !== '' || url.password !== '')
    invalid('the s3:// endpoint must not carry credentials; use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY');
  // Requests are path-style ({endpoint}/{bucket}/{key}): anything after the host would be lost.
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '')
    invalid('the s3:// endpoint is scheme://host[:port] only, without a path or query');
  return url;
}

// ---------------------------------------------------------------------------------------
// Directory sink

class DirectorySink implements CheckpointSink {
  readonly description: string;
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = dir;
    this.description = `directory ${dir}`;
  }

  async put(checkpoint: ExportedCheckpoint, signal?: AbortSignal): Promise<void> {
    const bytes = noteBytes(checkpoint);
    const name = checkpointObjectName(checkpoint.treeSize);
    try {
      if (signal?.aborted) throw exportFailed(this.description, 'cancelled', signal.reason);
      const dir = await this.#openDirectory();
      try {
        await this.#publishOnce(dir, name, bytes);
        await this.#replaceLatest(dir, bytes);
      } finally {
        await dir.close();
      }
    } catch (error) {
      if (isAirlockError(error)) throw error;
      throw exportFailed(this.description, describeError(error), error);
    }
  }

  async #openDirectory(): Promise<FileHandle> {
    try {
      return await open(this.#dir, constants.O_RDONLY | constants.O_DIRECTORY);
    } catch (error) {
      const code = errnoOf(error);
      // Never created here: a typo in the setting must not quietly export to a new place.
      if (code === 'ENOENT')
        throw exportFailed(this.description, `${this.#dir} does not exist; create it first`, error);
      if (code === 'ENOTDIR') throw exportFailed(this.description, `${this.#dir} is not a directory`, error);
      throw exportFailed(this.description, `cannot open ${this.#dir}: ${describeError(error)}`, error);
    }
  }

  /**
   * The checkpoint file is written under a temporary name, synced, then hard-linked to its
   * final name: link() never replaces an existing name (a file, or a symlink planted there,
   * gives EEXIST), and a crash can never leave a half-written file under the final name,
   * which a retry would then mistake for a fork.
   */
  async #publishOnce(dir: FileHandle, name: string, bytes: Buffer): Promise<void> {
    const path = join(this.#dir, name);
    const temporary = join(this.#dir, `.${name}.${randomBytes(8).toString('hex')}.tmp`);
    await writeNewFile(temporary, bytes);
    let created = false;
    try {
      await link(temporary, path);
      created = true;
    } catch (error) {
      if (errnoOf(error) !== 'EEXIST') throw error;
    } finally {
      await rm(temporary, { force: true });
    }
    await dir.sync();
    if (!created) await this.#checkExisting(path, name, bytes);
  }

  /** An existing checkpoint of this size: identical bytes are a retry, anything else a fork. */
  async #checkExisting(path: string, name: string, bytes: Buffer): Promise<void> {
    let handle: FileHandle;
    try {
      // O_NOFOLLOW: a symlink planted at the name must not make us vouch for (or read) a file
      // elsewhere. O_NONBLOCK: a FIFO planted there must not hang the exporter.
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (error) {
      if (errnoOf(error) === 'ELOOP')
        throw exportFailed(
          this.description,
          `${name} is a symbolic link; a checkpoint is never written or read through a link — remove it and investigate who planted it`,
          error,
        );
      throw error;
    }
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw exportFailed(this.description, `${name} exists but is not a regular file`);
      if (stat.size !== bytes.length) throw forked(this.description, name);
      const existing = await handle.readFile();
      if (!existing.equals(bytes)) throw forked(this.description, name);
    } finally {
      await handle.close();
    }
  }

  /** latest.txt is replaced atomically: readers see the old or the new note, never a mix. */
  async #replaceLatest(dir: FileHandle, bytes: Buffer): Promise<void> {
    const temporary = join(this.#dir, `.${LATEST}.${randomBytes(8).toString('hex')}.tmp`);
    await writeNewFile(temporary, bytes);
    try {
      // rename() replaces a symlink named latest.txt itself; it never writes through it.
      await rename(temporary, join(this.#dir, LATEST));
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
    await dir.sync();
  }
}

/** Creates `path` (never an existing name, never through a symlink), mode 0644 whatever the
 * umask, and syncs it. */
async function writeNewFile(path: string, bytes: Buffer): Promise<void> {
  const handle = await open(
    path,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o644,
  );
  try {
    await handle.chmod(0o644);
    await handle.writeFile(bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function errnoOf(error: unknown): string | undefined {
  if (error instanceof Error && 'code' in error && typeof error.code === 'string') return error.code;
  return undefined;
}

// ---------------------------------------------------------------------------------------
// HTTP: shared by the endpoint and the S3 sink

interface SendOptions {
  readonly method: string;
  readonly headers: Record<string, string>;
  readonly body?: Buffer;
  /** Values that must never appear in an error message (echoed back by a hostile server). */
  readonly secrets: readonly string[];
}

async function send(
  description: string,
  url: URL,
  options: SendOptions,
  signal: AbortSignal | undefined,
): Promise<Response> {
  const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  try {
    return await fetch(url, {
      method: options.method,
      headers: options.headers,
      ...(options.body === undefined ? {} : { body: options.body }),
      signal: signal === undefined ? timeout : AbortSignal.any([timeout, signal]),
      // A redirect is a failure, not followed: it would carry the body (and, to the same
      // origin, the token) to a place the setting does not name.
      redirect: 'manual',
    });
  } catch (error) {
    throw exportFailed(description, requestFailure(error, timeout, signal, options.secrets), error);
  }
}

function requestFailure(
  error: unknown,
  timeout: AbortSignal,
  signal: AbortSignal | undefined,
  secrets: readonly string[],
): string {
  if (timeout.aborted) return `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`;
  if (signal?.aborted) return 'cancelled';
  const cause = error instanceof Error && error.cause !== undefined ? error.cause : error;
  return `request failed: ${redact(describeError(cause), secrets)}`;
}

/** Reads at most `limit` bytes of the body; `complete` says whether that was all of it. */
async function readBounded(response: Response, limit: number): Promise<{ bytes: Buffer; complete: boolean }> {
  if (response.body === null) return { bytes: Buffer.alloc(0), complete: true };
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (total <= limit) {
      const { done, value } = await reader.read();
      if (done) return { bytes: Buffer.concat(chunks), complete: true };
      chunks.push(value);
      total += value.byteLength;
    }
    return { bytes: Buffer.concat(chunks).subarray(0, limit), complete: false };
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

function redact(text: string, secrets: readonly string[]): string {
  let result = text;
  for (const secret of secrets) if (secret !== '') result = result.split(secret).join('[redacted]');
  return result;
}

/** "HTTP 503: <first KiB of the body, printable ASCII only, secrets removed>". */
async function describeAnswer(
  response: Response,
  secrets: readonly string[],
  description: string,
  signal: AbortSignal | undefined,
): Promise<string> {
  let excerpt = '';
  try {
    const { bytes, complete } = await readBounded(response, MAX_ERROR_EXCERPT);
    // Printable only: the body is the server's, and a log line must not carry its escapes.
    excerpt = bytes
      .toString('latin1')
      .replace(/[^\x20-\x7e]+/g, ' ')
      .replace(/ {2,}/g, ' ')
      .trim();
    excerpt = redact(excerpt, secrets);
    if (!complete) excerpt += ' …';
  } catch (error) {
    if (signal?.aborted) throw exportFailed(description, 'cancelled', error);
    excerpt = '(body unreadable)';
  }
  return `HTTP ${response.status}${excerpt === '' ? '' : `: ${excerpt}`}`;
}

async function discard(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => undefined);
}

// ---------------------------------------------------------------------------------------
// HTTP endpoint sink

class HttpSink implements CheckpointSink {
  readonly description: string;
  readonly #url: URL;
  readonly #token: string | undefined;

  constructor(url: URL, token: string | undefined) {
    this.#url = url;
    this.#token = token;
    // Origin and path only: a query string may carry a secret of its own.
    this.description = `HTTP endpoint ${url.origin}${url.pathname}`;
  }

  async put(checkpoint: ExportedCheckpoint, signal?: AbortSignal): Promise<void> {
    const body = noteBytes(checkpoint);
    const headers: Record<string, string> = {
      'content-type': NOTE_CONTENT_TYPE,
      'airlock-checkpoint-size': String(checkpoint.treeSize),
    };
    if (this.#token !== undefined) headers.authorization = `Bearer ${this.#token}`;
    const secrets = this.#token === undefined ? [] : [this.#token];
    const response = await send(
      this.description,
      this.#url,
      { method: 'POST', headers, body, secrets },
      signal,
    );
    if (response.ok) {
      await discard(response);
      return;
    }
    throw exportFailed(
      this.description,
      `the endpoint answered ${await describeAnswer(response, secrets, this.description, signal)}`,
    );
  }
}

// ---------------------------------------------------------------------------------------
// S3 sink

interface S3Location {
  readonly bucket: string;
  readonly prefix: readonly string[];
  readonly endpoint: URL;
  readonly region: string;
  readonly credentials: SigV4Credentials;
}

class S3Sink implements CheckpointSink {
  readonly description: string;
  readonly #location: S3Location;
  readonly #secrets: readonly string[];

  constructor(location: S3Location) {
    this.#location = location;
    const { bucket, prefix, endpoint, region, credentials } = location;
    this.#secrets = [credentials.secretAccessKey, credentials.sessionToken ?? ''];
    this.description = `S3 bucket ${[bucket, ...prefix].join('/')} at ${endpoint.origin} (region ${region})`;
  }

  async put(checkpoint: ExportedCheckpoint, signal?: AbortSignal): Promise<void> {
    const bytes = noteBytes(checkpoint);
    const name = checkpointObjectName(checkpoint.treeSize);
    // If-None-Match: * makes S3 refuse (412) to replace an existing object. A store that
    // ignores the header would overwrite; the read-back below cannot catch that afterwards.
    const created = await this.#request('PUT', name, bytes, { 'if-none-match': '*' }, signal);
    if (created.status === 412) {
      await discard(created);
      await this.#checkExisting(name, bytes, signal);
    } else if (!created.ok) {
      throw await this.#failure(`PUT ${name}`, created, signal);
    } else {
      await discard(created);
    }
    const latest = await this.#request('PUT', LATEST, bytes, {}, signal);
    if (!latest.ok) throw await this.#failure(`PUT ${LATEST}`, latest, signal);
    await discard(latest);
  }

  /** The object exists: a retry if its bytes are ours, a fork otherwise. */
  async #checkExisting(name: string, bytes: Buffer, signal: AbortSignal | undefined): Promise<void> {
    const response = await this.#request('GET', name, undefined, {}, signal);
    if (!response.ok) throw await this.#failure(`GET ${name} (it exists: 412 on PUT)`, response, signal);
    let existing: { bytes: Buffer; complete: boolean };
    try {
      existing = await readBounded(response, bytes.length);
    } catch (error) {
      throw exportFailed(this.description, `GET ${name}: reading the answer failed`, error);
    }
    if (!existing.complete || !existing.bytes.equals(bytes)) throw forked(this.description, name);
  }

  async #request(
    method: 'GET' | 'PUT',
    name: string,
    body: Buffer | undefined,
    extra: Record<string, string>,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    const { bucket, prefix, endpoint, region, credentials } = this.#location;
    const url = new URL(`/${[bucket, ...prefix, name].join('/')}`, endpoint);
    const headers = body === undefined ? { ...extra } : { ...extra, 'content-type': NOTE_CONTENT_TYPE };
    const signed = signV4({ method, url, headers, body: body ?? '' }, credentials, region, 's3', new Date());
    // fetch derives Host from the URL itself (the same url.host that was signed).
    const { host: _host, ...toSend } = signed;
    return send(
      this.description,
      url,
      { method, headers: toSend, ...(body === undefined ? {} : { body }), secrets: this.#secrets },
      signal,
    );
  }

  async #failure(what: string, response: Response, signal: AbortSignal | undefined): Promise<AirlockError> {
    return exportFailed(
      this.description,
      `${what}: S3 answered ${await describeAnswer(response, this.#secrets, this.description, signal)}`,
    );
  }
}

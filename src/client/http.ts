import type { KeyObject } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { signRequest } from '../auth/request-signature.js';
import { AirlockError, type AirlockErrorCode, describeError, ERROR_CATALOGUE } from '../errors.js';

/**
 * The one HTTP client of the CLI and the worker: JSON in and out with a bearer token, and
 * the server's `{error:{code,message}}` turned back into the same AirlockError code. A
 * connection failure is SERVER_UNREACHABLE. The token is sent only in the Authorization
 * header and never appears in an error message.
 */

export interface HttpClientOptions {
  /** Base URL of the server ("http://127.0.0.1:7340"); paths are appended to it. */
  readonly url: string;
  readonly token: string;
  /** Per-request timeout for calls that are not long polls or streams. Default 30 s. */
  readonly timeoutMs?: number;
  /** Signs every request (RFC 9421) for a token that requires it. */
  readonly requestKey?: { readonly keyId: string; readonly privateKey: KeyObject };
}

export interface RequestOptions {
  readonly method?: 'GET' | 'POST' | 'DELETE';
  readonly body?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
  /** Overrides the client's timeout (a long poll waits longer); 0 = none. */
  readonly timeoutMs?: number;
}

const MAX_ERROR_BODY = 64 * 1024;
/** The largest JSON answer read (the API pages its lists; nothing it sends comes near). */
const MAX_JSON_BODY = 32 * 1024 * 1024;

export class HttpClient {
  readonly #base: URL;
  readonly #token: string;
  readonly #timeoutMs: number;
  readonly #requestKey: HttpClientOptions['requestKey'];
  /** Connections kept open between JSON calls (a worker makes several for every job). */
  readonly #agent: HttpAgent;

  constructor(options: HttpClientOptions) {
    let base: URL;
    try {
      base = new URL(options.url);
    } catch {
      throw new AirlockError('INVALID_CONFIG', `server URL is not a URL: "${options.url}"`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:')
      throw new AirlockError(
        'INVALID_CONFIG',
        `server URL must be http:// or https://, got "${options.url}"`,
      );
    if (!/^[\x21-\x7e]+$/.test(options.token))
      throw new AirlockError('INVALID_CONFIG', 'the API token contains characters a token never has');
    this.#base = base;
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#requestKey = options.requestKey;
    this.#agent =
      base.protocol === 'https:'
        ? new HttpsAgent({ keepAlive: true, maxFreeSockets: 8 })
        : new HttpAgent({ keepAlive: true, maxFreeSockets: 8 });
  }

  get url(): string {
    return this.#base.href.replace(/\/$/, '');
  }

  /**
   * A JSON request; resolves to the parsed body, or null for 204. Errors throw AirlockError.
   * Made with node:http rather than fetch(): the same request for a fraction of the CPU, which
   * a worker spends on several calls for every job.
   */
  async json<T>(path: string, options: RequestOptions = {}): Promise<T | null> {
    const response = await this.#answer(path, options);
    let bytes: Buffer;
    try {
      bytes = await readBounded(response, MAX_JSON_BODY, 'refuse');
    } catch (error) {
      throw this.#unreachable(error, options.signal);
    }
    if (response.statusCode === 204) return null;
    try {
      return JSON.parse(bytes.toString('utf8')) as T;
    } catch (error) {
      throw new AirlockError('INTERNAL', `the server answered ${path} with a body that is not JSON`, {
        cause: error,
      });
    }
  }

  /**
   * A request whose 2xx answer is handed over unread: its body's bytes as they come (the log
   * stream). Errors throw AirlockError; a body that breaks off throws from the iteration.
   * node:http as for json(): no redirect is followed, and fetch() is never loaded.
   */
  async stream(path: string, options: RequestOptions = {}): Promise<AsyncIterable<Buffer>> {
    return this.#answer(path, options);
  }

  /** Sends the request; resolves to a 2xx answer with its body unread, else throws its error. */
  async #answer(path: string, options: RequestOptions): Promise<IncomingMessage> {
    const { url, method, headers, body, signal } = this.#prepare(path, options);
    let response: IncomingMessage;
    try {
      response = await new Promise<IncomingMessage>((resolve, reject) => {
        const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
        const request = send(
          url,
          {
            method,
            headers: body === undefined ? headers : { ...headers, 'content-length': Buffer.byteLength(body) },
            agent: this.#agent,
            ...(signal !== undefined ? { signal } : {}),
          },
          resolve,
        );
        request.on('error', reject);
        request.on('socket', keepSocketErrorsHandled);
        request.end(body);
      });
    } catch (error) {
      throw this.#unreachable(error, options.signal);
    }
    const status = response.statusCode ?? 0;
    if (status >= 200 && status <= 299) return response;
    let bytes: Buffer = Buffer.alloc(0);
    try {
      bytes = await readBounded(response, MAX_ERROR_BODY, 'cut');
    } catch {
      // the body could not be read whole: what came, or the status alone, speaks
    }
    throw errorOfAnswer(status, response.statusMessage ?? '', response.headers['retry-after'], bytes);
  }

  /** What a failed connection means: the caller's own abort, or SERVER_UNREACHABLE. */
  #unreachable(error: unknown, callerSignal: AbortSignal | undefined): unknown {
    if (callerSignal?.aborted) return callerSignal.reason ?? error;
    const cause =
      error instanceof Error && error.cause instanceof Error ? error.cause.message : describeError(error);
    return new AirlockError(
      'SERVER_UNREACHABLE',
      `cannot reach the Airlock server at ${this.url}: ${cause}`,
      {
        cause: error,
      },
    );
  }

  /** URL, method, headers (with the token, and the signature when one is required), body, signal. */
  #prepare(
    path: string,
    options: RequestOptions,
  ): {
    url: URL;
    method: string;
    headers: Record<string, string>;
    body: string | undefined;
    signal: AbortSignal | undefined;
  } {
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.#token}`,
      accept: 'application/json, application/x-ndjson',
      ...options.headers,
    };
    let body: string | undefined;
    if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.body);
    }
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const signals: AbortSignal[] = [];
    if (options.signal !== undefined) signals.push(options.signal);
    if (timeoutMs > 0) signals.push(AbortSignal.timeout(timeoutMs));
    const url = new URL(
      path.replace(/^\//, ''),
      this.#base.href.endsWith('/') ? this.#base : `${this.#base.href}/`,
    );
    const method = options.method ?? (body === undefined ? 'GET' : 'POST');
    // Signed anew for each request (a retry too): a fresh nonce and time every time.
    if (this.#requestKey !== undefined)
      Object.assign(
        headers,
        signRequest({
          method,
          targetUri: url.href,
          body,
          idempotencyKey: headers['idempotency-key'],
          keyId: this.#requestKey.keyId,
          privateKey: this.#requestKey.privateKey,
        }),
      );
    return {
      url,
      method,
      headers,
      body,
      signal: signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals),
    };
  }
}

/**
 * An abort that lands after an answer fully arrived but before its end was read (a reader
 * paused on its last lines, then Ctrl-C or the idle timer) destroys a socket that Node.js's
 * keep-alive pool has just taken back without its error listener: the error would be
 * uncaught and end the process. The request and the reader get their errors their own way;
 * this one listener per socket (added once, sockets are reused) only keeps that one quiet.
 */
function ignoreSocketError(): void {}
function keepSocketErrorsHandled(socket: Socket): void {
  if (!socket.listeners('error').includes(ignoreSocketError)) socket.on('error', ignoreSocketError);
}

/**
 * Reads a body of at most `max` bytes. Past that the connection is dropped, and the body is
 * either cut there (`cut`: an error answer, of which the start is enough) or refused.
 */
async function readBounded(response: IncomingMessage, max: number, past: 'cut' | 'refuse'): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    if (length + chunk.length > max) {
      response.destroy();
      if (past === 'refuse') throw new Error(`an answer of more than ${max} bytes`);
      chunks.push(chunk.subarray(0, max - length));
      break;
    }
    length += chunk.length;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The AirlockError a non-2xx answer stands for (its code when the server sent a known one). */
export function errorOfAnswer(
  status: number,
  statusText: string,
  retryAfter: string | undefined,
  body: Buffer,
): AirlockError {
  let code: AirlockErrorCode = 'INTERNAL';
  let message = `the server answered ${status} ${statusText}`;
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { error?: { code?: unknown; message?: unknown } };
    const sent = parsed.error?.code;
    if (typeof sent === 'string' && Object.hasOwn(ERROR_CATALOGUE, sent)) code = sent as AirlockErrorCode;
    if (typeof parsed.error?.message === 'string') message = parsed.error.message;
  } catch {
    // not our error body (a proxy's page): keep the status line
  }
  const error = new AirlockError(code, message);
  if (retryAfter !== undefined && /^\d+$/.test(retryAfter)) {
    Object.defineProperty(error, 'retryAfterSeconds', { value: Number(retryAfter), enumerable: true });
  }
  return error;
}

/** Reads an application/x-ndjson body line by line (each line parsed as JSON). */
export async function* ndjsonLines(
  body: AsyncIterable<Uint8Array>,
  maxLineBytes = 8 * 1024 * 1024,
): AsyncGenerator<unknown> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let pending = '';
  for await (const chunk of body) {
    pending += decoder.decode(chunk, { stream: true });
    let newline = pending.indexOf('\n');
    while (newline !== -1) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (line.trim() !== '') yield JSON.parse(line);
      newline = pending.indexOf('\n');
    }
    if (pending.length > maxLineBytes)
      throw new AirlockError('INTERNAL', `the server sent a log line longer than ${maxLineBytes} bytes`);
  }
  pending += decoder.decode();
  if (pending.trim() !== '') yield JSON.parse(pending);
}

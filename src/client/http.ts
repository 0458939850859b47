import type { KeyObject } from 'node:crypto';
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

export class HttpClient {
  readonly #base: URL;
  readonly #token: string;
  readonly #timeoutMs: number;
  readonly #requestKey: HttpClientOptions['requestKey'];

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
  }

  get url(): string {
    return this.#base.href.replace(/\/$/, '');
  }

  /** A JSON request; resolves to the parsed body, or null for 204. Errors throw AirlockError. */
  async json<T>(path: string, options: RequestOptions = {}): Promise<T | null> {
    const response = await this.request(path, options);
    if (response.status === 204) {
      await response.body?.cancel();
      return null;
    }
    const text = await response.text();
    try {
      return JSON.parse(text) as T;
    } catch (error) {
      throw new AirlockError('INTERNAL', `the server answered ${path} with a body that is not JSON`, {
        cause: error,
      });
    }
  }

  /** A request whose 2xx response is returned unread (a stream); errors throw AirlockError. */
  async request(path: string, options: RequestOptions = {}): Promise<Response> {
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
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers,
        ...(body !== undefined ? { body } : {}),
        ...(signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}),
      });
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason ?? error;
      const cause =
        error instanceof Error && error.cause instanceof Error ? error.cause.message : describeError(error);
      throw new AirlockError(
        'SERVER_UNREACHABLE',
        `cannot reach the Airlock server at ${this.url}: ${cause}`,
        {
          cause: error,
        },
      );
    }
    if (response.ok) return response;
    throw await errorFromResponse(response);
  }
}

/** The AirlockError a non-2xx response stands for (its code when the server sent a known one). */
export async function errorFromResponse(response: Response): Promise<AirlockError> {
  let text = '';
  try {
    text = (await response.text()).slice(0, MAX_ERROR_BODY);
  } catch {
    // the body could not be read: the status alone speaks
  }
  let code: AirlockErrorCode = 'INTERNAL';
  let message = `the server answered ${response.status} ${response.statusText}`;
  try {
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const sent = parsed.error?.code;
    if (typeof sent === 'string' && Object.hasOwn(ERROR_CATALOGUE, sent)) code = sent as AirlockErrorCode;
    if (typeof parsed.error?.message === 'string') message = parsed.error.message;
  } catch {
    // not our error body (a proxy's page): keep the status line
  }
  const error = new AirlockError(code, message);
  const retryAfter = response.headers.get('retry-after');
  if (retryAfter !== null && /^\d+$/.test(retryAfter)) {
    Object.defineProperty(error, 'retryAfterSeconds', { value: Number(retryAfter), enumerable: true });
  }
  return error;
}

/** Reads an application/x-ndjson body line by line (each line parsed as JSON). */
export async function* ndjsonLines(
  response: Response,
  maxLineBytes = 8 * 1024 * 1024,
): AsyncGenerator<unknown> {
  if (response.body === null) return;
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let pending = '';
  for await (const chunk of response.body) {
    pending += decoder.decode(chunk as Uint8Array, { stream: true });
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

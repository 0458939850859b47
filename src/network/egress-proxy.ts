import { lookup } from 'node:dns/promises';
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import { connect, type Socket } from 'node:net';
import { isAbsolute } from 'node:path';
import { AirlockError, describeError } from '../errors.js';
import {
  type AddressRange,
  formatIp,
  hostAddresses,
  type IpAddress,
  judgeAddress,
  MAX_GRANTS,
  parseGrant,
  parseIp,
  specialPurpose,
} from './addresses.js';
import { EgressAllowlist, type EgressTarget, formatTarget, parseTarget } from './allowlist.js';

/**
 * The egress proxy of one job (docs/network.md). The sandbox has no route and no DNS server;
 * its only way out is this proxy, which speaks HTTP CONNECT (tunnels, for TLS) and plain
 * HTTP with an absolute URI. For each attempt it checks, in order: the job's caps, the
 * allowlist, the name's resolution (done here, so DNS cannot carry data out), and every
 * resolved address (no loopback, private, link-local, metadata or host address unless an
 * operator granted it). It then connects to exactly the address it checked — never resolving
 * again, so a DNS answer that changes in between (rebinding) changes nothing — and records
 * the attempt: destination, address, decision and reason, bytes each way, duration.
 */

export type EgressReason =
  /** Passed every check; traffic flowed and ended normally. */
  | 'allowed'
  | 'not-allowlisted'
  | 'ip-literal-not-listed'
  | 'blocked-address'
  | 'dns-failed'
  | 'connect-failed'
  | 'connect-timeout'
  | 'byte-cap'
  | 'connection-cap'
  | 'concurrency-cap'
  | 'idle-timeout'
  | 'header-timeout'
  | 'headers-too-large'
  | 'malformed-request'
  | 'not-a-proxy-request'
  | 'unsupported-scheme'
  | 'method-not-allowed'
  | 'upstream-error'
  | 'client-closed'
  | 'proxy-closed'
  | 'record-failed';

export interface EgressRecord {
  /** When the connection to the proxy was accepted (ISO 8601). */
  readonly at: string;
  /** host:port the job asked for (normalised when it parsed; never a path or query); null before a request was read. */
  readonly destination: string | null;
  readonly protocol: 'connect' | 'http' | null;
  /** The address connected to — or the one refused, or the last one tried; null when none was reached. */
  readonly resolved: string | null;
  /** Whether the proxy let the job through to the destination (every check passed). */
  readonly allowed: boolean;
  readonly reason: EgressReason;
  /** A short human explanation of the reason, or null. Never holds header values. */
  readonly detail: string | null;
  /** Bytes from the job towards the destination, and from the destination back. */
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly durationMs: number;
}

export interface EgressTotals {
  readonly bytesUp: number;
  readonly bytesDown: number;
  /** Connections accepted over the proxy's life. */
  readonly connections: number;
  /** Connections open now. */
  readonly active: number;
  /** Attempts recorded as not allowed. */
  readonly refused: number;
  /** Records that fell out of the bounded list returned by attempts() (onAttempt saw them all). */
  readonly droppedRecords: number;
  /**
   * Refusals counted but not recorded one by one: connections accepted after a job-wide cap
   * was reached, and every drop at the open-socket bound but the first. A job could otherwise
   * make records (and audit events) without end, or push its real attempts out of the kept
   * list with refused ones.
   */
  readonly unrecorded: number;
  /** Set once a job-wide cap is reached (or recording failed): every new attempt is refused. */
  readonly exhausted: 'byte-cap' | 'connection-cap' | 'record-failed' | null;
}

export interface EgressProxy {
  /** What to put in HTTP_PROXY / HTTPS_PROXY: http://HOST:PORT, or unix:PATH for a Unix socket. */
  readonly address: string;
  attempts(): EgressRecord[];
  totals(): EgressTotals;
  /** Ends every connection (recorded as proxy-closed) and resolves once the listener is closed. */
  close(): Promise<void>;
}

export type EgressListen = { readonly path: string } | { readonly host: string; readonly port: number };

export interface EgressProxyOptions {
  /** Allowlist entries (docs/network.md): host:port, *.example.com:port, 1.2.3.4:port, [2001:db8::1]:port. */
  readonly allow: readonly string[];
  readonly listen: EgressListen;
  /** Name resolution; default dns.lookup (all addresses, in the resolver's order). */
  readonly resolve?: (host: string) => Promise<readonly string[]>;
  /** Ranges reachable although special-purpose (an internal registry); CIDR or single addresses. */
  readonly grantAddresses?: readonly string[];
  /** Bytes both ways over all connections of the job; past it every connection is cut. */
  readonly maxBytes?: number;
  /** Connections over the job's life. */
  readonly maxConnections?: number;
  /** Destinations connected at once. */
  readonly maxConcurrent?: number;
  /** Resolution plus TCP connection, per attempt. */
  readonly connectTimeoutMs?: number;
  /** No byte either way for this long cuts a connection. */
  readonly idleTimeoutMs?: number;
  /** The request head must arrive complete within this. */
  readonly headerTimeoutMs?: number;
  /** Records kept for attempts(); older ones are dropped (and counted). */
  readonly maxRecords?: number;
  /** Called with every record as the attempt ends. If it throws, the proxy refuses everything after. */
  readonly onAttempt?: (record: EgressRecord) => void;
  /** The host's own addresses (default: os.networkInterfaces(), read at each check). */
  readonly hostAddresses?: () => ReadonlySet<string>;
}

/** Request heads above this are refused (431): bounds the memory one connection can hold. */
export const MAX_HEADER_BYTES = 16 * 1024;
/** A name resolving to more addresses than this is refused rather than partly checked. */
const MAX_RESOLVED = 64;
/** Sockets beyond maxConcurrent allowed to sit in the header phase before the kernel-level drop. */
const HEADER_PHASE_HEADROOM = 16;
/** How long a refused connection is kept to let the client read the answer (no RST over it). */
const LINGER_MS = 2000;
const MAX_DETAIL = 300;

const DEFAULTS = {
  maxBytes: 1024 ** 3,
  maxConnections: 1000,
  maxConcurrent: 64,
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  headerTimeoutMs: 10_000,
  maxRecords: 1000,
} as const;

/** Methods forwarded as plain HTTP. TRACE would echo the request (and any credential in it) back. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** Hop-by-hop headers (RFC 9110 §7.6.1) and proxy credentials: never passed on, either way. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization', // the job's credentials for this proxy: never forwarded, never recorded
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect', // answered here (100 Continue) by node:http
  'host', // rewritten from the absolute URI: a different Host would reach another site on the same address
]);

const STATUS: Record<EgressReason, number> = {
  allowed: 200,
  'not-allowlisted': 403,
  'ip-literal-not-listed': 403,
  'blocked-address': 403,
  'dns-failed': 502,
  'connect-failed': 502,
  'connect-timeout': 504,
  'byte-cap': 403,
  'connection-cap': 403,
  'concurrency-cap': 429,
  'idle-timeout': 504,
  'header-timeout': 408,
  'headers-too-large': 431,
  'malformed-request': 400,
  'not-a-proxy-request': 400,
  'unsupported-scheme': 400,
  'method-not-allowed': 405,
  'upstream-error': 502,
  'client-closed': 499,
  'proxy-closed': 503,
  'record-failed': 503,
};

type Refusal = { readonly reason: EgressReason; readonly detail: string | null };

/** One connection to the proxy: at most one request, one destination, one record. */
class Attempt {
  readonly startedAt = Date.now();
  readonly at = new Date(this.startedAt).toISOString();
  destination: string | null = null;
  protocol: 'connect' | 'http' | null = null;
  resolved: string | null = null;
  allowed = false;
  /** Accepted after a job-wide cap: refused and counted, never recorded. */
  quiet = false;
  /** A request has been read: later pipelined ones are ignored (one request per connection). */
  claimed = false;
  bytesUp = 0;
  bytesDown = 0;
  upstream: Socket | null = null;
  upstreamWritten = 0;
  /** Holds one of the job's maxConcurrent slots (from the checks until the end). */
  holdsSlot = false;
  /** Plain HTTP: the destination's answer was passed on completely. */
  answered = false;
  done = false;
  headerTimer: NodeJS.Timeout | null = null;

  constructor(readonly client: Socket) {}
}

function positiveInteger(name: string, value: number | undefined, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1 || value > max)
    throw new RangeError(`${name} must be an integer from 1 to ${max}`);
  return value;
}

/** Timers hold at most 2^31-1 ms. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * An authority as the job wrote it, for the record of a refused request: user information
 * (`user:password@host`) is replaced, never recorded — it may be a credential.
 */
function shownAuthority(text: string): string {
  const at = text.lastIndexOf('@');
  return clip(at < 0 ? text : `[userinfo]@${text.slice(at + 1)}`);
}

function clip(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, '?');
  return printable.length > MAX_DETAIL ? `${printable.slice(0, MAX_DETAIL)}…` : printable;
}

function checkListen(listen: EgressListen): void {
  if ('path' in listen) {
    // sun_path holds 108 bytes; a longer path would be silently truncated by some callers.
    if (!isAbsolute(listen.path) || Buffer.byteLength(listen.path) > 107)
      throw new RangeError('listen.path must be an absolute path of at most 107 bytes');
    return;
  }
  const ip = parseIp(listen.host);
  // 0.0.0.0 or :: would offer the proxy — and the job's grants — to every network the worker is on.
  if (ip === null || ip.bytes.every((byte) => byte === 0) || specialPurpose(ip)?.includes('multicast'))
    throw new RangeError(
      'listen.host must be one unicast IP address of this host (127.0.0.1, never 0.0.0.0)',
    );
  if (!Number.isInteger(listen.port) || listen.port < 0 || listen.port > 65535)
    throw new RangeError('listen.port must be 0–65535');
}

async function defaultResolve(host: string): Promise<string[]> {
  const answers = await lookup(host, { all: true, verbatim: true });
  return answers.map((answer) => answer.address);
}

/** Removes hop-by-hop headers (and those the Connection header names) from raw header pairs. */
function endToEndHeaders(raw: readonly string[]): OutgoingHttpHeaders {
  const named = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2)
    if (raw[i]?.toLowerCase() === 'connection')
      for (const token of (raw[i + 1] ?? '').split(',')) named.add(token.trim().toLowerCase());
  const headers: Record<string, string[]> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] ?? '').toLowerCase();
    if (HOP_BY_HOP.has(name) || named.has(name)) continue;
    const list = headers[name] ?? [];
    list.push(raw[i + 1] ?? '');
    headers[name] = list;
  }
  return headers;
}

class EgressProxyServer implements EgressProxy {
  address = '';
  readonly #allowlist: EgressAllowlist;
  readonly #grants: AddressRange[];
  readonly #resolve: (host: string) => Promise<readonly string[]>;
  readonly #hostAddresses: () => ReadonlySet<string>;
  readonly #onAttempt: ((record: EgressRecord) => void) | undefined;
  readonly #limits: { -readonly [K in keyof typeof DEFAULTS]: number };
  readonly #server: Server;
  readonly #active = new Set<Attempt>();
  readonly #attemptOf = new WeakMap<Socket, Attempt>();
  readonly #lingering = new Set<NodeJS.Timeout>();
  readonly #sockets = new Set<Socket>();
  readonly #records: EgressRecord[] = [];
  #droppedRecords = 0;
  #bytesUp = 0;
  #bytesDown = 0;
  #connections = 0;
  #refused = 0;
  #unrecorded = 0;
  #dropRecorded = false;
  #slotsInUse = 0;
  #exhausted: EgressTotals['exhausted'] = null;
  #recorderBroken = false;
  #closing = false;

  constructor(options: EgressProxyOptions) {
    this.#allowlist = EgressAllowlist.parse(options.allow);
    const grants = options.grantAddresses ?? [];
    if (grants.length > MAX_GRANTS)
      throw new AirlockError('INVALID_CONFIG', `egress grants: at most ${MAX_GRANTS}`);
    this.#grants = grants.map((grant) => parseGrant(grant));
    this.#resolve = options.resolve ?? defaultResolve;
    this.#hostAddresses = options.hostAddresses ?? hostAddresses;
    this.#onAttempt = options.onAttempt;
    const n = options;
    this.#limits = {
      maxBytes: positiveInteger('maxBytes', n.maxBytes, DEFAULTS.maxBytes, Number.MAX_SAFE_INTEGER),
      maxConnections: positiveInteger('maxConnections', n.maxConnections, DEFAULTS.maxConnections, 1_000_000),
      maxConcurrent: positiveInteger('maxConcurrent', n.maxConcurrent, DEFAULTS.maxConcurrent, 10_000),
      connectTimeoutMs: positiveInteger(
        'connectTimeoutMs',
        n.connectTimeoutMs,
        DEFAULTS.connectTimeoutMs,
        MAX_TIMEOUT_MS,
      ),
      idleTimeoutMs: positiveInteger(
        'idleTimeoutMs',
        n.idleTimeoutMs,
        DEFAULTS.idleTimeoutMs,
        MAX_TIMEOUT_MS,
      ),
      headerTimeoutMs: positiveInteger(
        'headerTimeoutMs',
        n.headerTimeoutMs,
        DEFAULTS.headerTimeoutMs,
        MAX_TIMEOUT_MS - 1000,
      ),
      maxRecords: positiveInteger('maxRecords', n.maxRecords, DEFAULTS.maxRecords, 1_000_000),
    };
    checkListen(options.listen);
    this.#server = createServer({
      maxHeaderSize: MAX_HEADER_BYTES, // a head larger than this is refused with 431, not buffered
      insecureHTTPParser: false, // lenient parsing is how requests get smuggled past a proxy
      requireHostHeader: false, // the destination comes from the request target, never from Host
      requestTimeout: 0, // bodies are bounded by maxBytes and the idle timeout, not by a wall clock
      headersTimeout: this.#limits.headerTimeoutMs + 1000, // backstop behind the per-connection timer
      keepAliveTimeout: 1000,
    });
    // Bounds sockets held open by the job, including those still sending their head (slowloris).
    this.#server.maxConnections = this.#limits.maxConcurrent + HEADER_PHASE_HEADROOM;
    this.#server.on('connection', (socket: Socket) => this.#accept(socket));
    this.#server.on('drop', () => {
      if (this.#dropRecorded) {
        this.#countQuietly();
        return;
      }
      this.#dropRecorded = true;
      this.#record(null, { reason: 'concurrency-cap', detail: 'too many open connections to the proxy' });
    });
    this.#server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) =>
      this.#clientError(error, socket),
    );
    this.#server.on('connect', (request: IncomingMessage, socket: Socket, head: Buffer) => {
      void this.#tunnel(request, socket, head);
    });
    this.#server.on('request', (request: IncomingMessage, response: ServerResponse) => {
      void this.#forward(request, response);
    });
  }

  async listen(listen: EgressListen): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      const done = (): void => {
        this.#server.off('error', reject);
        resolve();
      };
      if ('path' in listen) this.#server.listen({ path: listen.path, exclusive: true }, done);
      else this.#server.listen({ host: listen.host, port: listen.port, exclusive: true }, done);
    }).catch((error: unknown) => {
      throw new AirlockError(
        'SANDBOX_SETUP_FAILED',
        `egress proxy: cannot listen on ${'path' in listen ? listen.path : `${listen.host}:${listen.port}`}: ${describeError(error)}`,
        { cause: error },
      );
    });
    const bound = this.#server.address();
    if (typeof bound === 'string' || bound === null) this.address = `unix:${bound ?? ''}`;
    else
      this.address = `http://${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`;
  }

  attempts(): EgressRecord[] {
    return [...this.#records];
  }

  totals(): EgressTotals {
    return {
      bytesUp: this.#bytesUp,
      bytesDown: this.#bytesDown,
      connections: this.#connections,
      active: this.#active.size,
      refused: this.#refused,
      droppedRecords: this.#droppedRecords,
      unrecorded: this.#unrecorded,
      exhausted: this.#exhausted,
    };
  }

  async close(): Promise<void> {
    this.#closing = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const attempt of [...this.#active]) this.#cut(attempt, { reason: 'proxy-closed', detail: null });
    for (const timer of this.#lingering) clearTimeout(timer);
    this.#lingering.clear();
    for (const socket of this.#sockets) socket.destroy();
    this.#server.closeAllConnections();
    await closed;
  }

  // ---- connection life ------------------------------------------------------------------

  #accept(socket: Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    const attempt = new Attempt(socket);
    // Past a job-wide cap every attempt is refused; it is counted, not recorded (see unrecorded).
    attempt.quiet = this.#exhausted !== null;
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    this.#connections += 1;
    this.#active.add(attempt);
    this.#attemptOf.set(socket, attempt);
    socket.on('error', () => {}); // reported through 'close'; an unhandled error would crash the worker
    socket.on('close', () => {
      if (attempt.done) return;
      // A tunnel ends when the job closes it; a plain request only once its answer was passed on.
      const completed = attempt.upstream !== null && (attempt.protocol === 'connect' || attempt.answered);
      this.#finish(attempt, completed ? 'allowed' : 'client-closed', null);
    });
    // Slow headers: a job trickling bytes would otherwise hold the connection for ever.
    attempt.headerTimer = setTimeout(() => {
      this.#refuse(attempt, null, {
        reason: 'header-timeout',
        detail: `no complete request head within ${this.#limits.headerTimeoutMs} ms`,
      });
    }, this.#limits.headerTimeoutMs);
  }

  #clientError(error: NodeJS.ErrnoException, socket: Socket): void {
    const attempt = this.#attemptOf.get(socket);
    if (attempt === undefined || attempt.done) {
      socket.destroy();
      return;
    }
    if (error.code === 'ECONNRESET' || !socket.writable) {
      this.#finish(attempt, 'client-closed', null);
      return;
    }
    if (error.code === 'HPE_HEADER_OVERFLOW')
      this.#refuse(attempt, null, {
        reason: 'headers-too-large',
        detail: `request head over ${MAX_HEADER_BYTES} bytes`,
      });
    else if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT')
      this.#refuse(attempt, null, { reason: 'header-timeout', detail: 'request head too slow' });
    else
      this.#refuse(attempt, null, {
        reason: 'malformed-request',
        detail: `unparsable request (${error.code ?? 'parse error'})`,
      });
  }

  /** Claims a socket's attempt for a parsed request head, or null when it must be ignored. */
  #claim(socket: Socket, protocol: 'connect' | 'http'): Attempt | null {
    const attempt = this.#attemptOf.get(socket);
    if (attempt === undefined || attempt.done || attempt.claimed) return null;
    attempt.claimed = true;
    attempt.protocol = protocol;
    if (attempt.headerTimer !== null) clearTimeout(attempt.headerTimer);
    attempt.headerTimer = null;
    return attempt;
  }

  // ---- CONNECT ----------------------------------------------------------------------------

  async #tunnel(request: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const attempt = this.#claim(socket, 'connect');
    if (attempt === null) {
      socket.destroy();
      return;
    }
    const asked = request.url ?? '';
    const parsed = parseTarget(asked);
    if (!parsed.ok) {
      attempt.destination = shownAuthority(asked);
      this.#refuse(attempt, null, { reason: 'malformed-request', detail: `CONNECT target: ${parsed.why}` });
      return;
    }
    attempt.destination = formatTarget(parsed.target);
    const upstream = await this.#open(attempt, parsed.target);
    if (upstream === null) return;
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) {
      if (!this.#account(attempt, head.length, 0)) return;
      upstream.write(head);
    }
    this.#pump(attempt, socket, upstream, 'up');
    this.#pump(attempt, upstream, socket, 'down');
  }

  /** Copies one direction of a tunnel, counting every chunk before it is passed on. */
  #pump(attempt: Attempt, from: Socket, to: Socket, direction: 'up' | 'down'): void {
    from.on('data', (chunk: Buffer) => {
      if (attempt.done) return;
      const counted =
        direction === 'up'
          ? this.#account(attempt, chunk.length, 0)
          : this.#account(attempt, 0, chunk.length);
      if (!counted) return; // the chunk that crosses the byte cap is never passed on
      if (!to.write(chunk)) from.pause();
    });
    to.on('drain', () => from.resume());
    from.on('end', () => {
      if (!attempt.done) to.end();
    });
    // The job may have sent its last bytes and FIN with the CONNECT head, before this pump existed.
    if (from.readableEnded) to.end();
  }

  // ---- plain HTTP -------------------------------------------------------------------------

  async #forward(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const attempt = this.#claim(request.socket, 'http');
    if (attempt === null) {
      // A pipelined second request: the connection closes after the first answer.
      request.resume();
      return;
    }
    const target = request.url ?? '';
    const method = request.method ?? '';
    if (target.startsWith('/') || target === '*') {
      // The path may carry tokens: it is never recorded.
      this.#refuse(attempt, response, {
        reason: 'not-a-proxy-request',
        detail: 'origin-form request: this is a proxy (use an absolute http:// URI or CONNECT)',
      });
      return;
    }
    const match = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(.*)$/i.exec(target);
    if (match === null) {
      this.#refuse(attempt, response, {
        reason: 'malformed-request',
        detail: 'the request target is not an absolute URI',
      });
      return;
    }
    const [, scheme = '', authority = '', rest = ''] = match;
    attempt.destination = shownAuthority(authority);
    if (scheme.toLowerCase() !== 'http') {
      this.#refuse(attempt, response, {
        reason: 'unsupported-scheme',
        detail: `${clip(scheme)}: only http:// is forwarded; use CONNECT for https`,
      });
      return;
    }
    if (rest.includes('#') || !(rest === '' || rest.startsWith('/') || rest.startsWith('?'))) {
      this.#refuse(attempt, response, {
        reason: 'malformed-request',
        detail: 'the request target has a fragment or no path',
      });
      return;
    }
    if (!METHODS.has(method)) {
      this.#refuse(attempt, response, {
        reason: 'method-not-allowed',
        detail: `${clip(method)} is not forwarded`,
      });
      return;
    }
    const parsed = parseTarget(authority, 80);
    if (!parsed.ok) {
      this.#refuse(attempt, response, { reason: 'malformed-request', detail: parsed.why });
      return;
    }
    attempt.destination = formatTarget(parsed.target);
    const upstream = await this.#open(attempt, parsed.target, response);
    if (upstream === null) return;

    const headers = endToEndHeaders(request.rawHeaders);
    const shownHost = formatTarget(parsed.target);
    headers.host = parsed.target.port === 80 ? shownHost.slice(0, shownHost.lastIndexOf(':')) : shownHost;
    headers.connection = 'close';
    // Framing is set from what node:http parsed, whatever the Connection header named: a body
    // sent without it would be read by the destination as a second, smuggled request.
    delete headers['content-length'];
    if (request.headers['transfer-encoding'] !== undefined) headers['transfer-encoding'] = 'chunked';
    else if (request.headers['content-length'] !== undefined)
      headers['content-length'] = request.headers['content-length'];
    // Counted where it arrives, before node:http parses it: the byte cap sees every byte.
    upstream.on('data', (chunk: Buffer) => {
      if (!attempt.done) this.#account(attempt, this.#syncWritten(attempt), chunk.length);
    });
    const outgoing = httpRequest({
      createConnection: () => upstream,
      method,
      path: rest === '' ? '/' : rest.startsWith('?') ? `/${rest}` : rest,
      headers,
      setHost: false,
      maxHeaderSize: MAX_HEADER_BYTES, // a destination's answer is bounded like the job's request
    });
    outgoing.on('error', (error: Error) => {
      if (attempt.done) return;
      const detail = `the destination's answer failed: ${clip(describeError(error))}`;
      if (!response.headersSent) this.#refuse(attempt, response, { reason: 'upstream-error', detail });
      else this.#cut(attempt, { reason: 'upstream-error', detail });
    });
    outgoing.on('response', (answer: IncomingMessage) => {
      if (attempt.done) return;
      response.writeHead(answer.statusCode ?? 502, {
        ...endToEndHeaders(answer.rawHeaders),
        connection: 'close',
      });
      answer.on('data', (chunk: Buffer) => {
        if (attempt.done) return;
        if (!response.write(chunk)) answer.pause();
      });
      response.on('drain', () => answer.resume());
      answer.on('end', () => {
        if (attempt.done) return;
        attempt.answered = true;
        response.end();
      });
    });
    request.on('data', (chunk: Buffer) => {
      if (attempt.done) return;
      if (!this.#account(attempt, this.#syncWritten(attempt), 0)) return;
      if (this.#bytesUp + this.#bytesDown + chunk.length > this.#limits.maxBytes) {
        this.#exhaust('byte-cap', `the job's egress passed ${this.#limits.maxBytes} bytes`);
        return;
      }
      if (!outgoing.write(chunk)) request.pause();
    });
    outgoing.on('drain', () => request.resume());
    request.on('end', () => {
      if (!attempt.done) outgoing.end(() => this.#account(attempt, this.#syncWritten(attempt), 0));
    });
  }

  /** Bytes written to the destination since the last call (plain HTTP: head, framing, body). */
  #syncWritten(attempt: Attempt): number {
    const written = attempt.upstream?.bytesWritten ?? 0;
    const delta = written - attempt.upstreamWritten;
    attempt.upstreamWritten = written;
    return Math.max(0, delta);
  }

  // ---- the checks -------------------------------------------------------------------------

  /**
   * Runs every check for `target` and connects to the checked address. On refusal or
   * failure it answers the job (a raw response for CONNECT, `response` for plain HTTP),
   * records the attempt and returns null.
   */
  async #open(attempt: Attempt, target: EgressTarget, response?: ServerResponse): Promise<Socket | null> {
    const refuse = (refusal: Refusal): null => {
      this.#refuse(attempt, response ?? null, refusal);
      return null;
    };
    const limits = this.#limits;
    // 1. Job-wide caps: a job that used its allowance gets nothing more, not even a lookup.
    if (this.#exhausted !== null)
      return refuse({ reason: this.#exhausted, detail: 'the job reached an egress cap' });
    if (this.#connections > limits.maxConnections) {
      this.#exhausted = 'connection-cap';
      return refuse({
        reason: 'connection-cap',
        detail: `the job may open ${limits.maxConnections} connections`,
      });
    }
    if (this.#slotsInUse >= limits.maxConcurrent)
      return refuse({
        reason: 'concurrency-cap',
        detail: `at most ${limits.maxConcurrent} connections at once`,
      });
    // The slot is taken before the first await, so a burst of requests cannot all pass the check.
    attempt.holdsSlot = true;
    this.#slotsInUse += 1;
    // 2. The allowlist. An IP literal must be listed as that literal: a job may not reach a
    //    listed name's servers (or anything else) by address.
    if (this.#allowlist.match(target) === null)
      return refuse(
        target.kind === 'address'
          ? { reason: 'ip-literal-not-listed', detail: `${target.host} is not listed as an address` }
          : { reason: 'not-allowlisted', detail: `${formatTarget(target)} is not in the job's allowlist` },
      );
    // 3. Resolution, here and only for listed names: the sandbox has no DNS to tunnel through.
    const deadline = Date.now() + limits.connectTimeoutMs;
    let addresses: IpAddress[];
    if (target.kind === 'address') addresses = [target.ip];
    else {
      const resolved = await this.#lookup(target.host, deadline);
      if (attempt.done) return null;
      if (!Array.isArray(resolved)) return refuse({ reason: 'dns-failed', detail: resolved.why });
      addresses = resolved;
    }
    // 4. Every address, not just the first: one private answer among public ones is how a
    //    resolver steers a connection inward.
    const own = this.#hostAddresses();
    for (const ip of addresses) {
      const verdict = judgeAddress(ip, this.#grants, own);
      if (!verdict.allowed) {
        attempt.resolved = formatIp(ip);
        return refuse({ reason: 'blocked-address', detail: verdict.why });
      }
    }
    attempt.allowed = true;
    // 5. Connect to exactly the addresses checked above, in the resolver's order.
    let lastFailure: Refusal = { reason: 'connect-failed', detail: null };
    for (const ip of addresses) {
      attempt.resolved = formatIp(ip);
      const result = await this.#connect(ip, target.port, deadline);
      if (attempt.done) {
        if (!('reason' in result)) result.destroy();
        return null;
      }
      if (!('reason' in result)) {
        this.#attachUpstream(attempt, result);
        return result;
      }
      lastFailure = result;
      if (result.reason === 'connect-timeout') break;
    }
    return refuse(lastFailure);
  }

  async #lookup(host: string, deadline: number): Promise<IpAddress[] | { why: string }> {
    let timer: NodeJS.Timeout | undefined;
    type Outcome = { readonly list: unknown } | { readonly why: string };
    const timeout = new Promise<Outcome>((resolve) => {
      timer = setTimeout(
        () => resolve({ why: `resolving ${host} timed out` }),
        Math.max(0, deadline - Date.now()),
      );
    });
    try {
      const outcome = await Promise.race([
        this.#resolve(host).then(
          (list): Outcome => ({ list }),
          (error: unknown): Outcome => ({ why: `resolving ${host} failed: ${clip(describeError(error))}` }),
        ),
        timeout,
      ]);
      if ('why' in outcome) return outcome;
      const answer = outcome.list;
      if (!Array.isArray(answer)) return { why: `the resolver gave no list of addresses for ${host}` };
      if (answer.length === 0) return { why: `${host} has no address` };
      if (answer.length > MAX_RESOLVED)
        return { why: `${host} resolves to more than ${MAX_RESOLVED} addresses` };
      const addresses: IpAddress[] = [];
      for (const text of answer as unknown[]) {
        const ip = typeof text === 'string' ? parseIp(text) : null;
        // A resolver answer that is not an address is refused, never passed to connect() to resolve again.
        if (ip === null)
          return { why: `the resolver answered ${host} with something that is not an IP address` };
        addresses.push(ip);
      }
      return addresses;
    } finally {
      clearTimeout(timer);
    }
  }

  #connect(ip: IpAddress, port: number, deadline: number): Promise<Socket | Refusal> {
    return new Promise((resolve) => {
      const socket = connect({ host: formatIp(ip), port, allowHalfOpen: true, noDelay: true });
      const timer = setTimeout(
        () => {
          socket.destroy();
          resolve({
            reason: 'connect-timeout',
            detail: `no connection to ${formatIp(ip)} port ${port} in time`,
          });
        },
        Math.max(0, deadline - Date.now()),
      );
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        socket.destroy();
        resolve({
          reason: 'connect-failed',
          detail: `${formatIp(ip)} port ${port}: ${error.code ?? clip(error.message)}`,
        });
      });
    });
  }

  #attachUpstream(attempt: Attempt, upstream: Socket): void {
    attempt.upstream = upstream;
    upstream.on('error', () => {});
    upstream.on('close', (hadError: boolean) => {
      if (attempt.done || attempt.answered) return;
      if (hadError)
        this.#cut(attempt, { reason: 'upstream-error', detail: 'the destination reset the connection' });
      else if (attempt.protocol === 'connect') attempt.client.end(() => attempt.client.destroy());
    });
    // Idle connections: a stalled destination or job would otherwise pin a slot for ever.
    const idle = (): void =>
      this.#cut(attempt, {
        reason: 'idle-timeout',
        detail: `no traffic for ${this.#limits.idleTimeoutMs} ms`,
      });
    upstream.setTimeout(this.#limits.idleTimeoutMs, idle);
    attempt.client.setTimeout(this.#limits.idleTimeoutMs, idle);
  }

  // ---- caps, answers and records ----------------------------------------------------------

  /** Counts bytes for the attempt and the job; false (and every connection cut) once past maxBytes. */
  #account(attempt: Attempt, up: number, down: number): boolean {
    attempt.bytesUp += up;
    attempt.bytesDown += down;
    this.#bytesUp += up;
    this.#bytesDown += down;
    if (this.#bytesUp + this.#bytesDown <= this.#limits.maxBytes) return true;
    this.#exhaust('byte-cap', `the job's egress passed ${this.#limits.maxBytes} bytes`);
    return false;
  }

  /** A job-wide limit is reached: cut every connection, refuse every new one. */
  #exhaust(reason: 'byte-cap' | 'record-failed', detail: string): void {
    if (this.#exhausted !== 'record-failed') this.#exhausted = reason;
    for (const attempt of [...this.#active]) this.#cut(attempt, { reason, detail });
  }

  /** Answers the job with an error status and records the refusal. */
  #refuse(attempt: Attempt, response: ServerResponse | null, refusal: Refusal): void {
    if (attempt.done) return;
    const status = STATUS[refusal.reason];
    const body = `airlock egress proxy: ${refusal.reason}${refusal.detail === null ? '' : `: ${refusal.detail}`}\n`;
    if (response?.headersSent) {
      this.#cut(attempt, refusal); // an answer is already on its way: a status now would corrupt it
      return;
    }
    if (response !== null) {
      response.writeHead(status, {
        'content-type': 'text/plain; charset=utf-8',
        'content-length': Buffer.byteLength(body),
        connection: 'close',
      });
      response.end(body);
    } else if (attempt.client.writable) {
      attempt.client.write(
        `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: text/plain; charset=utf-8\r\n` +
          `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
      attempt.client.end();
    }
    // Keep reading for a moment so the client sees the answer rather than a reset, then drop it.
    const timer = setTimeout(() => {
      this.#lingering.delete(timer);
      attempt.client.destroy();
    }, LINGER_MS);
    this.#lingering.add(timer);
    this.#finish(attempt, refusal.reason, refusal.detail, { keepClient: true });
  }

  /** Ends an attempt by destroying both sides, and records it. */
  #cut(attempt: Attempt, refusal: Refusal): void {
    if (attempt.done) return;
    this.#finish(attempt, refusal.reason, refusal.detail);
  }

  #finish(
    attempt: Attempt,
    reason: EgressReason,
    detail: string | null,
    options?: { keepClient: boolean },
  ): void {
    if (attempt.done) return;
    attempt.done = true;
    if (attempt.headerTimer !== null) clearTimeout(attempt.headerTimer);
    this.#active.delete(attempt);
    if (attempt.holdsSlot) this.#slotsInUse -= 1;
    attempt.holdsSlot = false;
    if (attempt.upstream !== null) {
      this.#account(attempt, this.#syncWrittenIfHttp(attempt), 0);
      attempt.upstream.destroy();
    }
    if (options?.keepClient !== true) attempt.client.destroy();
    this.#record(attempt, { reason, detail });
  }

  #syncWrittenIfHttp(attempt: Attempt): number {
    return attempt.protocol === 'http' ? this.#syncWritten(attempt) : 0;
  }

  #countQuietly(): void {
    this.#refused += 1;
    this.#unrecorded += 1;
  }

  #record(attempt: Attempt | null, refusal: Refusal): void {
    if (attempt?.quiet === true && attempt.allowed !== true) {
      this.#countQuietly();
      return;
    }
    const now = Date.now();
    const record: EgressRecord = {
      at: attempt?.at ?? new Date(now).toISOString(),
      destination: attempt?.destination ?? null,
      protocol: attempt?.protocol ?? null,
      resolved: attempt?.resolved ?? null,
      allowed: attempt?.allowed ?? false,
      reason: refusal.reason,
      detail: refusal.detail === null ? null : clip(refusal.detail),
      bytesUp: attempt?.bytesUp ?? 0,
      bytesDown: attempt?.bytesDown ?? 0,
      durationMs: attempt === null ? 0 : now - attempt.startedAt,
    };
    if (!record.allowed) this.#refused += 1;
    this.#records.push(record);
    if (this.#records.length > this.#limits.maxRecords) {
      // Refused records make room first: a job cannot push its allowed attempts out of the
      // kept list with refused ones (onAttempt sees every record either way).
      const oldestRefused = this.#records.findIndex((kept) => !kept.allowed);
      this.#records.splice(Math.max(oldestRefused, 0), 1);
      this.#droppedRecords += 1;
    }
    if (this.#onAttempt === undefined || this.#recorderBroken) return;
    try {
      this.#onAttempt(record);
    } catch {
      // Fail closed: egress that cannot be recorded does not happen.
      this.#recorderBroken = true;
      this.#exhausted = 'record-failed';
      this.#exhaust('record-failed', 'recording an egress attempt failed');
    }
  }
}

/** Starts the egress proxy of one job. Throws INVALID_JOB for a bad allowlist entry. */
export async function startEgressProxy(options: EgressProxyOptions): Promise<EgressProxy> {
  const proxy = new EgressProxyServer(options);
  await proxy.listen(options.listen);
  return proxy;
}

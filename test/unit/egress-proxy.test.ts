import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import {
  createServer as createHttpServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type Server,
} from 'node:http';
import { type AddressInfo, connect, createServer as createTcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { AirlockError } from '../../src/errors.js';
import {
  type EgressProxy,
  type EgressProxyOptions,
  type EgressRecord,
  startEgressProxy,
} from '../../src/network/egress-proxy.js';

/**
 * The egress proxy against real sockets on loopback: an HTTP target, a TCP echo target and
 * a TCP "blaster" that sends without end. Names such as registry.test reach them through the
 * proxy's resolver setting, and 127.0.0.1/32 is granted so loopback targets are reachable
 * at all; without that grant, or for any other address, the checks refuse. Every test is
 * bounded in time and closes what it opened.
 */

const TEST_TIMEOUT = 15_000;
const SECRET = 'Basic c2VjcmV0LXByb3h5LXBhc3N3b3Jk';

interface Targets {
  readonly httpPort: number;
  readonly echoPort: number;
  readonly blastPort: number;
  /** Headers of every request the HTTP target received. */
  readonly seen: { headers: IncomingHttpHeaders; body: number; url: string }[];
}

async function listen(server: Server | ReturnType<typeof createTcpServer>): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** The HTTP target: /bytes/N answers N bytes; anything else echoes how much body it got. */
async function startTargets(t: TestContext): Promise<Targets> {
  const seen: Targets['seen'] = [];
  const http = createHttpServer((request, response) => {
    let body = 0;
    request.on('data', (chunk: Buffer) => {
      body += chunk.length;
    });
    request.on('end', () => {
      seen.push({ headers: request.headers, body, url: request.url ?? '' });
      const size = /^\/bytes\/(\d+)$/.exec(request.url ?? '');
      if (size !== null) {
        response.writeHead(200, { 'content-type': 'application/octet-stream', 'keep-alive': 'timeout=5' });
        response.end(Buffer.alloc(Number(size[1]), 'x'));
        return;
      }
      response.writeHead(200, { 'content-type': 'text/plain' });
      response.end(`got ${body}`);
    });
  });
  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  };
  http.on('connection', track);
  const echo = createTcpServer({ allowHalfOpen: true }, (socket) => {
    track(socket);
    socket.pipe(socket);
  });
  const blast = createTcpServer((socket) => {
    track(socket);
    const chunk = Buffer.alloc(16 * 1024, 'b');
    const send = (): void => {
      while (!socket.destroyed && socket.write(chunk));
    };
    socket.on('drain', send);
    send();
  });
  const [httpPort, echoPort, blastPort] = [await listen(http), await listen(echo), await listen(blast)];
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    await Promise.all([http, echo, blast].map((server) => new Promise((resolve) => server.close(resolve))));
  });
  return { httpPort, echoPort, blastPort, seen };
}

/** A resolver mapping test names to addresses; other names fail as DNS would. Counts its calls. */
function resolver(map: Record<string, readonly string[]>): {
  resolve: (host: string) => Promise<readonly string[]>;
  calls: string[];
} {
  const calls: string[] = [];
  return {
    calls,
    resolve: async (host) => {
      calls.push(host);
      const answer = map[host] ?? (host.endsWith('.example.com') ? ['127.0.0.1'] : undefined);
      if (answer === undefined)
        throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      return answer;
    },
  };
}

async function startProxy(
  t: TestContext,
  options: Partial<EgressProxyOptions> & Pick<EgressProxyOptions, 'allow'>,
): Promise<EgressProxy> {
  const proxy = await startEgressProxy({
    listen: { host: '127.0.0.1', port: 0 },
    grantAddresses: ['127.0.0.1/32'],
    resolve: resolver({ 'registry.test': ['127.0.0.1'], 'echo.test': ['127.0.0.1'] }).resolve,
    connectTimeoutMs: 2000,
    ...options,
  });
  t.after(() => proxy.close());
  return proxy;
}

function proxyPort(proxy: EgressProxy): number {
  return Number(new URL(proxy.address).port);
}

/** Polls until `predicate` holds (records are written as connections close, asynchronously). */
async function waitFor<T>(read: () => T | undefined, what: string, timeoutMs = 5000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = read();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function lastRecord(proxy: EgressProxy, count: number): Promise<EgressRecord> {
  return waitFor(
    () => (proxy.attempts().length >= count ? proxy.attempts()[count - 1] : undefined),
    `record ${count}`,
  );
}

interface Exchange {
  /** Everything the proxy sent until it closed the connection (or the time ran out). */
  readonly text: string;
  readonly closed: boolean;
}

/** Sends raw bytes to the proxy and collects its answer until it closes or `waitMs` passes. */
function rawExchange(
  address: { port: number } | { path: string },
  send: string,
  options: { waitMs?: number; keepOpen?: boolean } = {},
): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      'path' in address ? { path: address.path } : { host: '127.0.0.1', port: address.port },
    );
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: false });
    }, options.waitMs ?? 5000);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'ECONNRESET' && error.code !== 'EPIPE') reject(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: true });
    });
    socket.write(send);
    if (options.keepOpen !== true) socket.end();
  });
}

function statusOf(text: string): number {
  return Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
}

interface Tunnel {
  readonly status: number;
  readonly socket: Socket;
  /** Waits for `count` bytes (or the close), then returns all received after the 200 head. */
  received(count: number, timeoutMs?: number): Promise<Buffer>;
  closed: Promise<void>;
}

/** CONNECT through the proxy; on success the socket is the tunnel. */
function openTunnel(address: { port: number } | { path: string }, destination: string): Promise<Tunnel> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      'path' in address ? { path: address.path } : { host: '127.0.0.1', port: address.port },
    );
    socket.on('error', () => {});
    let head = Buffer.alloc(0);
    let body: Buffer[] = [];
    let bodyLength = 0;
    const waiters = new Set<() => void>();
    const closed = new Promise<void>((done) => socket.on('close', () => done()));
    closed.then(() => {
      for (const wake of waiters) wake();
      if (status === 0) reject(new Error('closed before an answer'));
    });
    let status = 0;
    const tunnel: Tunnel = {
      get status() {
        return status;
      },
      socket,
      closed,
      received: async (count, timeoutMs = 5000) => {
        const until = Date.now() + timeoutMs;
        while (bodyLength < count && !socket.destroyed && Date.now() < until) {
          await new Promise<void>((wake) => {
            const timer = setTimeout(wake, 20);
            waiters.add(() => {
              clearTimeout(timer);
              wake();
            });
          });
        }
        return Buffer.concat(body);
      },
    };
    socket.on('data', (chunk: Buffer) => {
      if (status !== 0) {
        body.push(chunk);
        bodyLength += chunk.length;
        for (const wake of waiters) wake();
        waiters.clear();
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      status = statusOf(head.toString('latin1'));
      const rest = head.subarray(end + 4);
      body = rest.length > 0 ? [rest] : [];
      bodyLength = rest.length;
      resolve(tunnel);
    });
    socket.write(
      `CONNECT ${destination} HTTP/1.1\r\nHost: ${destination}\r\nProxy-Authorization: ${SECRET}\r\n\r\n`,
    );
  });
}

interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  readonly complete: boolean;
}

/** A plain-HTTP request through the proxy (absolute URI), as an HTTP client with HTTP_PROXY does it. */
function viaProxy(
  proxy: EgressProxy,
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: Buffer } = {},
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({
      host: '127.0.0.1',
      port: proxyPort(proxy),
      method: options.method ?? 'GET',
      path: url,
      headers: options.headers ?? {},
      agent: false,
      timeout: 5000,
    });
    outgoing.on('timeout', () => outgoing.destroy(new Error('client timeout')));
    outgoing.on('error', reject);
    outgoing.on('response', (answer) => {
      const chunks: Buffer[] = [];
      answer.on('data', (chunk: Buffer) => chunks.push(chunk));
      const finish = (complete: boolean): void =>
        resolve({
          status: answer.statusCode ?? 0,
          headers: answer.headers,
          body: Buffer.concat(chunks),
          complete,
        });
      answer.on('end', () => finish(answer.complete));
      answer.on('error', () => finish(false));
      answer.on('aborted', () => finish(false));
    });
    outgoing.end(options.body);
  });
}

describe('egress proxy: allowed traffic', { timeout: 60_000 }, () => {
  it('tunnels CONNECT to a listed name, counting bytes both ways', { timeout: TEST_TIMEOUT }, async (t) => {
    const targets = await startTargets(t);
    const records: EgressRecord[] = [];
    const proxy = await startProxy(t, {
      allow: [`echo.test:${targets.echoPort}`],
      onAttempt: (r) => records.push(r),
    });
    const tunnel = await openTunnel({ port: proxyPort(proxy) }, `echo.test:${targets.echoPort}`);
    assert.equal(tunnel.status, 200);
    tunnel.socket.write('hello, registry');
    assert.equal((await tunnel.received(15)).toString(), 'hello, registry');
    tunnel.socket.end();
    await tunnel.closed;
    const record = await lastRecord(proxy, 1);
    assert.equal(record.destination, `echo.test:${targets.echoPort}`);
    assert.equal(record.protocol, 'connect');
    assert.equal(record.resolved, '127.0.0.1');
    assert.equal(record.allowed, true);
    assert.equal(record.reason, 'allowed');
    assert.equal(record.bytesUp, 15);
    assert.equal(record.bytesDown, 15);
    assert.ok(record.durationMs >= 0);
    assert.deepEqual(records, [record]);
    assert.equal(proxy.totals().bytesUp, 15);
    assert.equal(proxy.totals().bytesDown, 15);
    assert.ok(
      !JSON.stringify(proxy.attempts()).includes('c2VjcmV0'),
      'Proxy-Authorization is never recorded',
    );
  });

  it('passes bytes the client sends right after the CONNECT head', { timeout: TEST_TIMEOUT }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, { allow: [`echo.test:${targets.echoPort}`] });
    const answer = await rawExchange(
      { port: proxyPort(proxy) },
      `CONNECT echo.test:${targets.echoPort} HTTP/1.1\r\nHost: echo.test\r\n\r\nearly bytes`,
      { waitMs: 3000 },
    );
    assert.equal(statusOf(answer.text), 200);
    assert.ok(answer.text.endsWith('early bytes'), answer.text);
    assert.ok(answer.closed, "the job's FIN reached the destination, whose FIN came back");
    const record = await lastRecord(proxy, 1);
    assert.equal(record.bytesUp, 11);
  });

  it('forwards plain HTTP with an absolute URI, without proxy credentials or hop-by-hop headers', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, { allow: [`registry.test:${targets.httpPort}`] });
    const answer = await viaProxy(proxy, `http://Registry.Test.:${targets.httpPort}/bytes/100000`, {
      headers: {
        'proxy-authorization': SECRET,
        'proxy-connection': 'keep-alive',
        'x-drop-me': 'hop',
        connection: 'keep-alive, x-drop-me',
        'x-keep-me': 'end-to-end',
        host: 'somewhere-else.test',
      },
    });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.length, 100000);
    assert.equal(answer.headers.connection, 'close');
    assert.equal(answer.headers['keep-alive'], undefined, 'hop-by-hop answer headers are dropped');
    const seen = targets.seen.at(-1);
    assert.ok(seen !== undefined);
    assert.equal(seen.url, '/bytes/100000');
    assert.equal(seen.headers['proxy-authorization'], undefined);
    assert.equal(seen.headers['proxy-connection'], undefined);
    assert.equal(seen.headers['x-drop-me'], undefined);
    assert.equal(seen.headers['x-keep-me'], 'end-to-end');
    assert.equal(
      seen.headers.host,
      `registry.test:${targets.httpPort}`,
      'Host follows the URI, not the client',
    );
    assert.equal(seen.headers.connection, 'close');
    const record = await lastRecord(proxy, 1);
    assert.equal(record.protocol, 'http');
    assert.equal(record.destination, `registry.test:${targets.httpPort}`);
    assert.equal(record.reason, 'allowed');
    assert.ok(record.bytesDown > 100000 && record.bytesDown < 101000, `bytesDown ${record.bytesDown}`);
    assert.ok(record.bytesUp > 50 && record.bytesUp < 1000, `bytesUp ${record.bytesUp}`);
    const recorded = JSON.stringify(proxy.attempts());
    assert.ok(
      !recorded.includes('c2VjcmV0') && !recorded.includes('/bytes/'),
      'no credential and no path recorded',
    );
  });

  it('forwards request bodies, sized and chunked', { timeout: TEST_TIMEOUT }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, { allow: [`registry.test:${targets.httpPort}`] });
    const sized = await viaProxy(proxy, `http://registry.test:${targets.httpPort}/upload`, {
      method: 'PUT',
      body: Buffer.alloc(5000, 'u'),
    });
    assert.equal(sized.body.toString(), 'got 5000');
    const chunked = await viaProxy(proxy, `http://registry.test:${targets.httpPort}/upload`, {
      method: 'POST',
      headers: { 'transfer-encoding': 'chunked' },
      body: Buffer.alloc(7000, 'c'),
    });
    assert.equal(chunked.body.toString(), 'got 7000');
    assert.equal(targets.seen.at(-1)?.headers['transfer-encoding'], 'chunked');
    const record = await lastRecord(proxy, 2);
    assert.ok(record.bytesUp > 7000, `bytesUp ${record.bytesUp}`);
  });

  it('keeps the body framed when the Connection header names Content-Length (no smuggled request)', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, { allow: [`registry.test:${targets.httpPort}`] });
    const smuggled = 'GET /bytes/7 HTTP/1.1\r\nHost: registry.test\r\n\r\n';
    const answer = await rawExchange(
      { port: proxyPort(proxy) },
      `GET http://registry.test:${targets.httpPort}/upload HTTP/1.1\r\nHost: registry.test\r\n` +
        `Connection: content-length\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
      { keepOpen: true },
    );
    assert.equal(statusOf(answer.text), 200);
    assert.ok(answer.text.includes(`got ${smuggled.length}\r\n`), answer.text);
    await lastRecord(proxy, 1);
    assert.deepEqual(
      targets.seen.map((request) => [request.url, request.body]),
      [['/upload', smuggled.length]],
    );
  });

  it('matches a wildcard for a.example.com but not example.com or evilexample.com', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const targets = await startTargets(t);
    const names = resolver({ 'example.com': ['127.0.0.1'], 'evilexample.com': ['127.0.0.1'] });
    const proxy = await startProxy(t, {
      allow: [`*.example.com:${targets.echoPort}`],
      resolve: names.resolve,
    });
    const port = { port: proxyPort(proxy) };
    const good = await openTunnel(port, `a.example.com:${targets.echoPort}`);
    assert.equal(good.status, 200);
    good.socket.destroy();
    for (const host of ['example.com', 'evilexample.com']) {
      const refused = await rawExchange(port, `CONNECT ${host}:${targets.echoPort} HTTP/1.1\r\n\r\n`);
      assert.equal(statusOf(refused.text), 403, host);
    }
    await waitFor(() => (proxy.attempts().length === 3 ? true : undefined), 'three records');
    assert.deepEqual(
      proxy
        .attempts()
        .map((record) => `${record.reason} ${record.destination}`)
        .sort(),
      [
        `allowed a.example.com:${targets.echoPort}`,
        `not-allowlisted evilexample.com:${targets.echoPort}`,
        `not-allowlisted example.com:${targets.echoPort}`,
      ],
    );
    assert.deepEqual(names.calls, ['a.example.com'], 'names outside the allowlist are never resolved');
  });

  it('listens on a Unix socket', { timeout: TEST_TIMEOUT }, async (t) => {
    const targets = await startTargets(t);
    const dir = await mkdtemp(join(tmpdir(), 'airlock-egress-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, 'proxy.sock');
    const proxy = await startProxy(t, { allow: [`echo.test:${targets.echoPort}`], listen: { path } });
    assert.equal(proxy.address, `unix:${path}`);
    const tunnel = await openTunnel({ path }, `echo.test:${targets.echoPort}`);
    tunnel.socket.write('via unix');
    assert.equal((await tunnel.received(8)).toString(), 'via unix');
    tunnel.socket.destroy();
  });
});

describe('egress proxy: refusals', { timeout: 60_000 }, () => {
  it('refuses a name not listed with 403, records it, and never resolves it', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const names = resolver({ 'registry.test': ['127.0.0.1'], 'exfil.test': ['127.0.0.1'] });
    const proxy = await startProxy(t, { allow: ['registry.test:443'], resolve: names.resolve });
    const connectAnswer = await rawExchange(
      { port: proxyPort(proxy) },
      'CONNECT exfil.test:443 HTTP/1.1\r\n\r\n',
    );
    assert.equal(statusOf(connectAnswer.text), 403);
    assert.match(connectAnswer.text, /not-allowlisted/);
    const plain = await viaProxy(proxy, 'http://registry.test:8080/');
    assert.equal(plain.status, 403, 'same name, another port');
    const record = await lastRecord(proxy, 1);
    assert.deepEqual(
      { ...record, at: '', durationMs: 0 },
      {
        at: '',
        destination: 'exfil.test:443',
        protocol: 'connect',
        resolved: null,
        allowed: false,
        reason: 'not-allowlisted',
        detail: "exfil.test:443 is not in the job's allowlist",
        bytesUp: 0,
        bytesDown: 0,
        durationMs: 0,
      },
    );
    assert.deepEqual(names.calls, [], 'DNS is never asked about a name outside the allowlist');
    assert.equal(proxy.totals().refused, 2);
  });

  it('refuses an IP literal that is not listed as a literal, and passes one that is', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, {
      allow: [`echo.test:${targets.echoPort}`, `127.0.0.1:${targets.httpPort}`],
    });
    const port = { port: proxyPort(proxy) };
    const literal = await rawExchange(port, `CONNECT 127.0.0.1:${targets.echoPort} HTTP/1.1\r\n\r\n`);
    assert.equal(statusOf(literal.text), 403);
    const plain = await viaProxy(proxy, `http://127.0.0.1:${targets.echoPort}/`);
    assert.equal(plain.status, 403);
    const mapped = await rawExchange(port, `CONNECT [::ffff:127.0.0.1]:${targets.echoPort} HTTP/1.1\r\n\r\n`);
    assert.equal(statusOf(mapped.text), 403);
    const listed = await viaProxy(proxy, `http://127.0.0.1:${targets.httpPort}/bytes/10`);
    assert.equal(listed.status, 200);
    await waitFor(() => (proxy.attempts().length === 4 ? true : undefined), 'four records');
    assert.deepEqual(
      proxy.attempts().map((record) => [record.reason, record.destination]),
      [
        ['ip-literal-not-listed', `127.0.0.1:${targets.echoPort}`],
        ['ip-literal-not-listed', `127.0.0.1:${targets.echoPort}`],
        ['ip-literal-not-listed', `[::ffff:7f00:1]:${targets.echoPort}`],
        ['allowed', `127.0.0.1:${targets.httpPort}`],
      ],
    );
  });

  it('refuses the metadata address, listed or resolved, and private answers without a grant', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const names = resolver({
      'metadata.test': ['169.254.169.254'],
      'internal.test': ['127.0.0.1'],
      'mixed.test': ['127.0.0.1', '10.0.0.1'],
      'mapped.test': ['::ffff:127.0.0.1'],
      'private.test': ['192.168.1.10'],
    });
    const allow = [
      '169.254.169.254:80',
      'metadata.test:80',
      'internal.test:80',
      'mixed.test:80',
      'mapped.test:80',
      'private.test:80',
    ];
    const granted = await startProxy(t, { allow, resolve: names.resolve });
    const bare = await startProxy(t, { allow, resolve: names.resolve, grantAddresses: [] });
    const cases: readonly (readonly [EgressProxy, string, RegExp])[] = [
      [granted, '169.254.169.254:80', /169\.254\.169\.254 is link-local/],
      [granted, 'metadata.test:80', /169\.254\.169\.254 is link-local/],
      // One refused address among granted ones refuses the destination: every answer is checked.
      [granted, 'mixed.test:80', /10\.0\.0\.1 is private/],
      [granted, 'private.test:80', /192\.168\.1\.10 is private/],
      [bare, 'internal.test:80', /127\.0\.0\.1 is loopback/],
      [bare, 'mapped.test:80', /IPv4-mapped loopback/],
    ];
    for (const [proxy, destination, why] of cases) {
      const before = proxy.attempts().length;
      const answer = await rawExchange({ port: proxyPort(proxy) }, `CONNECT ${destination} HTTP/1.1\r\n\r\n`);
      assert.equal(statusOf(answer.text), 403, destination);
      const record = await lastRecord(proxy, before + 1);
      assert.equal(record.reason, 'blocked-address', destination);
      assert.equal(record.allowed, false);
      assert.match(record.detail ?? '', why);
      assert.ok(record.resolved !== null);
    }
    const plain = await viaProxy(granted, 'http://metadata.test/latest/meta-data/');
    assert.equal(plain.status, 403);
  });

  it('connects to the address it checked and resolves once per attempt (no rebinding)', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const targets = await startTargets(t);
    let calls = 0;
    // A rebinding resolver: a granted answer first, the metadata address on any second question.
    const resolve = async (): Promise<string[]> => (calls++ === 0 ? ['127.0.0.1'] : ['169.254.169.254']);
    const proxy = await startProxy(t, { allow: [`rebind.test:${targets.echoPort}`], resolve });
    const tunnel = await openTunnel({ port: proxyPort(proxy) }, `rebind.test:${targets.echoPort}`);
    assert.equal(tunnel.status, 200);
    tunnel.socket.write('ping');
    assert.equal((await tunnel.received(4)).toString(), 'ping');
    tunnel.socket.destroy();
    assert.equal(calls, 1);
    assert.equal((await lastRecord(proxy, 1)).resolved, '127.0.0.1');
  });

  it('answers 502 and records a DNS failure or a resolver that hangs', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const proxy = await startProxy(t, {
      allow: ['nxdomain.test:443', 'hang.test:443', 'garbage.test:443'],
      connectTimeoutMs: 300,
      resolve: async (host) => {
        if (host === 'hang.test') return new Promise<string[]>(() => {});
        if (host === 'garbage.test') return ['registry.test'];
        throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      },
    });
    const port = { port: proxyPort(proxy) };
    for (const [host, why] of [
      ['nxdomain.test', /ENOTFOUND/],
      ['hang.test', /timed out/],
      ['garbage.test', /not an IP address/],
    ] as const) {
      const started = Date.now();
      const answer = await rawExchange(port, `CONNECT ${host}:443 HTTP/1.1\r\n\r\n`);
      assert.equal(statusOf(answer.text), 502, host);
      assert.ok(Date.now() - started < 2000, 'bounded by connectTimeoutMs');
      const record = await waitFor(() => proxy.attempts().find((r) => r.destination === `${host}:443`), host);
      assert.equal(record.reason, 'dns-failed');
      assert.match(record.detail ?? '', why);
    }
  });

  it('answers 502 when the destination refuses the connection', { timeout: TEST_TIMEOUT }, async (t) => {
    const closed = createTcpServer();
    const port = await listen(closed);
    await new Promise((resolve) => closed.close(resolve));
    const proxy = await startProxy(t, { allow: [`registry.test:${port}`] });
    const answer = await viaProxy(proxy, `http://registry.test:${port}/`);
    assert.equal(answer.status, 502);
    const record = await lastRecord(proxy, 1);
    assert.equal(record.reason, 'connect-failed');
    assert.equal(record.allowed, true, 'the checks passed; the destination was down');
    assert.match(record.detail ?? '', /ECONNREFUSED/);
  });
});

describe('egress proxy: malformed and hostile requests', { timeout: 60_000 }, () => {
  const cases: readonly (readonly [string, string, number, string])[] = [
    ['a malformed request line', 'GARBAGE\r\n\r\n', 400, 'malformed-request'],
    [
      'an origin-form request',
      'GET /secret-token HTTP/1.1\r\nHost: registry.test\r\n\r\n',
      400,
      'not-a-proxy-request',
    ],
    ['an https:// absolute URI', 'GET https://registry.test/ HTTP/1.1\r\n\r\n', 400, 'unsupported-scheme'],
    ['TRACE', 'TRACE http://registry.test/ HTTP/1.1\r\n\r\n', 405, 'method-not-allowed'],
    ['CONNECT without a port', 'CONNECT registry.test HTTP/1.1\r\n\r\n', 400, 'malformed-request'],
    [
      'CONNECT with user information',
      'CONNECT user@registry.test:443 HTTP/1.1\r\n\r\n',
      400,
      'malformed-request',
    ],
    ['CONNECT to a path', 'CONNECT /etc/passwd HTTP/1.1\r\n\r\n', 400, 'malformed-request'],
    ['a non-standard IPv4 form', 'CONNECT 2130706433:443 HTTP/1.1\r\n\r\n', 400, 'malformed-request'],
    [
      'both Content-Length and Transfer-Encoding',
      'POST http://registry.test/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      400,
      'malformed-request',
    ],
    [
      'oversized headers',
      `GET http://registry.test/ HTTP/1.1\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`,
      431,
      'headers-too-large',
    ],
  ];
  for (const [name, request, status, reason] of cases) {
    it(`answers ${status} to ${name} and records ${reason}`, { timeout: TEST_TIMEOUT }, async (t) => {
      const names = resolver({ 'registry.test': ['127.0.0.1'] });
      const proxy = await startProxy(t, {
        allow: ['registry.test:80', 'registry.test:443'],
        resolve: names.resolve,
      });
      const answer = await rawExchange({ port: proxyPort(proxy) }, request);
      assert.equal(statusOf(answer.text), status, answer.text.slice(0, 200));
      assert.ok(answer.closed, 'the proxy closes the connection');
      const record = await lastRecord(proxy, 1);
      assert.equal(record.reason, reason);
      assert.equal(record.allowed, false);
      assert.ok(!JSON.stringify(record).includes('secret-token'), 'paths are never recorded');
      assert.deepEqual(names.calls, []);
    });
  }

  it('answers 408 and closes a connection whose head is too slow', { timeout: TEST_TIMEOUT }, async (t) => {
    const proxy = await startProxy(t, { allow: ['registry.test:80'], headerTimeoutMs: 300 });
    const started = Date.now();
    const answer = await rawExchange(
      { port: proxyPort(proxy) },
      'GET http://registry.test/ HTTP/1.1\r\nX-Slow: ',
      {
        keepOpen: true,
        waitMs: 5000,
      },
    );
    assert.equal(statusOf(answer.text), 408);
    assert.ok(answer.closed);
    assert.ok(Date.now() - started < 3000, `closed after ${Date.now() - started} ms`);
    assert.equal((await lastRecord(proxy, 1)).reason, 'header-timeout');
  });

  it('cuts a tunnel with no traffic after the idle timeout', { timeout: TEST_TIMEOUT }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, { allow: [`echo.test:${targets.echoPort}`], idleTimeoutMs: 300 });
    const tunnel = await openTunnel({ port: proxyPort(proxy) }, `echo.test:${targets.echoPort}`);
    assert.equal(tunnel.status, 200);
    await Promise.race([
      tunnel.closed,
      new Promise((_, reject) => setTimeout(() => reject(new Error('not cut')), 3000)),
    ]);
    const record = await lastRecord(proxy, 1);
    assert.equal(record.reason, 'idle-timeout');
    assert.equal(record.allowed, true);
  });
});

describe('egress proxy: caps', { timeout: 60_000 }, () => {
  it('cuts a tunnel mid-transfer at the byte cap and refuses every later attempt', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const targets = await startTargets(t);
    const maxBytes = 256 * 1024;
    const proxy = await startProxy(t, {
      allow: [`echo.test:${targets.blastPort}`, `echo.test:${targets.echoPort}`],
      maxBytes,
    });
    const port = { port: proxyPort(proxy) };
    const bystander = await openTunnel(port, `echo.test:${targets.echoPort}`);
    const tunnel = await openTunnel(port, `echo.test:${targets.blastPort}`);
    assert.equal(tunnel.status, 200);
    const received = await tunnel.received(10 * maxBytes, 5000);
    await tunnel.closed;
    assert.ok(received.length <= maxBytes, `received ${received.length} bytes, cap ${maxBytes}`);
    assert.ok(received.length > maxBytes / 2, `received ${received.length} bytes before the cut`);
    await bystander.closed; // every connection of the job is cut, not only the one that crossed the cap
    await waitFor(() => (proxy.attempts().length === 2 ? true : undefined), 'two records');
    const blast = proxy.attempts().find((record) => record.destination === `echo.test:${targets.blastPort}`);
    assert.equal(blast?.reason, 'byte-cap');
    assert.equal(blast?.allowed, true);
    assert.ok((blast?.bytesDown ?? 0) > maxBytes);
    assert.equal(proxy.totals().exhausted, 'byte-cap');
    const later = await rawExchange(port, `CONNECT echo.test:${targets.echoPort} HTTP/1.1\r\n\r\n`);
    assert.equal(statusOf(later.text), 403);
    // Refused past the cap: counted, not recorded (a job could otherwise make records without end).
    await waitFor(() => (proxy.totals().unrecorded === 1 ? true : undefined), 'a counted refusal');
    assert.equal(proxy.attempts().length, 2);
  });

  it('cuts a plain HTTP download at the byte cap', { timeout: TEST_TIMEOUT }, async (t) => {
    const targets = await startTargets(t);
    const maxBytes = 200 * 1024;
    const proxy = await startProxy(t, { allow: [`registry.test:${targets.httpPort}`], maxBytes });
    const answer = await viaProxy(
      proxy,
      `http://registry.test:${targets.httpPort}/bytes/${4 * 1024 * 1024}`,
    ).catch((error: unknown) => ({ status: 0, body: Buffer.alloc(0), complete: false, error }));
    assert.equal(answer.complete, false, 'the download does not complete');
    assert.ok(answer.body.length <= maxBytes, `received ${answer.body.length}`);
    const record = await lastRecord(proxy, 1);
    assert.equal(record.reason, 'byte-cap');
    assert.equal(proxy.totals().exhausted, 'byte-cap');
  });

  it('refuses connections past maxConnections', { timeout: TEST_TIMEOUT }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, { allow: [`registry.test:${targets.httpPort}`], maxConnections: 2 });
    const url = `http://registry.test:${targets.httpPort}/bytes/1`;
    assert.equal((await viaProxy(proxy, url)).status, 200);
    assert.equal((await viaProxy(proxy, url)).status, 200);
    const third = await viaProxy(proxy, url);
    assert.equal(third.status, 403);
    assert.match(third.body.toString(), /connection-cap/);
    assert.equal((await lastRecord(proxy, 3)).reason, 'connection-cap');
    assert.equal(proxy.totals().connections, 3);
  });

  it('past a job-wide cap, attempts are counted, not recorded: a job cannot make records without end', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const targets = await startTargets(t);
    const seen: EgressRecord[] = [];
    const proxy = await startProxy(t, {
      allow: [`registry.test:${targets.httpPort}`],
      maxConnections: 1,
      onAttempt: (record) => seen.push(record),
    });
    const url = `http://registry.test:${targets.httpPort}/bytes/1`;
    assert.equal((await viaProxy(proxy, url)).status, 200);
    assert.equal((await viaProxy(proxy, url)).status, 403); // the one that reaches the cap: recorded
    for (let i = 0; i < 5; i += 1) assert.equal((await viaProxy(proxy, url)).status, 403);
    await waitFor(() => (proxy.totals().unrecorded === 5 ? true : undefined), 'five quiet refusals');
    assert.deepEqual(
      seen.map((record) => record.reason),
      ['allowed', 'connection-cap'],
    );
    assert.equal(proxy.attempts().length, 2);
    assert.equal(proxy.totals().refused, 6);
  });

  it('refused records make room first: refused attempts cannot push an allowed one out of the kept list', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, { allow: [`registry.test:${targets.httpPort}`], maxRecords: 3 });
    assert.equal((await viaProxy(proxy, `http://registry.test:${targets.httpPort}/bytes/1`)).status, 200);
    for (let i = 0; i < 6; i += 1)
      assert.equal((await viaProxy(proxy, `http://unlisted.example.com:${targets.httpPort}/`)).status, 403);
    await waitFor(() => (proxy.totals().droppedRecords === 4 ? true : undefined), 'four dropped');
    const kept = proxy.attempts();
    assert.equal(kept.length, 3);
    assert.equal(kept[0]?.reason, 'allowed');
  });

  it('a request with user information is recorded without it', { timeout: TEST_TIMEOUT }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, { allow: [`registry.test:${targets.httpPort}`] });
    const answer = await rawExchange(
      { port: proxyPort(proxy) },
      `GET http://user:s3cret@registry.test:${targets.httpPort}/ HTTP/1.1\r\nHost: registry.test\r\n\r\n`,
    );
    assert.equal(statusOf(answer.text), 400);
    const record = await lastRecord(proxy, 1);
    assert.equal(record.destination, `[userinfo]@registry.test:${targets.httpPort}`);
    assert.ok(!JSON.stringify(proxy.attempts()).includes('s3cret'));
  });

  it('refuses a connection past maxConcurrent with 429, and takes one again once a slot frees', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, { allow: [`echo.test:${targets.echoPort}`], maxConcurrent: 1 });
    const port = { port: proxyPort(proxy) };
    const first = await openTunnel(port, `echo.test:${targets.echoPort}`);
    assert.equal(first.status, 200);
    const second = await rawExchange(port, `CONNECT echo.test:${targets.echoPort} HTTP/1.1\r\n\r\n`);
    assert.equal(statusOf(second.text), 429);
    first.socket.destroy();
    await lastRecord(proxy, 2);
    const third = await openTunnel(port, `echo.test:${targets.echoPort}`);
    assert.equal(third.status, 200);
    third.socket.destroy();
    await waitFor(() => (proxy.attempts().length === 3 ? true : undefined), 'three records');
    assert.deepEqual(
      proxy.attempts().map((record) => record.reason),
      ['concurrency-cap', 'allowed', 'allowed'],
    );
  });

  it('drops connections beyond maxConcurrent plus a small allowance for heads, and records the first drop', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const proxy = await startProxy(t, {
      allow: ['registry.test:443'],
      maxConcurrent: 1,
      headerTimeoutMs: 5000,
    });
    const sockets: Socket[] = [];
    t.after(() => {
      for (const socket of sockets) socket.destroy();
    });
    for (let i = 0; i < 20; i += 1) {
      const socket = connect({ host: '127.0.0.1', port: proxyPort(proxy) });
      socket.on('error', () => {});
      sockets.push(socket);
      await new Promise((resolve) => socket.once('connect', resolve));
    }
    // 1 + 16 connections held, 3 dropped: the first drop is recorded, the others counted.
    await waitFor(() => (proxy.totals().unrecorded === 2 ? true : undefined), 'two counted drops');
    const drops = proxy.attempts();
    assert.equal(drops.length, 1);
    assert.equal(drops[0]?.reason, 'concurrency-cap');
    assert.equal(drops[0]?.destination, null);
    assert.equal(proxy.totals().refused, 3);
    assert.equal(proxy.totals().active, 17);
  });

  it('keeps a bounded list of records and counts the ones it dropped', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    let seen = 0;
    const proxy = await startProxy(t, {
      allow: ['registry.test:443'],
      maxRecords: 3,
      onAttempt: () => void seen++,
    });
    for (let i = 0; i < 5; i += 1)
      await rawExchange({ port: proxyPort(proxy) }, `CONNECT denied-${i}.test:443 HTTP/1.1\r\n\r\n`);
    await waitFor(() => (seen === 5 ? true : undefined), 'five callbacks');
    assert.deepEqual(
      proxy.attempts().map((record) => record.destination),
      ['denied-2.test:443', 'denied-3.test:443', 'denied-4.test:443'],
    );
    assert.equal(proxy.totals().droppedRecords, 2);
  });

  it('refuses everything once recording an attempt failed (fail closed)', {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startProxy(t, {
      allow: [`echo.test:${targets.echoPort}`],
      onAttempt: () => {
        throw new Error('audit sink down');
      },
    });
    const port = { port: proxyPort(proxy) };
    await rawExchange(port, 'CONNECT unlisted.test:443 HTTP/1.1\r\n\r\n');
    const after = await rawExchange(port, `CONNECT echo.test:${targets.echoPort} HTTP/1.1\r\n\r\n`);
    assert.equal(statusOf(after.text), 503);
    assert.equal(proxy.totals().exhausted, 'record-failed');
  });
});

describe('egress proxy: life cycle and options', { timeout: 60_000 }, () => {
  it('close() ends open tunnels, records them and stops listening', { timeout: TEST_TIMEOUT }, async (t) => {
    const targets = await startTargets(t);
    const proxy = await startEgressProxy({
      allow: [`echo.test:${targets.echoPort}`],
      listen: { host: '127.0.0.1', port: 0 },
      grantAddresses: ['127.0.0.1/32'],
      resolve: async () => ['127.0.0.1'],
    });
    const port = proxyPort(proxy);
    const tunnel = await openTunnel({ port }, `echo.test:${targets.echoPort}`);
    assert.equal(tunnel.status, 200);
    await proxy.close();
    await tunnel.closed;
    assert.equal(proxy.attempts()[0]?.reason, 'proxy-closed');
    assert.equal(proxy.totals().active, 0);
    await assert.rejects(
      () =>
        new Promise((resolve, reject) => {
          const socket = connect({ host: '127.0.0.1', port }, () => resolve(socket.destroy()));
          socket.on('error', reject);
        }),
      /ECONNREFUSED/,
    );
  });

  it('refuses a bad allowlist entry, a too-wide grant and an exposed listener before listening', async () => {
    const base = { listen: { host: '127.0.0.1', port: 0 } } as const;
    await assert.rejects(
      startEgressProxy({ ...base, allow: ['registry.test:443', 'https://evil.test/'] }),
      (error: unknown) => error instanceof AirlockError && error.code === 'INVALID_JOB',
    );
    await assert.rejects(
      startEgressProxy({ ...base, allow: [], grantAddresses: ['0.0.0.0/0'] }),
      (error: unknown) => error instanceof AirlockError && error.code === 'INVALID_CONFIG',
    );
    await assert.rejects(startEgressProxy({ allow: [], listen: { host: '0.0.0.0', port: 0 } }), RangeError);
    await assert.rejects(startEgressProxy({ allow: [], listen: { path: 'relative.sock' } }), RangeError);
    await assert.rejects(startEgressProxy({ ...base, allow: [], maxBytes: 0 }), RangeError);
  });

  it('reports a port already in use as SANDBOX_SETUP_FAILED', { timeout: TEST_TIMEOUT }, async (t) => {
    const first = await startProxy(t, { allow: [] });
    await assert.rejects(
      startEgressProxy({ allow: [], listen: { host: '127.0.0.1', port: proxyPort(first) } }),
      (error: unknown) => error instanceof AirlockError && error.code === 'SANDBOX_SETUP_FAILED',
    );
  });
});

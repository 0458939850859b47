import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { ApiClient } from '../../src/client/api-client.js';
import { followLogs } from '../../src/client/follow.js';
import { HttpClient } from '../../src/client/http.js';

/**
 * HttpClient.json() and .stream() on a real loopback server: what they send, and what they
 * refuse to take — an unbounded answer, a redirect (never followed with the token), an error
 * body, a stream that breaks off.
 */

let server: Server;
let url = '';
const seen: { method: string | undefined; authorization: string | undefined; body: string }[] = [];
let releaseSecond: () => void = () => undefined;

before(async () => {
  server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => {
      body += chunk.toString();
    });
    request.on('end', () => {
      seen.push({ method: request.method, authorization: request.headers.authorization, body });
      if (request.url === '/ok') {
        response.setHeader('content-type', 'application/json');
        response.end('{"answer":42}');
      } else if (request.url === '/none') {
        response.statusCode = 204;
        response.end();
      } else if (request.url === '/huge') {
        // 33 MiB of a JSON string, written in pieces.
        response.setHeader('content-type', 'application/json');
        response.write('"');
        const piece = 'x'.repeat(1024 * 1024);
        let left = 33;
        const more = (): void => {
          while (left > 0) {
            left -= 1;
            if (!response.write(piece)) {
              response.once('drain', more);
              return;
            }
          }
          response.end('"');
        };
        response.on('error', () => undefined);
        more();
      } else if (request.url === '/stream') {
        // One line now, the next only once the client has told us it saw the first.
        response.setHeader('content-type', 'application/x-ndjson');
        response.write('{"n":1}\n');
        releaseSecond = () => response.end('{"n":2}\n');
      } else if (request.url?.startsWith('/v1/jobs/job_aaaaaaaaaaaaaaaaaaaaaaaaaa/logs?')) {
        response.setHeader('content-type', 'application/x-ndjson');
        response.write('\n');
        response.end('{"end":{"state":"succeeded","terminal":true,"exitStatus":0}}\n');
      } else if (request.url?.startsWith('/v1/jobs/job_bbbbbbbbbbbbbbbbbbbbbbbbbb/logs?')) {
        // A line and the end in one write, then the answer ends.
        response.setHeader('content-type', 'application/x-ndjson');
        response.end(
          `${JSON.stringify({ seq: 1, stream: 'stdout', data: 'aGk=' })}\n{"end":{"state":"succeeded","terminal":true,"exitStatus":0}}\n`,
        );
      } else if (request.url === '/ended') {
        response.setHeader('content-type', 'application/x-ndjson');
        response.end('{"end":true}\n');
      } else if (request.url === '/broken') {
        response.setHeader('content-type', 'application/x-ndjson');
        response.write('{"n":1}\n', () => setTimeout(() => response.socket?.destroy(), 20));
      } else if (request.url === '/moved') {
        response.statusCode = 302;
        response.setHeader('location', '/ok');
        response.end();
      } else {
        response.statusCode = 429;
        response.setHeader('retry-after', '7');
        response.setHeader('content-type', 'application/json');
        response.end('{"error":{"code":"RATE_LIMITED","message":"slow down"}}');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

test('sends the token and the JSON body, and parses the answer; 204 is null', async () => {
  const client = new HttpClient({ url, token: 'tok_secret' });
  assert.deepEqual(await client.json('/ok', { body: { a: 1 } }), { answer: 42 });
  assert.deepEqual(seen.at(-1), { method: 'POST', authorization: 'Bearer tok_secret', body: '{"a":1}' });
  assert.equal(await client.json('/none'), null);
  assert.equal(seen.at(-1)?.method, 'GET');
});

test('refuses an answer over 32 MiB instead of holding it', async () => {
  const client = new HttpClient({ url, token: 'tok_secret' });
  await assert.rejects(client.json('/huge'), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'SERVER_UNREACHABLE');
    assert.match(error.message, /more than 33554432 bytes/);
    return true;
  });
});

test('never follows a redirect (the token would go along)', async () => {
  const client = new HttpClient({ url, token: 'tok_secret' });
  const before = seen.length;
  await assert.rejects(client.json('/moved'), /302/);
  assert.equal(seen.length, before + 1, 'the redirect target was not asked');
});

test("turns the server's error body back into its code, with Retry-After", async () => {
  const client = new HttpClient({ url, token: 'tok_secret' });
  await assert.rejects(
    client.json('/limited'),
    (error: Error & { code?: string; retryAfterSeconds?: number }) => {
      assert.equal(error.code, 'RATE_LIMITED');
      assert.equal(error.message, 'slow down');
      assert.equal(error.retryAfterSeconds, 7);
      return true;
    },
  );
});

test('stream(): the body as it comes, before the answer has ended', async () => {
  const client = new HttpClient({ url, token: 'tok_secret' });
  const body = await client.stream('/stream', { timeoutMs: 0 });
  assert.equal(seen.at(-1)?.authorization, 'Bearer tok_secret');
  const got: string[] = [];
  for await (const chunk of body) {
    got.push(chunk.toString());
    // The server sends its second line only now: a client that waited for the end would hang.
    if (got.length === 1) releaseSecond();
  }
  assert.deepEqual(got.join('').split('\n').filter(Boolean), ['{"n":1}', '{"n":2}']);
});

test("stream(): an error answer throws the server's code; a redirect is not followed", async () => {
  const client = new HttpClient({ url, token: 'tok_secret' });
  await assert.rejects(client.stream('/limited'), { code: 'RATE_LIMITED', message: 'slow down' });
  const before = seen.length;
  await assert.rejects(client.stream('/moved'), /302/);
  assert.equal(seen.length, before + 1, 'the redirect target was not asked');
});

test('stream(): a body that breaks off throws from the iteration; an abort ends it', async () => {
  const client = new HttpClient({ url, token: 'tok_secret' });
  const broken = await client.stream('/broken', { timeoutMs: 0 });
  await assert.rejects(async () => {
    for await (const _ of broken) {
      // read until it breaks
    }
  });
  const stop = new AbortController();
  const body = await client.stream('/stream', { timeoutMs: 0, signal: stop.signal });
  await assert.rejects(async () => {
    for await (const _ of body) stop.abort();
  });
});

test('stream(): an abort after the reader stopped reading is no uncaught error', async () => {
  const client = new HttpClient({ url, token: 'tok_secret' });
  const uncaught: unknown[] = [];
  const onUncaught = (error: unknown): void => {
    uncaught.push(error);
  };
  process.on('uncaughtException', onUncaught);
  try {
    for (const path of ['/stream', '/ended']) {
      const stop = new AbortController();
      const body = await client.stream(path, { timeoutMs: 0, signal: stop.signal });
      // Read one chunk and walk away without closing the iterator, as a consumer that got
      // what it wanted might (the answer still open, or already ended); then the signal fires.
      await body[Symbol.asyncIterator]().next();
      await new Promise((resolve) => setTimeout(resolve, 50));
      stop.abort();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // As `airlock run` follows a job to its end.
    const api = new ApiClient(client);
    for (let i = 0; i < 5; i += 1) {
      const end = await followLogs(api, `job_${'a'.repeat(26)}`, { onLine: () => undefined });
      assert.equal(end.state, 'succeeded');
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    // The caller's own signal (Ctrl-C) while a line is being handed out, the whole answer
    // already arrived but not read to its end.
    for (let i = 0; i < 20; i += 1) {
      const stop = new AbortController();
      // Either the end (it was read already) or the abort: never a dead process.
      await followLogs(api, `job_${'b'.repeat(26)}`, {
        signal: stop.signal,
        onLine: async () => {
          stop.abort();
          await new Promise((resolve) => setTimeout(resolve, 5));
        },
      }).catch((error: unknown) => assert.equal((error as Error).name, 'AbortError'));
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  } finally {
    process.off('uncaughtException', onUncaught);
  }
  assert.deepEqual(uncaught, []);
});

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { HttpClient } from '../../src/client/http.js';

/**
 * HttpClient.json() on a real loopback server: what it sends, and what it refuses to take —
 * an unbounded answer, a redirect (never followed with the token), an error body.
 */

let server: Server;
let url = '';
const seen: { method: string | undefined; authorization: string | undefined; body: string }[] = [];

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

import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { createLogger } from '../../src/log.js';

/** The logger censors wherever a token could travel, so a careless log call cannot leak one. */

function capture(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  return {
    stream: new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk.toString());
        done();
      },
    }),
    text: () => chunks.join(''),
  };
}

describe('log redaction', () => {
  test('tokens and secrets under the usual names never reach the log', async () => {
    const out = capture();
    const logger = createLogger('trace', 'test', out.stream);
    const secret = `alk_0123456789abcdef_${'S'.repeat(43)}`;
    logger.info({ authorization: `Bearer ${secret}` }, 'top level');
    logger.info({ headers: { authorization: `Bearer ${secret}`, cookie: secret } }, 'headers');
    logger.info({ req: { headers: { authorization: `Bearer ${secret}` } } }, 'request');
    logger.info({ token: secret, secret, password: secret }, 'fields');
    logger.info({ worker: { token: secret } }, 'nested');
    logger.flush();
    await new Promise((resolve) => setImmediate(resolve));
    const text = out.text();
    assert.equal(text.split('\n').filter((line) => line !== '').length, 5, 'every line was written');
    assert.ok(!text.includes('SSSSSSSS'), `a secret reached the log:\n${text}`);
    assert.match(text, /\[redacted\]/);
  });
});

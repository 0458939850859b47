import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LogLine } from '../../src/api/types.js';
import { AirlockError } from '../../src/errors.js';
import { type LogChunk, LogShipper, type LogStage } from '../../src/worker/log-shipper.js';

/** A fake server side of the logs call: records requests, answers when told (or at once). */
class FakeSender {
  readonly requests: LogLine[][] = [];
  inFlight = 0;
  maxInFlight = 0;
  autoAck = true;
  #pending: { resolve: () => void; reject: (error: unknown) => void }[] = [];

  readonly send = (chunks: LogLine[]): Promise<void> => {
    this.requests.push(chunks);
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise<void>((resolve, reject) => {
      const entry = {
        resolve: () => {
          this.inFlight -= 1;
          resolve();
        },
        reject: (error: unknown) => {
          this.inFlight -= 1;
          reject(error);
        },
      };
      if (this.autoAck) setImmediate(entry.resolve);
      else this.#pending.push(entry);
    });
  };

  ackOne(): void {
    this.#pending.shift()?.resolve();
  }

  failOne(error: unknown): void {
    this.#pending.shift()?.reject(error);
  }

  get lines(): LogLine[] {
    return this.requests.flat();
  }

  text(stream?: 'stdout' | 'stderr'): string {
    return this.lines
      .filter((line) => stream === undefined || line.stream === stream)
      .map((line) => Buffer.from(line.data, 'base64').toString('latin1'))
      .join('');
  }
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const wait = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const bytes = (text: string): Buffer => Buffer.from(text, 'latin1');

function shipper(
  sender: FakeSender,
  options: Partial<ConstructorParameters<typeof LogShipper>[0]> = {},
): LogShipper {
  return new LogShipper({ send: sender.send, maxPendingBytes: 8 * 1024 * 1024, ...options });
}

describe('LogShipper', () => {
  test('coalesces many small writes into one request, one chunk per stream run, seq from 1', async () => {
    const sender = new FakeSender();
    const logs = shipper(sender);
    for (let i = 0; i < 100; i += 1) logs.write('stdout', bytes(`line ${i}\n`));
    logs.write('stderr', bytes('oops\n'));
    logs.write('stdout', bytes('after\n'));
    await logs.flush();
    assert.equal(sender.requests.length, 1);
    assert.deepEqual(
      sender.lines.map((line) => [line.seq, line.stream]),
      [
        [1, 'stdout'],
        [2, 'stderr'],
        [3, 'stdout'],
      ],
    );
    assert.equal(
      sender.text(),
      `${Array.from({ length: 100 }, (_, i) => `line ${i}\n`).join('')}oops\nafter\n`,
    );
  });

  test('sends on its own after the delay, without flush()', async () => {
    const sender = new FakeSender();
    const logs = shipper(sender, { limits: { flushDelayMs: 20 } });
    logs.write('stdout', bytes('hello'));
    await tick();
    assert.equal(sender.requests.length, 0, 'a small write waits for the delay');
    await wait(80);
    assert.equal(sender.requests.length, 1);
    assert.equal(sender.text(), 'hello');
    await logs.flush();
  });

  test('sends at once when 64 KiB are pending', async () => {
    const sender = new FakeSender();
    const logs = shipper(sender, { limits: { flushDelayMs: 60_000 } });
    logs.write('stdout', Buffer.alloc(64 * 1024, 'x'));
    await tick();
    assert.equal(sender.requests.length, 1);
    await logs.flush();
  });

  test('never more than one request in flight; seq stays consecutive across requests', async () => {
    const sender = new FakeSender();
    sender.autoAck = false;
    const logs = shipper(sender, { limits: { flushDelayMs: 1, maxChunksPerRequest: 2 } });
    const done = (async () => {
      for (let i = 0; i < 10; i += 1) {
        logs.write(i % 2 === 0 ? 'stdout' : 'stderr', bytes(`${i}`));
        await wait(3);
      }
      return logs.flush();
    })();
    while (sender.inFlight > 0 || sender.requests.length === 0 || sender.lines.length < 10) {
      await wait(5);
      assert.ok(sender.inFlight <= 1);
      sender.ackOne();
    }
    await done;
    assert.equal(sender.maxInFlight, 1);
    assert.ok(sender.requests.length >= 5, 'at most 2 chunks per request');
    assert.ok(sender.requests.every((request) => request.length <= 2));
    assert.deepEqual(
      sender.lines.map((line) => line.seq),
      Array.from({ length: sender.lines.length }, (_, i) => i + 1),
    );
    assert.equal(sender.text(), '0123456789');
  });

  test('splits large output into chunks of at most 64 KiB and requests of at most 1 MiB', async () => {
    const sender = new FakeSender();
    const logs = shipper(sender);
    const data = Buffer.alloc(3 * 1024 * 1024 + 5);
    for (let i = 0; i < data.length; i += 1) data[i] = i % 251;
    logs.write('stdout', data);
    await logs.flush();
    for (const request of sender.requests) {
      assert.ok(request.length <= 64);
      const decoded = request.reduce((sum, line) => sum + Buffer.from(line.data, 'base64').length, 0);
      assert.ok(decoded <= 1024 * 1024);
    }
    assert.ok(sender.lines.every((line) => Buffer.from(line.data, 'base64').length <= 64 * 1024));
    assert.ok(Buffer.concat(sender.lines.map((line) => Buffer.from(line.data, 'base64'))).equals(data));
  });

  test('flush() with nothing written resolves without a request', async () => {
    const sender = new FakeSender();
    await shipper(sender).flush();
    assert.equal(sender.requests.length, 0);
  });

  test('a failed send fails the shipper once: flush rejects, later output is dropped', async () => {
    const sender = new FakeSender();
    sender.autoAck = false;
    const failures: unknown[] = [];
    const logs = shipper(sender, { onFailure: (error) => failures.push(error) });
    logs.write('stdout', bytes('a'));
    const flushed = logs.flush();
    await tick();
    const lost = new AirlockError('LEASE_LOST', 'stale fence');
    sender.failOne(lost);
    await assert.rejects(flushed, { code: 'LEASE_LOST' });
    assert.deepEqual(failures, [lost]);
    assert.equal(sender.requests.length, 1);
  });

  test('close() drops what was not sent and rejects a pending flush', async () => {
    const sender = new FakeSender();
    sender.autoAck = false;
    const logs = shipper(sender, { limits: { maxChunksPerRequest: 1 } });
    logs.write('stdout', bytes('a'));
    logs.write('stderr', bytes('b'));
    const flushed = logs.flush();
    await tick();
    logs.close(new AirlockError('LEASE_LOST', 'gone'));
    await assert.rejects(flushed, { code: 'LEASE_LOST' });
    sender.ackOne();
    await tick();
    assert.equal(sender.requests.length, 1, 'nothing more is sent after close()');
    logs.write('stdout', bytes('late'));
    await tick();
    assert.equal(sender.requests.length, 1);
  });

  test('output beyond the bound fails the shipper (the engine cap was not applied)', async () => {
    const sender = new FakeSender();
    const failures: unknown[] = [];
    const logs = shipper(sender, { maxPendingBytes: 10, onFailure: (error) => failures.push(error) });
    logs.write('stdout', bytes('0123456789'));
    logs.write('stdout', bytes('X'));
    assert.equal(failures.length, 1);
    assert.match(String((failures[0] as Error).message), /more than 10 bytes/);
    await assert.rejects(logs.flush(), { code: 'INTERNAL' });
  });

  test('stages run in order; what a stage holds back comes out at flush, through later stages', async () => {
    const sender = new FakeSender();
    // Holds everything back until the end (as a redactor holds a possible secret's start).
    const holder = (): LogStage => {
      const held: LogChunk[] = [];
      return {
        push: (chunk) => {
          held.push(chunk);
          return [];
        },
        end: () => held.splice(0),
      };
    };
    const upper: LogStage = {
      push: (chunk) => [{ stream: chunk.stream, data: bytes(chunk.data.toString('latin1').toUpperCase()) }],
      end: () => [],
    };
    const logs = shipper(sender, { stages: [holder(), upper] });
    logs.write('stdout', bytes('abc'));
    logs.write('stderr', bytes('def'));
    await wait(150);
    assert.equal(sender.requests.length, 0);
    await logs.flush();
    assert.equal(sender.text('stdout'), 'ABC');
    assert.equal(sender.text('stderr'), 'DEF');
  });

  test('a stage that throws fails the shipper: nothing unprocessed is sent', async () => {
    const sender = new FakeSender();
    const failures: unknown[] = [];
    const broken: LogStage = {
      push: () => {
        throw new Error('boom');
      },
      end: () => [],
    };
    const logs = shipper(sender, { stages: [broken], onFailure: (error) => failures.push(error) });
    logs.write('stdout', bytes('secret'));
    await assert.rejects(logs.flush(), { code: 'INTERNAL' });
    assert.equal(failures.length, 1);
    assert.equal(sender.requests.length, 0);
  });

  test('writing after flush() is a programmer error', async () => {
    const logs = shipper(new FakeSender());
    await logs.flush();
    assert.throws(() => logs.write('stdout', bytes('x')), TypeError);
  });
});

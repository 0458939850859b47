import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { formatBytes, OutputLimiter, type StreamName, truncationMarker } from '../../src/sandbox/output.js';

interface Emitted {
  stream: StreamName;
  text: string;
}

/** A limiter whose listener records what it passes on, as text. */
function recording(limit: number): { limiter: OutputLimiter; emitted: Emitted[] } {
  const emitted: Emitted[] = [];
  const limiter = new OutputLimiter(limit, (stream, chunk) => {
    emitted.push({ stream, text: chunk.toString('latin1') });
  });
  return { limiter, emitted };
}

const bytes = (text: string): Buffer => Buffer.from(text, 'latin1');

describe('OutputLimiter', () => {
  test('passes chunks through unchanged, in order and on their own stream, under the cap', () => {
    const { limiter, emitted } = recording(100);
    limiter.write('stdout', bytes('hello '));
    limiter.write('stderr', bytes('oops\n'));
    limiter.write('stdout', bytes('world\n'));
    assert.deepEqual(emitted, [
      { stream: 'stdout', text: 'hello ' },
      { stream: 'stderr', text: 'oops\n' },
      { stream: 'stdout', text: 'world\n' },
    ]);
    assert.equal(limiter.truncated, false);
    assert.equal(limiter.totalBytes, 17);
    assert.equal(limiter.keptBytes, 17);
  });

  test('does not pass on empty chunks', () => {
    const { limiter, emitted } = recording(10);
    limiter.write('stdout', Buffer.alloc(0));
    assert.deepEqual(emitted, []);
  });

  test('output of exactly the cap is kept whole, with no marker', () => {
    const { limiter, emitted } = recording(10);
    limiter.write('stdout', bytes('0123456789'));
    assert.deepEqual(emitted, [{ stream: 'stdout', text: '0123456789' }]);
    assert.equal(limiter.truncated, false);
  });

  test('cuts exactly at the cap and marks the stream that crossed it, once', () => {
    const { limiter, emitted } = recording(10);
    const marker = truncationMarker(10);
    limiter.write('stdout', bytes('012345'));
    limiter.write('stderr', bytes('6789abc'));
    limiter.write('stderr', bytes('more'));
    limiter.write('stdout', bytes('and more'));
    assert.deepEqual(emitted, [
      { stream: 'stdout', text: '012345' },
      { stream: 'stderr', text: '6789' },
      { stream: 'stderr', text: marker },
    ]);
    assert.equal(limiter.truncated, true);
    assert.equal(limiter.keptBytes, 10);
    // Everything the job wrote is counted, kept or not.
    assert.equal(limiter.totalBytes, 6 + 7 + 4 + 8);
  });

  test('a chunk that starts exactly at the cap emits only the marker', () => {
    const { limiter, emitted } = recording(4);
    limiter.write('stdout', bytes('abcd'));
    limiter.write('stderr', bytes('e'));
    assert.deepEqual(emitted, [
      { stream: 'stdout', text: 'abcd' },
      { stream: 'stderr', text: truncationMarker(4) },
    ]);
  });

  test('a cap of 0 keeps nothing and marks the first output', () => {
    const { limiter, emitted } = recording(0);
    limiter.write('stderr', bytes('x'));
    limiter.write('stdout', bytes('y'));
    assert.deepEqual(emitted, [{ stream: 'stderr', text: truncationMarker(0) }]);
    assert.equal(limiter.keptBytes, 0);
    assert.equal(limiter.totalBytes, 2);
  });

  test('the marker says what the limit was', () => {
    assert.match(truncationMarker(1024 * 1024), /1 MiB/);
    assert.match(truncationMarker(1536), /1536 B/);
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(3 * 1024 ** 3), '3 GiB');
    assert.equal(formatBytes(2 * 1024 ** 4), '2 TiB');
  });

  test('property: kept data is the prefix of the input of length min(cap, total), on the right streams', () => {
    const chunk = fc.record({
      stream: fc.constantFrom<StreamName>('stdout', 'stderr'),
      data: fc.uint8Array({ maxLength: 64 }),
    });
    fc.assert(
      fc.property(fc.array(chunk, { maxLength: 30 }), fc.nat({ max: 600 }), (chunks, cap) => {
        const emitted: { stream: StreamName; data: Buffer }[] = [];
        const limiter = new OutputLimiter(cap, (stream, data) => emitted.push({ stream, data }));
        for (const { stream, data } of chunks) limiter.write(stream, Buffer.from(data));

        const total = chunks.reduce((sum, { data }) => sum + data.length, 0);
        assert.equal(limiter.totalBytes, total);
        assert.equal(limiter.truncated, total > cap);

        const kept = limiter.truncated ? emitted.slice(0, -1) : emitted;
        if (limiter.truncated) {
          // The marker is last, alone, on the stream of the chunk that crossed the cap.
          const last = emitted.at(-1);
          assert.equal(last?.data.toString('utf8'), truncationMarker(cap));
          let seen = 0;
          const crossing = chunks.find(({ data }) => {
            seen += data.length;
            return seen > cap;
          });
          assert.equal(last?.stream, crossing?.stream);
        }

        const keptBytes = kept.reduce((sum, { data }) => sum + data.length, 0);
        assert.equal(keptBytes, Math.min(cap, total));
        assert.equal(limiter.keptBytes, keptBytes);
        const input = Buffer.concat(chunks.map(({ data }) => data));
        assert.deepEqual(
          Buffer.concat(kept.map(({ data }) => data)),
          input.subarray(0, Math.min(cap, total)),
        );

        // Chunk by chunk: the kept pieces are the input chunks (cut at the cap), on their own streams.
        const expected: { stream: StreamName; data: Buffer }[] = [];
        let room = cap;
        for (const { stream, data } of chunks) {
          const take = Math.min(room, data.length);
          if (take > 0) expected.push({ stream, data: Buffer.from(data.subarray(0, take)) });
          room -= take;
        }
        assert.deepEqual(
          kept.map(({ stream, data }) => ({ stream, data: Buffer.from(data) })),
          expected,
        );
      }),
    );
  });
});

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import {
  duplicateJsonKey,
  MAX_SPEC_FILE_BYTES,
  parseJobSpec,
  readJobSpecFile,
  specFormat,
} from '../../src/client/job-spec-file.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'airlock-spec-file-test-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const invalidJob = { name: 'AirlockError', code: 'INVALID_JOB' };

const YAML_SPEC = `version: 1
project: web
environment: dev
command: ["sh", "-c", "make test"]
env: { CI: "1" }
resources: { cpus: 1, memoryMiB: 512 }
outputs: ["dist/**"]
`;
const EXPECTED = {
  version: 1,
  project: 'web',
  environment: 'dev',
  command: ['sh', '-c', 'make test'],
  env: { CI: '1' },
  resources: { cpus: 1, memoryMiB: 512 },
  outputs: ['dist/**'],
};

describe('parseJobSpec', () => {
  test('YAML and JSON give the same object', async () => {
    assert.deepEqual(await parseJobSpec('job.yaml', YAML_SPEC), EXPECTED);
    assert.deepEqual(await parseJobSpec('job.json', JSON.stringify(EXPECTED)), EXPECTED);
  });

  test('the format comes from the extension, else the content', () => {
    assert.equal(specFormat('a.JSON', 'version: 1'), 'json');
    assert.equal(specFormat('a.yml', '{}'), 'yaml');
    assert.equal(specFormat('-', '  {"version": 1}'), 'json');
    assert.equal(specFormat('job', 'version: 1'), 'yaml');
  });

  test('an alias bomb is refused, not expanded', async () => {
    const bomb = [
      'a: &a ["x","x","x","x","x","x","x","x","x","x"]',
      'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]',
      'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]',
      'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]',
      'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]',
      'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]',
      'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]',
      'h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]',
      'i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]',
    ].join('\n');
    const started = Date.now();
    await assert.rejects(parseJobSpec('bomb.yaml', bomb), { ...invalidJob, message: /alias/i });
    assert.ok(Date.now() - started < 2000, 'refused at once');
  });

  test('a few aliases are fine', async () => {
    assert.deepEqual(await parseJobSpec('a.yaml', 'x: &v "1"\ny: *v\n'), { x: '1', y: '1' });
  });

  test('duplicate keys, custom tags and several documents are refused; merge keys are not applied', async () => {
    await assert.rejects(parseJobSpec('a.yaml', 'project: a\nproject: b\n'), invalidJob);
    await assert.rejects(parseJobSpec('a.yaml', 'command: !!js/function "x"\n'), invalidJob);
    // Without merge keys, "<<" stays a plain key: nothing is inherited behind the reader's back.
    const merged = await parseJobSpec('a.yaml', 'base: &b {x: 1}\nm:\n  <<: *b\n');
    assert.deepEqual(merged.m, { '<<': { x: 1 } });
    await assert.rejects(parseJobSpec('a.yaml', 'version: 1\n---\nversion: 2\n'), invalidJob);
  });

  test('not a mapping is refused', async () => {
    await assert.rejects(parseJobSpec('a.yaml', '- a\n- b\n'), invalidJob);
    await assert.rejects(parseJobSpec('a.json', '"text"'), invalidJob);
    await assert.rejects(parseJobSpec('a.yaml', ''), invalidJob);
  });

  test('deep nesting is refused, not a crash', async () => {
    await assert.rejects(parseJobSpec('a.yaml', `x: ${'['.repeat(200_000)}`), invalidJob);
  });

  test('property: any JSON object round-trips through both parsers', async () => {
    await fc.assert(
      fc.asyncProperty(fc.dictionary(fc.string(), fc.jsonValue()), async (value) => {
        const text = JSON.stringify(value);
        const expected = JSON.parse(text) as unknown;
        assert.deepEqual(await parseJobSpec('a.json', text), expected);
        assert.deepEqual(await parseJobSpec('a.yaml', text), expected);
      }),
      { numRuns: 200 },
    );
  });

  test('property: arbitrary text is parsed or refused with INVALID_JOB, never another error', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), async (text) => {
        try {
          await parseJobSpec('a.yaml', text);
        } catch (error) {
          assert.equal((error as { code?: string }).code, 'INVALID_JOB', String(error));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('readJobSpecFile', () => {
  test('a malformed file is a refusal the caller can catch, never an unhandled rejection', async () => {
    const path = join(tmp, 'bad.json');
    await writeFile(path, '{bad');
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      await assert.rejects(readJobSpecFile(path), { code: 'INVALID_JOB' });
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  test('a JSON key given twice in one object is refused (the last would win silently)', async () => {
    assert.equal(duplicateJsonKey('{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}'), null);
    assert.equal(duplicateJsonKey('{"a\\u0062":1,"ab":2}'), 'ab');
    const path = join(tmp, 'twice.json');
    await writeFile(path, '{"version":1,"project":"p","command":["echo","ok"],"command":["sh","-c","evil"]}');
    await assert.rejects(readJobSpecFile(path), { code: 'INVALID_JOB', message: /"command" twice/ });
  });

  test('reads a file and standard input', async () => {
    const path = join(tmp, 'job.yml');
    await writeFile(path, YAML_SPEC);
    assert.deepEqual(await readJobSpecFile(path), EXPECTED);
    assert.deepEqual(
      await readJobSpecFile('-', Readable.from([Buffer.from(JSON.stringify(EXPECTED))])),
      EXPECTED,
    );
  });

  test('a file over 8 MiB is refused without being parsed', async () => {
    const path = join(tmp, 'big.json');
    await writeFile(path, Buffer.alloc(MAX_SPEC_FILE_BYTES + 1, 0x20));
    await assert.rejects(readJobSpecFile(path), { ...invalidJob, message: /larger than 8388608 bytes/ });
    const chunks = Array.from({ length: 9 }, () => Buffer.alloc(1024 * 1024, 0x20));
    await assert.rejects(readJobSpecFile('-', Readable.from(chunks)), {
      ...invalidJob,
      message: /standard input/,
    });
  });

  test('a missing file, a directory and non-UTF-8 are INVALID_JOB', async () => {
    await assert.rejects(readJobSpecFile(join(tmp, 'absent.yaml')), invalidJob);
    await assert.rejects(readJobSpecFile(tmp), { ...invalidJob, message: /not a regular file/ });
    const path = join(tmp, 'latin1.yaml');
    await writeFile(path, Buffer.from([0x61, 0x3a, 0x20, 0xe9, 0x0a]));
    await assert.rejects(readJobSpecFile(path), { ...invalidJob, message: /UTF-8/ });
  });
});

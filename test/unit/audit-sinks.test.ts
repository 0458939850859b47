import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { signV4 } from '../../src/audit/sigv4.js';
import { type CheckpointSink, checkpointObjectName, parseCheckpointSink } from '../../src/audit/sinks.js';
import { AirlockError } from '../../src/errors.js';

/**
 * Checkpoint sinks against the real things: a temporary directory, and loopback node:http
 * servers standing in for an HTTP endpoint and an S3 bucket. The SigV4 signer is checked
 * against the worked examples AWS publishes.
 */

const ORIGIN = 'airlock.example/audit';

/** A C2SP checkpoint note of `size`; `root` varies the bytes for the same size (a fork). */
function note(size: number, root = 'A'): string {
  const rootHash = Buffer.alloc(32, root).toString('base64');
  const signature = Buffer.alloc(68, 7).toString('base64');
  return `${ORIGIN}\n${size}\n${rootHash}\n\n\u2014 ${ORIGIN} ${signature}\n`;
}

function isExportFailure(error: unknown): boolean {
  return error instanceof AirlockError && error.code === 'CHECKPOINT_EXPORT_FAILED';
}

function configError(pattern?: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof AirlockError, `an AirlockError, got ${String(error)}`);
    assert.equal(error.code, 'INVALID_CONFIG');
    assert.match(error.message, /AIRLOCK_CHECKPOINT_SINK/);
    if (pattern !== undefined) assert.match(error.message, pattern);
    return true;
  };
}

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-sinks-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const S3_ENV = { AWS_ACCESS_KEY_ID: 'AKIDTESTSINK', AWS_SECRET_ACCESS_KEY: 'secret/key+never-shown' };

describe('checkpointObjectName', () => {
  it('pads the tree size to 20 digits, so names sort as sizes do', () => {
    assert.equal(checkpointObjectName(0), 'checkpoint-00000000000000000000.txt');
    assert.equal(checkpointObjectName(42), 'checkpoint-00000000000000000042.txt');
    assert.equal(checkpointObjectName(Number.MAX_SAFE_INTEGER), 'checkpoint-00009007199254740991.txt');
    assert.ok(checkpointObjectName(9) < checkpointObjectName(10));
  });

  it('refuses what is not a tree size', () => {
    for (const size of [-1, 1.5, Number.NaN, 2 ** 53])
      assert.throws(() => checkpointObjectName(size), RangeError);
  });
});

describe('parseCheckpointSink', () => {
  it('refuses a relative directory, an unknown kind and an empty setting', () => {
    assert.throws(() => parseCheckpointSink('dir:relative/path', {}), configError(/absolute/));
    assert.throws(() => parseCheckpointSink('dir:', {}), configError(/absolute/));
    assert.throws(() => parseCheckpointSink('ftp://example.com/x', {}), configError(/"ftp:"/));
    assert.throws(() => parseCheckpointSink('/var/lib/checkpoints', {}), configError());
    assert.throws(() => parseCheckpointSink('', {}), configError());
  });

  it('refuses credentials in a URL without repeating them', () => {
    for (const text of ['https://alice:hunter2@sink.example/cp', 'http://alice:hunter2@127.0.0.1/cp']) {
      assert.throws(
        () => parseCheckpointSink(text, {}),
        (error: unknown) => configError(/credentials/)(error) && !String(error).includes('hunter2'),
      );
    }
    assert.throws(
      () => parseCheckpointSink('s3://bucket-a?endpoint=http://alice:hunter2@127.0.0.1:9000', S3_ENV),
      (error: unknown) => configError(/credentials/)(error) && !String(error).includes('hunter2'),
    );
  });

  it('sends a token only over https or to loopback, and keeps it and the query out of the description', () => {
    const env = { AIRLOCK_CHECKPOINT_SINK_TOKEN: 'tok-123-secret' };
    assert.throws(() => parseCheckpointSink('http://sink.example/cp', env), configError(/https/));
    assert.throws(
      () => parseCheckpointSink('https://sink.example/cp', { AIRLOCK_CHECKPOINT_SINK_TOKEN: '' }),
      configError(/empty/),
    );
    assert.throws(
      () => parseCheckpointSink('https://sink.example/cp', { AIRLOCK_CHECKPOINT_SINK_TOKEN: 'a b' }),
      configError(),
    );
    const sink = parseCheckpointSink('https://sink.example/cp?key=query-secret', env);
    assert.equal(sink.description, 'HTTP endpoint https://sink.example/cp');
    assert.ok(parseCheckpointSink('http://127.0.0.1:8080/cp', env).description.includes('127.0.0.1:8080'));
  });

  it('refuses an s3 sink without credentials', () => {
    assert.throws(() => parseCheckpointSink('s3://audit-bucket', {}), configError(/AWS_ACCESS_KEY_ID/));
    assert.throws(
      () => parseCheckpointSink('s3://audit-bucket', { AWS_ACCESS_KEY_ID: 'AKID' }),
      configError(/AWS_SECRET_ACCESS_KEY/),
    );
    assert.throws(
      () => parseCheckpointSink('s3://audit-bucket', { ...S3_ENV, AWS_ACCESS_KEY_ID: '' }),
      configError(/AWS_ACCESS_KEY_ID/),
    );
  });

  it('refuses bad bucket names, ".." in the prefix and unknown parameters', () => {
    for (const bucket of ['ab', 'Audit', 'audit_bucket', 'a'.repeat(64), '-audit', 'audit-', 'a..b', ''])
      assert.throws(() => parseCheckpointSink(`s3://${bucket}/x`, S3_ENV), configError(/bucket name/));
    for (const prefix of ['../other', 'a/../b', 'a//b', './a', 'a b'])
      assert.throws(() => parseCheckpointSink(`s3://audit-bucket/${prefix}`, S3_ENV), configError(/prefix/));
    assert.throws(
      () => parseCheckpointSink('s3://audit-bucket?endpont=http://x', S3_ENV),
      configError(/endpont/),
    );
    assert.throws(
      () => parseCheckpointSink('s3://audit-bucket?region=a&region=b', S3_ENV),
      configError(/twice/),
    );
    assert.throws(
      () => parseCheckpointSink('s3://audit-bucket?endpoint=http://127.0.0.1:9000/path', S3_ENV),
      configError(/endpoint/),
    );
    assert.throws(
      () => parseCheckpointSink('s3://audit-bucket?endpoint=ftp://127.0.0.1', S3_ENV),
      configError(/endpoint/),
    );
  });

  it('defaults to AWS in us-east-1, and never names a secret', () => {
    const env = { ...S3_ENV, AWS_SESSION_TOKEN: 'session-token-secret' };
    const aws = parseCheckpointSink('s3://audit.bucket-1/airlock/prod/', env);
    assert.equal(
      aws.description,
      'S3 bucket audit.bucket-1/airlock/prod at https://s3.us-east-1.amazonaws.com (region us-east-1)',
    );
    const minio = parseCheckpointSink(
      's3://audit-bucket?endpoint=http://127.0.0.1:9000&region=eu-west-3',
      env,
    );
    assert.equal(minio.description, 'S3 bucket audit-bucket at http://127.0.0.1:9000 (region eu-west-3)');
    for (const sink of [aws, minio]) {
      assert.ok(!sink.description.includes(env.AWS_SECRET_ACCESS_KEY));
      assert.ok(!sink.description.includes(env.AWS_SESSION_TOKEN));
    }
  });
});

describe('directory sink', () => {
  async function exported(dir: string): Promise<string[]> {
    return (await readdir(dir)).sort();
  }

  it('writes the checkpoint once and latest.txt, 0644 whatever the umask, with no temporary left', async (t) => {
    const dir = await tempDir(t);
    const sink = parseCheckpointSink(`dir:${dir}/`, {});
    assert.equal(sink.description, `directory ${dir}`);
    const previous = process.umask(0o077);
    try {
      await sink.put({ treeSize: 42, note: note(42) });
    } finally {
      process.umask(previous);
    }
    const name = checkpointObjectName(42);
    assert.deepEqual(await exported(dir), [name, 'latest.txt']);
    for (const file of [name, 'latest.txt']) {
      assert.equal(await readFile(join(dir, file), 'utf8'), note(42));
      assert.equal((await stat(join(dir, file))).mode & 0o777, 0o644, file);
    }

    await sink.put({ treeSize: 43, note: note(43) });
    assert.deepEqual(await exported(dir), [name, checkpointObjectName(43), 'latest.txt']);
    assert.equal(await readFile(join(dir, 'latest.txt'), 'utf8'), note(43));
    assert.equal(await readFile(join(dir, name), 'utf8'), note(42), 'an older checkpoint stays as it was');
  });

  it('takes a retry with identical bytes as success', async (t) => {
    const dir = await tempDir(t);
    const sink = parseCheckpointSink(`dir:${dir}`, {});
    await sink.put({ treeSize: 7, note: note(7) });
    const before = await stat(join(dir, checkpointObjectName(7)));
    await sink.put({ treeSize: 7, note: note(7) });
    const after = await stat(join(dir, checkpointObjectName(7)));
    assert.equal(after.ino, before.ino, 'the file was not replaced');
    assert.deepEqual(await exported(dir), [checkpointObjectName(7), 'latest.txt']);
  });

  it('reports two different checkpoints of one size as a fork and changes nothing', async (t) => {
    const dir = await tempDir(t);
    const sink = parseCheckpointSink(`dir:${dir}`, {});
    await sink.put({ treeSize: 7, note: note(7, 'A') });
    await assert.rejects(sink.put({ treeSize: 7, note: note(7, 'B') }), (error: unknown) => {
      assert.ok(isExportFailure(error));
      assert.match(
        String(error),
        /two different checkpoints of the same tree size.*forked or was rewritten/s,
      );
      return true;
    });
    assert.equal(await readFile(join(dir, checkpointObjectName(7)), 'utf8'), note(7, 'A'));
    assert.equal(await readFile(join(dir, 'latest.txt'), 'utf8'), note(7, 'A'));
    assert.deepEqual(await exported(dir), [checkpointObjectName(7), 'latest.txt']);
  });

  it('does not follow a symlink planted at the checkpoint name, even to identical bytes', async (t) => {
    const dir = await tempDir(t);
    const elsewhere = await tempDir(t);
    const decoy = join(elsewhere, 'decoy.txt');
    await writeFile(decoy, note(9));
    await symlink(decoy, join(dir, checkpointObjectName(9)));
    const dangling = join(elsewhere, 'created-through-link.txt');
    await symlink(dangling, join(dir, checkpointObjectName(10)));
    const sink = parseCheckpointSink(`dir:${dir}`, {});

    for (const size of [9, 10])
      await assert.rejects(sink.put({ treeSize: size, note: note(size) }), (error: unknown) => {
        assert.ok(isExportFailure(error));
        assert.match(String(error), /symbolic link/);
        return true;
      });
    assert.equal(await readFile(decoy, 'utf8'), note(9), 'the link target is untouched');
    assert.deepEqual(
      await readdir(elsewhere),
      ['decoy.txt'],
      'nothing was written through the dangling link',
    );
    assert.ok(
      !(await exported(dir)).includes('latest.txt'),
      'latest.txt is not moved past a refused checkpoint',
    );
  });

  it('fails on a missing directory, naming it, and creates nothing', async (t) => {
    const parent = await tempDir(t);
    const missing = join(parent, 'not-here', 'checkpoints');
    const sink = parseCheckpointSink(`dir:${missing}`, {});
    await assert.rejects(sink.put({ treeSize: 1, note: note(1) }), (error: unknown) => {
      assert.ok(isExportFailure(error));
      assert.ok(String(error).includes(missing));
      return true;
    });
    assert.deepEqual(await readdir(parent), []);
  });

  it('refuses a note that is not of the tree size it is filed under', async (t) => {
    const dir = await tempDir(t);
    const sink = parseCheckpointSink(`dir:${dir}`, {});
    await assert.rejects(sink.put({ treeSize: 6, note: note(5) }), RangeError);
    assert.deepEqual(await exported(dir), []);
  });
});

interface Received {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** A loopback server; `answer` decides each response. Closed (connections too) after the test. */
async function loopback(
  t: TestContext,
  answer: (request: Received, response: ServerResponse) => void,
): Promise<{ base: string; received: Received[] }> {
  const received: Received[] = [];
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const entry = {
        method: request.method ?? '',
        url: request.url ?? '',
        headers: request.headers,
        body: Buffer.concat(chunks),
      };
      received.push(entry);
      answer(entry, response);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as AddressInfo;
  return { base: `http://127.0.0.1:${port}`, received };
}

describe('HTTP endpoint sink', () => {
  const TOKEN = 'cp-token-0123456789-do-not-print';
  const env = { AIRLOCK_CHECKPOINT_SINK_TOKEN: TOKEN };

  it('POSTs the note as UTF-8 text with its size and the bearer token', async (t) => {
    const server = await loopback(t, (_request, response) => response.writeHead(204).end());
    const sink = parseCheckpointSink(`${server.base}/v1/checkpoints?tenant=a`, env);
    const text = note(42).replace(ORIGIN, 'airlock.example/audité');
    await sink.put({ treeSize: 42, note: text });
    assert.equal(server.received.length, 1);
    const [request] = server.received;
    assert.ok(request);
    assert.equal(request.method, 'POST');
    assert.equal(request.url, '/v1/checkpoints?tenant=a');
    assert.equal(request.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(request.headers['airlock-checkpoint-size'], '42');
    assert.equal(request.headers.authorization, `Bearer ${TOKEN}`);
    assert.deepEqual(request.body, Buffer.from(text, 'utf8'));
  });

  it('sends no Authorization header without a token', async (t) => {
    const server = await loopback(t, (_request, response) => response.writeHead(200).end('ok'));
    await parseCheckpointSink(server.base, {}).put({ treeSize: 1, note: note(1) });
    assert.equal(server.received[0]?.headers.authorization, undefined);
  });

  it('fails on a 500 with the status and a short printable excerpt that never holds the token', async (t) => {
    const server = await loopback(t, (request, response) => {
      // A hostile or careless endpoint echoing the request headers back, with escapes, at length.
      response
        .writeHead(500, { 'content-type': 'text/plain' })
        .end(`boom\x1b[31m ${String(request.headers.authorization)}\n${'x'.repeat(5000)}`);
    });
    const sink = parseCheckpointSink(server.base, env);
    await assert.rejects(sink.put({ treeSize: 3, note: note(3) }), (error: unknown) => {
      assert.ok(isExportFailure(error));
      const message = (error as Error).message;
      assert.match(message, /HTTP 500: boom/);
      assert.ok(!message.includes(TOKEN), 'the token is not in the message');
      assert.ok(
        [...message].every((char) => char >= ' ' && char !== '\x7f'),
        'no control characters',
      );
      assert.ok(message.length < 1200, `bounded, got ${message.length} characters`);
      return true;
    });
  });

  it('does not follow a redirect', async (t) => {
    const server = await loopback(t, (request, response) => {
      if (request.url === '/moved') response.writeHead(204).end();
      else response.writeHead(307, { location: '/moved' }).end();
    });
    await assert.rejects(
      parseCheckpointSink(`${server.base}/cp`, env).put({ treeSize: 1, note: note(1) }),
      (error) => isExportFailure(error) && /HTTP 307/.test(String(error)),
    );
    assert.deepEqual(
      server.received.map((request) => request.url),
      ['/cp'],
    );
  });

  it('gives up when the caller cancels, and fails when nobody listens', async (t) => {
    const server = await loopback(t, () => {
      // Never answers.
    });
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(), 50);
    await assert.rejects(
      parseCheckpointSink(server.base, env).put({ treeSize: 1, note: note(1) }, controller.signal),
      (error) => isExportFailure(error) && /cancelled/.test(String(error)),
    );
    assert.ok(Date.now() - started < 5000);

    // A port that was just free: nobody listens there.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const refused = parseCheckpointSink(`http://127.0.0.1:${port}/cp`, {});
    await assert.rejects(
      refused.put({ treeSize: 1, note: note(1) }),
      (error) => isExportFailure(error) && /request failed/.test(String(error)),
    );
  });
});

/** A stand-in for an S3 bucket: objects by path, If-None-Match: * honoured with 412, and every
 * request's SigV4 Authorization checked for shape, scope, signed headers and payload hash. */
async function fakeS3(
  t: TestContext,
  options: { region: string; accessKeyId: string; secretAccessKey: string; sessionToken?: string },
) {
  const objects = new Map<string, Buffer>();
  const authorizations: { method: string; url: string; signedHeaders: string }[] = [];
  let refuseWith: number | undefined;
  const server = await loopback(t, (request, response) => {
    const authorization = String(request.headers.authorization);
    const shape =
      /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request,SignedHeaders=([a-z0-9;-]+),Signature=[0-9a-f]{64}$/.exec(
        authorization,
      );
    const amzDate = String(request.headers['x-amz-date']);
    const bodyHash = createHash('sha256').update(request.body).digest('hex');
    const problems = [
      shape === null && 'Authorization shape',
      shape?.[1] !== options.accessKeyId && 'access key',
      shape?.[2] !== amzDate.slice(0, 8) && 'scope date',
      shape?.[3] !== options.region && 'scope region',
      !/^\d{8}T\d{6}Z$/.test(amzDate) && 'x-amz-date',
      request.headers['x-amz-content-sha256'] !== bodyHash && 'payload hash',
      request.headers['x-amz-security-token'] !== options.sessionToken && 'session token',
    ].filter((problem) => problem !== false);
    // The signature over what actually arrived (host with port, path as sent) must be the
    // one in the header: the signer signed what fetch sent. Its value vs AWS is the KAT's job.
    if (shape !== null) {
      const signedNames = String(shape[4]).split(';');
      const extra: Record<string, string> = {};
      for (const name of signedNames)
        if (!['host', 'x-amz-date', 'x-amz-content-sha256', 'x-amz-security-token'].includes(name))
          extra[name] = String(request.headers[name]);
      const date = new Date(
        amzDate.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, '$1-$2-$3T$4:$5:$6Z'),
      );
      const expected = signV4(
        {
          method: request.method,
          url: new URL(request.url, `http://${request.headers.host}`),
          headers: extra,
          body: request.body,
        },
        options,
        options.region,
        's3',
        date,
      );
      if (expected.authorization !== authorization) problems.push('signature over what was sent');
      if (Math.abs(date.getTime() - Date.now()) > 5 * 60_000) problems.push('clock');
      authorizations.push({ method: request.method, url: request.url, signedHeaders: String(shape[4]) });
    }
    if (problems.length > 0) {
      response
        .writeHead(403)
        .end(`<Error><Code>SignatureDoesNotMatch</Code><Message>${problems.join(', ')}</Message></Error>`);
      return;
    }
    if (refuseWith !== undefined) {
      response
        .writeHead(refuseWith)
        .end(
          `<Error><Code>AccessDenied</Code><Message>token ${String(request.headers['x-amz-security-token'])}</Message></Error>`,
        );
      return;
    }
    const path = request.url;
    if (request.method === 'PUT') {
      if (request.headers['if-none-match'] === '*' && objects.has(path)) {
        response.writeHead(412).end('<Error><Code>PreconditionFailed</Code></Error>');
        return;
      }
      objects.set(path, request.body);
      response.writeHead(200).end();
    } else if (request.method === 'GET') {
      const object = objects.get(path);
      if (object === undefined) response.writeHead(404).end('<Error><Code>NoSuchKey</Code></Error>');
      else response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end(object);
    } else {
      response.writeHead(405).end();
    }
  });
  return {
    ...server,
    objects,
    authorizations,
    refuse(status: number) {
      refuseWith = status;
    },
  };
}

describe('S3 sink (loopback stand-in)', () => {
  const credentials = {
    region: 'eu-west-3',
    accessKeyId: 'AKIDTESTSINK',
    secretAccessKey: 'secret/key+never-shown',
    sessionToken: 'session-token-never-shown',
  };
  const env = {
    AWS_ACCESS_KEY_ID: credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    AWS_SESSION_TOKEN: credentials.sessionToken,
  };

  async function setUp(
    t: TestContext,
  ): Promise<{ s3: Awaited<ReturnType<typeof fakeS3>>; sink: CheckpointSink }> {
    const s3 = await fakeS3(t, credentials);
    const sink = parseCheckpointSink(
      `s3://audit-bucket/airlock/prod?endpoint=${s3.base}&region=eu-west-3`,
      env,
    );
    return { s3, sink };
  }

  const objectPath = (name: string) => `/audit-bucket/airlock/prod/${name}`;

  it('PUTs the checkpoint with If-None-Match: * and then latest.txt, path-style and signed', async (t) => {
    const { s3, sink } = await setUp(t);
    await sink.put({ treeSize: 42, note: note(42) });
    assert.deepEqual(
      [...s3.objects.keys()],
      [objectPath(checkpointObjectName(42)), objectPath('latest.txt')],
    );
    for (const body of s3.objects.values()) assert.deepEqual(body, Buffer.from(note(42)));
    assert.deepEqual(s3.authorizations, [
      {
        method: 'PUT',
        url: objectPath(checkpointObjectName(42)),
        signedHeaders: 'content-type;host;if-none-match;x-amz-content-sha256;x-amz-date;x-amz-security-token',
      },
      {
        method: 'PUT',
        url: objectPath('latest.txt'),
        signedHeaders: 'content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token',
      },
    ]);
    assert.equal(s3.received[0]?.headers['content-type'], 'text/plain; charset=utf-8');
  });

  it('takes a retry with identical bytes as success, after reading the object back', async (t) => {
    const { s3, sink } = await setUp(t);
    await sink.put({ treeSize: 5, note: note(5) });
    await sink.put({ treeSize: 5, note: note(5) });
    assert.deepEqual(s3.received.map((request) => `${request.method} ${request.url}`).slice(2), [
      `PUT ${objectPath(checkpointObjectName(5))}`,
      `GET ${objectPath(checkpointObjectName(5))}`,
      `PUT ${objectPath('latest.txt')}`,
    ]);
  });

  it('reports a different object of the same size as a fork and leaves both objects alone', async (t) => {
    const { s3, sink } = await setUp(t);
    await sink.put({ treeSize: 5, note: note(5, 'A') });
    await assert.rejects(sink.put({ treeSize: 5, note: note(5, 'B') }), (error: unknown) => {
      assert.ok(isExportFailure(error));
      assert.match(String(error), /forked or was rewritten/);
      return true;
    });
    assert.deepEqual(s3.objects.get(objectPath(checkpointObjectName(5))), Buffer.from(note(5, 'A')));
    assert.deepEqual(s3.objects.get(objectPath('latest.txt')), Buffer.from(note(5, 'A')));
  });

  it('fails on a refusal with the status, and without the secret key or session token', async (t) => {
    const { s3, sink } = await setUp(t);
    s3.refuse(403);
    await assert.rejects(sink.put({ treeSize: 1, note: note(1) }), (error: unknown) => {
      assert.ok(isExportFailure(error));
      const message = (error as Error).message;
      assert.match(message, /HTTP 403: <Error><Code>AccessDenied/);
      assert.ok(!message.includes(credentials.sessionToken), 'an echoed session token is redacted');
      assert.ok(!message.includes(credentials.secretAccessKey));
      return true;
    });
    assert.equal(s3.objects.size, 0);
  });
});

describe('signV4 against the examples AWS publishes', () => {
  // "Signature Calculations for the Authorization Header: Transferring Payload in a Single
  // Chunk (AWS Signature Version 4)", Amazon S3 API Reference, section "Examples: Signature
  // Calculations": https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
  // The expected Authorization values below are copied from that page, not computed here.
  const example = {
    accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
    secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  };
  const date = new Date('2013-05-24T00:00:00Z');
  const EMPTY = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

  it('Example: GET Object (Range header, empty payload)', () => {
    const headers = signV4(
      {
        method: 'GET',
        url: new URL('https://examplebucket.s3.amazonaws.com/test.txt'),
        headers: { Range: 'bytes=0-9' },
        body: '',
      },
      example,
      'us-east-1',
      's3',
      date,
    );
    assert.equal(
      headers.authorization,
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,' +
        'SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,' +
        'Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
    );
    assert.equal(headers['x-amz-content-sha256'], EMPTY);
    assert.equal(headers['x-amz-date'], '20130524T000000Z');
    assert.equal(headers.host, 'examplebucket.s3.amazonaws.com');
    assert.equal(headers.range, 'bytes=0-9');
  });

  it('Example: PUT Object (Date and x-amz-storage-class headers, "$" in the key, signed payload)', () => {
    const headers = signV4(
      {
        method: 'PUT',
        url: new URL('https://examplebucket.s3.amazonaws.com/test$file.text'),
        headers: { Date: 'Fri, 24 May 2013 00:00:00 GMT', 'x-amz-storage-class': 'REDUCED_REDUNDANCY' },
        body: 'Welcome to Amazon S3.',
      },
      example,
      'us-east-1',
      's3',
      date,
    );
    assert.equal(
      headers['x-amz-content-sha256'],
      '44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072',
    );
    assert.equal(
      headers.authorization,
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,' +
        'SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,' +
        'Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd',
    );
  });

  it('Example: GET Bucket (List Objects), query parameters sorted', () => {
    const headers = signV4(
      {
        method: 'GET',
        url: new URL('https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J'),
        headers: {},
        body: '',
      },
      example,
      'us-east-1',
      's3',
      date,
    );
    assert.equal(
      headers.authorization,
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,' +
        'SignedHeaders=host;x-amz-content-sha256;x-amz-date,' +
        'Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7',
    );
  });

  it('signs a payload hash the caller gives (UNSIGNED-PAYLOAD) and a session token', () => {
    const request = {
      method: 'PUT',
      url: new URL('https://examplebucket.s3.amazonaws.com/test.txt'),
      headers: {},
      body: 'anything',
      payloadHash: 'UNSIGNED-PAYLOAD',
    };
    const unsigned = signV4(request, example, 'us-east-1', 's3', date);
    assert.equal(unsigned['x-amz-content-sha256'], 'UNSIGNED-PAYLOAD');
    const withToken = signV4(request, { ...example, sessionToken: 'tok' }, 'us-east-1', 's3', date);
    assert.equal(withToken['x-amz-security-token'], 'tok');
    assert.match(
      String(withToken.authorization),
      /SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,/,
    );
    assert.notEqual(withToken.authorization, unsigned.authorization);
  });

  it('refuses headers it sets itself, and header values with line breaks', () => {
    const base = { method: 'GET', url: new URL('https://b.example/k'), body: '' };
    for (const headers of [
      { Host: 'evil.example' },
      { 'X-Amz-Date': '20200101T000000Z' },
      { a: 'x\r\nb: y' },
    ])
      assert.throws(() => signV4({ ...base, headers }, example, 'us-east-1', 's3', date), TypeError);
  });
});

import { spawn } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign } from 'node:crypto';
import { constants } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import type { JobSpecV1 } from '../api/types.js';
import { readJobSpecFile } from '../client/job-spec-file.js';
import { DURATION_FORMS, parseDuration } from '../config/units.js';
import { AirlockError, describeError } from '../errors.js';
import {
  ed25519Message,
  MAX_VALIDITY_MS,
  PAYLOAD_TYPE,
  payloadBytes,
  type SignedJob,
} from '../signing/envelope.js';
import { parsePublicKey } from '../signing/public-key.js';
import { SSHSIG_NAMESPACE } from '../signing/sshsig.js';
import type { CliContext, CommandResult } from './io.js';

/**
 * `airlock sign FILE --key KEY [--ttl 15m] [-o OUT]`: signs a job spec for
 * `airlock submit`. An OpenSSH private key signs through `ssh-keygen -Y sign -n airlock`
 * (so the key, its passphrase and ssh-agent stay with OpenSSH); an Ed25519 key in PKCS#8
 * PEM signs here. The signature covers the canonical bytes of the spec with a fresh nonce,
 * the issue time and the expiry (docs/signing.md).
 */

export interface SignOptions {
  key: string;
  ttl?: string;
  output?: string;
}

const MAX_KEY_FILE = 64 * 1024;
const SSH_KEYGEN_TIMEOUT_MS = 120_000;

function sshKeygenSign(keyFile: string, data: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    // stdin carries the data, so a passphrase is asked on the terminal (or ssh-agent answers).
    const child = spawn('ssh-keygen', ['-q', '-Y', 'sign', '-n', SSHSIG_NAMESPACE, '-f', keyFile], {
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: SSH_KEYGEN_TIMEOUT_MS,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (error) =>
      reject(
        new AirlockError(
          'INVALID_OPTION',
          `cannot run ssh-keygen (apt-get install openssh-client): ${describeError(error)}`,
        ),
      ),
    );
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else
        reject(
          new AirlockError(
            'INVALID_OPTION',
            `ssh-keygen -Y sign failed (exit ${code}): ${Buffer.concat(err).toString('utf8').trim().slice(0, 500)}`,
          ),
        );
    });
    child.stdin.end(data);
  });
}

/** A regular file of at most 64 KiB (no FIFO to hang on, no /dev/zero to exhaust memory). */
async function readKeyFile(path: string): Promise<Buffer> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw new AirlockError('INVALID_OPTION', `--key: cannot read ${path}: ${describeError(error)}`);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new AirlockError('INVALID_OPTION', `--key: ${path} is not a regular file`);
    if (info.size > MAX_KEY_FILE)
      throw new AirlockError('INVALID_OPTION', `--key: ${path} is too large for a key`);
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

export async function signCommand(
  context: CliContext,
  file: string,
  options: SignOptions,
): Promise<CommandResult> {
  const ttl = parseDuration(options.ttl ?? '15m');
  if (ttl === null || ttl < 1000 || ttl > MAX_VALIDITY_MS)
    throw new AirlockError(
      'INVALID_OPTION',
      `--ttl: must be ${DURATION_FORMS}, from 1s to 24h, got "${options.ttl}"`,
    );
  const spec = (await readJobSpecFile(file)) as unknown as JobSpecV1;
  const keyText = await readKeyFile(options.key);
  const now = Math.floor(Date.now() / 1000) * 1000;
  const payload = {
    type: PAYLOAD_TYPE,
    spec,
    nonce: randomBytes(24).toString('base64url'),
    issuedAt: new Date(now).toISOString().replace('.000Z', 'Z'),
    expiresAt: new Date(now + ttl).toISOString().replace('.000Z', 'Z'),
  } as const;
  const bytes = payloadBytes(payload);
  let envelope: SignedJob;
  if (keyText.toString('utf8').includes('-----BEGIN PRIVATE KEY-----')) {
    let privateKey: ReturnType<typeof createPrivateKey>;
    try {
      privateKey = createPrivateKey({ key: keyText, format: 'pem' });
    } catch (error) {
      throw new AirlockError('INVALID_OPTION', `--key: not a PKCS#8 private key: ${describeError(error)}`);
    }
    if (privateKey.asymmetricKeyType !== 'ed25519')
      throw new AirlockError(
        'INVALID_OPTION',
        '--key: a PEM key must be Ed25519 (other keys sign through ssh-keygen)',
      );
    const publicPem = createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString();
    envelope = {
      payload: bytes.toString('base64'),
      signature: {
        format: 'ed25519',
        key: parsePublicKey(publicPem).fingerprint,
        value: sign(null, ed25519Message(bytes), privateKey).toString('base64'),
      },
    };
  } else {
    envelope = {
      payload: bytes.toString('base64'),
      signature: { format: 'sshsig', value: await sshKeygenSign(options.key, bytes) },
    };
  }
  // What is signed, said before it leaves: the spec as the server will read it.
  context.stderr.write(
    `airlock: signing a job of project "${String(spec.project)}": ${JSON.stringify(spec.command)} (payload sha256 ${createHash('sha256').update(bytes).digest('hex')})\n`,
  );
  const text = `${JSON.stringify(envelope, null, 2)}\n`;
  if (options.output !== undefined) {
    await writeFile(options.output, text, { mode: 0o644 });
    context.stderr.write(`airlock: signed ${file} → ${options.output} (valid until ${payload.expiresAt})\n`);
  } else context.stdout.write(text);
  return 0;
}

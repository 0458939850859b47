import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { AirlockError, isAirlockError } from '../../src/errors.js';
import { parsePublicKey, publicKeyFromBlob, type SigningPublicKey } from '../../src/signing/public-key.js';
import { type ParsedSshSig, parseSshSig, SSHSIG_NAMESPACE, verifySshSig } from '../../src/signing/sshsig.js';

/**
 * SSH signatures checked against the real thing: keys made and messages signed by OpenSSH's
 * ssh-keygen, fingerprints compared with what ssh-keygen prints, and every fixture also
 * accepted by `ssh-keygen -Y verify` (so a passing test is not two copies of one mistake).
 * The encodings built by hand below follow RFC 4251 §5 and PROTOCOL.sshsig independently of
 * the module under test.
 */

const execFileAsync = promisify(execFile);
const MESSAGE = Buffer.from('{"nonce":"0123456789abcdef","spec":{"project":"demo"}}');
const SIGNER = 'signer@example.org';

// ─── Independent encoders (RFC 4251 §5) ────────────────────────────────────────────────────────

function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value, 0);
  return out;
}

function str(value: Buffer | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value;
  return Buffer.concat([u32(bytes.length), bytes]);
}

function armor(bytes: Buffer): string {
  const body = bytes.toString('base64').match(/.{1,70}/g) ?? [];
  return ['-----BEGIN SSH SIGNATURE-----', ...body, '-----END SSH SIGNATURE-----', ''].join('\n');
}

function dearmor(text: string): Buffer {
  return Buffer.from(text.trim().split('\n').slice(1, -1).join(''), 'base64');
}

/** The fields of an SSHSIG blob, to rebuild it with one of them changed. */
interface SshSigFields {
  magic: Buffer;
  version: number;
  publicKey: Buffer;
  namespace: Buffer;
  reserved: Buffer;
  hashAlgorithm: Buffer;
  signature: Buffer;
}

function splitSshSig(bytes: Buffer): SshSigFields {
  let at = 10;
  const next = (): Buffer => {
    const length = bytes.readUInt32BE(at);
    const out = bytes.subarray(at + 4, at + 4 + length);
    at += 4 + length;
    return out;
  };
  return {
    magic: bytes.subarray(0, 6),
    version: bytes.readUInt32BE(6),
    publicKey: next(),
    namespace: next(),
    reserved: next(),
    hashAlgorithm: next(),
    signature: next(),
  };
}

function joinSshSig(fields: SshSigFields): Buffer {
  return Buffer.concat([
    fields.magic,
    u32(fields.version),
    str(fields.publicKey),
    str(fields.namespace),
    str(fields.reserved),
    str(fields.hashAlgorithm),
    str(fields.signature),
  ]);
}

/** What an SSH signature signs (PROTOCOL.sshsig §"Signed Data"). */
function signedData(namespace: string, hash: 'sha256' | 'sha512', message: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from('SSHSIG'),
    str(namespace),
    str(''),
    str(hash),
    str(createHash(hash).update(message).digest()),
  ]);
}

// ─── ssh-keygen ────────────────────────────────────────────────────────────────────────────────

async function sshKeygen(...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('ssh-keygen', args, { encoding: 'utf8' });
  return stdout;
}

interface KeyFixture {
  readonly path: string;
  readonly pubText: string;
  /** The key as `airlock keys add` would register it: parsed from KEY.pub. */
  readonly registered: SigningPublicKey;
}

function rejects(code: AirlockError['code'], pattern: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isAirlockError(error, code), `expected AirlockError ${code}, got ${String(error)}`);
    assert.match(error.message, pattern);
    return true;
  };
}

describe('SSH signatures (ssh-keygen -Y sign)', () => {
  let dir = '';
  let counter = 0;
  const keys = new Map<string, KeyFixture>();

  /** Signs MESSAGE (or `message`) with ssh-keygen; returns the armored signature. */
  async function sshSign(
    key: string,
    options: { namespace?: string; message?: Buffer; extra?: string[] } = {},
  ): Promise<{ armored: string; messagePath: string; sigPath: string }> {
    counter += 1;
    const messagePath = join(dir, `message-${counter}`);
    await writeFile(messagePath, options.message ?? MESSAGE);
    const fixture = keys.get(key);
    assert.ok(fixture);
    await sshKeygen(
      '-Y',
      'sign',
      '-n',
      options.namespace ?? SSHSIG_NAMESPACE,
      ...(options.extra ?? []),
      '-f',
      fixture.path,
      messagePath,
    );
    const sigPath = `${messagePath}.sig`;
    return { armored: await readFile(sigPath, 'utf8'), messagePath, sigPath };
  }

  function fixture(name: string): KeyFixture {
    const found = keys.get(name);
    assert.ok(found, `no key fixture ${name}`);
    return found;
  }

  /** As the job verifier does it: the signature's key must be the registered one, then verify with that. */
  function verifiesFor(registered: SigningPublicKey, parsed: ParsedSshSig, message: Buffer): boolean {
    if (parsed.publicKey.fingerprint !== registered.fingerprint) return false;
    return verifySshSig({ ...parsed, publicKey: registered }, message);
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'airlock-sshsig-'));
    const specs: [string, string[]][] = [
      ['ed25519', ['-t', 'ed25519']],
      ['ecdsa', ['-t', 'ecdsa', '-b', '256']],
      // PEM private key, so the test can also make signatures with node:crypto (legacy SHA-1 below).
      ['rsa', ['-t', 'rsa', '-b', '3072', '-m', 'PEM']],
      ['other', ['-t', 'ed25519']],
      ['rsa1024', ['-t', 'rsa', '-b', '1024']],
      ['ecdsa384', ['-t', 'ecdsa', '-b', '384']],
      ['dsa', ['-t', 'dsa']],
    ];
    await Promise.all(
      specs.map(async ([name, args]) => {
        const path = join(dir, name);
        try {
          await sshKeygen('-q', ...args, '-N', '', '-C', `${name}@test`, '-f', path);
        } catch (error) {
          if (name === 'dsa') return; // OpenSSH ≥ 9.8 may be built without DSA
          throw error;
        }
        const pubText = (await readFile(`${path}.pub`, 'utf8')).trim();
        keys.set(name, {
          path,
          pubText,
          // Parsed on use: the refused kinds throw, which their own tests check.
          get registered() {
            return parsePublicKey(pubText);
          },
        });
      }),
    );
  });

  after(async () => {
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  for (const [name, type, signatureAlgorithm] of [
    ['ed25519', 'ssh-ed25519', 'ssh-ed25519'],
    ['ecdsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp256'],
    ['rsa', 'ssh-rsa', 'rsa-sha2-512'],
  ] as const) {
    describe(type, () => {
      test('parses KEY.pub with the fingerprint ssh-keygen -l prints', async () => {
        const { path, pubText, registered } = fixture(name);
        const listed = (await sshKeygen('-l', '-E', 'sha256', '-f', `${path}.pub`)).trim().split(/\s+/);
        assert.equal(registered.type, type);
        assert.equal(registered.fingerprint, listed[1]);
        assert.equal(registered.text, pubText.split(' ').slice(0, 2).join(' '));
        assert.deepEqual(registered.blob, Buffer.from(pubText.split(' ')[1] ?? '', 'base64'));
        // The text form is the stored form: it reads back to the same key.
        assert.equal(parsePublicKey(registered.text).fingerprint, registered.fingerprint);
      });

      test('accepts its signature and refuses a changed message or a flipped byte', async () => {
        const { registered, pubText } = fixture(name);
        const { armored, messagePath, sigPath } = await sshSign(name);
        // Sanity of the fixture: OpenSSH itself accepts it.
        const allowed = join(dir, `allowed-${name}`);
        await writeFile(allowed, `${SIGNER} namespaces="${SSHSIG_NAMESPACE}" ${pubText}\n`);
        const out = execFileSync(
          'ssh-keygen',
          ['-Y', 'verify', '-f', allowed, '-I', SIGNER, '-n', SSHSIG_NAMESPACE, '-s', sigPath],
          { input: await readFile(messagePath), encoding: 'utf8' },
        );
        assert.match(out, /Good "airlock" signature/);

        const parsed = parseSshSig(armored);
        assert.equal(parsed.publicKey.fingerprint, registered.fingerprint);
        assert.equal(parsed.namespace, SSHSIG_NAMESPACE);
        assert.equal(parsed.hashAlgorithm, 'sha512');
        assert.equal(parsed.signatureAlgorithm, signatureAlgorithm);
        assert.equal(verifySshSig(parsed, MESSAGE), true);
        assert.equal(verifiesFor(registered, parsed, MESSAGE), true);

        assert.equal(verifySshSig(parsed, Buffer.concat([MESSAGE, Buffer.from(' ')])), false);
        assert.equal(verifySshSig(parsed, Buffer.alloc(0)), false);
        for (const at of [0, Math.floor(parsed.signature.length / 2), parsed.signature.length - 1]) {
          const flipped = Buffer.from(parsed.signature);
          flipped[at] = (flipped[at] ?? 0) ^ 0x01;
          assert.equal(verifySshSig({ ...parsed, signature: flipped }, MESSAGE), false, `byte ${at}`);
        }
        // The same flip through the armored form: it still parses, and does not verify.
        const bytes = dearmor(armored);
        bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0x80;
        assert.equal(verifySshSig(parseSshSig(armor(bytes)), MESSAGE), false);
      });

      test('a signature in another namespace parses but does not verify', async () => {
        const { armored } = await sshSign(name, { namespace: 'git' });
        const parsed = parseSshSig(armored);
        assert.equal(parsed.namespace, 'git');
        assert.equal(verifySshSig(parsed, MESSAGE), false);
        assert.equal(verifySshSig(parsed, MESSAGE, SSHSIG_NAMESPACE), false);
        assert.equal(verifySshSig(parsed, MESSAGE, 'git'), true);
        // Relabelling the namespace does not help: the signature covers it.
        assert.equal(verifySshSig({ ...parsed, namespace: SSHSIG_NAMESPACE }, MESSAGE), false);
      });

      test('accepts a SHA-256 message hash (-O hashalg=sha256)', async () => {
        const { armored } = await sshSign(name, { extra: ['-O', 'hashalg=sha256'] });
        const parsed = parseSshSig(armored);
        assert.equal(parsed.hashAlgorithm, 'sha256');
        assert.equal(verifySshSig(parsed, MESSAGE), true);
        assert.equal(verifySshSig({ ...parsed, hashAlgorithm: 'sha512' }, MESSAGE), false);
      });

      test('a signature algorithm that does not fit the key is refused', async () => {
        const parsed = parseSshSig((await sshSign(name)).armored);
        for (const other of ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'rsa-sha2-256', 'ssh-rsa', 'x']) {
          if (other === signatureAlgorithm) continue;
          assert.equal(verifySshSig({ ...parsed, signatureAlgorithm: other }, MESSAGE), false, other);
        }
      });
    });
  }

  test('a signature by another key names another fingerprint and does not verify for the registered key', async () => {
    const registered = fixture('ed25519').registered;
    const parsed = parseSshSig((await sshSign('other')).armored);
    assert.equal(verifySshSig(parsed, MESSAGE), true); // valid for the key it carries …
    assert.notEqual(parsed.publicKey.fingerprint, registered.fingerprint); // … which is not ours
    assert.equal(parsed.publicKey.fingerprint, fixture('other').registered.fingerprint);
    assert.equal(verifiesFor(registered, parsed, MESSAGE), false);
    // Even with the fingerprint check skipped, the registered key does not verify it.
    assert.equal(verifySshSig({ ...parsed, publicKey: registered }, MESSAGE), false);
  });

  test('an RSA signature with legacy SHA-1 ("ssh-rsa") is refused, rsa-sha2-256 made alike is accepted', async () => {
    const { registered, path } = fixture('rsa');
    const privateKey = createPrivateKey(await readFile(path, 'utf8'));
    const make = (algorithm: string, hash: 'sha1' | 'sha256'): ParsedSshSig => ({
      publicKey: registered,
      namespace: SSHSIG_NAMESPACE,
      hashAlgorithm: 'sha512',
      signatureAlgorithm: algorithm,
      signature: sign(hash, signedData(SSHSIG_NAMESPACE, 'sha512', MESSAGE), privateKey),
    });
    assert.equal(verifySshSig(make('rsa-sha2-256', 'sha256'), MESSAGE), true);
    assert.equal(verifySshSig(make('ssh-rsa', 'sha1'), MESSAGE), false);
    assert.equal(verifySshSig(make('rsa-sha2-256', 'sha1'), MESSAGE), false);
    const padded = make('rsa-sha2-256', 'sha256');
    const longer = { ...padded, signature: Buffer.concat([Buffer.of(0), padded.signature]) };
    assert.equal(verifySshSig(longer, MESSAGE), false);
    // Also through the wire format, as a client would send it.
    const { armored } = await sshSign('rsa');
    const fields = splitSshSig(dearmor(armored));
    const legacy = make('ssh-rsa', 'sha1');
    fields.signature = Buffer.concat([str('ssh-rsa'), str(legacy.signature)]);
    const parsed = parseSshSig(armor(joinSshSig(fields)));
    assert.equal(parsed.signatureAlgorithm, 'ssh-rsa');
    assert.equal(verifySshSig(parsed, MESSAGE), false);
  });

  test('a malformed ECDSA signature (r, s encoding) is false, not an exception', async () => {
    const parsed = parseSshSig((await sshSign('ecdsa')).armored);
    const reader = { at: 0 };
    const next = (): Buffer => {
      const length = parsed.signature.readUInt32BE(reader.at);
      const out = parsed.signature.subarray(reader.at, reader.at + 4 + length);
      reader.at += 4 + length;
      return out;
    };
    const r = next();
    const s = next();
    const variants: Buffer[] = [
      Buffer.concat([r, s, Buffer.of(0)]), // trailing byte
      r, // s missing
      Buffer.concat([r, str(Buffer.of(0x80, ...Buffer.alloc(31)))]), // negative s
      Buffer.concat([r, str(Buffer.of(0, 1))]), // non-minimal s
      Buffer.concat([r, str(Buffer.alloc(34, 1))]), // s longer than the group order
      Buffer.concat([r, str(Buffer.alloc(0))]), // s = 0
      Buffer.alloc(0),
    ];
    assert.equal(verifySshSig({ ...parsed, signature: Buffer.concat([r, s]) }, MESSAGE), true);
    for (const [i, signature] of variants.entries())
      assert.equal(verifySshSig({ ...parsed, signature }, MESSAGE), false, `variant ${i}`);
  });

  test('refuses malformed armor and malformed SSHSIG structure', async () => {
    const { armored } = await sshSign('ed25519');
    const good = dearmor(armored);
    const fields = (): SshSigFields => splitSshSig(Buffer.from(good));
    const change = (edit: (f: SshSigFields) => void): string => {
      const f = fields();
      edit(f);
      return armor(joinSshSig(f));
    };
    const cases: [string, string, RegExp][] = [
      ['empty', '', /armored/],
      ['garbage', 'not a signature at all', /armored/],
      ['truncated text', armored.slice(0, Math.floor(armored.length / 2)), /armored/],
      ['no END line', armored.replace('-----END SSH SIGNATURE-----', ''), /armored/],
      ['other armor', armored.replaceAll('SSH SIGNATURE', 'PGP SIGNATURE'), /armored/],
      ['bad base64', armored.replace(/\n[A-Za-z0-9]/, '\n*'), /base64/],
      ['truncated body', armor(good.subarray(0, good.length - 10)), /cut short|past the end/],
      ['trailing bytes', armor(Buffer.concat([good, Buffer.of(0)])), /unexpected bytes/],
      ['length past the end', armor(Buffer.concat([good.subarray(0, 10), u32(0xffffffff)])), /past the end/],
      [
        'magic',
        change((f) => {
          f.magic = Buffer.from('SSHSIH');
        }),
        /SSHSIG/,
      ],
      [
        'version 2',
        change((f) => {
          f.version = 2;
        }),
        /version 2/,
      ],
      [
        'unknown hash',
        change((f) => {
          f.hashAlgorithm = Buffer.from('sha1');
        }),
        /hash algorithm/,
      ],
      [
        'reserved field set',
        change((f) => {
          f.reserved = Buffer.from('x');
        }),
        /reserved/,
      ],
      [
        'empty namespace',
        change((f) => {
          f.namespace = Buffer.alloc(0);
        }),
        /namespace/,
      ],
      [
        'key with trailing bytes',
        change((f) => {
          f.publicKey = Buffer.concat([f.publicKey, Buffer.of(1)]);
        }),
        /unexpected bytes/,
      ],
      [
        'unsupported key type',
        change((f) => {
          f.publicKey = Buffer.concat([
            str('sk-ssh-ed25519@openssh.com'),
            str(Buffer.alloc(32)),
            str('ssh:'),
          ]);
        }),
        /security-key .* not supported yet/,
      ],
      [
        'signature blob with trailing bytes',
        change((f) => {
          f.signature = Buffer.concat([f.signature, Buffer.of(0)]);
        }),
        /unexpected bytes/,
      ],
    ];
    for (const [what, input, pattern] of cases)
      assert.throws(() => parseSshSig(input), rejects('SIGNATURE_INVALID', pattern), what);
    assert.throws(
      () => parseSshSig(`${armored}${' '.repeat(16 * 1024)}`),
      rejects('SIGNATURE_INVALID', /at most/),
    );
    // Control: the unchanged fields rebuild the same, accepted signature; CRLF line ends are fine.
    assert.equal(verifySshSig(parseSshSig(change(() => {})), MESSAGE), true);
    assert.equal(verifySshSig(parseSshSig(armored.replaceAll('\n', '\r\n')), MESSAGE), true);
  });

  test('parseSshSig throws nothing but AirlockError on random input', async () => {
    const good = dearmor((await sshSign('ecdsa')).armored);
    const assertOnlyAirlockErrors = (input: string): void => {
      try {
        const parsed = parseSshSig(input);
        // Whatever parses, verification answers with a boolean.
        assert.equal(typeof verifySshSig(parsed, MESSAGE), 'boolean');
      } catch (error) {
        if (!(error instanceof AirlockError) || error.code !== 'SIGNATURE_INVALID') throw error;
      }
    };
    fc.assert(fc.property(fc.string({ maxLength: 400 }), assertOnlyAirlockErrors), { numRuns: 100 });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) =>
        assertOnlyAirlockErrors(armor(Buffer.concat([Buffer.from('SSHSIG'), u32(1), Buffer.from(bytes)]))),
      ),
      { numRuns: 100 },
    );
    // Mutations of a real signature reach the deeper fields.
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.nat(good.length - 1), value: fc.integer({ min: 0, max: 255 }) }), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.nat(good.length),
        (edits, cut) => {
          const bytes = Buffer.from(good);
          for (const { at, value } of edits) bytes[at] = value;
          assertOnlyAirlockErrors(armor(bytes.subarray(0, Math.max(cut, 1))));
          assertOnlyAirlockErrors(armor(bytes));
        },
      ),
      { numRuns: 150 },
    );
  });

  describe('parsePublicKey refusals', () => {
    test('RSA below 2048 bits', () => {
      assert.throws(
        () => parsePublicKey(fixture('rsa1024').pubText),
        rejects('INVALID_REQUEST', /2048 bits/),
      );
    });

    test('ECDSA P-384, DSA, security keys and certificates, with a clear message', async (t) => {
      assert.throws(
        () => parsePublicKey(fixture('ecdsa384').pubText),
        rejects('INVALID_REQUEST', /ecdsa-sha2-nistp384 keys are not supported yet/),
      );
      const dsa = keys.get('dsa');
      if (dsa === undefined)
        t.diagnostic('this ssh-keygen cannot make DSA keys; DSA checked by its line only');
      const dsaLine = dsa?.pubText ?? `ssh-dss ${str('ssh-dss').toString('base64')}`;
      assert.throws(() => parsePublicKey(dsaLine), rejects('INVALID_REQUEST', /DSA keys .* not supported/));
      const sk = Buffer.concat([str('sk-ssh-ed25519@openssh.com'), str(Buffer.alloc(32)), str('ssh:')]);
      assert.throws(
        () => parsePublicKey(`sk-ssh-ed25519@openssh.com ${sk.toString('base64')} me`),
        rejects('INVALID_REQUEST', /security-key \(FIDO\) keys .* not supported yet/),
      );
      assert.throws(() => publicKeyFromBlob(sk), rejects('INVALID_REQUEST', /security-key/));
      // A real certificate, signed by a throwaway CA.
      const { path } = fixture('other');
      await sshKeygen('-q', '-s', fixture('ed25519').path, '-I', 'id', '-n', 'user', `${path}.pub`);
      const cert = (await readFile(`${path}-cert.pub`, 'utf8')).trim();
      assert.throws(() => parsePublicKey(cert), rejects('INVALID_REQUEST', /certificates are not accepted/));
    });

    test('malformed lines and blobs', () => {
      const { pubText, registered } = fixture('ed25519');
      const [, encoded = ''] = pubText.split(' ');
      const withTrailing = Buffer.concat([registered.blob, Buffer.of(0)]).toString('base64');
      const rsaLine = fixture('rsa').registered.text;
      const ecdsaEncoded = fixture('ecdsa').registered.blob.toString('base64');
      assert.match(ecdsaEncoded, /[^=]=$/);
      const cases: [string, string, RegExp][] = [
        ['empty', '', /no public key/],
        ['type only', 'ssh-ed25519', /no key after its type/],
        ['bad base64', `ssh-ed25519 ${encoded.slice(0, -2)}!!`, /base64/],
        // 104 bytes: one "=" of padding, which canonical base64 has.
        ['unpadded base64', `ecdsa-sha2-nistp256 ${ecdsaEncoded.replace(/=$/, '')}`, /base64/],
        ['type mismatch', `ssh-rsa ${encoded}`, /says ssh-rsa but the key inside is ssh-ed25519/],
        ['trailing bytes', `ssh-ed25519 ${withTrailing}`, /unexpected bytes/],
        ['truncated', `ssh-ed25519 ${registered.blob.subarray(0, 40).toString('base64')}`, /malformed/],
        ['options prefix', `restrict ${pubText}`, /unknown key type "restrict"/],
        ['two lines', `${pubText}\n${rsaLine}`, /one line/],
        ['too long', `${pubText} ${'x'.repeat(16 * 1024)}`, /at most/],
        [
          'private key',
          '-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----',
          /private key/,
        ],
        ['unknown type', 'ssh-ed448 AAAA', /unknown key type/],
      ];
      for (const [what, input, pattern] of cases)
        assert.throws(() => parsePublicKey(input), rejects('INVALID_REQUEST', pattern), what);
      // A comment is not part of the key.
      assert.equal(parsePublicKey(`  ${pubText} more words\n`).fingerprint, registered.fingerprint);
    });

    test('an ECDSA point off the curve', () => {
      const { registered } = fixture('ecdsa');
      const blob = Buffer.from(registered.blob);
      blob[blob.length - 1] = (blob[blob.length - 1] ?? 0) ^ 0x01; // y no longer fits x
      assert.throws(
        () => parsePublicKey(`ecdsa-sha2-nistp256 ${blob.toString('base64')}`),
        rejects('INVALID_REQUEST', /not a valid key/),
      );
      // The same point marked compressed (0x02): one key, one blob, one fingerprint.
      const marked = Buffer.from(registered.blob);
      marked[marked.length - 65] = 0x02;
      assert.throws(() => publicKeyFromBlob(marked), rejects('INVALID_REQUEST', /uncompressed/));
    });

    test('RSA numbers must be canonical mpints and a real exponent', () => {
      const { blob } = fixture('rsa').registered;
      // string "ssh-rsa" || mpint e || mpint n
      const eLength = blob.readUInt32BE(11);
      const e = blob.subarray(15, 15 + eLength);
      const n = blob.subarray(19 + eLength);
      assert.equal(n.length, 3072 / 8 + 1); // with its sign byte
      const rsa = (eBytes: Buffer, nBytes: Buffer): Buffer =>
        Buffer.concat([str('ssh-rsa'), str(eBytes), str(nBytes)]);
      assert.equal(publicKeyFromBlob(rsa(e, n)).fingerprint, fixture('rsa').registered.fingerprint);
      const cases: [string, Buffer, RegExp][] = [
        ['leading zero in e', rsa(Buffer.concat([Buffer.of(0), e]), n), /superfluous leading zero/],
        ['n without its sign byte', rsa(e, n.subarray(1)), /negative/],
        ['e = 1', rsa(Buffer.of(1), n), /odd number greater than 1/],
        ['even e', rsa(Buffer.of(1, 0, 0), n), /odd number greater than 1/],
        ['e = 0', rsa(Buffer.alloc(0), n), /zero/],
        ['huge e', rsa(Buffer.alloc(9, 1), n), /longer than 8 bytes/],
      ];
      for (const [what, input, pattern] of cases)
        assert.throws(() => publicKeyFromBlob(input), rejects('INVALID_REQUEST', pattern), what);
    });
  });

  describe('Ed25519 in PEM form', () => {
    test('has the fingerprint of the same key as an OpenSSH line, and verifies plain Ed25519 signatures', async () => {
      const { publicKey, privateKey } = generateKeyPairSync('ed25519');
      const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
      const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url');
      assert.equal(raw.length, 32);
      const line = `ssh-ed25519 ${Buffer.concat([str('ssh-ed25519'), str(raw)]).toString('base64')} pem@test`;
      const fromPem = parsePublicKey(pem);
      const fromLine = parsePublicKey(line);
      assert.equal(fromPem.type, 'ssh-ed25519');
      assert.equal(fromPem.fingerprint, fromLine.fingerprint);
      assert.equal(fromPem.text, fromLine.text);
      assert.deepEqual(fromPem.blob, fromLine.blob);
      // And ssh-keygen agrees on the fingerprint of the hand-built line.
      const linePath = join(dir, 'pem-line.pub');
      await writeFile(linePath, `${line}\n`);
      const listed = (await sshKeygen('-l', '-E', 'sha256', '-f', linePath)).trim().split(/\s+/);
      assert.equal(fromPem.fingerprint, listed[1]);

      const signature = sign(null, MESSAGE, privateKey);
      assert.equal(verify(null, MESSAGE, fromPem.key, signature), true);
      assert.equal(verify(null, Buffer.from('other'), fromPem.key, signature), false);
    });

    test('other PEM keys and malformed PEM are refused', () => {
      const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
      const pem = p256.export({ type: 'spki', format: 'pem' }).toString();
      assert.throws(
        () => parsePublicKey(pem),
        rejects('INVALID_REQUEST', /only Ed25519 keys are accepted in PEM/),
      );
      const ed = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
      assert.throws(
        () => parsePublicKey(`${ed}${ed}`),
        rejects('INVALID_REQUEST', /one "-----BEGIN PUBLIC KEY-----" block/),
      );
      assert.throws(
        () => parsePublicKey(ed.replace(/\n(.)/, '\n*')),
        rejects('INVALID_REQUEST', /PUBLIC KEY|base64/),
      );
    });
  });
});

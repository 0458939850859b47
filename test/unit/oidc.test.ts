import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { generateKeyPair, SignJWT } from 'jose';
import { OidcVerifier, type OidcVerifierOptions } from '../../src/auth/oidc.js';
import { loadOidcIssuers, type OidcIssuerConfig, parseOidcIssuers } from '../../src/auth/oidc-issuers.js';
import { loadConfig } from '../../src/config/config.js';
import { AirlockError } from '../../src/errors.js';
import { base64url, type IssuerKey, makeKey, TestIssuer } from './oidc-issuer.js';

/**
 * Workload identity (src/auth/oidc.ts): each control of the OIDC verifier against a real
 * issuer on 127.0.0.1 (discovery, key set, rotation, outages), and the issuer file's
 * validation (src/auth/oidc-issuers.ts).
 */

function issuerConfig(issuer: TestIssuer, extra: Record<string, unknown> = {}): OidcIssuerConfig {
  const [config] = parseOidcIssuers(
    [
      {
        issuer: issuer.url,
        audience: 'airlock',
        role: 'submitter',
        projects: ['web'],
        allowAnyWorkload: true,
        ...extra,
      },
    ],
    'test',
  );
  assert.ok(config !== undefined);
  return config;
}

/** A verifier for one issuer, with short timings so tests do not wait on defaults. */
function verifierFor(
  issuer: TestIssuer,
  extra: Record<string, unknown> = {},
  options: Partial<OidcVerifierOptions> = {},
): OidcVerifier {
  return new OidcVerifier({
    issuers: [issuerConfig(issuer, extra)],
    fetchTimeoutMs: 2000,
    failureCooldownMs: 0,
    ...options,
  });
}

/** Asserts `promise` rejects with AirlockError `code`, a message matching `message`, and never the token. */
async function refused(
  promise: Promise<unknown>,
  code: 'WORKLOAD_IDENTITY_INVALID' | 'WORKLOAD_IDENTITY_UNAVAILABLE',
  message: RegExp,
  token?: string,
): Promise<AirlockError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof AirlockError, `expected an AirlockError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.match(caught.message, message);
  if (token !== undefined)
    for (const segment of token.split('.').filter((part) => part.length >= 8))
      assert.ok(!caught.message.includes(segment), 'the message repeats the token');
  return caught;
}

describe('OidcVerifier', () => {
  let issuer: TestIssuer;
  let other: TestIssuer;

  before(async () => {
    issuer = await TestIssuer.start();
    other = await TestIssuer.start();
  });
  after(async () => {
    await issuer.close();
    await other.close();
  });

  test('a valid token becomes a principal with its origin; keys are fetched once and cached', async () => {
    const verifier = verifierFor(issuer);
    const before = { ...issuer.hits };
    const token = await issuer.sign({ environment: 'production' });
    const identity = await verifier.verify(token);
    const host = new URL(issuer.url).host;
    assert.equal(identity.name, `oidc:${host}:acme/web`);
    assert.equal(identity.role, 'submitter');
    assert.deepEqual(identity.projects, ['web']);
    assert.deepEqual(identity.origin, {
      issuer: issuer.url,
      subject: 'repo:acme/web:ref:refs/heads/main',
      repository: 'acme/web',
      ref: 'refs/heads/main',
      workflow: 'ci',
      environment: 'production',
    });
    assert.match(identity.tokenId, /^oidc-[0-9a-f]{16}$/);
    // The id names the token, stably, and never holds any of it.
    assert.equal((await verifier.verify(token)).tokenId, identity.tokenId);
    assert.notEqual((await verifier.verify(await issuer.sign())).tokenId, identity.tokenId);
    for (const segment of token.split('.')) assert.ok(!identity.tokenId.includes(segment.slice(0, 8)));
    // Discovery and key set fetched once for all four verifications.
    assert.equal(issuer.hits.discovery - before.discovery, 1);
    assert.equal(issuer.hits.jwks - before.jwks, 1);
  });

  test('absent origin claims are empty strings; the claims map renames them', async () => {
    const verifier = verifierFor(issuer);
    const bare = await verifier.verify(
      await issuer.sign({ ref: undefined, workflow: undefined, environment: undefined }),
    );
    assert.equal(bare.origin.ref, '');
    assert.equal(bare.origin.workflow, '');
    assert.equal(bare.origin.environment, '');
    const mapped = verifierFor(issuer, {
      claims: { name: 'project_path', repository: 'project_path', ref: 'ref_path', workflow: 'pipeline' },
    });
    const identity = await mapped.verify(
      await issuer.sign({ project_path: 'group/app', ref_path: 'refs/tags/v1', pipeline: 'build' }),
    );
    assert.equal(identity.name, `oidc:${new URL(issuer.url).host}:group/app`);
    assert.equal(identity.origin.repository, 'group/app');
    assert.equal(identity.origin.ref, 'refs/tags/v1');
    assert.equal(identity.origin.workflow, 'build');
  });

  test('RS256, ES256 and EdDSA are accepted', async () => {
    const keys = await Promise.all([makeKey('RS256'), makeKey('ES256'), makeKey('EdDSA')]);
    const multi = await TestIssuer.start(keys);
    try {
      const verifier = verifierFor(multi);
      for (const key of keys) {
        const identity = await verifier.verify(await multi.sign({}, { key }));
        assert.equal(identity.origin.repository, 'acme/web', key.alg);
      }
    } finally {
      await multi.close();
    }
  });

  test('an unknown issuer is refused before any fetch, whatever the token names', async () => {
    const verifier = verifierFor(issuer);
    const start = { issuer: { ...issuer.hits }, other: { ...other.hits } };
    // A real issuer, just not configured: its keys are never fetched.
    const foreign = await other.sign({ aud: 'airlock' });
    await refused(
      verifier.verify(foreign),
      'WORKLOAD_IDENTITY_INVALID',
      /is not a configured issuer/,
      foreign,
    );
    // A configured issuer's name with a trailing slash is another issuer (exact match).
    const slash = await issuer.sign({ iss: `${issuer.url}/` });
    await refused(verifier.verify(slash), 'WORKLOAD_IDENTITY_INVALID', /not a configured issuer/);
    await refused(
      verifier.verify(await issuer.sign({ iss: undefined })),
      'WORKLOAD_IDENTITY_INVALID',
      /not a configured issuer/,
    );
    // A token naming its own key set (jku) or carrying its own key (jwk) is not believed: the
    // keys come from the configured issuer only, and they do not verify the forger's key.
    const forgerKey = await makeKey('ES256', issuer.keys[0]?.kid);
    const jku = await issuer.sign(
      {},
      { key: forgerKey, header: { jku: other.jwksUri, jwk: forgerKey.publicJwk } },
    );
    other.keys = [forgerKey];
    await refused(verifier.verify(jku), 'WORKLOAD_IDENTITY_INVALID', /signature does not verify/, jku);
    assert.deepEqual(other.hits, start.other, 'nothing was fetched from the unconfigured issuer');
  });

  test('only RS256, ES256 and EdDSA: none, HS256 made with the public key, ES384 are refused', async () => {
    const verifier = verifierFor(issuer);
    const key = issuer.keys[0] as IssuerKey;
    const claims = issuer.claims();
    const none = `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url(claims)}.`;
    await refused(verifier.verify(none), 'WORKLOAD_IDENTITY_INVALID', /algorithm "none" is not allowed/);
    // The classic confusion: HMAC with the issuer's public key (as JWK JSON) as the secret.
    for (const secret of [JSON.stringify(key.publicJwk), JSON.stringify({ keys: [key.publicJwk] })]) {
      const hs = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'HS256', kid: key.kid })
        .sign(new TextEncoder().encode(secret));
      await refused(verifier.verify(hs), 'WORKLOAD_IDENTITY_INVALID', /algorithm "HS256" is not allowed/, hs);
    }
    const p384 = await generateKeyPair('ES384');
    const t384 = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES384', kid: key.kid })
      .sign(p384.privateKey);
    await refused(verifier.verify(t384), 'WORKLOAD_IDENTITY_INVALID', /"ES384" is not allowed/);
    // A key-set entry pinned to ES256 cannot verify an EdDSA header with the same kid.
    const ed = await makeKey('EdDSA', key.kid);
    const confused = await issuer.sign({}, { key: ed });
    await refused(verifier.verify(confused), 'WORKLOAD_IDENTITY_INVALID', /no key .* matches/);
  });

  test('aud must contain the configured audience', async () => {
    const verifier = verifierFor(issuer);
    await refused(
      verifier.verify(await issuer.sign({ aud: 'sts.amazonaws.com' })),
      'WORKLOAD_IDENTITY_INVALID',
      /audience is not "airlock"/,
    );
    await refused(
      verifier.verify(await issuer.sign({ aud: undefined })),
      'WORKLOAD_IDENTITY_INVALID',
      /no "aud" claim/,
    );
    const listed = await verifier.verify(await issuer.sign({ aud: ['other', 'airlock'] }));
    assert.equal(listed.origin.repository, 'acme/web');
  });

  test('exp is required and honoured with 60 s of skew; nbf and iat too', async () => {
    const verifier = verifierFor(issuer);
    const now = Date.now();
    const s = Math.floor(now / 1000);
    await refused(
      verifier.verify(await issuer.sign({ exp: undefined })),
      'WORKLOAD_IDENTITY_INVALID',
      /no "exp" claim/,
    );
    await refused(
      verifier.verify(await issuer.sign({ iat: s - 400, nbf: s - 400, exp: s - 61 }), now),
      'WORKLOAD_IDENTITY_INVALID',
      /expired/,
    );
    await verifier.verify(await issuer.sign({ iat: s - 400, nbf: s - 400, exp: s - 30 }), now);
    await refused(
      verifier.verify(await issuer.sign({ nbf: s + 61 }), now),
      'WORKLOAD_IDENTITY_INVALID',
      /not valid yet/,
    );
    await verifier.verify(await issuer.sign({ nbf: s + 30 }), now);
    await refused(
      verifier.verify(await issuer.sign({ iat: s + 61, nbf: undefined }), now),
      'WORKLOAD_IDENTITY_INVALID',
      /issued in the future/,
    );
    await verifier.verify(await issuer.sign({ iat: s + 30, nbf: undefined }), now);
    await refused(
      verifier.verify(await issuer.sign({ iat: undefined }), now),
      'WORKLOAD_IDENTITY_INVALID',
      /no "iat" claim/,
    );
    await refused(
      verifier.verify(await issuer.sign({ exp: String(s + 300) }), now),
      'WORKLOAD_IDENTITY_INVALID',
      /"exp" claim must be a number/,
    );
  });

  test('a token valid for more than 24 h is refused', async () => {
    const verifier = verifierFor(issuer);
    const s = Math.floor(Date.now() / 1000);
    await refused(
      verifier.verify(await issuer.sign({ iat: s, exp: s + 24 * 3600 + 1 })),
      'WORKLOAD_IDENTITY_INVALID',
      /valid for more than 24 h/,
    );
    await verifier.verify(await issuer.sign({ iat: s, exp: s + 24 * 3600 }));
  });

  test('sub is required: a string, not empty, bounded', async () => {
    const verifier = verifierFor(issuer);
    await refused(
      verifier.verify(await issuer.sign({ sub: undefined })),
      'WORKLOAD_IDENTITY_INVALID',
      /"sub"/,
    );
    await refused(
      verifier.verify(await issuer.sign({ sub: '' })),
      'WORKLOAD_IDENTITY_INVALID',
      /"sub" is empty/,
    );
    await refused(
      verifier.verify(await issuer.sign({ sub: 42 })),
      'WORKLOAD_IDENTITY_INVALID',
      /not a string/,
    );
    await refused(
      verifier.verify(await issuer.sign({ sub: 'x'.repeat(257) })),
      'WORKLOAD_IDENTITY_INVALID',
      /longer than 256/,
    );
  });

  test('claims used for the name and origin are bounded strings without control characters', async () => {
    const verifier = verifierFor(issuer);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ repository: undefined }, /no "repository" claim/],
      [{ repository: ['acme/web'] }, /"repository" is not a string/],
      [{ repository: 'a'.repeat(257) }, /longer than 256/],
      [{ repository: 'acme/web\nadmin' }, /control or formatting/],
      [{ repository: 'acme/\u202ebew' }, /control or formatting/],
      [{ repository: 'acme web' }, /principal's name\) must match/],
      [{ ref: 'refs/heads/main\u0000' }, /"ref" contains control/],
      [{ workflow: 7 }, /"workflow" is not a string/],
      [{ environment: 'e'.repeat(257) }, /"environment" is longer than 256/],
    ];
    for (const [claims, message] of cases)
      await refused(verifier.verify(await issuer.sign(claims)), 'WORKLOAD_IDENTITY_INVALID', message);
  });

  test('require: the listed claims must carry one of the allowed values', async () => {
    const verifier = verifierFor(issuer, {
      require: { repository_owner: ['acme'], ref: ['refs/heads/main'] },
    });
    await verifier.verify(await issuer.sign());
    await refused(
      verifier.verify(await issuer.sign({ repository_owner: 'mallory', repository: 'mallory/web' })),
      'WORKLOAD_IDENTITY_INVALID',
      /"repository_owner" is not one of the values/,
    );
    await refused(
      verifier.verify(await issuer.sign({ ref: 'refs/heads/feature' })),
      'WORKLOAD_IDENTITY_INVALID',
      /"ref" is not one of/,
    );
    await refused(
      verifier.verify(await issuer.sign({ repository_owner: undefined })),
      'WORKLOAD_IDENTITY_INVALID',
      /"repository_owner"/,
    );
  });

  test('a forged signature, a malformed or oversized token is refused', async () => {
    const verifier = verifierFor(issuer);
    const token = await issuer.sign();
    const [head, body, signature] = token.split('.') as [string, string, string];
    // The claims changed after signing.
    const changed = `${head}.${base64url({ ...issuer.claims(), repository: 'acme/admin' })}.${signature}`;
    await refused(
      verifier.verify(changed),
      'WORKLOAD_IDENTITY_INVALID',
      /signature does not verify/,
      changed,
    );
    // Signed by another key under the issuer's kid.
    const impostor = await makeKey('ES256', issuer.keys[0]?.kid);
    const forged = await issuer.sign({}, { key: impostor });
    await refused(verifier.verify(forged), 'WORKLOAD_IDENTITY_INVALID', /signature does not verify/, forged);
    await refused(verifier.verify(`${head}.${body}`), 'WORKLOAD_IDENTITY_INVALID', /not a JWT/);
    await refused(
      verifier.verify(`${head}.${body}.${signature}.x`),
      'WORKLOAD_IDENTITY_INVALID',
      /not a JWT/,
    );
    await refused(verifier.verify(`e30.bm90IGpzb24.${signature}`), 'WORKLOAD_IDENTITY_INVALID', /not a JWT/);
    await refused(
      verifier.verify(`${head}.${'A'.repeat(9000)}.${signature}`),
      'WORKLOAD_IDENTITY_INVALID',
      /at most 8192 characters/,
    );
  });

  test('keys come from jwksUri without discovery when it is configured', async () => {
    const verifier = verifierFor(issuer, { jwksUri: issuer.jwksUri });
    const start = { ...issuer.hits };
    await verifier.verify(await issuer.sign());
    assert.equal(issuer.hits.discovery, start.discovery);
    assert.equal(issuer.hits.jwks, start.jwks + 1);
  });

  test('key rotation: a new kid makes the key set be fetched again (jose, after its cooldown)', async () => {
    const rotating = await TestIssuer.start();
    try {
      const verifier = verifierFor(rotating, {}, { jwksCooldownMs: 0 });
      await verifier.verify(await rotating.sign());
      const next = await makeKey('RS256');
      rotating.keys = [next];
      const identity = await verifier.verify(await rotating.sign({}, { key: next }));
      assert.equal(identity.origin.repository, 'acme/web');
      assert.equal(rotating.hits.jwks, 2);
      // Within the cooldown an unknown kid fetches nothing: a flood of made-up kids costs
      // the issuer at most one fetch per cooldown.
      const slow = verifierFor(rotating, {}, { jwksCooldownMs: 60_000 });
      await slow.verify(await rotating.sign({}, { key: next }));
      const unknown = await makeKey('ES256');
      await refused(
        slow.verify(await rotating.sign({}, { key: unknown })),
        'WORKLOAD_IDENTITY_INVALID',
        /no key of the issuer's key set matches/,
      );
      assert.equal(rotating.hits.jwks, 3);
    } finally {
      await rotating.close();
    }
  });

  test('an unreachable key set fails closed: WORKLOAD_IDENTITY_UNAVAILABLE', async () => {
    const down = await TestIssuer.start();
    const token = await down.sign();
    const verifier = verifierFor(down);
    await down.close();
    await refused(verifier.verify(token), 'WORKLOAD_IDENTITY_UNAVAILABLE', /cannot be fetched/, token);
    // Keys fetched before the outage still verify (cached); an unknown kid then fails closed.
    const flaky = await TestIssuer.start();
    try {
      const cached = verifierFor(flaky, { jwksUri: flaky.jwksUri }, { jwksCooldownMs: 0 });
      await cached.verify(await flaky.sign());
      flaky.jwks = { status: 500 };
      await cached.verify(await flaky.sign());
      const unknown = await makeKey();
      await refused(
        cached.verify(await flaky.sign({}, { key: unknown })),
        'WORKLOAD_IDENTITY_UNAVAILABLE',
        /HTTP 500/,
      );
    } finally {
      await flaky.close();
    }
  });

  test('after a failed fetch the issuer is not asked again during the failure cooldown', async () => {
    const failing = await TestIssuer.start();
    try {
      failing.jwks = { status: 503 };
      const verifier = verifierFor(failing, { jwksUri: failing.jwksUri }, { failureCooldownMs: 60_000 });
      const token = await failing.sign();
      await refused(verifier.verify(token), 'WORKLOAD_IDENTITY_UNAVAILABLE', /HTTP 503/);
      await refused(verifier.verify(token), 'WORKLOAD_IDENTITY_UNAVAILABLE', /not retried/);
      assert.equal(failing.hits.jwks, 1);
    } finally {
      await failing.close();
    }
  });

  test('discovery that fails, names another issuer or an http key set elsewhere fails closed', async () => {
    const bent = await TestIssuer.start();
    try {
      const token = await bent.sign();
      const cases: [Record<string, unknown> | null, RegExp][] = [
        [null, /HTTP 404/],
        [{ issuer: 'https://evil.example', jwks_uri: bent.jwksUri }, /names another issuer/],
        [{ issuer: bent.url }, /no jwks_uri/],
        [{ issuer: bent.url, jwks_uri: 'http://keys.example/jwks' }, /must be an https:\/\/ URL/],
      ];
      for (const [document, message] of cases) {
        bent.discovery = document;
        await refused(verifierFor(bent).verify(token), 'WORKLOAD_IDENTITY_UNAVAILABLE', message);
      }
      assert.equal(bent.hits.jwks, 0, 'no key set was fetched from a bad discovery');
    } finally {
      await bent.close();
    }
  });

  test('a key set that is too large, not JSON, or never answers fails closed', async () => {
    const bent = await TestIssuer.start();
    try {
      const token = await bent.sign();
      const options = { jwksUri: bent.jwksUri };
      bent.jwks = { body: JSON.stringify({ keys: [], pad: 'x'.repeat(300 * 1024) }) };
      await refused(verifierFor(bent, options).verify(token), 'WORKLOAD_IDENTITY_UNAVAILABLE', /larger than/);
      bent.jwks = { body: '<html>' };
      await refused(verifierFor(bent, options).verify(token), 'WORKLOAD_IDENTITY_UNAVAILABLE', /not JSON/);
      bent.jwks = { body: '{"keys": 1}' };
      await refused(verifierFor(bent, options).verify(token), 'WORKLOAD_IDENTITY_UNAVAILABLE', /"keys" list/);
      bent.jwks = { hang: true };
      const started = Date.now();
      await refused(
        verifierFor(bent, options, { fetchTimeoutMs: 300 }).verify(token),
        'WORKLOAD_IDENTITY_UNAVAILABLE',
        /timed out/,
      );
      assert.ok(Date.now() - started < 5000, 'the timeout ended the fetch');
    } finally {
      await bent.close();
    }
  });

  test('property: random and mangled tokens are refused with an AirlockError, never anything else', async () => {
    const verifier = verifierFor(issuer, {}, { jwksCooldownMs: 60_000 });
    const valid = await issuer.sign();
    await verifier.verify(valid);
    // The last base64url character of a signature carries padding bits too: changing only
    // those yields the very same signature bytes over the same signed text — the same token,
    // rightly accepted. Such a mutation is not a mangled token.
    const [signedText, signature] = [valid.slice(0, valid.lastIndexOf('.')), valid.split('.')[2] ?? ''];
    const sameSignature = (token: string): boolean =>
      token.slice(0, token.lastIndexOf('.')) === signedText &&
      /^[A-Za-z0-9_-]*$/.test(token.slice(token.lastIndexOf('.') + 1)) &&
      Buffer.from(token.slice(token.lastIndexOf('.') + 1), 'base64url').equals(
        Buffer.from(signature, 'base64url'),
      );
    const segment = fc.stringMatching(/^[A-Za-z0-9_-]{0,64}$/);
    const anyToken = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.tuple(segment, segment, segment).map((parts) => parts.join('.')),
      fc
        .tuple(fc.nat(valid.length - 1), fc.constantFrom(...'AZaz09-_.='.split('')))
        .map(([at, char]) => `${valid.slice(0, at)}${char}${valid.slice(at + 1)}`)
        .filter((token) => token !== valid && !sameSignature(token)),
      fc.json().map((json) => `${base64url({ alg: 'ES256' })}.${base64url(json)}.${valid.split('.')[2]}`),
    );
    await fc.assert(
      fc.asyncProperty(anyToken, async (token) => {
        try {
          await verifier.verify(token);
        } catch (error) {
          return error instanceof AirlockError && error.code === 'WORKLOAD_IDENTITY_INVALID';
        }
        return false;
      }),
      { numRuns: 300 },
    );
  });
});

describe('issuer file (AIRLOCK_OIDC_ISSUERS)', () => {
  const base = {
    issuer: 'https://token.actions.githubusercontent.com',
    audience: 'airlock',
    role: 'submitter',
    projects: ['web'],
    allowAnyWorkload: true,
  };

  test('an entry that pins no workload is refused unless it says allowAnyWorkload', () => {
    const { allowAnyWorkload: _any, ...open } = base;
    refusedConfig([open], /require.*is required.*allowAnyWorkload/);
    refusedConfig([{ ...open, allowAnyWorkload: 'yes' }], /allowAnyWorkload.*true or false/);
    assert.equal(
      parseOidcIssuers([{ ...open, require: { repository_owner: ['acme'] } }], 'f')[0]?.allowAnyWorkload,
      false,
    );
  });
  const refusedConfig = (value: unknown, message: RegExp): void => {
    assert.throws(
      () => parseOidcIssuers(value, 'issuers.json'),
      (error: unknown) =>
        error instanceof AirlockError &&
        error.code === 'INVALID_CONFIG' &&
        error.message.startsWith('AIRLOCK_OIDC_ISSUERS: issuers.json') &&
        message.test(error.message),
      `${JSON.stringify(value).slice(0, 200)} should be refused with ${message}`,
    );
  };

  test('the GitHub Actions example reads with the default claim names', () => {
    const [entry] = parseOidcIssuers([base], 'issuers.json');
    assert.deepEqual(entry, {
      ...base,
      claims: {
        repository: 'repository',
        ref: 'ref',
        workflow: 'workflow',
        environment: 'environment',
        name: 'repository',
      },
      require: {},
    });
    const [full] = parseOidcIssuers(
      [
        {
          ...base,
          jwksUri: 'https://token.actions.githubusercontent.com/.well-known/jwks',
          role: 'viewer',
          claims: { name: 'sub' },
          require: { repository_owner: ['acme'] },
        },
      ],
      'issuers.json',
    );
    assert.equal(full?.claims.name, 'sub');
    assert.equal(full?.claims.repository, 'repository');
    assert.deepEqual(full?.require, { repository_owner: ['acme'] });
  });

  test('http is accepted on loopback hosts only', () => {
    for (const issuer of [
      'http://127.0.0.1:8080',
      'http://127.9.8.7',
      'http://[::1]:9',
      'http://localhost:1',
    ])
      assert.equal(parseOidcIssuers([{ ...base, issuer }], 'issuers.json')[0]?.issuer, issuer);
    refusedConfig(
      [{ ...base, issuer: 'http://token.actions.githubusercontent.com' }],
      /\[0\]\.issuer: must be an https/,
    );
    refusedConfig([{ ...base, issuer: 'http://128.0.0.1' }], /must be an https/);
    refusedConfig([{ ...base, issuer: 'http://127.0.0.1.example.com' }], /must be an https/);
    refusedConfig([{ ...base, jwksUri: 'http://keys.example/jwks' }], /\[0\]\.jwksUri: must be an https/);
  });

  const bad: [unknown, RegExp][] = [
    [[], /non-empty JSON list/],
    [{ ...base }, /non-empty JSON list/],
    ['https://x', /non-empty JSON list/],
    [[base, base], /\[1\]\.issuer: "https:\/\/token\.actions\.githubusercontent\.com" is listed twice/],
    [[{ ...base, extra: 1 }], /unknown field "extra"/],
    [[{ ...base, issuer: undefined }], /\.issuer: is required/],
    [[{ ...base, issuer: 'not a url' }], /is not a URL/],
    [[{ ...base, issuer: 'ftp://x.example' }], /must be an https/],
    [[{ ...base, issuer: 'https://user:pw@x.example' }], /user name or password/],
    [[{ ...base, issuer: 'https://x.example/#f' }], /fragment/],
    [[{ ...base, issuer: 'https://x.example/?q=1' }], /query/],
    [[{ ...base, issuer: `https://x.example/${'a'.repeat(260)}` }], /longer than 256/],
    [[{ ...base, audience: '' }], /\.audience: is required/],
    [[{ ...base, audience: 5 }], /\.audience/],
    [[{ ...base, jwksUri: 7 }], /\.jwksUri: must be a URL/],
    [[{ ...base, role: 'admin' }], /\.role: a workload identity may not be admin/],
    [[{ ...base, role: 'worker' }], /may not be worker/],
    [[{ ...base, role: 'owner' }], /\.role: is required: "submitter" or "viewer"/],
    [[{ ...base, projects: [] }], /\.projects: is required/],
    [[{ ...base, projects: 'web' }], /\.projects: is required/],
    [[{ ...base, projects: ['*'] }], /"\*" is not allowed/],
    [[{ ...base, projects: ['Web'] }], /projects\[0\]: must match/],
    [[{ ...base, projects: ['web', 'web'] }], /listed twice/],
    [[{ ...base, claims: { repo: 'x' } }], /unknown field "repo"/],
    [[{ ...base, claims: { name: '' } }], /claims\.name: must be a claim name/],
    [[{ ...base, claims: [] }], /\.claims: must be an object/],
    [[{ ...base, require: {} }], /\.require: must be an object/],
    [[{ ...base, require: { repository_owner: [] } }], /require\.repository_owner: must be a list/],
    [[{ ...base, require: { repository_owner: 'acme' } }], /must be a list/],
    [[{ ...base, require: { repository_owner: ['a\nb'] } }], /without control characters/],
    [[{ ...base, require: { 'bad name': ['x'] } }], /must be a claim name/],
  ];
  for (const [i, [value, message]] of bad.entries())
    test(`refuses #${i}: ${message}`, () => refusedConfig(value, message));

  test('the file: absolute path in AIRLOCK_OIDC_ISSUERS; read strictly at start', async () => {
    assert.equal(
      loadConfig({ AIRLOCK_OIDC_ISSUERS: '/etc/airlock/oidc.json' }).server.oidcIssuersFile,
      '/etc/airlock/oidc.json',
    );
    assert.equal('oidcIssuersFile' in loadConfig({}).server, false);
    assert.throws(
      () => loadConfig({ AIRLOCK_OIDC_ISSUERS: 'oidc.json' }),
      (error: unknown) =>
        error instanceof AirlockError &&
        error.code === 'INVALID_CONFIG' &&
        error.message.startsWith('AIRLOCK_OIDC_ISSUERS'),
    );
    const dir = await mkdtemp(join(tmpdir(), 'airlock-oidc-config-'));
    try {
      const file = join(dir, 'issuers.json');
      await writeFile(file, JSON.stringify([base]), { mode: 0o644 });
      assert.equal((await loadOidcIssuers(file))[0]?.issuer, base.issuer);
      const rejects = async (message: RegExp): Promise<void> => {
        await assert.rejects(
          loadOidcIssuers(file),
          (error: unknown) =>
            error instanceof AirlockError && error.code === 'INVALID_CONFIG' && message.test(error.message),
        );
      };
      // Whoever may write the file may let their own workloads in.
      await chmod(file, 0o666);
      await rejects(/can be written by group or others \(mode 0666\)/);
      await chmod(file, 0o600);
      await writeFile(file, '[{"issuer": ');
      await rejects(/is not valid JSON/);
      await writeFile(file, `[${' '.repeat(70 * 1024)}]`);
      await rejects(/larger than 65536 bytes/);
      await writeFile(file, Buffer.from([0x5b, 0xff, 0x5d]));
      await rejects(/not UTF-8/);
      await assert.rejects(
        loadOidcIssuers(join(dir, 'missing.json')),
        (error: unknown) => error instanceof AirlockError && /cannot be opened/.test(error.message),
      );
      await assert.rejects(
        loadOidcIssuers(dir),
        (error: unknown) => error instanceof AirlockError && /not a regular file/.test(error.message),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('principal names of issuers sharing a host', () => {
  test('two issuers on one host (realms) name their workloads apart', async () => {
    const host = await TestIssuer.start();
    try {
      const realm = (name: string) => `${host.url}/realms/${name}`;
      const verifier = new OidcVerifier({
        issuers: parseOidcIssuers(
          ['a', 'b'].map((name) => ({
            issuer: realm(name),
            jwksUri: host.jwksUri,
            audience: 'airlock',
            role: 'submitter',
            projects: ['web'],
            allowAnyWorkload: true,
          })),
          'test',
        ),
        fetchTimeoutMs: 2000,
        failureCooldownMs: 0,
      });
      const [a, b] = await Promise.all(
        ['a', 'b'].map(async (name) => verifier.verify(await host.sign({ iss: realm(name) }))),
      );
      assert.notEqual(a?.name, b?.name);
      assert.match(a?.name ?? '', /\/realms\/a:acme\/web$/);
    } finally {
      await host.close();
    }
  });
});

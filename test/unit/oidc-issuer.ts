import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type CryptoKey,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTHeaderParameters,
  SignJWT,
} from 'jose';

/**
 * A tiny OIDC issuer on 127.0.0.1 for the workload-identity tests: it serves a discovery
 * document and a key set (both can be bent to test refusals), counts every fetch, and signs
 * ID tokens with its keys. Not a test file itself (the name does not end in .test).
 */

export type TestAlg = 'RS256' | 'ES256' | 'EdDSA';

export interface IssuerKey {
  readonly kid: string;
  readonly alg: TestAlg;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
}

export async function makeKey(alg: TestAlg = 'ES256', kid = `k-${randomBytes(4).toString('hex')}`) {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicJwk } satisfies IssuerKey;
}

export function base64url(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

export class TestIssuer {
  readonly server: Server;
  readonly url: string;
  /** Keys published in the key set. */
  keys: IssuerKey[];
  readonly hits = { discovery: 0, jwks: 0, other: 0 };
  /** Replaces the discovery document (null = 404). */
  discovery: Record<string, unknown> | null | undefined;
  /** Replaces the key set answer: a status, a raw body, or never answering. */
  jwks: { status?: number; body?: string; hang?: boolean } | undefined;

  private constructor(server: Server, keys: IssuerKey[]) {
    this.server = server;
    const { port } = server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
    this.keys = keys;
  }

  static async start(keys?: IssuerKey[]): Promise<TestIssuer> {
    let issuer: TestIssuer | undefined;
    const server = createServer((request, response) => issuer?.handle(request, response));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    issuer = new TestIssuer(server, keys ?? [await makeKey()]);
    return issuer;
  }

  get jwksUri(): string {
    return `${this.url}/keys`;
  }

  private handle(request: IncomingMessage, response: ServerResponse): void {
    const [status, body] = this.answer(request.url ?? '');
    if (status === 0) return; // never answers: the client's timeout must end it
    response.writeHead(status, { 'content-type': 'application/json' }).end(body);
  }

  private answer(path: string): [number, string] {
    if (path === '/.well-known/openid-configuration') {
      this.hits.discovery += 1;
      if (this.discovery === null) return [404, '{}'];
      return [200, JSON.stringify(this.discovery ?? { issuer: this.url, jwks_uri: this.jwksUri })];
    }
    if (path === '/keys') {
      this.hits.jwks += 1;
      if (this.jwks?.hang === true) return [0, ''];
      if (this.jwks !== undefined) return [this.jwks.status ?? 200, this.jwks.body ?? ''];
      return [200, JSON.stringify({ keys: this.keys.map((key) => key.publicJwk) })];
    }
    this.hits.other += 1;
    return [404, '{}'];
  }

  /** Claims of a typical GitHub Actions token from this issuer, valid for 5 minutes from `now`. */
  claims(now = Date.now()): Record<string, unknown> {
    const iat = Math.floor(now / 1000);
    return {
      iss: this.url,
      sub: 'repo:acme/web:ref:refs/heads/main',
      aud: 'airlock',
      iat,
      nbf: iat,
      exp: iat + 300,
      jti: randomBytes(8).toString('hex'),
      repository: 'acme/web',
      repository_owner: 'acme',
      ref: 'refs/heads/main',
      workflow: 'ci',
    };
  }

  /**
   * A token signed with `key` (default: the first published key). `overrides` replace claims;
   * an override of undefined removes the claim.
   */
  async sign(
    overrides: Record<string, unknown> = {},
    options: { key?: IssuerKey; header?: Record<string, unknown>; now?: number } = {},
  ): Promise<string> {
    const key = options.key ?? this.keys[0];
    if (key === undefined) throw new Error('the issuer has no key');
    const payload = { ...this.claims(options.now), ...overrides };
    for (const [name, value] of Object.entries(payload)) if (value === undefined) delete payload[name];
    return new SignJWT(payload)
      .setProtectedHeader({
        kid: key.kid,
        typ: 'JWT',
        ...options.header,
        alg: key.alg,
      } as JWTHeaderParameters)
      .sign(key.privateKey);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

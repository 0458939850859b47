import { createHash } from 'node:crypto';
import {
  createRemoteJWKSet,
  customFetch,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  type FetchImplementation,
  type JWTPayload,
  jwtVerify,
  type RemoteJWKSet,
} from 'jose';
import { AirlockError, describeError } from '../errors.js';
import { checkFetchUrl, type OidcIssuerConfig, type OidcRole } from './oidc-issuers.js';
import type { Origin } from './principal.js';

/**
 * Workload identity: an OIDC ID token (a JWT) from a configured issuer — a CI system such as
 * GitHub Actions — accepted as a bearer credential instead of an Airlock token, so a workflow
 * needs no long-lived secret. The token is checked with jose against the issuer's published
 * keys; what it says about where it comes from (repository, ref, workflow, environment)
 * becomes the principal's `origin`, for policy to bind a project's jobs to approved origins.
 *
 * Fails closed: an issuer whose keys cannot be fetched refuses every token it signed
 * (WORKLOAD_IDENTITY_UNAVAILABLE, 503); every other problem is WORKLOAD_IDENTITY_INVALID (401)
 * with a message that says what was wrong. No message ever repeats the token.
 */

/** What a verified token makes of its holder (the authenticator adds the source address). */
export interface WorkloadIdentity {
  /** "oidc-" + 16 hex of SHA-256 over issuer, subject and jti/iat: names this token, never holds it. */
  readonly tokenId: string;
  /** "oidc:<issuer host and path>:<name claim>". */
  readonly name: string;
  readonly role: OidcRole;
  readonly projects: readonly string[];
  readonly origin: Origin;
}

export interface OidcVerifierOptions {
  readonly issuers: readonly OidcIssuerConfig[];
  /** Per fetch of a discovery document or key set; default 5 s. */
  readonly fetchTimeoutMs?: number;
  /** How long fetched keys are used before they are fetched again; default 10 min. */
  readonly jwksCacheMs?: number;
  /** Least time between two key-set fetches caused by an unknown key id; default 30 s. */
  readonly jwksCooldownMs?: number;
  /** After a failed fetch, tokens of that issuer are refused at once (no new fetch) this long; default 5 s. */
  readonly failureCooldownMs?: number;
  /** How long a discovery document (where the keys are) is trusted before it is read again; default 1 h. */
  readonly discoveryCacheMs?: number;
}

/** Longest token read: ID tokens are a kilobyte or two; larger is refused unparsed. */
export const MAX_JWT_CHARS = 8 * 1024;
/** Compact JWS: three base64url segments (the signature may be empty only to be refused as unsigned). */
export const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
/**
 * Asymmetric algorithms only. Never `none` (an unsigned token), never HS* (an HMAC "signed"
 * with the issuer's *public* key as the secret would verify if the key type were not pinned).
 */
export const ALLOWED_ALGORITHMS = ['RS256', 'ES256', 'EdDSA'] as const;
/** Clock skew tolerated between the issuer and this server for exp, nbf and iat. */
export const CLOCK_SKEW_S = 60;
/** A token valid for longer is refused: a leaked long-lived ID token would be a standing credential. */
export const MAX_LIFETIME_S = 24 * 3600;
/** Claims that become names and origin fields: bounded, no control or invisible formatting characters. */
export const MAX_CLAIM_CHARS = 256;
/** Discovery documents and key sets are a few KiB; an answer larger than this is refused unread. */
export const MAX_FETCH_BYTES = 256 * 1024;
const MAX_KEYS = 100;
const UNSAFE_TEXT = /[\p{Cc}\p{Cf}\p{Cs}]/u;
/** The name claim goes into the principal's name (audit actor, idempotency scope): a safe charset. */
const NAME_CLAIM = /^[A-Za-z0-9][A-Za-z0-9._@/:+=-]{0,199}$/;

function refuse(message: string): never {
  throw new AirlockError('WORKLOAD_IDENTITY_INVALID', `OIDC token refused: ${message}`);
}

function unavailable(issuer: string, message: string, cause?: unknown): AirlockError {
  return new AirlockError(
    'WORKLOAD_IDENTITY_UNAVAILABLE',
    `the signing keys of OIDC issuer ${issuer} cannot be fetched (${message}); the token cannot be checked, so it is refused — retry later`,
    cause === undefined ? undefined : { cause },
  );
}

/** A value from the token safe to quote in a message: short, plain; anything else is not quoted. */
function quote(value: unknown): string {
  return typeof value === 'string' && value.length <= MAX_CLAIM_CHARS && /^[\x20-\x7e]*$/.test(value)
    ? JSON.stringify(value)
    : '(not shown)';
}

/**
 * GET with a timeout, no redirects (a redirect could lead to plain http or elsewhere) and a
 * size bound (a hostile or broken endpoint cannot make the server buffer without end).
 * Throws a plain Error whose message says what failed; the caller maps it.
 */
async function fetchBounded(url: string, signal: AbortSignal, headers?: Headers): Promise<string> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'GET',
      redirect: 'manual',
      signal,
      ...(headers ? { headers } : {}),
    });
  } catch (error) {
    const cause = (error as { cause?: unknown }).cause;
    const name = (error as { name?: unknown }).name;
    throw new Error(
      name === 'TimeoutError' || name === 'AbortError'
        ? 'timed out'
        : `${describeError(error)}${cause !== undefined ? `: ${describeError(cause)}` : ''}`,
    );
  }
  let body: Buffer;
  try {
    if (response.status !== 200) throw new Error(`HTTP ${response.status} from ${url}`);
    const declared = Number(response.headers.get('content-length') ?? '0');
    if (declared > MAX_FETCH_BYTES) throw new Error(`answer larger than ${MAX_FETCH_BYTES} bytes`);
    const reader = response.body?.getReader();
    if (reader === undefined) throw new Error('empty answer');
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > MAX_FETCH_BYTES) {
        await reader.cancel().catch(() => undefined);
        throw new Error(`answer larger than ${MAX_FETCH_BYTES} bytes`);
      }
      chunks.push(value);
    }
    body = Buffer.concat(chunks);
  } catch (error) {
    await response.body?.cancel().catch(() => undefined);
    const name = (error as { name?: unknown }).name;
    if (name === 'TimeoutError' || name === 'AbortError') throw new Error('timed out');
    throw error;
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new Error(`not UTF-8 text from ${url}`);
  }
}

function parseJsonObject(text: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(`${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error(`${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

/** The keys of one issuer: from its jwksUri, or found by OIDC discovery; fetched lazily, cached. */
class IssuerKeys {
  readonly config: OidcIssuerConfig;
  /** The issuer's host and path, for principal names. */
  readonly host: string;
  readonly #o: Required<Omit<OidcVerifierOptions, 'issuers'>>;
  #keys: { readonly uri: string; readonly set: RemoteJWKSet } | null = null;
  #discoveredAt = 0;
  #discovering: Promise<RemoteJWKSet> | null = null;
  #failedAt = Number.NEGATIVE_INFINITY;
  #failure = '';

  constructor(config: OidcIssuerConfig, options: Required<Omit<OidcVerifierOptions, 'issuers'>>) {
    this.config = config;
    // Host and path: two issuers on one host (Keycloak realms, say) must not name their
    // workloads alike, or they would share a principal, its rules and its idempotency keys.
    const url = new URL(config.issuer);
    this.host = `${url.host}${url.pathname.replace(/\/+$/, '')}`;
    this.#o = options;
    if (config.jwksUri !== undefined) this.#keys = { uri: config.jwksUri, set: this.#remote(config.jwksUri) };
  }

  /** The key set to verify with; throws WORKLOAD_IDENTITY_UNAVAILABLE when it cannot be had. */
  async keySet(): Promise<RemoteJWKSet> {
    if (this.config.jwksUri !== undefined && this.#keys !== null) return this.#keys.set;
    if (this.#keys !== null && Date.now() - this.#discoveredAt < this.#o.discoveryCacheMs)
      return this.#keys.set;
    // One discovery at a time: a burst of requests makes one fetch, not one each.
    this.#discovering ??= this.#discover().finally(() => {
      this.#discovering = null;
    });
    return this.#discovering;
  }

  /**
   * Right after a failed fetch, tokens of this issuer are refused without another: forged
   * tokens sent while the issuer is down cannot turn each request into an outbound fetch.
   */
  #checkCooldown(): void {
    if (Date.now() - this.#failedAt < this.#o.failureCooldownMs)
      throw unavailable(this.config.issuer, `${this.#failure}; not retried for a few seconds`);
  }

  #failed(message: string): void {
    this.#failedAt = Date.now();
    this.#failure = message;
  }

  async #discover(): Promise<RemoteJWKSet> {
    this.#checkCooldown();
    const issuer = this.config.issuer;
    const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    let jwksUri: string;
    try {
      const document = parseJsonObject(
        await fetchBounded(
          url,
          AbortSignal.timeout(this.#o.fetchTimeoutMs),
          new Headers({ accept: 'application/json' }),
        ),
        'the discovery document',
      );
      // OpenID Connect Discovery §4.3: the document must name the very issuer it was fetched
      // for; otherwise one issuer's host could hand out keys that sign for another.
      if (document.issuer !== issuer)
        throw new Error(`the discovery document names another issuer, ${quote(document.issuer)}`);
      if (typeof document.jwks_uri !== 'string') throw new Error('the discovery document has no jwks_uri');
      jwksUri = document.jwks_uri;
      try {
        checkFetchUrl(jwksUri, 'jwks_uri', 'jwks');
      } catch (error) {
        throw new Error(
          `the discovery document's ${describeError(error).replace(/^AIRLOCK_OIDC_ISSUERS: /, '')}`,
        );
      }
    } catch (error) {
      const message = `discovery at ${url} failed: ${describeError(error)}`;
      this.#failed(message);
      throw unavailable(issuer, message, error);
    }
    // The same key set keeps its cache; a moved one starts afresh.
    if (this.#keys === null || this.#keys.uri !== jwksUri)
      this.#keys = { uri: jwksUri, set: this.#remote(jwksUri) };
    this.#discoveredAt = Date.now();
    return this.#keys.set;
  }

  #remote(uri: string): RemoteJWKSet {
    // jose caches the keys and fetches again for an unknown key id (key rotation), at most
    // once per cooldown; the fetch itself is ours, bounded in time and size.
    const fetchKeys: FetchImplementation = async (url, options) => {
      this.#checkCooldown();
      try {
        const text = await fetchBounded(url, options.signal, options.headers);
        const document = parseJsonObject(text, 'the key set');
        if (!Array.isArray(document.keys) || document.keys.length > MAX_KEYS)
          throw new Error(`the key set has no "keys" list of at most ${MAX_KEYS} keys`);
        return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } });
      } catch (error) {
        const message = `key set at ${url}: ${describeError(error)}`;
        this.#failed(message);
        throw unavailable(this.config.issuer, message, error);
      }
    };
    return createRemoteJWKSet(new URL(uri), {
      timeoutDuration: this.#o.fetchTimeoutMs,
      cacheMaxAge: this.#o.jwksCacheMs,
      cooldownDuration: this.#o.jwksCooldownMs,
      [customFetch]: fetchKeys,
    });
  }
}

/** A claim that names something: absent → "", else a bounded string without control characters. */
function textClaim(payload: JWTPayload, claim: string, required: boolean): string {
  const value = Object.hasOwn(payload, claim) ? payload[claim] : undefined;
  if (value === undefined || value === null) {
    if (required) refuse(`the token has no "${claim}" claim`);
    return '';
  }
  if (typeof value !== 'string') refuse(`claim "${claim}" is not a string`);
  if (value.length > MAX_CLAIM_CHARS) refuse(`claim "${claim}" is longer than ${MAX_CLAIM_CHARS} characters`);
  // Control and invisible formatting characters (bidi overrides, say) could make an audit
  // line or a policy decision read differently from what it is.
  if (UNSAFE_TEXT.test(value)) refuse(`claim "${claim}" contains control or formatting characters`);
  if (required && value === '') refuse(`claim "${claim}" is empty`);
  return value;
}

/** Maps jose's refusals to what was wrong, in words; never the token. */
function describeJoseError(error: unknown, config: OidcIssuerConfig): string {
  if (error instanceof errors.JWTExpired) return 'the token has expired';
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.reason === 'missing') return `the token has no "${error.claim}" claim`;
    if (error.claim === 'aud') return `the token's audience is not ${JSON.stringify(config.audience)}`;
    if (error.claim === 'nbf') return 'the token is not valid yet (nbf is in the future)';
    return `claim "${error.claim}" is invalid (${error.message})`;
  }
  if (error instanceof errors.JOSEAlgNotAllowed)
    return `the algorithm is not one of ${ALLOWED_ALGORITHMS.join(', ')}`;
  if (
    error instanceof errors.JWSSignatureVerificationFailed ||
    error instanceof errors.JWKSMultipleMatchingKeys
  )
    return "the signature does not verify with the issuer's keys";
  if (error instanceof errors.JWKSNoMatchingKey)
    return "no key of the issuer's key set matches the token (kid)";
  if (error instanceof errors.JOSEError) return `the token is malformed (${error.message.slice(0, 200)})`;
  return 'the token is malformed';
}

export class OidcVerifier {
  readonly #issuers = new Map<string, IssuerKeys>();

  constructor(options: OidcVerifierOptions) {
    if (options.issuers.length === 0) throw new RangeError('OidcVerifier: at least one issuer');
    const settings = {
      fetchTimeoutMs: options.fetchTimeoutMs ?? 5000,
      jwksCacheMs: options.jwksCacheMs ?? 600_000,
      jwksCooldownMs: options.jwksCooldownMs ?? 30_000,
      failureCooldownMs: options.failureCooldownMs ?? 5000,
      discoveryCacheMs: options.discoveryCacheMs ?? 3_600_000,
    };
    for (const issuer of options.issuers) this.#issuers.set(issuer.issuer, new IssuerKeys(issuer, settings));
  }

  /**
   * Verifies an ID token; `now` (ms) is the time its exp, nbf and iat are checked against.
   * Throws AirlockError WORKLOAD_IDENTITY_INVALID or WORKLOAD_IDENTITY_UNAVAILABLE, nothing else.
   */
  async verify(jwt: string, now: number = Date.now()): Promise<WorkloadIdentity> {
    // Bounded before anything is decoded.
    if (typeof jwt !== 'string' || jwt.length > MAX_JWT_CHARS)
      refuse(`a token is at most ${MAX_JWT_CHARS} characters`);
    if (!JWT_SHAPE.test(jwt)) refuse('not a JWT (three base64url segments separated by dots)');
    let header: ReturnType<typeof decodeProtectedHeader>;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(jwt);
      unverified = decodeJwt(jwt);
    } catch {
      refuse('not a JWT: its header or claims are not base64url JSON objects');
    }
    // Checked before any key is fetched: an unsigned or HMAC token costs no network request.
    if (!(ALLOWED_ALGORITHMS as readonly unknown[]).includes(header.alg))
      refuse(`algorithm ${quote(header.alg)} is not allowed; only ${ALLOWED_ALGORITHMS.join(', ')}`);
    // Exact match against the configured list, before any network fetch: the token never
    // names where its keys are (no jku, x5u or embedded jwk is ever used), so a forger
    // cannot point the server at keys of their own.
    const state = typeof unverified.iss === 'string' ? this.#issuers.get(unverified.iss) : undefined;
    if (state === undefined) refuse(`issuer ${quote(unverified.iss)} is not a configured issuer`);
    const config = state.config;
    const keys = await state.keySet();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(jwt, keys, {
        algorithms: [...ALLOWED_ALGORITHMS],
        issuer: config.issuer,
        // Tokens minted for another service (another audience) cannot be replayed here.
        audience: config.audience,
        requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat'],
        clockTolerance: CLOCK_SKEW_S,
        currentDate: new Date(now),
      }));
    } catch (error) {
      if (error instanceof AirlockError) throw error;
      if (error instanceof errors.JWKSTimeout) throw unavailable(config.issuer, 'timed out', error);
      if (error instanceof errors.JWKSInvalid)
        throw unavailable(config.issuer, "the issuer's key set is malformed", error);
      refuse(describeJoseError(error, config));
    }
    const nowS = Math.floor(now / 1000);
    // jose checked that exp and iat are numbers and exp is not past.
    const iat = payload.iat as number;
    const exp = payload.exp as number;
    if (iat > nowS + CLOCK_SKEW_S) refuse('the token was issued in the future (iat); check the clocks');
    if (exp - iat > MAX_LIFETIME_S)
      refuse(
        `the token is valid for more than ${MAX_LIFETIME_S / 3600} h (exp − iat); ask for a short-lived one`,
      );
    const subject = textClaim(payload, 'sub', true);
    // Bound claims of the issuer entry: with a shared issuer (GitHub, GitLab.com) every
    // workload of every customer can get a token for any audience; these say which are ours.
    for (const [claim, allowed] of Object.entries(config.require)) {
      const value = payload[claim];
      if (typeof value !== 'string' || !allowed.includes(value))
        refuse(`claim "${claim}" is not one of the values this issuer requires`);
    }
    const claims = config.claims;
    const nameClaim = textClaim(payload, claims.name, true);
    if (!NAME_CLAIM.test(nameClaim))
      refuse(`claim "${claims.name}" (the principal's name) must match ${NAME_CLAIM.source}`);
    const origin: Origin = {
      issuer: config.issuer,
      subject,
      repository: textClaim(payload, claims.repository, false),
      ref: textClaim(payload, claims.ref, false),
      workflow: textClaim(payload, claims.workflow, false),
      environment: textClaim(payload, claims.environment, false),
    };
    const jti = typeof payload.jti === 'string' ? payload.jti : '';
    const tokenId = `oidc-${createHash('sha256')
      .update(JSON.stringify([config.issuer, subject, jti, iat]))
      .digest('hex')
      .slice(0, 16)}`;
    return {
      tokenId,
      name: `oidc:${state.host}:${nameClaim}`,
      role: config.role,
      projects: [...config.projects],
      origin,
    };
  }
}

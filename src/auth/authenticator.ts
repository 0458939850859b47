import { type AuditLog, markAudited } from '../audit/audit-log.js';
import { AirlockError } from '../errors.js';
import { parsePublicKey } from '../signing/public-key.js';
import type { Store } from '../store/store.js';
import { MAX_JWT_CHARS, type OidcVerifier } from './oidc.js';
import type { Principal } from './principal.js';
import type { FailureLimiter } from './rate-limit.js';
import { REQUEST_SKEW_S, verifyRequest } from './request-signature.js';
import { parseToken, secretMatches } from './tokens.js';

/**
 * Bearer-token authentication. Fails closed: no header, a malformed token, an unknown id, a
 * wrong secret, an expired or revoked token — all UNAUTHENTICATED with the same message, so
 * the answer does not tell which part was wrong (the audit event does). Failures count
 * against the source address and the token id; past the limit (10 a minute) further failures
 * from that source or for that token id answer RATE_LIMITED (429, Retry-After). A valid
 * token is never refused by the limit: with `airlock up` or behind a proxy every client has
 * the same source address, and a stranger's bad guesses must not lock the worker out.
 *
 * With OIDC issuers configured, a bearer credential shaped like a JWT (never an `alk_` token)
 * is a workload identity, checked by the OidcVerifier (src/auth/oidc.ts). Its refusals count
 * and are audited like a bad token's, with the verifier's reason (never the token); an issuer
 * whose keys cannot be fetched (WORKLOAD_IDENTITY_UNAVAILABLE) is not the client's fault, so
 * that refusal does not count against the client's limit.
 */

export interface AuthenticatorOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly limiter: FailureLimiter;
  /** Verifies OIDC ID tokens (workload identity); undefined = only Airlock tokens are accepted. */
  readonly oidc?: OidcVerifier;
  readonly now?: () => number;
}

const REFUSAL = 'missing, unknown, expired or revoked API token';
/**
 * A bearer JWT: three base64url segments (an `alk_` token has no dots, so never matches),
 * at most 8 KiB — the only credential longer than the 256 characters an Airlock token may be.
 */
const BEARER_JWT = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)$/;
/** A spent request nonce is kept a day past its window. */
const NONCE_RETENTION_MS = 24 * 3600 * 1000;

/** What a request signature covers, as the server sees the request. */
export interface RequestView {
  readonly method: string;
  /** The full target URI; null when the Host header cannot form one. */
  readonly targetUri: string | null;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly hasBody: boolean;
}

export class Authenticator {
  readonly #o: AuthenticatorOptions;
  readonly #now: () => number;

  constructor(options: AuthenticatorOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /**
   * `request`: what a request signature (RFC 9421) covers, for tokens that require one. Its
   * failures count as failed authentications (limited, audited once a window), so a stolen
   * bearer secret without the key can neither flood the audit log nor spend the token's rate.
   */
  async authenticate(
    authorization: string | undefined,
    source: string,
    request?: RequestView,
  ): Promise<Principal> {
    const presented = /^Bearer ([\x21-\x7e]{1,256})$/.exec(authorization ?? '')?.[1];
    const parsed = presented === undefined ? null : parseToken(presented);
    const keys = [`source:${source}`, ...(parsed !== null ? [`token:${parsed.id}`] : [])];
    const refuse = async (why: string, refusal?: AirlockError): Promise<never> => {
      // Past the limit a failure is answered 429, and only the first refusal of a window is
      // audited (a flood must not fill the disk with fsync'd events). Below it, 401.
      for (const key of keys) {
        const retryAfter = this.#o.limiter.retryAfter(key);
        if (retryAfter === 0) continue;
        if (this.#o.limiter.firstRefusal(key))
          await this.#record(
            'auth.rate_limited',
            parsed?.id ?? '',
            source,
            `too many failed authentications (${key}); the last: ${why}`,
          );
        const error = new AirlockError(
          'RATE_LIMITED',
          `too many failed authentications; try again in ${retryAfter} s`,
        );
        Object.defineProperty(error, 'retryAfterSeconds', { value: retryAfter, enumerable: true });
        throw markAudited(error);
      }
      for (const key of keys) this.#o.limiter.fail(key);
      await this.#record('auth.failed', parsed === null ? '' : `token:${parsed.id}`, source, why);
      throw markAudited(refusal ?? new AirlockError('UNAUTHENTICATED', REFUSAL));
    };
    if (authorization === undefined) return refuse('no Authorization header');
    const jwt =
      this.#o.oidc !== undefined && authorization.length <= 'Bearer '.length + MAX_JWT_CHARS
        ? BEARER_JWT.exec(authorization)?.[1]
        : undefined;
    if (this.#o.oidc !== undefined && jwt !== undefined) {
      try {
        return { ...(await this.#o.oidc.verify(jwt, this.#now())), source, requestKey: null };
      } catch (error) {
        if (!(error instanceof AirlockError)) throw error;
        // The verifier's messages never repeat the token: safe for the audit reason.
        const why = `${error.code}: ${error.message}`;
        if (error.code !== 'WORKLOAD_IDENTITY_UNAVAILABLE') return refuse(why, error);
        // Not counted against the client, but audited — at most 10 a minute per source, so
        // a flood while the issuer is down cannot fill the disk with fsync'd events.
        const key = `oidc-unavailable:${source}`;
        if (this.#o.limiter.retryAfter(key) === 0) {
          this.#o.limiter.fail(key);
          await this.#record('auth.failed', '', source, why);
        }
        throw markAudited(error);
      }
    }
    if (parsed === null) return refuse('malformed bearer token');
    const row = await this.#o.store.read(async (tx) => tx.tokens.get(parsed.id));
    // The secret is compared even for an unknown id, so timing does not tell ids apart.
    const matches = secretMatches(parsed.secret, row?.hash ?? '0'.repeat(64));
    if (row === null) return refuse('unknown token id');
    if (!matches) return refuse('wrong secret for the token id');
    if (row.revokedAt !== null) return refuse('revoked token');
    if (row.expiresAt !== null && row.expiresAt <= this.#now()) return refuse('expired token');
    if (row.requestKey !== null) {
      try {
        const now = this.#now();
        const { nonce, created } = verifyRequest({
          method: request?.method ?? '',
          targetUri: request?.targetUri ?? null,
          headers: request?.headers ?? {},
          hasBody: request?.hasBody ?? false,
          tokenId: row.id,
          publicKey: parsePublicKey(row.requestKey).key,
          now,
        });
        // Spent now, whatever becomes of the request: a request refused later (rate, a
        // closing server, validation) cannot be sent again either.
        const fresh = await this.#o.store.transaction(async (tx) => {
          await tx.nonces.purge(now);
          return tx.nonces.consume(
            `token:${row.id}`,
            nonce,
            (created + 2 * REQUEST_SKEW_S) * 1000 + NONCE_RETENTION_MS,
            now,
          );
        });
        if (!fresh)
          throw new AirlockError(
            'SIGNATURE_REPLAYED',
            'request signature: this nonce was used before: the request was replayed',
          );
      } catch (error) {
        if (error instanceof AirlockError) return refuse(`${error.code}: ${error.message}`, error);
        throw error;
      }
    }
    return {
      tokenId: row.id,
      name: row.principal,
      role: row.role,
      projects: row.projects,
      source,
      requestKey: row.requestKey,
    };
  }

  async #record(action: string, target: string, source: string, reason: string): Promise<void> {
    await this.#o.store.transaction(async (tx) => {
      await this.#o.audit.append(tx, {
        actor: 'anonymous',
        action,
        target,
        outcome: 'denied',
        reason,
        source,
      });
    });
  }
}

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { TokenRole } from '../api/types.js';
import type { TokenRow } from '../store/store.js';

/**
 * API tokens: `alk_<id>_<secret>`. The id (16 hex) is not secret and names the token in
 * lists and audit events; the secret is 256 random bits (43 base64url characters), shown
 * once at creation and stored only as its SHA-256. A presented token is looked up by id and
 * its secret compared in constant time, so neither the lookup nor the comparison tells an
 * attacker how much of a guess was right. A wrong secret for a known id also lets failures
 * be rate-limited per token.
 */

export const TOKEN_PATTERN = /^alk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
/** Longest Authorization header value read: anything longer is refused unparsed. */
export const MAX_TOKEN_CHARS = 128;

export interface ParsedToken {
  readonly id: string;
  readonly secret: string;
}

export function parseToken(text: string): ParsedToken | null {
  if (text.length > MAX_TOKEN_CHARS) return null;
  const match = TOKEN_PATTERN.exec(text);
  if (match === null || match[1] === undefined || match[2] === undefined) return null;
  return { id: `tok_${match[1]}`, secret: match[2] };
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

export interface IssuedToken {
  readonly row: TokenRow;
  /** The whole token to hand to its holder; never stored, never logged. */
  readonly token: string;
}

export function issueToken(input: {
  principal: string;
  role: TokenRole;
  projects: readonly string[];
  createdBy: string;
  now: number;
  expiresAt: number | null;
  requestKey?: string | null;
}): IssuedToken {
  const idHex = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return {
    token: `alk_${idHex}_${secret}`,
    row: {
      id: `tok_${idHex}`,
      hash: hashSecret(secret),
      principal: input.principal,
      role: input.role,
      projects: [...input.projects],
      createdAt: input.now,
      createdBy: input.createdBy,
      expiresAt: input.expiresAt,
      revokedAt: null,
      requestKey: input.requestKey ?? null,
    },
  };
}

/** Constant-time comparison of a presented secret with the stored hash. */
export function secretMatches(secret: string, storedHash: string): boolean {
  const presented = Buffer.from(hashSecret(secret), 'hex');
  const stored = Buffer.from(storedHash, 'hex');
  return presented.length === stored.length && timingSafeEqual(presented, stored);
}

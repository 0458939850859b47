import type { FastifyRequest } from 'fastify';
import type { Principal } from '../../auth/principal.js';
import { AirlockError } from '../../errors.js';

/** The authenticated principal of a /v1 request (set by the onRequest hook; never null there). */
export function principalOf(request: FastifyRequest): Principal {
  if (request.principal === null)
    throw new AirlockError('UNAUTHENTICATED', 'missing, unknown, expired or revoked API token');
  return request.principal;
}

/**
 * Bounds what one token holds open at once (log streams, long polls): past `max`, 429. The
 * returned function gives the place back; it is safe to call more than once.
 */
export class PerTokenCap {
  readonly #max: number;
  readonly #what: string;
  readonly #held = new Map<string, number>();

  constructor(max: number, what: string) {
    this.#max = max;
    this.#what = what;
  }

  acquire(tokenId: string): () => void {
    const held = this.#held.get(tokenId) ?? 0;
    if (held >= this.#max) {
      const error = new AirlockError(
        'RATE_LIMITED',
        `this token already has ${held} ${this.#what}; close one first`,
      );
      Object.defineProperty(error, 'retryAfterSeconds', { value: 1, enumerable: true });
      throw error;
    }
    this.#held.set(tokenId, held + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const now = (this.#held.get(tokenId) ?? 1) - 1;
      if (now <= 0) this.#held.delete(tokenId);
      else this.#held.set(tokenId, now);
    };
  }
}

export const errorResponses = {
  400: { $ref: 'Error#' },
  401: { $ref: 'Error#' },
  403: { $ref: 'Error#' },
  404: { $ref: 'Error#' },
  409: { $ref: 'Error#' },
  413: { $ref: 'Error#' },
  429: { $ref: 'Error#' },
  500: { $ref: 'Error#' },
  503: { $ref: 'Error#' },
} as const;

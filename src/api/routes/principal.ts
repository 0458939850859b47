import type { FastifyRequest } from 'fastify';
import type { Principal } from '../../auth/principal.js';
import { AirlockError } from '../../errors.js';

/** The authenticated principal of a /v1 request (set by the onRequest hook; never null there). */
export function principalOf(request: FastifyRequest): Principal {
  if (request.principal === null)
    throw new AirlockError('UNAUTHENTICATED', 'missing, unknown, expired or revoked API token');
  return request.principal;
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

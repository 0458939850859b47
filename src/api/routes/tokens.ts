import type { Static } from '@sinclair/typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import { decisionDetails } from '../../policy/gate.js';
import type { ApiDeps } from '../app.js';
import { TokenCreateSchema, TokenIdParams, TokenInfoSchema } from '../schemas.js';
import type { TokenCreateRequest } from '../types.js';
import { errorResponses, principalOf } from './principal.js';

/** API tokens (admin only): create (the secret is in this answer only), list, revoke. */
export function tokenRoutes(deps: ApiDeps): FastifyPluginAsync {
  return async (app) => {
    app.post(
      '/tokens',
      {
        schema: {
          summary: 'Create an API token; the secret is shown in this answer only',
          body: TokenCreateSchema,
          response: {
            201: Type.Object({ token: TokenInfoSchema, secret: Type.String() }),
            ...errorResponses,
          },
        },
      },
      async (request, reply) => {
        const decision = await deps.policy.authorize(principalOf(request), 'token.manage', {
          kind: 'service',
        });
        const created = await deps.tokens.create(
          principalOf(request),
          request.body as TokenCreateRequest,
          decisionDetails(decision),
        );
        return reply.status(201).header('cache-control', 'no-store').send(created);
      },
    );
    app.get(
      '/tokens',
      {
        schema: {
          summary: 'List API tokens (never their secrets)',
          response: { 200: Type.Object({ tokens: Type.Array(TokenInfoSchema) }), ...errorResponses },
        },
      },
      async (request) => {
        await deps.policy.authorize(principalOf(request), 'token.manage', { kind: 'service' });
        return { tokens: await deps.tokens.list(principalOf(request)) };
      },
    );
    app.post(
      '/tokens/:id/revoke',
      {
        schema: {
          summary: 'Revoke an API token',
          params: TokenIdParams,
          response: { 200: TokenInfoSchema, ...errorResponses },
        },
      },
      async (request) => {
        const decision = await deps.policy.authorize(principalOf(request), 'token.manage', {
          kind: 'service',
        });
        return deps.tokens.revoke(
          principalOf(request),
          (request.params as Static<typeof TokenIdParams>).id,
          decisionDetails(decision),
        );
      },
    );
  };
}

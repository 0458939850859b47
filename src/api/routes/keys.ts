import type { Static } from '@sinclair/typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import { factsOfKey } from '../../policy/facts.js';
import { decisionDetails } from '../../policy/gate.js';
import type { ApiDeps } from '../app.js';
import { Name, SigningKeyAddSchema, SigningKeyInfoSchema } from '../schemas.js';
import { errorResponses, principalOf } from './principal.js';

/** Keys trusted to sign a project's jobs: register (admin), list, revoke (admin). */

const KeyIdParams = Type.Object({ id: Type.String({ pattern: '^key_[0-9a-f]{16}$' }) });
const KeyListQuery = Type.Object({ project: Type.Optional(Name) }, { additionalProperties: false });

export function keyRoutes(deps: ApiDeps): FastifyPluginAsync {
  return async (app) => {
    app.post(
      '/keys',
      {
        schema: {
          summary: 'Register a public key to sign the jobs of a project',
          body: SigningKeyAddSchema,
          response: { 201: SigningKeyInfoSchema, ...errorResponses },
        },
      },
      async (request, reply) => {
        const body = request.body as Static<typeof SigningKeyAddSchema>;
        const decision = await deps.policy.authorize(
          principalOf(request),
          'key.manage',
          { kind: 'project', project: body.project },
          factsOfKey(body.project, body.owner, body.release === true),
        );
        return reply
          .status(201)
          .send(await deps.keys.add(principalOf(request), body, decisionDetails(decision)));
      },
    );
    app.get(
      '/keys',
      {
        schema: {
          summary: 'Keys registered to sign jobs (of the projects this token sees)',
          querystring: KeyListQuery,
          response: { 200: Type.Object({ keys: Type.Array(SigningKeyInfoSchema) }), ...errorResponses },
        },
      },
      async (request) => {
        const query = request.query as Static<typeof KeyListQuery>;
        await deps.policy.authorize(
          principalOf(request),
          'key.read',
          query.project !== undefined ? { kind: 'project', project: query.project } : { kind: 'service' },
        );
        return { keys: await deps.keys.list(principalOf(request), query.project) };
      },
    );
    app.post(
      '/keys/:id/revoke',
      {
        schema: {
          summary: 'Revoke a signing key: its signatures are refused from now on, for good',
          params: KeyIdParams,
          response: { 200: SigningKeyInfoSchema, ...errorResponses },
        },
      },
      async (request) => {
        const { id } = request.params as Static<typeof KeyIdParams>;
        const decision = await deps.policy.authorize(principalOf(request), 'key.manage', { kind: 'service' });
        return deps.keys.revoke(principalOf(request), id, decisionDetails(decision));
      },
    );
  };
}

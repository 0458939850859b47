import { type Static, type TSchema, Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import { MAX_IMAGE_REF } from '../../images/reference.js';
import { decisionDetails } from '../../policy/gate.js';
import { MAX_LISTED_APPROVALS } from '../../policy/image-approvals.js';
import type { ApiDeps } from '../app.js';
import { errorResponses, principalOf } from './principal.js';

/**
 * Approved images: approve a digest-pinned image (admin), list approvals (anyone who may read
 * policy), revoke one (admin). Each is decided by the policy (image.manage / image.read);
 * approving and revoking are audited with the change and the decision.
 */

const closed = { additionalProperties: false } as const;
const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
const Reason = Type.String({ minLength: 1, maxLength: 2000 });
const Digest = Type.String({ pattern: '^sha256:[0-9a-f]{64}$', maxLength: 71 });

const Approve = Type.Object(
  {
    // NAME@sha256:<64 hex> (src/images/reference.ts says precisely what is wrong with another).
    ref: Type.String({ minLength: 1, maxLength: MAX_IMAGE_REF }),
    reason: Reason,
  },
  closed,
);
const Revoke = Type.Object({ reason: Reason }, closed);
const DigestParams = Type.Object({ digest: Digest }, closed);

export const ImageApprovalSchema = Type.Object({
  digest: Type.String(),
  name: Type.String(),
  ref: Type.String(),
  reason: Type.String(),
  approvedBy: Type.String(),
  approvedAt: Type.String({ format: 'date-time' }),
  revokedBy: Nullable(Type.String()),
  revokedAt: Nullable(Type.String({ format: 'date-time' })),
  revokeReason: Nullable(Type.String()),
});

export function imageRoutes(deps: ApiDeps): FastifyPluginAsync {
  return async (app) => {
    app.post(
      '/images/approvals',
      {
        schema: {
          summary: 'Approve a digest-pinned image: policy sees its jobs as context.imageApproved',
          body: Approve,
          response: { 201: ImageApprovalSchema, ...errorResponses },
        },
      },
      async (request, reply) => {
        const body = request.body as Static<typeof Approve>;
        const decision = await deps.policy.authorize(principalOf(request), 'image.manage', {
          kind: 'service',
        });
        return reply
          .status(201)
          .send(
            await deps.images.approve(principalOf(request), body.ref, body.reason, decisionDetails(decision)),
          );
      },
    );
    app.get(
      '/images/approvals',
      {
        schema: {
          summary: `Image approvals, revoked ones included, newest first (at most ${MAX_LISTED_APPROVALS})`,
          response: { 200: Type.Object({ approvals: Type.Array(ImageApprovalSchema) }), ...errorResponses },
        },
      },
      async (request) => {
        await deps.policy.authorize(principalOf(request), 'image.read', { kind: 'service' });
        return { approvals: await deps.images.list(principalOf(request)) };
      },
    );
    app.delete(
      '/images/approvals/:digest',
      {
        schema: {
          summary: 'Revoke the approval of an image: jobs submitted from now on see it as unapproved',
          params: DigestParams,
          body: Revoke,
          response: { 200: ImageApprovalSchema, ...errorResponses },
        },
      },
      async (request) => {
        const { digest } = request.params as Static<typeof DigestParams>;
        const body = request.body as Static<typeof Revoke>;
        const decision = await deps.policy.authorize(principalOf(request), 'image.manage', {
          kind: 'service',
        });
        return deps.images.revoke(principalOf(request), digest, body.reason, decisionDetails(decision));
      },
    );
  };
}

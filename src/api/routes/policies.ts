import { type Static, type TSchema, Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import { MAX_SUGGEST_RUNS } from '../../policy/documents.js';
import { MAX_POLICY_BYTES } from '../../policy/engine.js';
import type { PolicyDocRow } from '../../store/store.js';
import type { ApiDeps } from '../app.js';
import { Name } from '../schemas.js';
import { errorResponses, principalOf } from './principal.js';

/**
 * Policy and profile governance: status, history, show, propose, approve, reject, rollback,
 * and switching a version in audit mode to enforce; profile suggestions from past runs.
 * Every route is decided by the policy itself (policy.read / policy.propose / policy.approve).
 */

const closed = { additionalProperties: false } as const;
const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
const Kind = Type.Union([Type.Literal('policy'), Type.Literal('profile')]);
/** "" (the policy set), a project, or PROJECT@sha256:<64 hex> (one script's profile). */
const Scope = Type.String({
  pattern: '^$|^[a-z0-9][a-z0-9._-]{0,63}(@sha256:[0-9a-f]{64})?$',
  maxLength: 136,
});
const Version = Type.Integer({ minimum: 1, maximum: 1_000_000_000 });
const Rationale = Type.String({ minLength: 1, maxLength: 2000 });
const DocRef = Type.Object({ kind: Kind, scope: Scope, version: Version }, closed);

const Summary = Type.Object({
  kind: Kind,
  scope: Type.String(),
  version: Type.Integer(),
  contentHash: Type.String(),
  author: Type.String(),
  rationale: Type.String(),
  mode: Type.Union([Type.Literal('enforce'), Type.Literal('audit')]),
  baseVersion: Nullable(Type.Integer()),
  rollbackOf: Nullable(Type.Integer()),
  state: Type.Union([Type.Literal('proposed'), Type.Literal('approved'), Type.Literal('rejected')]),
  proposedAt: Type.Integer(),
  decidedBy: Nullable(Type.String()),
  decidedAt: Nullable(Type.Integer()),
});
const Document = Type.Composite([Summary, Type.Object({ content: Type.String() })]);
const Counts = Type.Array(
  Type.Object({ action: Type.String(), evaluated: Type.Integer(), wouldDeny: Type.Integer() }),
);
const Status = Type.Object({
  policy: Type.Object({
    enforce: Nullable(Summary),
    audit: Nullable(Type.Composite([Summary, Type.Object({ counts: Counts })])),
  }),
  profiles: Type.Array(Type.Object({ scope: Type.String(), version: Nullable(Type.Integer()) })),
  pending: Type.Array(Summary),
});
const ProfileBody = Type.Object({
  runtimes: Type.Array(Type.String()),
  resources: Type.Record(Type.String(), Type.Number()),
  egress: Type.Array(Type.String()),
  secrets: Type.Array(Type.String()),
});

const Propose = Type.Object(
  {
    kind: Kind,
    scope: Scope,
    content: Type.String({ minLength: 1, maxLength: MAX_POLICY_BYTES }),
    rationale: Rationale,
    mode: Type.Optional(Type.Union([Type.Literal('enforce'), Type.Literal('audit')])),
  },
  closed,
);
const Reject = Type.Object(
  { kind: Kind, scope: Scope, version: Version, reason: Type.String({ maxLength: 2000 }) },
  closed,
);
const Rollback = Type.Object({ kind: Kind, scope: Scope, version: Version, rationale: Rationale }, closed);
const Enforce = Type.Object({ version: Version }, closed);
const HistoryQuery = Type.Object({ kind: Kind, scope: Type.Optional(Scope) }, closed);
const ShowQuery = Type.Object(
  {
    kind: Kind,
    scope: Type.Optional(Scope),
    version: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,8}$' })),
  },
  closed,
);
const SuggestParams = Type.Object({ project: Name }, closed);
const SuggestQuery = Type.Object(
  { runs: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,3}$' })) },
  closed,
);

export function policyRoutes(deps: ApiDeps): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/policies/status',
      {
        schema: {
          summary:
            'The policy in force, the one in audit mode with its counts, profiles set, pending proposals',
          response: { 200: Status, ...errorResponses },
        },
      },
      async (request) => deps.policies.status(principalOf(request)),
    );
    app.get(
      '/policies/history',
      {
        schema: {
          summary: 'Every version of the policy set or of a profile, newest first',
          querystring: HistoryQuery,
          response: { 200: Type.Object({ versions: Type.Array(Summary) }), ...errorResponses },
        },
      },
      async (request) => {
        const query = request.query as Static<typeof HistoryQuery>;
        return { versions: await deps.policies.history(principalOf(request), query.kind, query.scope ?? '') };
      },
    );
    app.get(
      '/policies/document',
      {
        schema: {
          summary: 'One version with its content (default: the one in force)',
          querystring: ShowQuery,
          response: { 200: Document, ...errorResponses },
        },
      },
      async (request): Promise<PolicyDocRow> => {
        const query = request.query as Static<typeof ShowQuery>;
        return deps.policies.show(
          principalOf(request),
          query.kind,
          query.scope ?? '',
          query.version === undefined ? undefined : Number(query.version),
        );
      },
    );
    app.post(
      '/policies/proposals',
      {
        schema: {
          summary:
            'Propose a new version of the policy set or of a profile (it applies once another admin approves)',
          body: Propose,
          response: { 201: Summary, ...errorResponses },
        },
      },
      async (request, reply) => {
        const body = request.body as Static<typeof Propose>;
        return reply.status(201).send(
          await deps.policies.propose(principalOf(request), {
            kind: body.kind,
            scope: body.scope,
            content: body.content,
            rationale: body.rationale,
            ...(body.mode !== undefined ? { mode: body.mode } : {}),
          }),
        );
      },
    );
    app.post(
      '/policies/approve',
      {
        schema: {
          summary: 'Approve a pending proposal (an admin other than its author)',
          body: DocRef,
          response: { 200: Summary, ...errorResponses },
        },
      },
      async (request) => {
        const body = request.body as Static<typeof DocRef>;
        return deps.policies.approve(principalOf(request), body.kind, body.scope, body.version);
      },
    );
    app.post(
      '/policies/reject',
      {
        schema: {
          summary: 'Reject (or, as its author, withdraw) a pending proposal',
          body: Reject,
          response: { 200: Summary, ...errorResponses },
        },
      },
      async (request) => {
        const body = request.body as Static<typeof Reject>;
        return deps.policies.reject(principalOf(request), body.kind, body.scope, body.version, body.reason);
      },
    );
    app.post(
      '/policies/rollback',
      {
        schema: {
          summary: 'Propose an earlier approved version again (it applies once another admin approves)',
          body: Rollback,
          response: { 201: Summary, ...errorResponses },
        },
      },
      async (request, reply) => {
        const body = request.body as Static<typeof Rollback>;
        return reply
          .status(201)
          .send(
            await deps.policies.rollback(
              principalOf(request),
              body.kind,
              body.scope,
              body.version,
              body.rationale,
            ),
          );
      },
    );
    app.post(
      '/policies/enforce',
      {
        schema: {
          summary: 'Switch the policy version in audit mode to enforce (an admin other than its author)',
          body: Enforce,
          response: { 200: Summary, ...errorResponses },
        },
      },
      async (request) =>
        deps.policies.enforce(principalOf(request), (request.body as Static<typeof Enforce>).version),
    );
    app.get(
      '/profiles/:project/suggest',
      {
        schema: {
          summary: `The smallest profile covering the project's last runs (at most ${MAX_SUGGEST_RUNS}), and unused grants`,
          params: SuggestParams,
          querystring: SuggestQuery,
          response: {
            200: Type.Object({
              runs: Type.Integer(),
              current: Type.Integer(),
              profile: ProfileBody,
              unused: Type.Array(Type.String()),
            }),
            ...errorResponses,
          },
        },
      },
      async (request) => {
        const { project } = request.params as Static<typeof SuggestParams>;
        const query = request.query as Static<typeof SuggestQuery>;
        return deps.policies.suggest(principalOf(request), project, Number(query.runs ?? '50'));
      },
    );
  };
}

import type { Static } from '@sinclair/typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import { requireAction } from '../../auth/principal.js';
import { AirlockError } from '../../errors.js';
import type { AuditRow } from '../../store/store.js';
import type { ApiDeps } from '../app.js';
import { AuditEventSchema, AuditQuery, AuditVerificationSchema } from '../schemas.js';
import type { AuditEvent, AuditPage } from '../types.js';
import { errorResponses, principalOf } from './principal.js';

/** The audit trail (admin only): read pages of events, verify the whole chain. Reading is itself audited. */

export function auditEvent(row: AuditRow): AuditEvent {
  return {
    seq: row.seq,
    at: new Date(row.at).toISOString(),
    actor: row.actor,
    action: row.action,
    target: row.target,
    outcome: row.outcome,
    reason: row.reason,
    source: row.source,
    details: JSON.parse(row.details) as Record<string, unknown>,
    prevHash: row.prevHash,
    hash: row.hash,
  };
}

export function auditRoutes(deps: ApiDeps): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/audit/events',
      {
        schema: {
          summary: 'Audit events in order: ?after=SEQ&limit=N, or the newest ?last=N',
          querystring: AuditQuery,
          response: {
            200: Type.Object({
              events: Type.Array(AuditEventSchema),
              nextAfter: Type.Union([Type.Integer(), Type.Null()]),
            }),
            ...errorResponses,
          },
        },
      },
      async (request): Promise<AuditPage> => {
        const who = principalOf(request);
        requireAction(who, 'audit.read');
        const query = request.query as Static<typeof AuditQuery>;
        const limit = Number(query.limit ?? query.last ?? '100');
        if (limit < 1 || limit > 1000)
          throw new AirlockError('INVALID_REQUEST', 'limit must be between 1 and 1000');
        const rows = await deps.store.transaction(async (tx) => {
          const page =
            query.last !== undefined
              ? await tx.audit.last(limit)
              : await tx.audit.after(Number(query.after ?? '0'), limit);
          await deps.audit.append(tx, {
            actor: who.name,
            action: 'audit.read',
            outcome: 'succeeded',
            source: who.source,
            details: { after: query.after ?? null, last: query.last ?? null, limit },
          });
          return page;
        });
        const last = rows.at(-1);
        return {
          events: rows.map(auditEvent),
          nextAfter:
            query.last === undefined && rows.length === limit && last !== undefined ? last.seq : null,
        };
      },
    );
    app.get(
      '/audit/verify',
      {
        schema: {
          summary: 'Verify the whole hash chain; names the first entry that does not verify',
          response: { 200: AuditVerificationSchema, ...errorResponses },
        },
      },
      async (request) => {
        const who = principalOf(request);
        requireAction(who, 'audit.read');
        const result = await deps.audit.verify(deps.store);
        await deps.store.transaction(async (tx) => {
          await deps.audit.append(tx, {
            actor: who.name,
            action: 'audit.verify',
            outcome: result.ok ? 'succeeded' : 'failed',
            reason: result.firstBad?.reason ?? '',
            source: who.source,
            details: { entries: result.entries },
          });
        });
        return result;
      },
    );
  };
}

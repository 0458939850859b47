import type { Static } from '@sinclair/typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import { AirlockError } from '../../errors.js';
import type { AuditRow, CheckpointRow } from '../../store/store.js';
import type { ApiDeps } from '../app.js';
import {
  AuditEventSchema,
  AuditHashRequest,
  AuditKeysSchema,
  AuditQuery,
  AuditVerificationSchema,
  AuditVerifyQuery,
  CheckpointSchema,
  ConsistencyProofSchema,
  ConsistencyQuery,
  InclusionProofSchema,
  InclusionQuery,
} from '../schemas.js';
import type { AuditCheckpoint, AuditEvent, AuditKeys, AuditPage } from '../types.js';
import { errorResponses, principalOf } from './principal.js';

/**
 * The audit log: read pages of events, verify the whole log, signed checkpoints, inclusion
 * and consistency proofs, key rotation, HMAC of a sensitive value. Reads of entries are
 * themselves audited; checkpoints, keys and consistency proofs (hashes only) are open to
 * viewers, so a witness needs no admin token.
 */

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

export function checkpointOf(row: CheckpointRow): AuditCheckpoint {
  return {
    treeSize: row.treeSize,
    rootHash: row.rootHash.toString('base64'),
    madeAt: new Date(row.madeAt).toISOString(),
    exportedAt: row.exportedAt === null ? null : new Date(row.exportedAt).toISOString(),
    note: row.note,
  };
}

export function auditRoutes(deps: ApiDeps): FastifyPluginAsync {
  // A full verification walks every entry (about 40 s per million): one at a time.
  let verifying = false;
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
        await deps.policy.authorize(who, 'audit.read', { kind: 'service' });
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
          summary:
            'Verify the whole log (chain, Merkle tree, own checkpoints; with treeSize and rootHash, an outside checkpoint too); names the first entry that does not verify',
          querystring: AuditVerifyQuery,
          response: { 200: AuditVerificationSchema, ...errorResponses },
        },
      },
      async (request) => {
        const who = principalOf(request);
        await deps.policy.authorize(who, 'audit.read', { kind: 'service' });
        const query = request.query as Static<typeof AuditVerifyQuery>;
        if ((query.treeSize === undefined) !== (query.rootHash === undefined))
          throw new AirlockError('INVALID_REQUEST', 'treeSize and rootHash come together (a checkpoint)');
        const against =
          query.treeSize === undefined || query.rootHash === undefined
            ? undefined
            : { treeSize: Number(query.treeSize), rootHash: Buffer.from(query.rootHash, 'base64') };
        if (verifying)
          throw new AirlockError(
            'RATE_LIMITED',
            'a verification of the audit log is already running; try again when it ends',
          );
        verifying = true;
        let result: Awaited<ReturnType<typeof deps.audit.verify>>;
        try {
          result = await deps.audit.verify(deps.store, against);
        } finally {
          verifying = false;
        }
        await deps.store.transaction(async (tx) => {
          await deps.audit.append(tx, {
            actor: who.name,
            action: 'audit.verify',
            outcome: result.ok ? 'succeeded' : 'failed',
            reason: result.firstBad?.reason ?? '',
            source: who.source,
            details: {
              entries: result.entries,
              ...(result.firstBad !== null ? { kind: result.firstBad.kind } : {}),
              ...(against !== undefined ? { against: result.against } : {}),
            },
          });
        });
        return result;
      },
    );
    app.get(
      '/audit/checkpoint',
      {
        schema: {
          summary: 'The latest signed checkpoint (C2SP tlog-checkpoint note)',
          response: { 200: CheckpointSchema, ...errorResponses },
        },
      },
      async (request) => {
        await deps.policy.authorize(principalOf(request), 'audit.witness', { kind: 'service' });
        return checkpointOf(await deps.checkpoints.latest());
      },
    );
    app.post(
      '/audit/checkpoint',
      {
        schema: {
          summary: 'Sign a checkpoint of the whole log now (it covers this request’s own audit event)',
          response: { 200: CheckpointSchema, ...errorResponses },
        },
      },
      async (request) => {
        const who = principalOf(request);
        await deps.policy.authorize(who, 'audit.manage', { kind: 'service' });
        await deps.store.transaction(async (tx) => {
          await deps.audit.append(tx, {
            actor: who.name,
            action: 'audit.checkpoint',
            outcome: 'succeeded',
            source: who.source,
          });
        });
        return checkpointOf(await deps.checkpoints.checkpoint());
      },
    );
    app.get(
      '/audit/keys',
      {
        schema: {
          summary: 'The log origin and its checkpoint verifier keys, current and retired',
          response: { 200: AuditKeysSchema, ...errorResponses },
        },
      },
      async (request): Promise<AuditKeys> => {
        await deps.policy.authorize(principalOf(request), 'audit.witness', { kind: 'service' });
        const { origin, keys } = await deps.checkpoints.keys();
        return {
          origin,
          keys: keys.map((key) => ({
            verifierKey: key.verifierKey,
            keyId: key.keyId,
            createdAt: new Date(key.createdAt).toISOString(),
            retiredAt: key.retiredAt === null ? null : new Date(key.retiredAt).toISOString(),
          })),
        };
      },
    );
    app.post(
      '/audit/keys/rotate',
      {
        schema: {
          summary: 'Replace the checkpoint signing key; answers the checkpoint signed by both keys',
          response: { 200: CheckpointSchema, ...errorResponses },
        },
      },
      async (request) => {
        const who = principalOf(request);
        await deps.policy.authorize(who, 'audit.manage', { kind: 'service' });
        return checkpointOf(await deps.checkpoints.rotate(who));
      },
    );
    app.get(
      '/audit/proof/inclusion',
      {
        schema: {
          summary: 'Inclusion proof of entry SEQ in the tree of treeSize (default: the latest checkpoint)',
          querystring: InclusionQuery,
          response: { 200: InclusionProofSchema, ...errorResponses },
        },
      },
      async (request) => {
        const who = principalOf(request);
        await deps.policy.authorize(who, 'audit.read', { kind: 'service' });
        const query = request.query as Static<typeof InclusionQuery>;
        const proof = await deps.checkpoints.inclusionProof(
          Number(query.seq),
          query.treeSize === undefined ? undefined : Number(query.treeSize),
        );
        // The proof carries an entry: reading it is audited as any read of the log.
        await deps.store.transaction(async (tx) => {
          await deps.audit.append(tx, {
            actor: who.name,
            action: 'audit.prove',
            target: `audit:${proof.seq}`,
            outcome: 'succeeded',
            source: who.source,
            details: { treeSize: proof.treeSize },
          });
        });
        return proof;
      },
    );
    app.get(
      '/audit/proof/consistency',
      {
        schema: {
          summary: 'Consistency proof that the tree of size `to` extends the tree of size `from`',
          querystring: ConsistencyQuery,
          response: { 200: ConsistencyProofSchema, ...errorResponses },
        },
      },
      async (request) => {
        // Hashes only, asked by witnesses on every poll: not audited (each poll would grow
        // the log it is watching).
        await deps.policy.authorize(principalOf(request), 'audit.witness', { kind: 'service' });
        const query = request.query as Static<typeof ConsistencyQuery>;
        return deps.checkpoints.consistencyProof(Number(query.from), Number(query.to));
      },
    );
    app.post(
      '/audit/hash',
      {
        schema: {
          summary: 'The keyed HMAC under which the log records a sensitive value, to search for it',
          body: AuditHashRequest,
          response: { 200: Type.Object({ hmac: Type.String() }), ...errorResponses },
        },
      },
      async (request) => {
        const who = principalOf(request);
        await deps.policy.authorize(who, 'audit.manage', { kind: 'service' });
        const { value } = request.body as Static<typeof AuditHashRequest>;
        const hmac = deps.audit.hash(value);
        await deps.store.transaction(async (tx) => {
          await deps.audit.append(tx, {
            actor: who.name,
            action: 'audit.hash',
            outcome: 'succeeded',
            source: who.source,
            details: { hmac },
          });
        });
        return { hmac };
      },
    );
  };
}

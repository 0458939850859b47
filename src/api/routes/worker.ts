import type { Static } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { ApiDeps } from '../app.js';
import {
  ClaimedJobSchema,
  ClaimSchema,
  EgressBatchSchema,
  FencedSchema,
  JobIdParams,
  LeaseStatusSchema,
  LogChunksSchema,
  ResultReportSchema,
  StateSchema,
} from '../schemas.js';
import type { ClaimRequest, EgressBatch, LogChunks, ResultReport } from '../types.js';
import { errorResponses, PerTokenCap, principalOf } from './principal.js';

/** The worker protocol (worker tokens only): claim, start, heartbeat, logs, result, release. */
/** Most long polls one worker token may hold at once (a worker runs at most 64 jobs). */
const MAX_CLAIMS_PER_TOKEN = 64;

export function workerRoutes(deps: ApiDeps): FastifyPluginAsync {
  const claims = new PerTokenCap(MAX_CLAIMS_PER_TOKEN, 'waiting claims');
  return async (app) => {
    app.post(
      '/claim',
      {
        schema: {
          summary: 'Long poll for a job: 200 with a leased job, or 204 after waitMs',
          body: ClaimSchema,
          response: {
            200: ClaimedJobSchema,
            204: { type: 'null', description: 'no job within waitMs' },
            ...errorResponses,
          },
        },
      },
      async (request, reply) => {
        const who = principalOf(request);
        const release = claims.acquire(who.tokenId);
        const gone = new AbortController();
        const onClose = (): void => gone.abort();
        reply.raw.once('close', onClose);
        try {
          const claimed = await deps.queue.claim(
            who,
            request.body as ClaimRequest,
            AbortSignal.any([gone.signal, deps.closing]),
          );
          if (claimed === null) return reply.status(204).send();
          return claimed;
        } finally {
          release();
        }
      },
    );
    const id = (request: { params: unknown }): string => (request.params as Static<typeof JobIdParams>).id;
    const fenced = {
      params: JobIdParams,
      body: FencedSchema,
      response: { 200: LeaseStatusSchema, ...errorResponses },
    };
    app.post(
      '/jobs/:id/start',
      { schema: { summary: 'The job started running', ...fenced } },
      async (request) =>
        deps.queue.start(
          principalOf(request),
          id(request),
          (request.body as Static<typeof FencedSchema>).fence,
        ),
    );
    app.post('/jobs/:id/heartbeat', { schema: { summary: 'Renew the lease', ...fenced } }, async (request) =>
      deps.queue.heartbeat(
        principalOf(request),
        id(request),
        (request.body as Static<typeof FencedSchema>).fence,
      ),
    );
    app.post(
      '/jobs/:id/logs',
      {
        schema: {
          summary: 'Append log chunks (seq 1, 2, … per attempt)',
          params: JobIdParams,
          body: LogChunksSchema,
          response: { 200: LeaseStatusSchema, ...errorResponses },
        },
      },
      async (request) => {
        const body = request.body as LogChunks;
        return deps.queue.appendLogs(principalOf(request), id(request), body.fence, body.chunks);
      },
    );
    app.post(
      '/jobs/:id/egress',
      {
        schema: {
          summary: 'Record egress attempts of the running job (one job.egress audit event each)',
          params: JobIdParams,
          body: EgressBatchSchema,
          response: { 200: LeaseStatusSchema, ...errorResponses },
        },
      },
      async (request) => {
        const body = request.body as EgressBatch;
        return deps.queue.recordEgress(principalOf(request), id(request), body.fence, body.attempts);
      },
    );
    app.post(
      '/jobs/:id/result',
      {
        schema: {
          summary: 'Report the end of the job',
          params: JobIdParams,
          body: ResultReportSchema,
          response: { 200: StateSchema, ...errorResponses },
        },
      },
      async (request) => deps.queue.report(principalOf(request), id(request), request.body as ResultReport),
    );
    app.post(
      '/jobs/:id/release',
      {
        schema: {
          summary: 'Give the job back (the worker stops)',
          params: JobIdParams,
          body: FencedSchema,
          response: { 200: StateSchema, ...errorResponses },
        },
      },
      async (request) => {
        const body = request.body as Static<typeof FencedSchema>;
        return deps.queue.release(
          principalOf(request),
          id(request),
          body.fence,
          body.reason ?? 'no reason given',
        );
      },
    );
  };
}

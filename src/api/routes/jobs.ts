import { Readable } from 'node:stream';
import type { Static } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import { AirlockError } from '../../errors.js';
import type { SignedJob } from '../../signing/envelope.js';
import type { ApiDeps } from '../app.js';
import {
  JobIdParams,
  JobListQuery,
  JobListSchema,
  JobRecordSchema,
  LogsQuery,
  SignedJobSchema,
  WhoAmISchema,
} from '../schemas.js';
import type { JobSpecV1, JobState, WhoAmI } from '../types.js';
import { errorResponses, PerTokenCap, principalOf } from './principal.js';

/** Jobs: submit, get, list, cancel, logs (NDJSON, optionally following), and whoami. */

const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{1,128}$/;
/** A following log stream writes an empty line this often, so proxies keep it open. */
const KEEPALIVE_MS = 15_000;

/** Most log streams one token may hold open at once. */
export const MAX_STREAMS_PER_TOKEN = 32;

const IDEMPOTENCY_HEADER = {
  type: 'object',
  properties: { 'idempotency-key': { type: 'string', pattern: IDEMPOTENCY_KEY.source } },
} as const;

function idempotencyKeyOf(header: string | string[] | undefined): string | null {
  const key = typeof header === 'string' ? header : null;
  if (key !== null && !IDEMPOTENCY_KEY.test(key))
    throw new AirlockError(
      'INVALID_REQUEST',
      'Idempotency-Key must be 1–128 characters of A-Z a-z 0-9 . _ : -',
    );
  return key;
}

export function jobRoutes(deps: ApiDeps): FastifyPluginAsync {
  const streams = new PerTokenCap(MAX_STREAMS_PER_TOKEN, 'open log streams');
  return async (app) => {
    app.get(
      '/whoami',
      {
        schema: { summary: 'The principal of the token', response: { 200: WhoAmISchema, ...errorResponses } },
      },
      async (request): Promise<WhoAmI> => {
        const who = principalOf(request);
        await deps.store.transaction(async (tx) => {
          await deps.audit.append(tx, {
            actor: who.name,
            action: 'auth.whoami',
            outcome: 'succeeded',
            source: who.source,
          });
        });
        return { tokenId: who.tokenId, principal: who.name, role: who.role, projects: [...who.projects] };
      },
    );

    app.post(
      '/jobs',
      {
        schema: {
          summary: 'Submit a job (job spec v1); Idempotency-Key makes a retry return the same job',
          body: { $ref: 'JobSpecV1#' },
          headers: IDEMPOTENCY_HEADER,
          response: { 200: JobRecordSchema, 201: JobRecordSchema, ...errorResponses },
        },
      },
      async (request, reply) => {
        const key = idempotencyKeyOf(request.headers['idempotency-key']);
        const outcome = await deps.jobs.submit(principalOf(request), request.body as JobSpecV1, key);
        return reply.status(outcome.created ? 201 : 200).send(outcome.job);
      },
    );

    app.post(
      '/jobs/signed',
      {
        schema: {
          summary:
            'Submit a signed job: the payload (canonical JSON of spec, nonce, issuedAt, expiresAt) and its signature',
          body: SignedJobSchema,
          headers: IDEMPOTENCY_HEADER,
          response: { 200: JobRecordSchema, 201: JobRecordSchema, ...errorResponses },
        },
      },
      async (request, reply) => {
        const key = idempotencyKeyOf(request.headers['idempotency-key']);
        // The spec inside the signed bytes passes the same schema as a plain submit.
        const validate = request.compileValidationSchema({ $ref: 'JobSpecV1#' });
        const checkSpec = (spec: unknown): JobSpecV1 => {
          if (!validate(spec)) {
            const first = validate.errors?.[0];
            throw new AirlockError(
              'INVALID_REQUEST',
              `signed job spec${first?.instancePath ?? ''} ${first?.message ?? 'is invalid'}`,
            );
          }
          return spec as JobSpecV1;
        };
        const outcome = await deps.jobs.submitSigned(
          principalOf(request),
          request.body as SignedJob,
          key,
          checkSpec,
        );
        return reply.status(outcome.created ? 201 : 200).send(outcome.job);
      },
    );

    app.get(
      '/jobs',
      {
        schema: {
          summary: 'List jobs, newest first',
          querystring: JobListQuery,
          response: { 200: JobListSchema, ...errorResponses },
        },
      },
      async (request) => {
        const query = request.query as Static<typeof JobListQuery>;
        const limit = query.limit === undefined ? 50 : Number(query.limit);
        if (limit < 1 || limit > 200)
          throw new AirlockError('INVALID_REQUEST', 'limit must be between 1 and 200');
        return deps.jobs.list(principalOf(request), {
          limit,
          ...(query.project !== undefined ? { project: query.project } : {}),
          ...(query.state !== undefined ? { state: query.state as JobState } : {}),
          ...(query.cursor !== undefined ? { cursor: query.cursor } : {}),
        });
      },
    );

    app.get(
      '/jobs/:id',
      {
        schema: {
          summary: 'One job',
          params: JobIdParams,
          response: { 200: JobRecordSchema, ...errorResponses },
        },
      },
      async (request) =>
        deps.jobs.get(principalOf(request), (request.params as Static<typeof JobIdParams>).id),
    );

    app.post(
      '/jobs/:id/cancel',
      {
        schema: {
          summary: 'Cancel a job',
          params: JobIdParams,
          response: { 200: JobRecordSchema, ...errorResponses },
        },
      },
      async (request) =>
        deps.jobs.cancel(principalOf(request), (request.params as Static<typeof JobIdParams>).id),
    );

    app.get(
      '/jobs/:id/logs',
      {
        schema: {
          summary:
            'The job’s output as application/x-ndjson: {seq,stream,data(base64)} lines, then {end:{…}}',
          params: JobIdParams,
          querystring: LogsQuery,
        },
      },
      async (request, reply) => {
        const { id } = request.params as Static<typeof JobIdParams>;
        const query = request.query as Static<typeof LogsQuery>;
        const who = principalOf(request);
        await deps.jobs.openLogs(who, id);
        const follow = query.follow === 'true';
        // Open streams are bounded per token: each holds a connection and a waiter.
        const release = streams.acquire(who.tokenId);
        const gone = new AbortController();
        // On the response, not the socket: a keep-alive socket serves many requests, and a
        // listener per request on it would pile up.
        reply.raw.once('close', () => {
          gone.abort();
          release();
        });
        const stop = AbortSignal.any([gone.signal, deps.closing]);
        // One page at a time (highWaterMark 1): a reader that does not read holds one page of
        // at most LOG_PAGE_BYTES, not sixteen.
        const lines = Readable.from(followLogs(deps, id, Number(query.after ?? '0'), follow, stop), {
          highWaterMark: 1,
        });
        return reply
          .type('application/x-ndjson')
          .header('cache-control', 'no-store')
          .header('x-content-type-options', 'nosniff')
          .send(lines);
      },
    );
  };
}

async function* followLogs(
  deps: ApiDeps,
  id: string,
  after: number,
  follow: boolean,
  stop: AbortSignal,
): AsyncGenerator<string> {
  let seq = after;
  // A first (empty) line at once: the client gets the answer's headers now, not with the
  // job's first output or the first keep-alive 15 s later.
  if (follow) yield '\n';
  for (;;) {
    // Subscribe before reading, so a chunk stored between the read and the wait still wakes us.
    let wake: () => void = () => undefined;
    const woken = new Promise<void>((resolve) => {
      wake = resolve;
    });
    const unsubscribe = deps.events.onJob(id, () => wake());
    let onStop: (() => void) | undefined;
    try {
      const { lines, end } = await deps.jobs.logsAfter(id, seq);
      if (lines.length > 0) {
        seq = lines.at(-1)?.seq ?? seq;
        yield `${lines.map((line) => JSON.stringify(line)).join('\n')}\n`;
        continue;
      }
      if (!follow || end.end.terminal || stop.aborted) {
        yield `${JSON.stringify(end)}\n`;
        return;
      }
      let timer: NodeJS.Timeout | undefined;
      const keepalive = new Promise<'keepalive'>((resolve) => {
        timer = setTimeout(() => resolve('keepalive'), KEEPALIVE_MS);
      });
      // Removed below: a long job wakes this loop once per stored chunk.
      const stopped = new Promise<void>((resolve) => {
        onStop = resolve;
        stop.addEventListener('abort', onStop, { once: true });
      });
      const why = await Promise.race([woken, keepalive, stopped]);
      clearTimeout(timer);
      if (why === 'keepalive') yield '\n';
    } finally {
      unsubscribe();
      if (onStop !== undefined) stop.removeEventListener('abort', onStop);
    }
  }
}

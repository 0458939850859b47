import fastifySwagger from '@fastify/swagger';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import type { AuditLog } from '../audit/audit-log.js';
import { markAudited, wasAudited } from '../audit/audit-log.js';
import type { AuditCheckpoints } from '../audit/checkpoints.js';
import type { Authenticator } from '../auth/authenticator.js';
import type { Principal } from '../auth/principal.js';
import type { RequestLimiter } from '../auth/rate-limit.js';
import { checkContentDigest } from '../auth/request-signature.js';
import type { TokenService } from '../auth/token-service.js';
import { AirlockError, type AirlockErrorCode, describeError, isAirlockError } from '../errors.js';
import type { JobEvents } from '../jobs/events.js';
import type { JobQueue } from '../jobs/queue.js';
import type { JobService } from '../jobs/service.js';
import type { Logger } from '../log.js';
import type { PolicyDocuments } from '../policy/documents.js';
import { decisionDetails, decisionOf, type PolicyGate } from '../policy/gate.js';
import type { ImageApprovals } from '../policy/image-approvals.js';
import type { SigningKeyService } from '../signing/key-service.js';
import type { Store } from '../store/store.js';
import { parseJsonBody } from './json-body.js';
import { auditRoutes } from './routes/audit.js';
import { healthRoutes } from './routes/health.js';
import { imageRoutes } from './routes/images.js';
import { jobRoutes } from './routes/jobs.js';
import { keyRoutes } from './routes/keys.js';
import { policyRoutes } from './routes/policies.js';
import { tokenRoutes } from './routes/tokens.js';
import { workerRoutes } from './routes/worker.js';
import { ErrorSchema, JobSpecSchema } from './schemas.js';

/**
 * The HTTP API (DESIGN §6): Fastify with schema-first routes under /v1, the OpenAPI document
 * at /v1/openapi.json, errors as {error:{code,message}} from the one error catalogue. Every
 * /v1 route but the OpenAPI document needs a bearer token; refusals are audited.
 */

export interface ApiDeps {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly checkpoints: AuditCheckpoints;
  readonly keys: SigningKeyService;
  /** Decides every client-API action with the Cedar policy in force. */
  readonly policy: PolicyGate;
  /** Governance of policies and profiles (propose, approve, rollback, history). */
  readonly policies: PolicyDocuments;
  /** Approved images (policy: context.imageApproved). */
  readonly images: ImageApprovals;
  readonly authenticator: Authenticator;
  readonly requestLimiter: RequestLimiter;
  readonly jobs: JobService;
  readonly queue: JobQueue;
  readonly tokens: TokenService;
  readonly events: JobEvents;
  readonly logger: Logger;
  readonly bodyLimitBytes: number;
  /** AIRLOCK_PUBLIC_URL: the URL clients call (behind a proxy); request signatures cover it. */
  readonly publicUrl?: string | undefined;
  readonly version: string;
  /** Aborted when the server begins to shut down: long polls and log streams end. */
  readonly closing: AbortSignal;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
}

/** Fastify's own error codes, mapped to the catalogue. */
const FASTIFY_CODES: Record<string, AirlockErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'INVALID_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_REQUEST',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'INVALID_REQUEST',
  FST_ERR_VALIDATION: 'INVALID_REQUEST',
  FST_ERR_NOT_FOUND: 'NOT_FOUND',
};

export function toAirlockError(error: unknown): AirlockError {
  if (error instanceof AirlockError) return error;
  const fastifyError = error as Partial<FastifyError>;
  const code = fastifyError.code !== undefined ? FASTIFY_CODES[fastifyError.code] : undefined;
  if (code !== undefined) return new AirlockError(code, describeError(error), { cause: error });
  if (fastifyError.statusCode === 400) return new AirlockError('INVALID_REQUEST', describeError(error));
  if (fastifyError.statusCode === 413) return new AirlockError('PAYLOAD_TOO_LARGE', describeError(error));
  return new AirlockError('INTERNAL', describeError(error), { cause: error });
}

export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: deps.bodyLimitBytes,
    // Behind no proxy by default: the source address is the socket's (rate limits, audit).
    trustProxy: false,
    return503OnClosing: true,
    // A client has 30 s to send its whole request (slow-loris); a connection silent for 90 s
    // is closed (long polls wait at most 30 s, log streams send a keep-alive every 15 s).
    requestTimeout: 30_000,
    connectionTimeout: 90_000,
    forceCloseConnections: 'idle',
    requestIdHeader: false,
    // Per-request lines are off: the audit trail records requests; errors are logged below.
    logController: new LogController({ disableRequestLogging: true }),
    ajv: {
      customOptions: {
        // Unknown fields are an error, never silently dropped; no type coercion.
        removeAdditional: false,
        coerceTypes: false,
        useDefaults: false,
        allErrors: false,
      },
    },
  });
  app.decorateRequest('principal', null);
  const rawBodies = new WeakMap<object, Buffer>();
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    try {
      // Kept for the request signature's Content-Digest (RFC 9421 tokens).
      rawBodies.set(request, body as Buffer);
      done(null, parseJsonBody(body as Buffer));
    } catch (error) {
      done(error as Error, undefined);
    }
  });
  app.addSchema(JobSpecSchema);
  app.addSchema({ ...ErrorSchema, $id: 'Error' });

  await app.register(fastifySwagger, {
    // Shared schemas keep their names (JobSpecV1, Error) in components.schemas.
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Airlock API',
        version: deps.version,
        description:
          'Submit jobs to run in hardened sandboxes; follow their logs; manage tokens; read the audit trail.',
      },
      components: {
        securitySchemes: {
          bearer: {
            type: 'http',
            scheme: 'bearer',
            description: 'alk_… API token, or an OIDC ID token from a configured issuer (workload identity)',
          },
        },
      },
      security: [{ bearer: [] }],
    },
  });

  app.addHook('onRequest', async (request) => {
    if (!request.url.startsWith('/v1/') || request.url === '/v1/openapi.json') return;
    const who = await deps.authenticator.authenticate(request.headers.authorization, request.ip, {
      method: request.method,
      targetUri: targetUri(deps.publicUrl, request),
      headers: request.headers,
      hasBody:
        Number(request.headers['content-length'] ?? '0') > 0 ||
        request.headers['transfer-encoding'] !== undefined,
    });
    request.principal = who;
    // Workers are bounded by their leases (a heartbeat and a log chunk per job and second at most).
    if (who.role === 'worker') return;
    // A workload mints a new ID token as often as it likes: its rate is kept per workload
    // (principal), not per token, or fresh tokens would each get a fresh allowance.
    const rateKey = who.origin !== undefined && who.origin !== null ? `workload:${who.name}` : who.tokenId;
    const wait = deps.requestLimiter.take(rateKey);
    if (wait > 0) {
      const error = new AirlockError(
        'RATE_LIMITED',
        `this token is over its request rate; try again in ${wait} s`,
      );
      Object.defineProperty(error, 'retryAfterSeconds', { value: wait, enumerable: true });
      // The first refusal of a second is audited (by the error handler); the rest are not.
      throw deps.requestLimiter.firstRefusal(rateKey) ? error : markAudited(error);
    }
  });

  // Tokens with a request key: the signature was checked with the headers (authenticate);
  // the body read since must be the one its Content-Digest names.
  app.addHook('preHandler', async (request) => {
    const who = request.principal;
    if (who === null || who.requestKey === null || who.requestKey === undefined) return;
    checkContentDigest(request.headers, rawBodies.get(request) ?? null);
  });

  app.setErrorHandler(async (error, request, reply) => sendError(deps, error, request, reply));
  app.setNotFoundHandler(async (request, reply) =>
    sendError(
      deps,
      new AirlockError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0] ?? ''}`),
      request,
      reply,
    ),
  );

  await app.register(healthRoutes(deps));
  await app.register(jobRoutes(deps), { prefix: '/v1' });
  await app.register(tokenRoutes(deps), { prefix: '/v1' });
  await app.register(keyRoutes(deps), { prefix: '/v1' });
  await app.register(auditRoutes(deps), { prefix: '/v1' });
  await app.register(policyRoutes(deps), { prefix: '/v1' });
  await app.register(imageRoutes(deps), { prefix: '/v1' });
  await app.register(workerRoutes(deps), { prefix: '/v1/worker' });
  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}

async function sendError(
  deps: ApiDeps,
  raw: unknown,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<void> {
  const error = toAirlockError(raw);
  if (error.code === 'INTERNAL' || error.httpStatus >= 500) {
    request.log.error({ err: raw, route: request.routeOptions.url }, 'request failed');
  }
  // Every refusal of an authenticated request is audited, unless the domain did it already.
  // Failed authentication is audited by the authenticator itself.
  if (
    request.principal !== null &&
    !wasAudited(raw) &&
    error.code !== 'AUDIT_FAILED' &&
    error.code !== 'STORE_FAILED'
  ) {
    const who = request.principal;
    const decision = decisionOf(raw);
    try {
      await deps.store.transaction(async (tx) => {
        await deps.audit.append(tx, {
          actor: who.name,
          action: 'api.refused',
          target: `${request.method} ${request.routeOptions.url ?? request.url.split('?')[0] ?? ''}`,
          outcome: 'denied',
          reason: `${error.code}: ${error.message}`,
          source: who.source,
          ...(decision !== undefined ? { details: { policy: decisionDetails(decision) } } : {}),
        });
      });
    } catch (auditError) {
      request.log.error({ err: auditError }, 'the audit event of a refusal could not be written');
    }
  }
  const retryAfter = (raw as { retryAfterSeconds?: unknown }).retryAfterSeconds;
  if (typeof retryAfter === 'number') void reply.header('retry-after', String(retryAfter));
  if (isAirlockError(error, 'SERVER_UNAVAILABLE')) void reply.header('retry-after', '1');
  await reply
    .status(error.httpStatus)
    .type('application/json')
    .send({ error: { code: error.code, message: error.message } });
}

const HOST = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$/;

/**
 * The target URI a request signature covers: AIRLOCK_PUBLIC_URL (what clients call through a
 * proxy) and the path, else this server's scheme, Host and path. A Host that is not a plain
 * host[:port] forms none (it could splice a path into the authority).
 */
function targetUri(publicUrl: string | undefined, request: FastifyRequest): string | null {
  if (publicUrl !== undefined) return `${publicUrl.replace(/\/$/, '')}${request.url}`;
  const host = request.headers.host;
  if (host === undefined || !HOST.test(host)) return null;
  return `${request.protocol}://${host}${request.url}`;
}

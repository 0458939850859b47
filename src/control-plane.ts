import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApi } from './api/app.js';
import { parseJsonBody } from './api/json-body.js';
import { MerkleAuditLog } from './audit/audit-log.js';
import { AuditCheckpoints } from './audit/checkpoints.js';
import { hmacKeyId, loadOrCreateHmacKey } from './audit/keys.js';
import { parseCheckpointSink } from './audit/sinks.js';
import { Authenticator } from './auth/authenticator.js';
import { OidcVerifier } from './auth/oidc.js';
import { loadOidcIssuers } from './auth/oidc-issuers.js';
import type { Principal } from './auth/principal.js';
import { FailureLimiter, RequestLimiter } from './auth/rate-limit.js';
import { TokenService } from './auth/token-service.js';
import type { AirlockConfig } from './config/config.js';
import { AirlockError, describeError } from './errors.js';
import { JobEvents } from './jobs/events.js';
import { JobQueue } from './jobs/queue.js';
import { JobService } from './jobs/service.js';
import type { Logger } from './log.js';
import { PolicyDocuments } from './policy/documents.js';
import { CedarEngine } from './policy/engine.js';
import { PolicyGate } from './policy/gate.js';
import { ImageApprovals } from './policy/image-approvals.js';
import { SigningKeyService } from './signing/key-service.js';
import { JobSignatureVerifier } from './signing/verifier.js';
import { SqliteStore } from './store/sqlite/sqlite-store.js';

/**
 * Wiring of the control plane (the server process): store, audit log, authentication, job
 * service and queue, the HTTP API, and the lease-expiry timer. Called by `airlock server`
 * and `airlock up`; the CLI's own composition root is src/main.ts. Nothing here runs at
 * import time.
 */

export interface ControlPlaneOptions {
  readonly config: AirlockConfig['server'];
  readonly logger: Logger;
  readonly version: string;
  /** Create a worker token too on first start (`airlock up`). */
  readonly bootstrapWorker?: boolean;
  /** Request rate per client token; default 100/s with bursts of 1000 (tests set it lower). */
  readonly requestRate?: { readonly perSecond: number; readonly burst: number };
}

export interface ControlPlane {
  /** http://host:port actually bound (port 0 → the chosen one). */
  readonly url: string;
  readonly app: FastifyInstance;
  readonly store: SqliteStore;
  /** Secrets made on the first start (null on later starts): shown once, never logged. */
  readonly firstStart: { admin: string; worker: string | null } | null;
  /** Issues a token as the system (used by `airlock up` for its local worker). */
  issueSystemToken(principal: string, role: 'admin' | 'worker'): Promise<string>;
  /** Graceful stop: refuse new requests, end long polls and log streams, finish in-flight requests, close the database. */
  close(): Promise<void>;
}

export const DATABASE_FILE = 'airlock.db';

const SYSTEM: Principal = { tokenId: 'system', name: 'system', role: 'admin', projects: ['*'], source: '' };
const EXPIRY_INTERVAL_MS = 1000;
/** Request rate of one client token (workers are bounded by their leases instead). */
const REQUESTS_PER_SECOND = 100;
const REQUEST_BURST = 1000;
/** How long a graceful stop waits for requests in flight before it cuts their connections. */
const CLOSE_GRACE_MS = 30_000;

export async function startControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  const { config, logger } = options;
  // A malformed sink is a configuration error: refused before anything starts.
  const sink =
    config.checkpointSink === null ? null : parseCheckpointSink(config.checkpointSink, process.env);
  // So is a malformed OIDC issuer file (workload identity, docs/identity.md).
  const oidc =
    config.oidcIssuersFile === undefined
      ? undefined
      : new OidcVerifier({ issuers: await loadOidcIssuers(config.oidcIssuersFile) });
  const store = SqliteStore.open({ path: join(config.dataDir, DATABASE_FILE) });
  let audit: MerkleAuditLog;
  let checkpoints: AuditCheckpoints;
  try {
    const hmacKey = await loadOrCreateHmacKey(config.dataDir);
    audit = new MerkleAuditLog({ hmacKey });
    checkpoints = await AuditCheckpoints.open({
      hmacKeyId: hmacKeyId(hmacKey),
      store,
      audit,
      dataDir: config.dataDir,
      sink,
      logger,
      intervalMs: config.checkpointIntervalMs,
    });
  } catch (error) {
    await store.close().catch(() => undefined);
    throw error;
  }
  const events = new JobEvents();
  const closing = new AbortController();
  const limiter = new FailureLimiter({ maxFailures: 10, windowMs: 60_000, maxKeys: 10_000 });
  const tokens = new TokenService({ store, audit });
  const keys = new SigningKeyService({ store, audit });
  const policy = new PolicyGate({ store, audit, engine: new CedarEngine() });
  const policies = new PolicyDocuments({ store, audit, gate: policy });
  const jobs = new JobService({
    policy,
    store,
    audit,
    signatures: new JobSignatureVerifier({ store, parseJson: parseJsonBody }),
    events,
    maxAttempts: config.maxAttempts,
    projectQueueLimit: config.projectQueueLimit,
  });
  const queue = new JobQueue({ store, audit, events, leaseTtlMs: config.leaseTtlMs });
  let app: FastifyInstance;
  try {
    const firstStart = await tokens.bootstrap({ worker: options.bootstrapWorker === true });
    await policies.bootstrap(options.version);
    app = await buildApi({
      store,
      audit,
      checkpoints,
      keys,
      policy,
      policies,
      images: new ImageApprovals({ store, audit }),
      authenticator: new Authenticator({ store, audit, limiter, ...(oidc !== undefined ? { oidc } : {}) }),
      requestLimiter: new RequestLimiter({
        perSecond: options.requestRate?.perSecond ?? REQUESTS_PER_SECOND,
        burst: options.requestRate?.burst ?? REQUEST_BURST,
        maxKeys: 10_000,
      }),
      jobs,
      queue,
      tokens,
      events,
      logger,
      bodyLimitBytes: config.bodyLimitBytes,
      publicUrl: config.publicUrl,
      version: options.version,
      closing: closing.signal,
    });
    await app.listen({ host: config.host, port: config.port });
    const address = app.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : config.port;
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    await store.transaction(async (tx) => {
      await audit.append(tx, {
        actor: 'system',
        action: 'server.start',
        outcome: 'succeeded',
        details: { version: options.version, listen: `${host}:${port}` },
      });
    });

    checkpoints.start();

    // Lost leases: a worker that stopped heartbeating gives its jobs back to the queue.
    let expiring = false;
    const expiry = setInterval(() => {
      if (expiring) return;
      expiring = true;
      queue
        .expireLeases(SYSTEM)
        .then((count) => {
          if (count > 0) logger.warn({ count }, 'requeued or failed jobs whose lease expired');
        })
        .catch((error: unknown) => logger.error({ err: error }, 'lease expiry failed'))
        .finally(() => {
          expiring = false;
        });
    }, EXPIRY_INTERVAL_MS);
    expiry.unref();

    let closed: Promise<void> | undefined;
    return {
      url: `http://${host}:${port}`,
      app,
      store,
      firstStart,
      issueSystemToken: async (principal, role) =>
        (await tokens.create(SYSTEM, { principal, role, projects: ['*'] })).secret,
      close: () => {
        closed ??= (async () => {
          clearInterval(expiry);
          // Long polls and log streams end at once; requests in flight finish. A keep-alive
          // connection that turns idle during the close is closed too (Node closes idle ones
          // only once, at the start), and whatever is still open after the grace is cut.
          closing.abort();
          const reap = setInterval(() => app.server.closeIdleConnections(), 100);
          const cut = setTimeout(() => app.server.closeAllConnections(), CLOSE_GRACE_MS);
          try {
            await app.close();
          } finally {
            clearInterval(reap);
            clearTimeout(cut);
            await store
              .transaction(async (tx) => {
                await audit.append(tx, { actor: 'system', action: 'server.stop', outcome: 'succeeded' });
              })
              .catch((error: unknown) => logger.error({ err: error }, 'the server.stop audit event failed'));
            // The last checkpoint covers the stop; its export is bounded by the sink's timeout.
            await checkpoints
              .close()
              .catch((error: unknown) => logger.error({ err: error }, 'the last audit checkpoint failed'));
            await store.close();
          }
        })();
        return closed;
      },
    };
  } catch (error) {
    closing.abort();
    await store.close().catch(() => undefined);
    if (error instanceof AirlockError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL')
      throw new AirlockError(
        'INVALID_CONFIG',
        `cannot listen on ${config.host}:${config.port}: ${describeError(error)} (AIRLOCK_LISTEN)`,
        {
          cause: error,
        },
      );
    throw error;
  }
}

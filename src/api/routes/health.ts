import type { FastifyPluginAsync } from 'fastify';
import type { ApiDeps } from '../app.js';

/**
 * /healthz: the process answers. /readyz: it can take work (database answers, the policy
 * engine works, not shutting down); a failed policy engine needs a restart.
 */
export function healthRoutes(deps: ApiDeps): FastifyPluginAsync {
  return async (app) => {
    app.get('/healthz', { schema: { hide: true } }, async () => ({ ok: true }));
    app.get('/readyz', { schema: { hide: true } }, async (_request, reply) => {
      const ready = !deps.closing.aborted && deps.policy.engine.broken === null && (await deps.store.ping());
      return reply.status(ready ? 200 : 503).send({ ready });
    });
  };
}

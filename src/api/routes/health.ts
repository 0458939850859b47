import type { FastifyPluginAsync } from 'fastify';
import type { ApiDeps } from '../app.js';

/** /healthz: the process answers. /readyz: it can take work (database answers, not shutting down). */
export function healthRoutes(deps: ApiDeps): FastifyPluginAsync {
  return async (app) => {
    app.get('/healthz', { schema: { hide: true } }, async () => ({ ok: true }));
    app.get('/readyz', { schema: { hide: true } }, async (_request, reply) => {
      const ready = !deps.closing.aborted && (await deps.store.ping());
      return reply.status(ready ? 200 : 503).send({ ready });
    });
  };
}

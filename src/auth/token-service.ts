import type { TokenCreated, TokenCreateRequest, TokenInfo } from '../api/types.js';
import type { AuditLog } from '../audit/audit-log.js';
import { AirlockError } from '../errors.js';
import { parsePublicKey } from '../signing/public-key.js';
import type { Store, TokenRow } from '../store/store.js';
import { type Principal, requireAction } from './principal.js';
import { issueToken } from './tokens.js';

/** Creating, listing and revoking API tokens (admin only), each audited with the change. */

export function tokenInfo(row: TokenRow): TokenInfo {
  const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
  return {
    id: row.id,
    principal: row.principal,
    role: row.role,
    projects: row.projects,
    createdAt: new Date(row.createdAt).toISOString(),
    createdBy: row.createdBy,
    expiresAt: iso(row.expiresAt),
    revokedAt: iso(row.revokedAt),
    requestKey: row.requestKey,
  };
}

/** Principal names Airlock uses for itself in the audit log. */
export const RESERVED_PRINCIPALS: readonly string[] = ['system', 'anonymous', 'airlock'];

export class TokenService {
  readonly #store: Store;
  readonly #audit: AuditLog;
  readonly #now: () => number;

  constructor(options: { store: Store; audit: AuditLog; now?: () => number }) {
    this.#store = options.store;
    this.#audit = options.audit;
    this.#now = options.now ?? Date.now;
  }

  /** `policy`: the policy decision that allowed it, recorded with its audit event. */
  async create(
    who: Principal,
    request: TokenCreateRequest,
    policy?: Record<string, unknown>,
  ): Promise<TokenCreated> {
    requireAction(who, 'token.manage');
    // Names Airlock itself writes in the audit log: a token named so could pass its actions
    // off as the system's.
    if (RESERVED_PRINCIPALS.includes(request.principal))
      throw new AirlockError(
        'INVALID_REQUEST',
        `principal: "${request.principal}" is reserved for Airlock itself`,
      );
    if (request.role === 'submitter' && request.projects.includes('*') && request.projects.length > 1)
      throw new AirlockError('INVALID_REQUEST', 'projects: "*" stands alone');
    let requestKey: string | null = null;
    if (request.requestKey !== undefined) {
      if (request.role === 'worker')
        throw new AirlockError('INVALID_REQUEST', 'requestKey: worker tokens do not sign their requests yet');
      const key = parsePublicKey(request.requestKey);
      if (key.type !== 'ssh-ed25519')
        throw new AirlockError('INVALID_REQUEST', 'requestKey: request signatures use Ed25519 keys');
      requestKey = key.text;
    }
    return this.#store.transaction(async (tx) => {
      const now = this.#now();
      const issued = issueToken({
        principal: request.principal,
        role: request.role,
        projects: request.projects,
        createdBy: who.name,
        now,
        expiresAt: request.expiresInSeconds === undefined ? null : now + request.expiresInSeconds * 1000,
        requestKey,
      });
      await tx.tokens.insert(issued.row);
      await this.#audit.append(tx, {
        actor: who.name,
        action: 'token.create',
        target: `token:${issued.row.id}`,
        outcome: 'succeeded',
        source: who.source,
        details: {
          principal: issued.row.principal,
          role: issued.row.role,
          projects: issued.row.projects,
          expiresAt: issued.row.expiresAt,
          signedRequests: issued.row.requestKey !== null,
          ...(policy !== undefined ? { policy } : {}),
        },
      });
      return { token: tokenInfo(issued.row), secret: issued.token };
    });
  }

  async list(who: Principal): Promise<TokenInfo[]> {
    requireAction(who, 'token.manage');
    return this.#store.transaction(async (tx) => {
      const rows = await tx.tokens.list();
      await this.#audit.append(tx, {
        actor: who.name,
        action: 'token.list',
        outcome: 'succeeded',
        source: who.source,
      });
      return rows.map(tokenInfo);
    });
  }

  async revoke(who: Principal, id: string, policy?: Record<string, unknown>): Promise<TokenInfo> {
    requireAction(who, 'token.manage');
    return this.#store.transaction(async (tx) => {
      const row = await tx.tokens.get(id);
      if (row === null) throw new AirlockError('NOT_FOUND', `no token ${id}`);
      if (row.revokedAt === null) {
        row.revokedAt = this.#now();
        await tx.tokens.revoke(id, row.revokedAt);
      }
      await this.#audit.append(tx, {
        actor: who.name,
        action: 'token.revoke',
        target: `token:${id}`,
        outcome: 'succeeded',
        source: who.source,
        details: { principal: row.principal, role: row.role, ...(policy !== undefined ? { policy } : {}) },
      });
      return tokenInfo(row);
    });
  }

  /**
   * First start: when no token exists at all, creates the admin token (and, for `airlock
   * up`, a worker token) and returns their secrets once. Audited as the system's act.
   */
  async bootstrap(extra: { worker: boolean }): Promise<{ admin: string; worker: string | null } | null> {
    return this.#store.transaction(async (tx) => {
      if ((await tx.tokens.count()) > 0) return null;
      const now = this.#now();
      const made: string[] = [];
      const issue = async (principal: string, role: 'admin' | 'worker'): Promise<string> => {
        const issued = issueToken({
          principal,
          role,
          projects: ['*'],
          createdBy: 'system',
          now,
          expiresAt: null,
        });
        await tx.tokens.insert(issued.row);
        made.push(issued.row.id);
        await this.#audit.append(tx, {
          actor: 'system',
          action: 'token.create',
          target: `token:${issued.row.id}`,
          outcome: 'succeeded',
          reason: 'first start: no token existed',
          details: { principal, role, projects: ['*'] },
        });
        return issued.token;
      };
      const admin = await issue('admin', 'admin');
      const worker = extra.worker ? await issue('local-worker', 'worker') : null;
      return { admin, worker };
    });
  }
}

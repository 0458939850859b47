import { randomBytes } from 'node:crypto';
import type { SigningKeyAddRequest, SigningKeyInfo } from '../api/types.js';
import type { AuditLog } from '../audit/audit-log.js';
import { inScope, type Principal, requireAction, visibleProjects } from '../auth/principal.js';
import { AirlockError } from '../errors.js';
import type { SigningKeyRow, Store } from '../store/store.js';
import { parsePublicKey } from './public-key.js';

/**
 * The keys trusted to sign a project's jobs (`airlock keys add|list|revoke`): registering
 * and revoking one is an admin act, audited with the change. A revocation is final — the
 * same key can never be registered for the project again.
 */

export function signingKeyInfo(row: SigningKeyRow): SigningKeyInfo {
  return {
    id: row.id,
    project: row.project,
    owner: row.owner,
    keyType: row.keyType,
    publicKey: row.publicKey,
    fingerprint: row.fingerprint,
    release: row.release,
    createdAt: new Date(row.createdAt).toISOString(),
    createdBy: row.createdBy,
    revokedAt: row.revokedAt === null ? null : new Date(row.revokedAt).toISOString(),
  };
}

export class SigningKeyService {
  readonly #store: Store;
  readonly #audit: AuditLog;
  readonly #now: () => number;

  constructor(options: { store: Store; audit: AuditLog; now?: () => number }) {
    this.#store = options.store;
    this.#audit = options.audit;
    this.#now = options.now ?? Date.now;
  }

  /** `policy`: the policy decision that allowed it, recorded with its audit event. */
  async add(
    who: Principal,
    request: SigningKeyAddRequest,
    policy?: Record<string, unknown>,
  ): Promise<SigningKeyInfo> {
    requireAction(who, 'key.manage');
    if (!inScope(who, request.project))
      throw new AirlockError('FORBIDDEN', `this token may not manage keys of project "${request.project}"`);
    const key = parsePublicKey(request.publicKey);
    return this.#store.transaction(async (tx) => {
      const earlier = await tx.signingKeys.byFingerprint(request.project, key.fingerprint);
      if (earlier !== null)
        throw new AirlockError(
          'INVALID_REQUEST',
          earlier.revokedAt === null
            ? `the key ${key.fingerprint} is already registered for project "${request.project}" (${earlier.id})`
            : `the key ${key.fingerprint} was revoked for project "${request.project}" and cannot be registered again: use a new key`,
        );
      const row: SigningKeyRow = {
        id: `key_${randomBytes(8).toString('hex')}`,
        project: request.project,
        owner: request.owner,
        keyType: key.type,
        publicKey: key.text,
        fingerprint: key.fingerprint,
        release: request.release === true,
        createdAt: this.#now(),
        createdBy: who.name,
        revokedAt: null,
        revokedBy: null,
      };
      await tx.signingKeys.insert(row);
      await this.#audit.append(tx, {
        actor: who.name,
        action: 'key.add',
        target: `key:${row.id}`,
        outcome: 'succeeded',
        source: who.source,
        details: {
          project: row.project,
          owner: row.owner,
          keyType: row.keyType,
          fingerprint: row.fingerprint,
          release: row.release,
          ...(policy !== undefined ? { policy } : {}),
        },
      });
      return signingKeyInfo(row);
    });
  }

  async list(who: Principal, project?: string): Promise<SigningKeyInfo[]> {
    requireAction(who, 'key.read');
    const rows = await this.#store.read(async (tx) => tx.signingKeys.list(visibleProjects(who)));
    return rows.filter((row) => project === undefined || row.project === project).map(signingKeyInfo);
  }

  async revoke(who: Principal, id: string, policy?: Record<string, unknown>): Promise<SigningKeyInfo> {
    requireAction(who, 'key.manage');
    return this.#store.transaction(async (tx) => {
      const row = await tx.signingKeys.get(id);
      // Outside the token's scope a key does not exist, as a job does not.
      if (row === null || !inScope(who, row.project)) throw new AirlockError('NOT_FOUND', `no key ${id}`);
      if (row.revokedAt === null) {
        const at = this.#now();
        await tx.signingKeys.revoke(id, at, who.name);
        row.revokedAt = at;
        row.revokedBy = who.name;
        await this.#audit.append(tx, {
          actor: who.name,
          action: 'key.revoke',
          target: `key:${row.id}`,
          outcome: 'succeeded',
          source: who.source,
          details: {
            project: row.project,
            owner: row.owner,
            fingerprint: row.fingerprint,
            ...(policy !== undefined ? { policy } : {}),
          },
        });
      }
      return signingKeyInfo(row);
    });
  }
}

import type { ImageApproval } from '../api/types.js';
import type { AuditLog } from '../audit/audit-log.js';
import { type Principal, requireAction } from '../auth/principal.js';
import { AirlockError, isAirlockError } from '../errors.js';
import { parseImageRef } from '../images/reference.js';
import type { ImageApprovalRow, Store } from '../store/store.js';

/**
 * Approved images (`airlock image approve|revoke|approvals`): an admin vouches for a
 * digest-pinned image, and policy sees it at admission as `context.imageApproved` (the default
 * policy runs only approved images outside dev). An approval is about the digest — the exact
 * content — never the name. Approving and revoking are admin acts, each audited in the
 * transaction of the change, with the policy decision that allowed it.
 */

/** GET /v1/images/approvals answers at most this many, newest first. */
export const MAX_LISTED_APPROVALS = 1000;

export function imageApprovalInfo(row: ImageApprovalRow): ImageApproval {
  const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
  return {
    digest: row.digest,
    name: row.name,
    ref: `${row.name}@${row.digest}`,
    reason: row.reason,
    approvedBy: row.approvedBy,
    approvedAt: new Date(row.approvedAt).toISOString(),
    revokedBy: row.revokedBy,
    revokedAt: iso(row.revokedAt),
    revokeReason: row.revokeReason,
  };
}

export class ImageApprovals {
  readonly #store: Store;
  readonly #audit: AuditLog;
  readonly #now: () => number;

  constructor(options: { store: Store; audit: AuditLog; now?: () => number }) {
    this.#store = options.store;
    this.#audit = options.audit;
    this.#now = options.now ?? Date.now;
  }

  /** `policy`: the decision that allowed it, recorded with its audit event. */
  async approve(
    who: Principal,
    ref: string,
    reason: string,
    policy: Record<string, unknown>,
  ): Promise<ImageApproval> {
    requireAction(who, 'image.manage');
    let image: ReturnType<typeof parseImageRef>;
    try {
      image = parseImageRef(ref);
    } catch (error) {
      // The grammar's refusal, said as what it is here: a bad request, not a bad job.
      if (isAirlockError(error, 'INVALID_JOB')) throw new AirlockError('INVALID_REQUEST', error.message);
      throw error;
    }
    // "host" is the workers' own /usr, not an image anyone can approve.
    if (image.kind !== 'pinned')
      throw new AirlockError(
        'INVALID_REQUEST',
        'only a digest-pinned image NAME@sha256:<64 hex> is approved',
      );
    return this.#store.transaction(async (tx) => {
      const earlier = await tx.imageApprovals.get(image.digest);
      if (earlier !== null && earlier.revokedAt === null)
        throw new AirlockError(
          'INVALID_REQUEST',
          `${image.digest} is already approved (as ${earlier.name}, by ${earlier.approvedBy})`,
        );
      const row: ImageApprovalRow = {
        digest: image.digest,
        name: image.name,
        reason,
        approvedBy: who.name,
        approvedAt: this.#now(),
        revokedBy: null,
        revokedAt: null,
        revokeReason: null,
      };
      await tx.imageApprovals.put(row);
      await this.#audit.append(tx, {
        actor: who.name,
        action: 'image.approve',
        target: `image:${image.digest}`,
        outcome: 'succeeded',
        reason,
        source: who.source,
        details: {
          name: image.name,
          digest: image.digest,
          // Approved before and revoked since: this approval replaces that revocation.
          ...(earlier !== null
            ? { reapproved: { revokedBy: earlier.revokedBy, revokedAt: earlier.revokedAt } }
            : {}),
          policy,
        },
      });
      return imageApprovalInfo(row);
    });
  }

  /** Revokes the approval of a digest; jobs submitted afterwards see the image as unapproved. */
  async revoke(
    who: Principal,
    digest: string,
    reason: string,
    policy: Record<string, unknown>,
  ): Promise<ImageApproval> {
    requireAction(who, 'image.manage');
    return this.#store.transaction(async (tx) => {
      const at = this.#now();
      if (!(await tx.imageApprovals.revoke(digest, who.name, at, reason)))
        throw new AirlockError('NOT_FOUND', `no approval of ${digest} is in force`);
      const row = await tx.imageApprovals.get(digest);
      if (row === null)
        throw new AirlockError('INTERNAL', `the approval of ${digest} vanished while revoked`);
      await this.#audit.append(tx, {
        actor: who.name,
        action: 'image.revoke',
        target: `image:${digest}`,
        outcome: 'succeeded',
        reason,
        source: who.source,
        details: { name: row.name, digest, approvedBy: row.approvedBy, policy },
      });
      return imageApprovalInfo(row);
    });
  }

  async list(who: Principal): Promise<ImageApproval[]> {
    requireAction(who, 'image.read');
    const rows = await this.#store.read(async (tx) => tx.imageApprovals.list(MAX_LISTED_APPROVALS));
    return rows.map(imageApprovalInfo);
  }
}

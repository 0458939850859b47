import type { JobList, JobRecord, JobSpecV1, JobState, LogEnd, LogLine } from '../api/types.js';
import { type AuditLog, markAudited, sensitive } from '../audit/audit-log.js';
import { canonicalJson } from '../audit/canonical.js';
import { inScope, type Principal, requireAction, visibleProjects } from '../auth/principal.js';
import { AirlockError, isAirlockError } from '../errors.js';
import { admitJob } from '../policy/admission.js';
import { factsOfSpec } from '../policy/facts.js';
import { decisionDetails, decisionOf, type PolicyDecision, type PolicyGate } from '../policy/gate.js';
import type { PolicyTarget } from '../policy/request.js';
import type { SignedJob } from '../signing/envelope.js';
import type { JobSignatureVerifier, VerifiedSignature } from '../signing/verifier.js';
import type { JobRow, Store, Tx } from '../store/store.js';
import type { JobEvents } from './events.js';
import { checkMove, isTerminal } from './lifecycle.js';
import { newJobId, toRecord } from './record.js';
import { toSandboxJob } from './spec.js';

/**
 * The client side of the job lifecycle: submit, read, list, cancel, read logs. Every call is
 * authorized here and audited — refusals included — and every change is one transaction
 * with its audit event.
 */

export interface JobServiceOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly events: JobEvents;
  readonly maxAttempts: number;
  readonly projectQueueLimit: number;
  /** Verifies signed jobs (src/signing); absent, signed submits are refused as not wired. */
  readonly signatures?: JobSignatureVerifier;
  /** Decides every action with the Cedar policy in force (src/policy/gate.ts). */
  readonly policy: PolicyGate;
  readonly now?: () => number;
}

export interface SubmitOutcome {
  readonly job: JobRecord;
  /** False when an earlier submit with the same Idempotency-Key created it. */
  readonly created: boolean;
}

/** Where a read's `work` leaves its policy decision for the read's audit event. */
interface Decided {
  decision?: PolicyDecision;
}

/** A principal may have this many projects' worth of queued jobs (AIRLOCK_PROJECT_QUEUE_LIMIT each). */
const PRINCIPAL_QUEUE_FACTOR = 10;
/** How long a spent nonce is kept after its envelope expired. */
const NONCE_RETENTION_MS = 24 * 3600 * 1000;
const LOG_PAGE = 256;
/** A page of log lines holds at most about this many bytes (one chunk is at most 64 KiB). */
const LOG_PAGE_BYTES = 1024 * 1024;

export class JobService {
  readonly #o: JobServiceOptions;
  readonly #now: () => number;

  constructor(options: JobServiceOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  async submit(who: Principal, spec: JobSpecV1, idempotencyKey: string | null): Promise<SubmitOutcome> {
    return this.#audited(who, 'job.submit', '', { project: spec.project, signed: false }, async () =>
      this.#submit(who, spec, idempotencyKey, null),
    );
  }

  /**
   * A signed job: the signature is checked before anything else (key registered for the
   * project and not revoked, signature over the payload's exact bytes, validity window), the
   * spec is the one parsed from those bytes, and its nonce is consumed in the transaction
   * that creates the job. `checkSpec` validates the spec against the job spec schema.
   */
  async submitSigned(
    who: Principal,
    envelope: SignedJob,
    idempotencyKey: string | null,
    checkSpec: (spec: unknown) => JobSpecV1,
  ): Promise<SubmitOutcome> {
    return this.#audited(who, 'job.submit', '', { signed: true }, async () => {
      requireAction(who, 'job.submit');
      const verifier = this.#o.signatures;
      if (verifier === undefined) throw new AirlockError('INTERNAL', 'signed jobs are not wired');
      const verified = await verifier.verify(envelope, (project) => {
        if (!inScope(who, project))
          throw new AirlockError('FORBIDDEN', `this token may not submit to project "${project}"`);
      });
      return this.#submit(who, checkSpec(verified.payload.spec), idempotencyKey, verified.signature);
    });
  }

  async #submit(
    who: Principal,
    spec: JobSpecV1,
    idempotencyKey: string | null,
    signature: VerifiedSignature | null,
  ): Promise<SubmitOutcome> {
    {
      requireAction(who, 'job.submit');
      if (!inScope(who, spec.project))
        throw new AirlockError('FORBIDDEN', `this token may not submit to project "${spec.project}"`);
      toSandboxJob(spec);
      // Keyed: the spec holds environment values, and an unkeyed hash in the audit log would let
      // anyone holding it test guesses of them.
      // A signed request is also told apart by its signer and nonce: an Idempotency-Key retry
      // returns the earlier job only for the very same request.
      const requestHash = this.#o.audit.hash(
        canonicalJson(
          signature === null ? spec : { spec, signedBy: signature.fingerprint, nonce: signature.nonce },
        ),
      );
      const outcome = await this.#o.store.transaction(async (tx) => {
        if (idempotencyKey !== null) {
          const earlier = await tx.jobs.byIdempotencyKey(who.name, idempotencyKey);
          if (earlier !== null) {
            if (earlier.requestHash !== requestHash)
              // The earlier job is not named: it may belong to a project outside this token.
              throw new AirlockError(
                'IDEMPOTENCY_KEY_REUSED',
                `Idempotency-Key "${idempotencyKey}" was used before for another request; use a new key`,
              );
            // Handing back the earlier job is reading it: decided like any read (the policy, or
            // the token's scope, may have changed since it was submitted).
            if (!inScope(who, earlier.project)) throw new AirlockError('NOT_FOUND', `no job ${earlier.id}`);
            const decision = await this.#decideOnJob(tx, who, 'job.read', earlier);
            await this.#o.policy.countShadow(tx, decision, 'job.read');
            await this.#o.audit.append(tx, {
              actor: who.name,
              action: 'job.submit',
              target: `job:${earlier.id}`,
              outcome: 'succeeded',
              reason: 'repeated submit: same Idempotency-Key, same job',
              source: who.source,
              details: {
                idempotencyKey,
                replay: true,
                policy: decisionDetails(decision),
                signature:
                  signature === null
                    ? null
                    : { key: signature.keyId, fingerprint: signature.fingerprint, nonce: signature.nonce },
              },
            });
            return { job: toRecord(earlier), created: false };
          }
        }
        if (signature !== null) {
          // Revoked meanwhile? The key is read again in the transaction that creates the job.
          const key = await tx.signingKeys.get(signature.keyId);
          if (key === null || key.revokedAt !== null)
            throw new AirlockError('SIGNATURE_KEY_REVOKED', `the key ${signature.fingerprint} was revoked`);
          // One signed request, one job: the nonce is spent with the job, durably.
          const now = this.#now();
          // Kept a day past the envelope's expiry: far beyond the skew allowance, so a clock
          // step or a stalled queue cannot make an expired-looking nonce usable again.
          await tx.nonces.purge(now);
          if (
            !(await tx.nonces.consume(
              signature.fingerprint,
              signature.nonce,
              signature.expiresAt + NONCE_RETENTION_MS,
              now,
            ))
          )
            throw new AirlockError(
              'SIGNATURE_REPLAYED',
              `the signed job with nonce ${signature.nonce} by ${signature.fingerprint} was submitted before: a signed request runs once`,
            );
        }
        const admitted = await admitJob(this.#o.policy, tx, who, spec, signature, this.#now());
        const queued = await tx.jobs.countQueued(spec.project);
        if (queued >= this.#o.projectQueueLimit)
          throw new AirlockError(
            'QUEUE_FULL',
            `project "${spec.project}" already has ${queued} queued jobs (the limit is ${this.#o.projectQueueLimit})`,
          );
        // And ten projects' worth per principal: new project names are no way around the bound.
        const mine = await tx.jobs.countQueuedBy(who.name);
        const principalLimit = this.#o.projectQueueLimit * PRINCIPAL_QUEUE_FACTOR;
        if (mine >= principalLimit)
          throw new AirlockError(
            'QUEUE_FULL',
            `${who.name} already has ${mine} queued jobs (the limit is ${principalLimit})`,
          );
        const now = this.#now();
        const row = await tx.jobs.insert({
          id: newJobId(),
          project: spec.project,
          environment: spec.environment ?? 'dev',
          // Named by the spec, or picked by admission (gvisor when policy refuses runc).
          runtime: admitted.trust.runtime.name,
          state: 'queued',
          spec,
          submittedBy: who.name,
          idempotencyKey,
          requestHash,
          createdAt: now,
          updatedAt: now,
          startedAt: null,
          finishedAt: null,
          attempts: 0,
          maxAttempts: this.#o.maxAttempts,
          fence: 0,
          worker: null,
          leaseToken: null,
          leaseExpiresAt: null,
          cancelRequested: false,
          result: null,
          reason: null,
          exitStatus: null,
          logSeq: 0,
          logBase: 0,
          logBytes: 0,
          trust: admitted.trust,
          scriptDigest: admitted.trust.scriptDigest,
          originKey: admitted.originKey,
          asked: admitted.asked,
        });
        await this.#o.audit.append(tx, {
          actor: who.name,
          action: 'job.submit',
          target: `job:${row.id}`,
          outcome: 'succeeded',
          source: who.source,
          details: {
            project: row.project,
            environment: row.environment,
            runtime: row.runtime,
            // Why this runtime: named by the job, the default, or picked because policy refuses runc.
            runtimeChoice: { source: admitted.trust.runtime.source, reason: admitted.trust.runtime.reason },
            image: admitted.trust.image ?? { ref: 'host' },
            command: spec.command.slice(0, 16).map((arg) => arg.slice(0, 256)),
            requestHash,
            // Environment values may be secrets: recorded only as keyed HMACs (audit hash VALUE).
            ...(spec.env !== undefined
              ? {
                  env: Object.fromEntries(
                    Object.entries(spec.env)
                      .slice(0, 64)
                      .map(([name, value]) => [name.slice(0, 128), sensitive(value)]),
                  ),
                }
              : {}),
            tokenId: who.tokenId,
            // Why it was let in: the decision (version, deciding policies), its risk and profile.
            policy: decisionDetails(admitted.decision),
            risk: admitted.trust.risk,
            scriptDigest: admitted.trust.scriptDigest,
            profile: admitted.trust.profile,
            origin: who.origin ?? null,
            // Signed or not, and by whose key: the first question an auditor asks of a job.
            signature:
              signature === null
                ? null
                : {
                    key: signature.keyId,
                    fingerprint: signature.fingerprint,
                    owner: signature.owner,
                    release: signature.release,
                    nonce: signature.nonce,
                  },
            ...(idempotencyKey !== null ? { idempotencyKey } : {}),
          },
        });
        return { job: toRecord(row), created: true };
      });
      if (outcome.created) this.#o.events.queued();
      return outcome;
    }
  }

  /** Decides a job action (read, logs, cancel) on a stored job, in `tx`. */
  async #decideOnJob(
    tx: Tx,
    who: Principal,
    action: 'job.read' | 'job.logs' | 'job.cancel',
    row: JobRow,
  ): Promise<PolicyDecision> {
    const gate = this.#o.policy;
    const target: PolicyTarget = {
      kind: 'job',
      id: row.id,
      project: row.project,
      environment: row.environment,
      submittedBy: row.submittedBy,
    };
    return gate.decide(await gate.active(tx), who, action, target, factsOfSpec(row.spec, row.trust));
  }

  async get(who: Principal, id: string): Promise<JobRecord> {
    const decided: Decided = {};
    return this.#audited(
      who,
      'job.read',
      `job:${id}`,
      {},
      async () => {
        requireAction(who, 'job.read');
        const row = await this.#o.store.read(async (tx) => {
          const visible = await this.#visible(tx, who, id);
          decided.decision = await this.#decideOnJob(tx, who, 'job.read', visible);
          return visible;
        });
        return toRecord(row);
      },
      true,
      decided,
    );
  }

  async list(
    who: Principal,
    filter: { project?: string; state?: JobState; limit: number; cursor?: string },
  ): Promise<JobList> {
    const decided: Decided = {};
    return this.#audited(
      who,
      'job.list',
      '',
      { ...filter },
      async () => {
        requireAction(who, 'job.read');
        const target: PolicyTarget =
          filter.project !== undefined ? { kind: 'project', project: filter.project } : { kind: 'service' };
        decided.decision = await this.#o.policy.authorizeRead(who, 'job.read', target);
        let beforeSeq: number | undefined;
        if (filter.cursor !== undefined) {
          if (!/^\d{1,15}$/.test(filter.cursor))
            throw new AirlockError('INVALID_REQUEST', 'cursor is not one this server gave');
          beforeSeq = Number(filter.cursor);
        }
        const projects = visibleProjects(who);
        const rows = await this.#o.store.read(async (tx) =>
          tx.jobs.list({
            ...(projects !== undefined ? { projects } : {}),
            ...(filter.project !== undefined ? { project: filter.project } : {}),
            ...(filter.state !== undefined ? { state: filter.state } : {}),
            ...(beforeSeq !== undefined ? { beforeSeq } : {}),
            limit: filter.limit + 1,
          }),
        );
        const page = rows.slice(0, filter.limit);
        const last = page.at(-1);
        return {
          jobs: page.map(toRecord),
          nextCursor: rows.length > filter.limit && last !== undefined ? String(last.seq) : null,
        };
      },
      true,
      decided,
    );
  }

  async cancel(who: Principal, id: string): Promise<JobRecord> {
    return this.#audited(who, 'job.cancel', `job:${id}`, {}, async () => {
      requireAction(who, 'job.cancel');
      const record = await this.#o.store.transaction(async (tx) => {
        const row = await this.#visible(tx, who, id);
        const decision = await this.#decideOnJob(tx, who, 'job.cancel', row);
        await this.#o.policy.countShadow(tx, decision, 'job.cancel');
        if (isTerminal(row.state))
          throw new AirlockError('JOB_FINISHED', `job ${id} has already ended (${row.state})`);
        const now = this.#now();
        const from = row.state;
        if (row.state === 'queued') {
          checkMove(row.state, 'cancelled');
          Object.assign(row, {
            state: 'cancelled',
            finishedAt: now,
            reason: `cancelled by ${who.name} before it started`,
            exitStatus: 130,
          });
        }
        // Leased or running: the worker learns it at its next heartbeat and stops the job.
        row.cancelRequested = true;
        row.updatedAt = now;
        await tx.jobs.update(row);
        await this.#o.audit.append(tx, {
          actor: who.name,
          action: 'job.cancel',
          target: `job:${id}`,
          outcome: 'succeeded',
          source: who.source,
          details: { from, to: row.state, policy: decisionDetails(decision) },
        });
        return toRecord(row);
      });
      this.#o.events.changed(id);
      return record;
    });
  }

  /** Checks access to a job's logs (audited once per read). */
  async openLogs(who: Principal, id: string): Promise<void> {
    const decided: Decided = {};
    await this.#audited(
      who,
      'job.logs',
      `job:${id}`,
      {},
      async () => {
        requireAction(who, 'job.logs');
        await this.#o.store.read(async (tx) => {
          decided.decision = await this.#decideOnJob(tx, who, 'job.logs', await this.#visible(tx, who, id));
        });
      },
      true,
      decided,
    );
  }

  /** Log lines after `afterSeq`, at most a page, and the job's state now. */
  async logsAfter(id: string, afterSeq: number): Promise<{ lines: LogLine[]; end: LogEnd }> {
    return this.#o.store.read(async (tx) => {
      const all = await tx.logs.after(id, afterSeq, LOG_PAGE);
      let bytes = 0;
      const rows = all.filter((row, index) => {
        bytes += row.data.length;
        return index === 0 || bytes <= LOG_PAGE_BYTES;
      });
      const job = await tx.jobs.get(id);
      if (job === null) throw new AirlockError('NOT_FOUND', `no job ${id}`);
      return {
        lines: rows.map((row) => ({ seq: row.seq, stream: row.stream, data: row.data.toString('base64') })),
        end: { end: { state: job.state, terminal: isTerminal(job.state), exitStatus: job.exitStatus } },
      };
    });
  }

  /** A job the principal may see; others answer NOT_FOUND whether or not they exist. */
  async #visible(tx: Tx, who: Principal, id: string): Promise<JobRow> {
    const row = await tx.jobs.get(id);
    if (row === null || !inScope(who, row.project)) throw new AirlockError('NOT_FOUND', `no job ${id}`);
    return row;
  }

  /**
   * Runs an action; a refusal (an AirlockError) is audited with its code in a transaction
   * of its own before it is passed on. Successful reads are audited here too; changes audit
   * themselves inside their own transaction.
   */
  async #audited<T>(
    who: Principal,
    action: string,
    target: string,
    details: Record<string, unknown>,
    work: () => Promise<T>,
    /** Reads change nothing, so their success is audited here (changes audit in their own transaction). */
    auditSuccess = false,
    /** The policy decision of a read, set by `work`: recorded with its event. */
    decided: Decided = {},
  ): Promise<T> {
    try {
      const result = await work();
      if (auditSuccess) await this.#record(who, action, target, 'succeeded', '', details, decided.decision);
      return result;
    } catch (error) {
      if (isAirlockError(error) && error.code !== 'AUDIT_FAILED' && error.code !== 'STORE_FAILED') {
        await this.#record(
          who,
          action,
          target,
          'denied',
          `${error.code}: ${error.message}`,
          details,
          decisionOf(error),
        );
        markAudited(error);
      }
      throw error;
    }
  }

  async #record(
    who: Principal,
    action: string,
    target: string,
    outcome: 'succeeded' | 'denied',
    reason: string,
    details: Record<string, unknown>,
    decision?: PolicyDecision,
  ): Promise<void> {
    await this.#o.store.transaction(async (tx) => {
      if (decision !== undefined && outcome === 'succeeded')
        await this.#o.policy.countShadow(
          tx,
          decision,
          action === 'job.list' ? 'job.read' : (action as 'job.read'),
        );
      await this.#o.audit.append(tx, {
        actor: who.name,
        action,
        target,
        outcome,
        reason,
        source: who.source,
        details: decision === undefined ? details : { ...details, policy: decisionDetails(decision) },
      });
    });
  }
}

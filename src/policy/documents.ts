import { createHash, randomBytes } from 'node:crypto';
import type { AuditLog } from '../audit/audit-log.js';
import { inScope, type Principal } from '../auth/principal.js';
import { AirlockError } from '../errors.js';
import type {
  PolicyActiveRow,
  PolicyDocRow,
  PolicyKind,
  PolicyMode,
  ShadowCountRow,
  Store,
  Tx,
} from '../store/store.js';
import { DEFAULT_POLICY } from './cedar-text.js';
import { factsOfSpec } from './facts.js';
import { decisionDetails, type PolicyGate } from './gate.js';
import type { ProfileSuggestion } from './profile.js';
import {
  checkProfileScope,
  DEFAULT_PROFILE,
  formatProfile,
  parseProfile,
  suggestProfile,
} from './profile.js';

/**
 * Governance of policy sets and permission profiles. Each is a versioned document — content
 * hash, author, a required rationale — that is proposed, then approved by an admin other
 * than its author (separation of duties) before it applies. Rolling back is proposing an
 * earlier version's content again, approved the same way. A policy version can be rolled
 * out in audit mode first: evaluated beside the one in force, its would-denials counted,
 * nothing refused — then switched to enforce. Every step is audited in its transaction.
 */

export interface ProposeRequest {
  readonly kind: PolicyKind;
  /** "" for the policy set; the project, or PROJECT@sha256:…, of a profile. */
  readonly scope: string;
  readonly content: string;
  readonly rationale: string;
  readonly mode?: PolicyMode;
}

export interface PolicyStatus {
  readonly policy: {
    readonly enforce: DocumentSummary | null;
    readonly audit: (DocumentSummary & { readonly counts: readonly ShadowCountRow[] }) | null;
  };
  readonly profiles: readonly { readonly scope: string; readonly version: number | null }[];
  readonly pending: readonly DocumentSummary[];
}

export type DocumentSummary = Omit<PolicyDocRow, 'content'>;

export interface PolicyDocumentsOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly gate: PolicyGate;
  readonly now?: () => number;
}

const MAX_RATIONALE = 2000;
/** Pending proposals one author may have at a time. */
const MAX_PENDING = 20;
const HISTORY_LIMIT = 200;
export const MAX_SUGGEST_RUNS = 1000;

function summary(row: PolicyDocRow): DocumentSummary {
  const { content: _content, ...rest } = row;
  return rest;
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

export class PolicyDocuments {
  readonly #o: PolicyDocumentsOptions;
  readonly #now: () => number;

  constructor(options: PolicyDocumentsOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /**
   * First start (or first start after an upgrade to policies): the default policy becomes
   * version 1, approved by the system. Later Airlock releases never replace it silently:
   * `airlock policy diff --default` shows what a newer default would change.
   */
  async bootstrap(releaseVersion: string): Promise<void> {
    await this.#o.store.transaction(async (tx) => {
      if ((await tx.policies.active('policy', '')) !== null) return;
      // Versions but none in force: the tables were tampered with. Fail closed; never
      // quietly fall back to the default.
      if ((await tx.policies.history('policy', '', 1)).length > 0)
        throw new AirlockError(
          'POLICY_ERROR',
          'policy versions exist but none is in force (policy_active was changed outside Airlock): restore the database from a backup',
        );
      const now = this.#now();
      const content = DEFAULT_POLICY;
      const hash = this.#o.gate.engine.compile(content).hash;
      await tx.policies.insert({
        kind: 'policy',
        scope: '',
        version: 1,
        content,
        contentHash: hash,
        author: 'system',
        rationale: `the default policy of Airlock ${releaseVersion}`,
        mode: 'enforce',
        baseVersion: null,
        rollbackOf: null,
        state: 'approved',
        proposedAt: now,
        decidedBy: 'system',
        decidedAt: now,
      });
      await tx.policies.setActive({
        kind: 'policy',
        scope: '',
        enforceVersion: 1,
        auditVersion: null,
        changedAt: now,
      });
      await this.#o.audit.append(tx, {
        actor: 'system',
        action: 'policy.bootstrap',
        target: 'policy:v1',
        outcome: 'succeeded',
        reason: 'the default policy is in force',
        details: { version: 1, hash },
      });
    });
  }

  async propose(
    who: Principal,
    request: ProposeRequest,
    rollbackOf: number | null = null,
  ): Promise<DocumentSummary> {
    const decision = await this.#o.gate.authorize(who, 'policy.propose', { kind: 'service' });
    const rationale = request.rationale.trim();
    if (rationale.length === 0 || rationale.length > MAX_RATIONALE)
      throw new AirlockError(
        'POLICY_INVALID',
        `a change needs a rationale of 1 to ${MAX_RATIONALE} characters`,
      );
    const mode = request.mode ?? 'enforce';
    let content: string;
    if (request.kind === 'policy') {
      if (request.scope !== '') throw new AirlockError('POLICY_INVALID', 'the policy set has no scope');
      content = request.content;
      this.#o.gate.engine.compile(content);
      this.#checkNoLockout(content);
    } else {
      checkProfileScope(request.scope);
      if (mode !== 'enforce') throw new AirlockError('POLICY_INVALID', 'profiles apply in enforce mode only');
      content = formatProfile(parseProfile(request.content));
    }
    const hash = sha256(content);
    return this.#o.store.transaction(async (tx) => {
      const active = await tx.policies.active(request.kind, request.scope);
      const current = await this.#current(tx, request.kind, request.scope, active);
      if (current !== null && current.contentHash === hash && mode === 'enforce')
        throw new AirlockError(
          'POLICY_INVALID',
          `this is the content of version ${current.version}, already in force`,
        );
      // Proposals are kept for ever: one author cannot bury the queue under them.
      const mine = (await tx.policies.pending(MAX_PENDING * 10)).filter(
        (row) => row.author === who.name,
      ).length;
      if (mine >= MAX_PENDING)
        throw new AirlockError(
          'POLICY_CONFLICT',
          `${who.name} already has ${mine} pending proposals: have them decided or withdraw some (airlock policy reject N)`,
        );
      const version = await tx.policies.nextVersion(request.kind, request.scope);
      const row: PolicyDocRow = {
        kind: request.kind,
        scope: request.scope,
        version,
        content,
        contentHash: hash,
        author: who.name,
        rationale,
        mode,
        baseVersion: active?.enforceVersion ?? null,
        rollbackOf,
        state: 'proposed',
        proposedAt: this.#now(),
        decidedBy: null,
        decidedAt: null,
      };
      await tx.policies.insert(row);
      await this.#o.audit.append(tx, {
        actor: who.name,
        action: 'policy.propose',
        target: documentName(row),
        outcome: 'succeeded',
        reason: rationale,
        source: who.source,
        details: {
          policy: decisionDetails(decision),
          kind: row.kind,
          scope: row.scope,
          version,
          hash,
          mode,
          baseVersion: row.baseVersion,
          rollbackOf,
        },
      });
      return summary(row);
    });
  }

  /** Approves a pending proposal: never by its author; refused if another version was applied since. */
  async approve(who: Principal, kind: PolicyKind, scope: string, version: number): Promise<DocumentSummary> {
    const decision = await this.#o.gate.authorize(who, 'policy.approve', { kind: 'service' });
    return this.#o.store.transaction(async (tx) => {
      const row = await this.#pending(tx, kind, scope, version);
      // Separation of duties: one admin alone can never change what the airlock lets in.
      if (row.author === who.name)
        throw new AirlockError(
          'SEPARATION_OF_DUTIES',
          `${documentName(row)} was proposed by ${row.author}: another admin must approve it`,
        );
      const active = await tx.policies.active(kind, scope);
      if ((active?.enforceVersion ?? null) !== row.baseVersion)
        throw new AirlockError(
          'POLICY_CONFLICT',
          `${documentName(row)} was proposed against version ${row.baseVersion ?? 'none'}, but version ${active?.enforceVersion ?? 'none'} is in force now: propose it again`,
        );
      // Checked again: the engine of this release may judge the text differently.
      if (kind === 'policy') {
        this.#o.gate.engine.compile(row.content);
        this.#checkNoLockout(row.content);
      } else parseProfile(row.content);
      const now = this.#now();
      if (!(await tx.policies.decide(kind, scope, version, 'approved', who.name, now)))
        throw new AirlockError('POLICY_CONFLICT', `${documentName(row)} is no longer pending`);
      await tx.policies.setActive({
        kind,
        scope,
        enforceVersion: row.mode === 'enforce' ? version : (active?.enforceVersion ?? null),
        auditVersion: row.mode === 'audit' ? version : (active?.auditVersion ?? null),
        changedAt: now,
      });
      await this.#o.audit.append(tx, {
        actor: who.name,
        action: 'policy.approve',
        target: documentName(row),
        outcome: 'succeeded',
        reason: row.rationale,
        source: who.source,
        details: {
          policy: decisionDetails(decision),
          kind,
          scope,
          version,
          hash: row.contentHash,
          mode: row.mode,
          author: row.author,
          previous: active?.enforceVersion ?? null,
          rollbackOf: row.rollbackOf,
        },
      });
      return { ...summary(row), state: 'approved' as const, decidedBy: who.name, decidedAt: now };
    });
  }

  /** Rejects a pending proposal (its author may withdraw it too). */
  async reject(
    who: Principal,
    kind: PolicyKind,
    scope: string,
    version: number,
    reason: string,
  ): Promise<DocumentSummary> {
    let decision = await this.#o.gate.authorize(who, 'policy.propose', { kind: 'service' });
    // Decided before the transaction: a decision reads (and may write) the store itself, and
    // the store runs one transaction at a time — deciding inside one would wait for ever.
    const pending = await this.#o.store.read(async (tx) => this.#pending(tx, kind, scope, version));
    const withdrawing = pending.author === who.name;
    if (!withdrawing) decision = await this.#o.gate.authorize(who, 'policy.approve', { kind: 'service' });
    return this.#o.store.transaction(async (tx) => {
      const row = await this.#pending(tx, kind, scope, version);
      if (row.author !== pending.author)
        throw new AirlockError('POLICY_CONFLICT', `${documentName(row)} changed`);
      const now = this.#now();
      if (!(await tx.policies.decide(kind, scope, version, 'rejected', who.name, now)))
        throw new AirlockError('POLICY_CONFLICT', `${documentName(row)} is no longer pending`);
      await this.#o.audit.append(tx, {
        actor: who.name,
        action: 'policy.reject',
        target: documentName(row),
        outcome: 'succeeded',
        reason: reason.slice(0, MAX_RATIONALE),
        source: who.source,
        details: { kind, scope, version, author: row.author, policy: decisionDetails(decision) },
      });
      return { ...summary(row), state: 'rejected' as const, decidedBy: who.name, decidedAt: now };
    });
  }

  /** Proposes the content of an earlier approved version again; it applies once approved. */
  async rollback(
    who: Principal,
    kind: PolicyKind,
    scope: string,
    toVersion: number,
    rationale: string,
  ): Promise<DocumentSummary> {
    // Decided (and the scope checked) before anything is looked up: a 404 must not tell a
    // token outside the project which versions of its profile exist.
    await this.#o.gate.authorize(who, 'policy.propose', { kind: 'service' });
    if (!this.#visible(who, scope))
      throw new AirlockError('NOT_FOUND', `no approved version ${toVersion} of profile ${scope}`);
    const earlier = await this.#o.store.read(async (tx) => tx.policies.get(kind, scope, toVersion));
    if (earlier === null || earlier.state !== 'approved')
      throw new AirlockError(
        'NOT_FOUND',
        `no approved version ${toVersion} of ${kind === 'policy' ? 'the policy' : `profile ${scope}`}`,
      );
    return this.propose(
      who,
      { kind, scope, content: earlier.content, rationale, mode: 'enforce' },
      toVersion,
    );
  }

  /**
   * Switches the version in audit mode to enforce. Its content was approved already; the
   * switch is a second decision, so it too is made by an admin other than the author.
   */
  async enforce(who: Principal, version: number): Promise<DocumentSummary> {
    const decision = await this.#o.gate.authorize(who, 'policy.approve', { kind: 'service' });
    return this.#o.store.transaction(async (tx) => {
      const active = await tx.policies.active('policy', '');
      if (active === null || active.auditVersion !== version)
        throw new AirlockError('POLICY_CONFLICT', `version ${version} is not the policy in audit mode`);
      const row = await tx.policies.get('policy', '', version);
      if (row === null) throw new AirlockError('NOT_FOUND', `no policy version ${version}`);
      if (row.author === who.name)
        throw new AirlockError(
          'SEPARATION_OF_DUTIES',
          `policy v${version} was written by ${row.author}: another admin must enforce it`,
        );
      // It was written against the version then in force: if another came into force since,
      // enforcing it would silently drop that version's rules.
      if (row.baseVersion !== active.enforceVersion)
        throw new AirlockError(
          'POLICY_CONFLICT',
          `policy v${version} was proposed against v${row.baseVersion ?? 'none'}, but v${active.enforceVersion ?? 'none'} is in force now: propose it again`,
        );
      const counts = await tx.policies.shadowCounts('policy', '', version);
      const now = this.#now();
      await tx.policies.setActive({
        kind: 'policy',
        scope: '',
        enforceVersion: version,
        auditVersion: null,
        changedAt: now,
      });
      await this.#o.audit.append(tx, {
        actor: who.name,
        action: 'policy.enforce',
        target: documentName(row),
        outcome: 'succeeded',
        reason: `audit mode → enforce (previously in force: v${active.enforceVersion ?? 'none'})`,
        source: who.source,
        details: {
          version,
          hash: row.contentHash,
          previous: active.enforceVersion,
          counts,
          policy: decisionDetails(decision),
        },
      });
      return summary(row);
    });
  }

  async status(who: Principal): Promise<PolicyStatus> {
    await this.#o.gate.authorize(who, 'policy.read', { kind: 'service' });
    return this.#o.store.read(async (tx) => {
      const active = await tx.policies.active('policy', '');
      const enforce =
        active?.enforceVersion == null ? null : await tx.policies.get('policy', '', active.enforceVersion);
      const audit =
        active?.auditVersion == null ? null : await tx.policies.get('policy', '', active.auditVersion);
      const profiles = (await tx.policies.activeAll('profile')).filter((row) =>
        this.#visible(who, row.scope),
      );
      return {
        policy: {
          enforce: enforce === null ? null : summary(enforce),
          audit:
            audit === null
              ? null
              : { ...summary(audit), counts: await tx.policies.shadowCounts('policy', '', audit.version) },
        },
        profiles: profiles.map((row) => ({ scope: row.scope, version: row.enforceVersion })),
        pending: (await tx.policies.pending(100)).filter((row) => this.#visible(who, row.scope)).map(summary),
      };
    });
  }

  async history(who: Principal, kind: PolicyKind, scope: string): Promise<DocumentSummary[]> {
    await this.#o.gate.authorize(who, 'policy.read', { kind: 'service' });
    if (!this.#visible(who, scope)) return [];
    return this.#o.store.read(async (tx) =>
      (await tx.policies.history(kind, scope, HISTORY_LIMIT)).map(summary),
    );
  }

  /** One version with its content; without a version, the one in force (a profile never set: the default). */
  async show(who: Principal, kind: PolicyKind, scope: string, version?: number): Promise<PolicyDocRow> {
    await this.#o.gate.authorize(who, 'policy.read', { kind: 'service' });
    const missing = (): never => {
      throw new AirlockError(
        'NOT_FOUND',
        `no version ${version ?? '(in force)'} of ${kind === 'policy' ? 'the policy' : `profile ${scope}`}`,
      );
    };
    if (!this.#visible(who, scope)) return missing();
    return this.#o.store.read(async (tx) => {
      if (version !== undefined) return (await tx.policies.get(kind, scope, version)) ?? missing();
      const current = await this.#current(tx, kind, scope, await tx.policies.active(kind, scope));
      if (current !== null) return current;
      if (kind === 'policy') return missing();
      const content = formatProfile(DEFAULT_PROFILE);
      return {
        kind,
        scope,
        version: 0,
        content,
        contentHash: sha256(content),
        author: 'system',
        rationale: 'no profile is set for this project: the default profile applies',
        mode: 'enforce',
        baseVersion: null,
        rollbackOf: null,
        state: 'approved',
        proposedAt: 0,
        decidedBy: 'system',
        decidedAt: 0,
      };
    });
  }

  /** The smallest profile covering the project's last `runs` jobs, and its unused grants. */
  async suggest(
    who: Principal,
    project: string,
    runs: number,
  ): Promise<ProfileSuggestion & { current: number }> {
    await this.#o.gate.authorize(who, 'policy.read', { kind: 'service' });
    if (!inScope(who, project)) throw new AirlockError('NOT_FOUND', `no project ${project}`);
    const count = Math.min(Math.max(1, runs), MAX_SUGGEST_RUNS);
    return this.#o.store.read(async (tx) => {
      const asked = await tx.jobs.recentAsked(project, count);
      const active = await this.#o.gate.profileFor(tx, project, '');
      const facts = asked.map((job) => ({
        ...factsOfSpec({ version: 1, project, command: [''] }, null),
        ...job,
      }));
      return { ...suggestProfile(facts, active.profile), current: active.version };
    });
  }

  async #current(
    tx: Tx,
    kind: PolicyKind,
    scope: string,
    active: PolicyActiveRow | null,
  ): Promise<PolicyDocRow | null> {
    if (active?.enforceVersion == null) return null;
    return tx.policies.get(kind, scope, active.enforceVersion);
  }

  async #pending(tx: Tx, kind: PolicyKind, scope: string, version: number): Promise<PolicyDocRow> {
    const row = await tx.policies.get(kind, scope, version);
    if (row === null)
      throw new AirlockError('NOT_FOUND', `no proposal ${documentName({ kind, scope, version })}`);
    if (row.state !== 'proposed')
      throw new AirlockError('POLICY_CONFLICT', `${documentName(row)} is not pending (it was ${row.state})`);
    return row;
  }

  /** A profile's scope is visible to tokens of its project; the policy set to everyone who may read. */
  #visible(who: Principal, scope: string): boolean {
    return scope === '' || inScope(who, scope.split('@')[0] ?? scope);
  }

  /**
   * A policy that would forbid admins to read, propose or approve policy would leave nobody
   * able to repair it: such a proposal is refused. Tried for an admin of a random name (so a
   * rule cannot spare the name the check uses), with and without a request key, now and at
   * dates up to a century ahead (so a rule with a fuse shows). A rule that denies only at
   * some hours is not a lockout: admins repair it at others.
   */
  #checkNoLockout(content: string): void {
    const compiled = this.#o.gate.engine.compile(content);
    const active = { enforce: { version: 0, compiled }, audit: null };
    const name = `lockout-check-${randomBytes(6).toString('hex')}`;
    const admins: Principal[] = [
      { tokenId: name, name, role: 'admin', projects: ['*'], source: '' },
      { tokenId: name, name, role: 'admin', projects: ['*'], source: '', requestKey: 'ssh-ed25519 AAAA' },
    ];
    const start = this.#now();
    const day = 24 * 3600 * 1000;
    // Now, and later: a rule that starts denying at some date is a lockout with a fuse.
    const times = [0, 1, 7, 30, 365, 3650, 36500].map((days) => start + days * day);
    for (const admin of admins)
      for (const at of times)
        for (const action of ['policy.read', 'policy.propose', 'policy.approve'] as const) {
          try {
            this.#o.gate.decide(active, admin, action, { kind: 'service' }, null, at);
          } catch (error) {
            throw new AirlockError(
              'POLICY_INVALID',
              `this policy would deny admins ${action} (at ${new Date(at).toISOString()}), so nobody could change it again: ${(error as Error).message}`,
            );
          }
        }
  }
}

export function documentName(row: Pick<PolicyDocRow, 'kind' | 'scope' | 'version'>): string {
  return row.kind === 'policy' ? `policy:v${row.version}` : `profile:${row.scope}:v${row.version}`;
}

import { createHash } from 'node:crypto';
import type { AuditLog } from '../audit/audit-log.js';
import { type Action, type Principal, requireAction } from '../auth/principal.js';
import { AirlockError } from '../errors.js';
import type { PolicyKind, Store, Tx } from '../store/store.js';
import type { CedarEngine, CompiledPolicySet } from './engine.js';
import { DEFAULT_PROFILE, type Profile, parseProfile } from './profile.js';
import { buildRequest, type JobFacts, type PolicyTarget } from './request.js';

/**
 * The policy decision point: every action of the client API is decided here — first the
 * role's built-in ceiling (src/auth/principal.ts: a policy can narrow a role, never widen
 * it), then the Cedar policy set in force. A version rolled out in audit mode is evaluated
 * beside it: what it would deny is recorded and counted, and nothing is refused for it.
 *
 * The version in force is read from the store at each decision (one indexed row), so every
 * control-plane process decides with the same version; compiled sets are cached per version.
 */

export interface VersionDecision {
  readonly version: number;
  /** SHA-256 of the policy text. */
  readonly hash: string;
  readonly allowed: boolean;
  /** The @ids that decided (forbids that matched on a deny; permits on an allow). */
  readonly policies: readonly string[];
}

export interface PolicyDecision extends VersionDecision {
  /** The decision of the version in audit mode, if one is rolled out. */
  readonly shadow: VersionDecision | null;
}

interface LoadedVersion {
  readonly version: number;
  readonly compiled: CompiledPolicySet;
}

export interface ActivePolicy {
  readonly enforce: LoadedVersion;
  readonly audit: LoadedVersion | null;
}

export interface ActiveProfile {
  /** null: no profile is set for the project; DEFAULT_PROFILE applies. */
  readonly scope: string | null;
  readonly version: number;
  readonly profile: Profile;
}

const decisions = new WeakMap<object, PolicyDecision>();
const SEE_POLICY = '. See airlock policy show; docs/policy.md';

/** The decision a POLICY_DENIED carries (for the audit event of the refusal). */
export function decisionOf(error: unknown): PolicyDecision | undefined {
  return typeof error === 'object' && error !== null ? decisions.get(error) : undefined;
}

/** The same refusal with `more` said after its message; its decision stays attached (decisionOf). */
export function explainDenial(error: AirlockError, more: string): AirlockError {
  // Said before the pointer to the docs, which stays last.
  const message = error.message.endsWith(SEE_POLICY)
    ? `${error.message.slice(0, -SEE_POLICY.length)}${more}${SEE_POLICY}`
    : `${error.message}${more}`;
  const explained = new AirlockError(error.code, message, { cause: error });
  const decision = decisions.get(error);
  if (decision !== undefined) decisions.set(explained, decision);
  return explained;
}

/** A decision as the audit log records it. */
export function decisionDetails(decision: PolicyDecision): Record<string, unknown> {
  return {
    version: decision.version,
    hash: decision.hash,
    decision: decision.allowed ? 'allow' : 'deny',
    policies: [...decision.policies],
    ...(decision.shadow !== null
      ? {
          audit: {
            version: decision.shadow.version,
            hash: decision.shadow.hash,
            decision: decision.shadow.allowed ? 'allow' : 'deny',
            policies: [...decision.shadow.policies],
          },
        }
      : {}),
  };
}

export interface PolicyGateOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly engine: CedarEngine;
  readonly now?: () => number;
}

export class PolicyGate {
  readonly #o: PolicyGateOptions;
  readonly #now: () => number;
  /** Compiled policy sets and parsed profiles by kind/scope/version: documents never change. */
  readonly #versions = new Map<string, CompiledPolicySet>();
  readonly #profiles = new Map<string, Profile>();

  constructor(options: PolicyGateOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  get engine(): CedarEngine {
    return this.#o.engine;
  }

  /** The policy set in force (and in audit mode), read in `tx`. POLICY_ERROR when none is. */
  async active(tx: Tx): Promise<ActivePolicy> {
    const row = await tx.policies.active('policy', '');
    // Fail closed: a database without a policy in force allows nothing.
    if (row === null || row.enforceVersion === null)
      throw new AirlockError(
        'POLICY_ERROR',
        'no policy is in force (the policy tables are empty or damaged)',
      );
    return {
      enforce: await this.#load(tx, row.enforceVersion),
      audit: row.auditVersion === null ? null : await this.#load(tx, row.auditVersion),
    };
  }

  async #load(tx: Tx, version: number): Promise<LoadedVersion> {
    const key = `policy::${version}`;
    let compiled = this.#versions.get(key);
    if (compiled === undefined) {
      const document = await tx.policies.get('policy', '', version);
      if (document === null || document.state !== 'approved')
        throw new AirlockError(
          'POLICY_ERROR',
          `the policy in force (version ${version}) is missing or not approved`,
        );
      try {
        compiled = this.#o.engine.compile(document.content);
      } catch (error) {
        throw new AirlockError(
          'POLICY_ERROR',
          `the policy in force (version ${version}) no longer compiles: ${(error as Error).message}`,
          { cause: error },
        );
      }
      // Stored content is checked against its hash: a row edited below the triggers is not used.
      if (compiled.hash !== document.contentHash)
        throw new AirlockError(
          'POLICY_ERROR',
          `the policy in force (version ${version}) does not match its hash`,
        );
      this.#versions.set(key, compiled);
    }
    return { version, compiled };
  }

  /** The permission profile of a job: its script's own, else its project's, else the default. */
  async profileFor(tx: Tx, project: string, scriptDigest: string): Promise<ActiveProfile> {
    for (const scope of [`${project}@${scriptDigest}`, project]) {
      const row = await tx.policies.active('profile', scope);
      if (row === null || row.enforceVersion === null) continue;
      const key = `${scope}::${row.enforceVersion}`;
      let profile = this.#profiles.get(key);
      if (profile === undefined) {
        const document = await tx.policies.get('profile', scope, row.enforceVersion);
        if (document === null || document.state !== 'approved')
          throw new AirlockError(
            'POLICY_ERROR',
            `the profile ${scope} v${row.enforceVersion} is missing or not approved`,
          );
        // As for policies: a stored profile is used only if it matches its hash.
        if (createHash('sha256').update(document.content, 'utf8').digest('hex') !== document.contentHash)
          throw new AirlockError(
            'POLICY_ERROR',
            `the profile ${scope} v${row.enforceVersion} does not match its hash`,
          );
        profile = parseProfile(document.content);
        this.#profiles.set(key, profile);
      }
      return { scope, version: row.enforceVersion, profile };
    }
    return { scope: null, version: 0, profile: DEFAULT_PROFILE };
  }

  /**
   * Decides with a given active policy; throws FORBIDDEN (role ceiling), POLICY_DENIED
   * (carrying its decision, see decisionOf) or POLICY_ERROR. Returns the decision to record.
   */
  decide(
    active: ActivePolicy,
    who: Principal,
    action: Action,
    target: PolicyTarget,
    job: JobFacts | null,
    /** When the decision is made (default: now); the lockout check tries other times. */
    at: number = this.#now(),
  ): PolicyDecision {
    requireAction(who, action);
    const request = buildRequest(who, action, target, job, at);
    const enforced = this.#o.engine.decide(active.enforce.compiled, request);
    let shadow: VersionDecision | null = null;
    if (active.audit !== null) {
      // The rule in audit mode must not break anything: its own error counts as a would-deny.
      try {
        const result = this.#o.engine.decide(active.audit.compiled, request);
        shadow = { version: active.audit.version, hash: active.audit.compiled.hash, ...result };
      } catch {
        shadow = {
          version: active.audit.version,
          hash: active.audit.compiled.hash,
          allowed: false,
          policies: ['(evaluation error)'],
        };
      }
    }
    const decision: PolicyDecision = {
      version: active.enforce.version,
      hash: active.enforce.compiled.hash,
      ...enforced,
      shadow,
    };
    if (!decision.allowed) {
      const why =
        decision.policies.length > 0
          ? `forbidden by ${decision.policies.join(', ')}`
          : 'no policy permits it';
      // A refused submit says what the rules saw: its risk score (and factors) and runtime.
      const facts =
        action === 'job.submit' && job !== null
          ? ` (risk score ${job.risk.score}${job.risk.factors.length > 0 ? `: ${job.risk.factors.join(', ')}` : ''}; runtime ${job.runtime})`
          : '';
      const error = new AirlockError(
        'POLICY_DENIED',
        `policy v${decision.version} denies ${action}: ${why}${facts}${SEE_POLICY}`,
      );
      decisions.set(error, decision);
      throw error;
    }
    return decision;
  }

  /** Records an audit-mode decision in `tx` (counted; a would-deny is named in the caller's event). */
  async countShadow(tx: Tx, decision: PolicyDecision, action: Action): Promise<void> {
    if (decision.shadow === null) return;
    await tx.policies.countShadow('policy', '', decision.shadow.version, action, !decision.shadow.allowed);
  }

  /** A decision on a read view, with nothing written: the caller records it (and counts its audit-mode opinion). */
  async authorizeRead(who: Principal, action: Action, target: PolicyTarget): Promise<PolicyDecision> {
    const active = await this.#o.store.read(async (tx) => this.active(tx));
    return this.decide(active, who, action, target, null);
  }

  /**
   * One decision for an action with no change of its own (reads, administration): decided on
   * a read view; when a version is in audit mode, its opinion is counted, and a would-deny
   * is written to the audit log.
   */
  async authorize(
    who: Principal,
    action: Action,
    target: PolicyTarget,
    /** What the action is about, when it is about a job or a key (key.manage: the key added). */
    facts: JobFacts | null = null,
  ): Promise<PolicyDecision> {
    const active = await this.#o.store.read(async (tx) => this.active(tx));
    const decision = this.decide(active, who, action, target, facts);
    const shadow = decision.shadow;
    if (shadow !== null)
      await this.#o.store.transaction(async (tx) => {
        await this.countShadow(tx, decision, action);
        if (!shadow.allowed)
          await this.#o.audit.append(tx, {
            actor: who.name,
            action: 'policy.would_deny',
            target: targetName(target),
            outcome: 'succeeded',
            reason: `policy v${shadow.version} (audit mode) would deny ${action}: ${shadow.policies.join(', ') || 'no policy permits it'}`,
            source: who.source,
            details: { action, policy: decisionDetails(decision) },
          });
      });
    return decision;
  }

  /** Forgets cached versions of a kind (tests; documents never change, so this is never needed otherwise). */
  clear(kind: PolicyKind): void {
    (kind === 'policy' ? this.#versions : this.#profiles).clear();
  }
}

export function targetName(target: PolicyTarget): string {
  switch (target.kind) {
    case 'project':
      return `project:${target.project}`;
    case 'job':
      return `job:${target.id}`;
    case 'service':
      return 'airlock';
  }
}

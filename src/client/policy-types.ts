/**
 * The answers of the policy API (src/api/routes/policies.ts) as the client reads them: the
 * versioned policy set and permission profiles, their status and profile suggestions.
 * Written out here rather than imported from the server's store, which the client must
 * not depend on.
 */

export type PolicyKind = 'policy' | 'profile';
export type PolicyMode = 'enforce' | 'audit';
export type PolicyState = 'proposed' | 'approved' | 'rejected';

/** One version of the policy set (scope "") or of a profile (scope PROJECT or PROJECT@sha256:…). */
export interface PolicySummary {
  readonly kind: PolicyKind;
  readonly scope: string;
  readonly version: number;
  /** SHA-256 (hex) of the content. */
  readonly contentHash: string;
  readonly author: string;
  readonly rationale: string;
  readonly mode: PolicyMode;
  /** The version in force when it was proposed. */
  readonly baseVersion: number | null;
  /** The version it restores, when it is a rollback. */
  readonly rollbackOf: number | null;
  readonly state: PolicyState;
  /** Milliseconds since the epoch. */
  readonly proposedAt: number;
  /** Who approved or rejected it. */
  readonly decidedBy: string | null;
  readonly decidedAt: number | null;
}

/** A version with its text (Cedar, or a profile's JSON). Version 0: the default profile of a project that has none. */
export interface PolicyDocument extends PolicySummary {
  readonly content: string;
}

/** What the version in audit mode thought of the requests of one action since it was approved. */
export interface AuditModeCounts {
  readonly action: string;
  readonly evaluated: number;
  readonly wouldDeny: number;
}

export interface PolicyStatus {
  readonly policy: {
    readonly enforce: PolicySummary | null;
    readonly audit: (PolicySummary & { readonly counts: readonly AuditModeCounts[] }) | null;
  };
  readonly profiles: readonly { readonly scope: string; readonly version: number | null }[];
  /** Proposals of every kind awaiting a decision, oldest first. */
  readonly pending: readonly PolicySummary[];
}

/** A permission profile as its JSON document holds it. */
export interface ProfileBody {
  readonly runtimes: readonly string[];
  readonly resources: Readonly<Record<string, number>>;
  readonly egress: readonly string[];
  readonly secrets: readonly string[];
}

export interface ProfileSuggestion {
  /** How many of the project's runs it covers. */
  readonly runs: number;
  /** The version of the project's profile in force (0: the default profile). */
  readonly current: number;
  /** The smallest profile covering every one of those runs. */
  readonly profile: ProfileBody;
  /** Granted by the current profile but unused in those runs, in words. */
  readonly unused: readonly string[];
}

export interface PolicyProposal {
  readonly kind: PolicyKind;
  readonly scope: string;
  /** The Cedar text, or the profile's JSON text. */
  readonly content: string;
  readonly rationale: string;
  /** Policy only: audit evaluates it beside the version in force, refusing nothing. Default enforce. */
  readonly mode?: PolicyMode;
}

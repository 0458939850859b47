import type { TokenRole } from '../api/types.js';
import { AirlockError } from '../errors.js';

/**
 * Who is asking, and what each role may do. Authorization is decided here, once, for every
 * action. This is each role's ceiling; Cedar policy (src/policy/gate.ts) decides within it.
 *
 * - admin: everything.
 * - submitter: submit, read, cancel and read logs — in its projects only.
 * - viewer: read jobs and logs in its projects.
 * - worker: only the worker protocol (claim, report); nothing of the client API.
 * A job in a project outside the token's scope is answered 404, as if it did not exist, so
 * a token cannot probe which job ids exist in other projects.
 */

export interface Principal {
  readonly tokenId: string;
  readonly name: string;
  readonly role: TokenRole;
  /** ["*"] = every project. */
  readonly projects: readonly string[];
  /** Source address of the request (audit). */
  readonly source: string;
  /** Set when every request of this token must be signed with this Ed25519 key (RFC 9421). */
  readonly requestKey?: string | null;
  /**
   * Set when the caller authenticated with a workload identity (an OIDC ID token from a
   * configured issuer, src/auth/oidc.ts) instead of an Airlock token: where the request
   * comes from. Policy can bind a project's jobs to approved origins.
   */
  readonly origin?: Origin | null;
}

/** Claims of a verified OIDC ID token that say where a request comes from (empty = absent). */
export interface Origin {
  readonly issuer: string;
  readonly subject: string;
  /** e.g. "org/repo" (GitHub's `repository` claim, or the issuer's mapped claim). */
  readonly repository: string;
  /** e.g. "refs/heads/main". */
  readonly ref: string;
  readonly workflow: string;
  /** The CI system's deployment environment, if it names one. */
  readonly environment: string;
}

export type Action =
  | 'job.submit'
  | 'job.read'
  | 'job.cancel'
  | 'job.logs'
  | 'token.manage'
  | 'audit.read'
  | 'audit.manage'
  | 'audit.witness'
  | 'key.manage'
  | 'key.read'
  | 'policy.read'
  | 'policy.propose'
  | 'policy.approve'
  | 'image.read'
  | 'image.manage'
  | 'worker.protocol';

const ROLE_ACTIONS: Readonly<Record<TokenRole, readonly Action[]>> = {
  admin: [
    'job.submit',
    'job.read',
    'job.cancel',
    'job.logs',
    'token.manage',
    'audit.read',
    'audit.manage',
    'audit.witness',
    'key.manage',
    'key.read',
    'policy.read',
    'policy.propose',
    'policy.approve',
    'image.read',
    'image.manage',
  ],
  // Submitters may see which keys sign their projects' jobs (public keys only).
  // Everyone but workers may read the policy and profiles that decide their requests.
  // The list of approved images is what decides their jobs too: readable like the policy.
  submitter: ['job.submit', 'job.read', 'job.cancel', 'job.logs', 'key.read', 'policy.read', 'image.read'],
  // Checkpoints, verifier keys and consistency proofs carry hashes only: a viewer token is
  // enough to witness the log. Entries and inclusion proofs stay admin-only.
  viewer: ['job.read', 'job.logs', 'audit.witness', 'key.read', 'policy.read', 'image.read'],
  worker: ['worker.protocol'],
};

export function mayDo(principal: Principal, action: Action): boolean {
  return ROLE_ACTIONS[principal.role].includes(action);
}

export function inScope(principal: Principal, project: string): boolean {
  return (
    principal.role === 'admin' || principal.projects.includes('*') || principal.projects.includes(project)
  );
}

/** The projects a principal may see, or undefined for all. */
export function visibleProjects(principal: Principal): readonly string[] | undefined {
  if (principal.role === 'admin' || principal.projects.includes('*')) return undefined;
  return principal.projects;
}

export function requireAction(principal: Principal, action: Action): void {
  if (!mayDo(principal, action))
    throw new AirlockError('FORBIDDEN', `a ${principal.role} token may not do ${action}`);
}

import type { CedarValueJson } from '@cedar-policy/cedar-wasm/nodejs';
import type { Action, Principal } from '../auth/principal.js';
import type { CedarRequest, EntityRef } from './engine.js';

/**
 * Turns who asks, for what, on what, into a Cedar request whose context has the same shape
 * for every action (docs/policy.md, "The context"): a policy never has to ask whether a
 * field exists. Fields that do not apply to an action hold neutral values (empty strings,
 * empty sets, zeros, false).
 */

export interface SignerFacts {
  readonly key: string;
  readonly fingerprint: string;
  readonly owner: string;
  readonly release: boolean;
}

export interface RiskFacts {
  readonly score: number;
  readonly factors: readonly string[];
}

/** What a job asks for (the submitted spec, or a stored job's record). */
export interface JobFacts {
  readonly project: string;
  readonly environment: string;
  readonly runtime: string;
  /** `host`, or `NAME@sha256:<64 hex>` as the spec names it. */
  readonly image: string;
  /** The pinned image's digest (`sha256:…`); "" for host. */
  readonly imageDigest: string;
  /** An approval of imageDigest is in force (airlock image approve); false for host. */
  readonly imageApproved: boolean;
  readonly signer: SignerFacts | null;
  readonly resources: {
    readonly cpus: number;
    readonly memoryMiB: number;
    readonly pids: number;
    readonly timeoutSeconds: number;
    readonly diskMiB: number;
    readonly outputKiB: number;
  };
  readonly egress: readonly string[];
  readonly secrets: readonly string[];
  readonly risk: RiskFacts;
  readonly scriptDigest: string;
  /** The ceilings of the job's permission profile (src/policy/profile.ts). */
  readonly profile: {
    readonly runtimes: readonly string[];
    readonly egress: readonly string[];
    readonly secrets: readonly string[];
  };
}

export type PolicyTarget =
  | { readonly kind: 'project'; readonly project: string }
  | {
      readonly kind: 'job';
      readonly id: string;
      readonly project: string;
      readonly environment: string;
      readonly submittedBy: string;
    }
  | { readonly kind: 'service' };

const SERVICE: EntityRef = { type: 'Airlock::Service', id: 'airlock' };

function principalRef(who: Principal): EntityRef {
  return { type: 'Airlock::Principal', id: who.name };
}

function resourceRef(target: PolicyTarget): EntityRef {
  switch (target.kind) {
    case 'project':
      return { type: 'Airlock::Project', id: target.project };
    case 'job':
      return { type: 'Airlock::Job', id: target.id };
    case 'service':
      return SERVICE;
  }
}

/** How the principal proved who it is (context.authentication). */
export function authenticationOf(who: Principal): {
  method: 'token' | 'signed-token' | 'workload';
  secondFactor: boolean;
  workloadIdentity: boolean;
} {
  if (who.origin !== undefined && who.origin !== null)
    return { method: 'workload', secondFactor: false, workloadIdentity: true };
  // A token that must sign every request proves possession of a private key as well as of
  // the bearer secret: two factors.
  if (who.requestKey !== undefined && who.requestKey !== null)
    return { method: 'signed-token', secondFactor: true, workloadIdentity: false };
  return { method: 'token', secondFactor: false, workloadIdentity: false };
}

export function buildRequest(
  who: Principal,
  action: Action,
  target: PolicyTarget,
  job: JobFacts | null,
  now: number,
): CedarRequest {
  const date = new Date(now);
  const origin = who.origin ?? null;
  const signer = job?.signer ?? null;
  const resources = job?.resources;
  const set = (values: readonly string[] | undefined): CedarValueJson[] => [...(values ?? [])];
  const context: Record<string, CedarValueJson> = {
    project: job?.project ?? (target.kind === 'service' ? '' : target.project),
    environment: job?.environment ?? (target.kind === 'job' ? target.environment : ''),
    runtime: job?.runtime ?? '',
    image: job?.image ?? '',
    imageDigest: job?.imageDigest ?? '',
    imageApproved: job?.imageApproved ?? false,
    signed: signer !== null,
    signer: {
      present: signer !== null,
      key: signer?.key ?? '',
      fingerprint: signer?.fingerprint ?? '',
      owner: signer?.owner ?? '',
      release: signer?.release ?? false,
    },
    origin: {
      present: origin !== null,
      issuer: origin?.issuer ?? '',
      subject: origin?.subject ?? '',
      repository: origin?.repository ?? '',
      ref: origin?.ref ?? '',
      workflow: origin?.workflow ?? '',
      environment: origin?.environment ?? '',
    },
    // Cedar has whole numbers only: CPUs in thousandths.
    resources: {
      // Rounded up: 2.0004 CPUs is more than a 2-CPU ceiling allows.
      // (Through millionths first, so that 1.1 × 1000 = 1100.0000000000002 stays 1100.)
      milliCpus: Math.ceil(Math.round((resources?.cpus ?? 0) * 1e6) / 1000),
      memoryMiB: resources?.memoryMiB ?? 0,
      pids: resources?.pids ?? 0,
      timeoutSeconds: Math.ceil(resources?.timeoutSeconds ?? 0),
      diskMiB: resources?.diskMiB ?? 0,
      outputKiB: resources?.outputKiB ?? 0,
    },
    network: { egress: set(job?.egress) },
    secrets: set(job?.secrets),
    profile: {
      runtimes: set(job?.profile.runtimes),
      egress: set(job?.profile.egress),
      secrets: set(job?.profile.secrets),
    },
    risk: { score: job?.risk.score ?? 0, factors: set(job?.risk.factors) },
    scriptDigest: job?.scriptDigest ?? '',
    time: {
      epochSeconds: Math.floor(now / 1000),
      hourUtc: date.getUTCHours(),
      weekdayUtc: date.getUTCDay(),
    },
    authentication: authenticationOf(who),
  };
  const resource = resourceRef(target);
  const entities: CedarRequest['entities'] = [
    {
      uid: principalRef(who),
      attrs: {
        name: who.name,
        role: who.role,
        projects: [...who.projects],
        kind: origin !== null ? 'workload' : 'token',
      },
      parents: [],
    },
    ...(target.kind === 'job'
      ? [
          { uid: { type: 'Airlock::Project', id: target.project }, attrs: {}, parents: [] },
          {
            uid: resource,
            attrs: {
              project: target.project,
              environment: target.environment,
              submittedBy: target.submittedBy,
            },
            parents: [{ type: 'Airlock::Project', id: target.project }],
          },
        ]
      : [{ uid: resource, attrs: {}, parents: [] }]),
  ];
  return { principal: principalRef(who), action, resource, context, entities };
}

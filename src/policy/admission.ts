import type { JobSpecV1, JobTrust } from '../api/types.js';
import type { Principal } from '../auth/principal.js';
import { AirlockError, isAirlockError } from '../errors.js';
import { parseImageRef } from '../images/reference.js';
import type { VerifiedSignature } from '../signing/verifier.js';
import type { JobAsked, Tx } from '../store/store.js';
import { egressOf, factsOfSpec, resourcesOf, secretsOf } from './facts.js';
import { explainDenial, type PolicyDecision, type PolicyGate } from './gate.js';
import { exceeded } from './profile.js';
import type { JobFacts, PolicyTarget } from './request.js';
import { aboveHistory, HISTORY_JOBS, riskOf, scriptDigestOf } from './risk.js';

export type RuntimeChoice = NonNullable<JobTrust['runtime']>;
type RuntimeName = RuntimeChoice['name'];

export interface Admission {
  readonly trust: JobTrust & { runtime: RuntimeChoice };
  readonly decision: PolicyDecision;
  /** Where the job came from (issuer, repository, workflow), for the new-origin risk factor. */
  readonly originKey: string | null;
  /** What the job asks for, kept small on its row (risk history, profile suggestions). */
  readonly asked: JobAsked;
}

/** The runtime a job runs under when it names none and policy allows runc. */
export const DEFAULT_RUNTIME: RuntimeName = 'runc';
/** The one tried next when policy (or the profile) refuses the default: a user-space kernel. */
export const STRONGER_RUNTIME: RuntimeName = 'gvisor';

/**
 * The airlock's last gate, inside the submit transaction: the image's approval and risk from
 * the project's history, the permission profile (every exceeded item named), then the Cedar
 * policy in force.
 *
 * The runtime (docs/policy.md, "The runtime"): a job that names one is decided with it, and a
 * refusal says whether gvisor would have been allowed. A job that names none is decided with
 * runc; if the profile or the policy refuses runc, it is decided again with gvisor, and runs
 * under gvisor if that is allowed — the reason (the refusal of runc) is recorded in its trust
 * and its audit event. If gvisor is refused too, the refusal of runc is the answer.
 */
export async function admitJob(
  gate: PolicyGate,
  tx: Tx,
  who: Principal,
  spec: JobSpecV1,
  signature: VerifiedSignature | null,
  now: number,
): Promise<Admission> {
  const active = await gate.active(tx);
  const scriptDigest = scriptDigestOf(spec);
  const origin = who.origin ?? null;
  const originKey = origin === null ? null : `${origin.issuer} ${origin.repository} ${origin.workflow}`;
  const key = signature === null ? null : await tx.signingKeys.get(signature.keyId);
  const history = (await tx.jobs.recentAsked(spec.project, HISTORY_JOBS)).map((asked) => asked.resources);
  // Read in this transaction: an approval revoked a moment ago no longer lets a job in.
  const image = parseImageRef(spec.image);
  const approval = image.kind === 'pinned' ? await tx.imageApprovals.get(image.digest) : null;
  const imageApproved = image.kind === 'pinned' ? approval !== null && approval.revokedAt === null : null;
  const risk = riskOf({
    signed: signature !== null,
    keyCreatedAt: key?.createdAt ?? null,
    now,
    scriptSeenBefore: await tx.jobs.scriptSeen(spec.project, scriptDigest),
    environment: spec.environment ?? 'dev',
    egress: egressOf(spec).length,
    secrets: secretsOf(spec).length,
    resourcesAboveHistory: aboveHistory(resourcesOf(spec), history),
    originSeenBefore: originKey === null ? null : await tx.jobs.originSeen(spec.project, originKey),
    imageApproved,
  });
  const signer =
    signature === null
      ? null
      : {
          key: signature.keyId,
          fingerprint: signature.fingerprint,
          owner: signature.owner,
          release: signature.release,
        };
  const profile = await gate.profileFor(tx, spec.project, scriptDigest);
  const target: PolicyTarget = { kind: 'project', project: spec.project };

  /** The profile and the policy for the job under `runtime`: its facts and decision, or a refusal. */
  const decideUnder = (runtime: RuntimeName): { facts: JobFacts; decision: PolicyDecision } => {
    const facts = factsOfSpec(spec, null, {
      signer,
      risk,
      profile: profile.profile,
      runtime,
      imageApproved: imageApproved === true,
    });
    const over = exceeded(profile.profile, facts);
    if (over.length > 0)
      throw new AirlockError(
        'PROFILE_EXCEEDED',
        `the job asks for more than ${profile.scope === null ? 'the default profile' : `profile ${profile.scope} v${profile.version}`} grants: ${over.join('; ')}`,
      );
    return { facts, decision: gate.decide(active, who, 'job.submit', target, facts) };
  };
  type Attempt = { facts: JobFacts; decision: PolicyDecision } | { refusal: AirlockError };
  /** Only a refusal of this runtime makes another worth trying; a policy error or a role refusal never does. */
  const tryUnder = (runtime: RuntimeName): Attempt => {
    try {
      return decideUnder(runtime);
    } catch (error) {
      if (isAirlockError(error, 'POLICY_DENIED') || isAirlockError(error, 'PROFILE_EXCEEDED'))
        return { refusal: error };
      throw error;
    }
  };

  let decided: { facts: JobFacts; decision: PolicyDecision };
  let runtime: RuntimeChoice;
  if (spec.runtime !== undefined) {
    const attempt = tryUnder(spec.runtime);
    if ('refusal' in attempt) {
      // Said with the refusal, so the submitter knows the way in: ask for gvisor (or for nothing).
      if (spec.runtime !== STRONGER_RUNTIME && !('refusal' in tryUnder(STRONGER_RUNTIME)))
        throw explainDenial(
          attempt.refusal,
          `; it would be allowed under ${STRONGER_RUNTIME}: set runtime: ${STRONGER_RUNTIME}, or name no runtime and Airlock picks it`,
        );
      throw attempt.refusal;
    }
    decided = attempt;
    runtime = { name: spec.runtime, source: 'spec', reason: 'named by the job' };
  } else {
    const first = tryUnder(DEFAULT_RUNTIME);
    if (!('refusal' in first)) {
      decided = first;
      runtime = {
        name: DEFAULT_RUNTIME,
        source: 'default',
        reason: `the job names no runtime; policy allows the default, ${DEFAULT_RUNTIME}`,
      };
    } else {
      const second = tryUnder(STRONGER_RUNTIME);
      // Refused under gvisor too: the refusal of the default is the answer (it names every rule).
      if ('refusal' in second) throw first.refusal;
      decided = second;
      runtime = {
        name: STRONGER_RUNTIME,
        source: 'policy',
        reason: `the job names no runtime and ${DEFAULT_RUNTIME} is refused: ${first.refusal.message}`,
      };
    }
  }
  const { facts, decision } = decided;
  await gate.countShadow(tx, decision, 'job.submit');
  return {
    decision,
    originKey,
    asked: {
      runtime: facts.runtime,
      resources: { ...facts.resources },
      egress: [...facts.egress],
      secrets: [...facts.secrets],
    },
    trust: {
      signer,
      origin,
      risk: { score: risk.score, factors: [...risk.factors] },
      scriptDigest,
      policy: { version: decision.version, hash: decision.hash, policies: [...decision.policies] },
      profile: profile.scope === null ? null : { scope: profile.scope, version: profile.version },
      runtime,
      image:
        image.kind === 'pinned'
          ? { ref: image.ref, digest: image.digest, approved: imageApproved === true }
          : null,
    },
  };
}

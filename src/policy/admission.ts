import type { JobSpecV1 } from '../api/types.js';
import type { Principal } from '../auth/principal.js';
import { AirlockError } from '../errors.js';
import type { VerifiedSignature } from '../signing/verifier.js';
import type { JobAsked, JobTrust, Tx } from '../store/store.js';
import { egressOf, factsOfSpec, resourcesOf, secretsOf } from './facts.js';
import type { PolicyDecision, PolicyGate } from './gate.js';
import { exceeded } from './profile.js';
import { aboveHistory, HISTORY_JOBS, riskOf, scriptDigestOf } from './risk.js';

export interface Admission {
  readonly trust: JobTrust;
  readonly decision: PolicyDecision;
  /** Where the job came from (issuer, repository, workflow), for the new-origin risk factor. */
  readonly originKey: string | null;
  /** What the job asks for, kept small on its row (risk history, profile suggestions). */
  readonly asked: JobAsked;
}

/**
 * The airlock's last gate, inside the submit transaction: risk from the project's history,
 * the permission profile (every exceeded item named), then the Cedar policy in force.
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
  const facts = factsOfSpec(spec, null, { signer, risk, profile: profile.profile });
  const over = exceeded(profile.profile, facts);
  if (over.length > 0)
    throw new AirlockError(
      'PROFILE_EXCEEDED',
      `the job asks for more than ${profile.scope === null ? 'the default profile' : `profile ${profile.scope} v${profile.version}`} grants: ${over.join('; ')}`,
    );
  const decision = gate.decide(active, who, 'job.submit', { kind: 'project', project: spec.project }, facts);
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
    },
  };
}

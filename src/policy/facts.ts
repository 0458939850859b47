import type { JobSpecV1 } from '../api/types.js';
import { parseImageRef } from '../images/reference.js';
import { egressOfNetwork } from '../network/allowlist.js';
import { DEFAULT_RESOURCES } from '../sandbox/job.js';
import type { JobTrust } from '../store/store.js';
import { DEFAULT_PROFILE, type Profile } from './profile.js';
import type { JobFacts, RiskFacts, SignerFacts } from './request.js';
import { scriptDigestOf } from './risk.js';

const MiB = 1024 * 1024;

/** What a spec asks for, with the sandbox's defaults filled in (a job asks for them too). */
export function resourcesOf(spec: JobSpecV1): JobFacts['resources'] {
  const r = spec.resources ?? {};
  return {
    cpus: r.cpus ?? DEFAULT_RESOURCES.cpus,
    memoryMiB: r.memoryMiB ?? DEFAULT_RESOURCES.memoryBytes / MiB,
    pids: r.pids ?? DEFAULT_RESOURCES.pids,
    timeoutSeconds: r.timeoutSeconds ?? DEFAULT_RESOURCES.timeoutMs / 1000,
    diskMiB: r.diskMiB ?? DEFAULT_RESOURCES.diskBytes / MiB,
    outputKiB: r.outputKiB ?? DEFAULT_RESOURCES.outputBytes / 1024,
  };
}

/** Egress destinations a spec asks for, normalised (network "none": none). */
export function egressOf(spec: JobSpecV1): string[] {
  return egressOfNetwork(spec.network);
}

/** Secrets a spec asks for (none until secrets exist). */
export function secretsOf(_spec: JobSpecV1): string[] {
  return [];
}

/**
 * The facts of an action on a signing key (key.manage): the key being registered is in
 * `context.signer`, so a policy can treat release keys apart (a second factor, say).
 */
export function factsOfKey(project: string, owner: string, release: boolean): JobFacts {
  return {
    ...factsOfSpec({ version: 1, project, command: [''] }, null),
    environment: '',
    runtime: '',
    image: '',
    imageDigest: '',
    imageApproved: false,
    scriptDigest: '',
    resources: { cpus: 0, memoryMiB: 0, pids: 0, timeoutSeconds: 0, diskMiB: 0, outputKiB: 0 },
    signer: { key: '', fingerprint: '', owner, release },
  };
}

/** The digest of a spec's image: "" for host. (The spec was checked at submit: parseImageRef.) */
export function imageDigestOf(spec: JobSpecV1): string {
  const image = parseImageRef(spec.image);
  return image.kind === 'pinned' ? image.digest : '';
}

/**
 * The facts of a spec. For a stored job, `trust` says what admission found: the runtime it
 * chose when the spec named none, and whether its image was approved at submit.
 */
export function factsOfSpec(
  spec: JobSpecV1,
  trust: JobTrust | null,
  extra: {
    signer?: SignerFacts | null;
    risk?: RiskFacts;
    profile?: Profile;
    runtime?: string;
    imageApproved?: boolean;
  } = {},
): JobFacts {
  const profile = extra.profile ?? DEFAULT_PROFILE;
  const imageDigest = imageDigestOf(spec);
  return {
    project: spec.project,
    environment: spec.environment ?? 'dev',
    runtime: extra.runtime ?? trust?.runtime?.name ?? spec.runtime ?? 'runc',
    image: spec.image ?? 'host',
    imageDigest,
    imageApproved: imageDigest !== '' && (extra.imageApproved ?? trust?.image?.approved ?? false),
    signer: extra.signer !== undefined ? extra.signer : (trust?.signer ?? null),
    resources: resourcesOf(spec),
    egress: egressOf(spec),
    secrets: secretsOf(spec),
    risk: extra.risk ?? trust?.risk ?? { score: 0, factors: [] },
    scriptDigest: trust?.scriptDigest ?? scriptDigestOf(spec),
    profile: { runtimes: profile.runtimes, egress: profile.egress, secrets: profile.secrets },
  };
}

/**
 * The Cedar schema every policy is validated against, and the default policy set that
 * ships with Airlock (docs/policy.md explains both). Kept as text in code, not as files
 * beside it, so the build carries them and their hashes are what the tests pin.
 */

/** Environments the default policy knows; a job naming another is refused by it. */
export const DEFAULT_ENVIRONMENTS = ['dev', 'staging', 'prod'] as const;

/** Risk score from which the default policy requires the gvisor runtime. */
export const DEFAULT_GVISOR_RISK = 60;

export const CEDAR_SCHEMA = `namespace Airlock {
  // Who asks: an Airlock token, or a workload identity (an OIDC ID token).
  entity Principal = {
    name: String,
    role: String,
    projects: Set<String>,
    kind: String,
  };
  entity Project;
  entity Job in [Project] = {
    project: String,
    environment: String,
    submittedBy: String,
  };
  // The installation itself: tokens, audit log, policies.
  entity Service;

  type Resources = {
    milliCpus: Long,
    memoryMiB: Long,
    pids: Long,
    timeoutSeconds: Long,
    diskMiB: Long,
    outputKiB: Long,
  };
  type Signer = {
    present: Bool,
    key: String,
    fingerprint: String,
    owner: String,
    release: Bool,
  };
  type Origin = {
    present: Bool,
    issuer: String,
    subject: String,
    repository: String,
    ref: String,
    workflow: String,
    environment: String,
  };
  type Context = {
    project: String,
    environment: String,
    runtime: String,
    image: String,
    imageDigest: String,
    imageApproved: Bool,
    signed: Bool,
    signer: Signer,
    origin: Origin,
    resources: Resources,
    network: { egress: Set<String> },
    secrets: Set<String>,
    profile: { runtimes: Set<String>, egress: Set<String>, secrets: Set<String> },
    risk: { score: Long, factors: Set<String> },
    scriptDigest: String,
    time: { epochSeconds: Long, hourUtc: Long, weekdayUtc: Long },
    authentication: { method: String, secondFactor: Bool, workloadIdentity: Bool },
  };

  action "job.submit" appliesTo { principal: [Principal], resource: [Project], context: Context };
  action "job.read", "job.logs" appliesTo { principal: [Principal], resource: [Job, Project, Service], context: Context };
  action "job.cancel" appliesTo { principal: [Principal], resource: [Job], context: Context };
  action "key.read", "key.manage" appliesTo { principal: [Principal], resource: [Project, Service], context: Context };
  action "token.manage", "audit.read", "audit.manage", "audit.witness", "policy.read", "policy.propose", "policy.approve",
    "image.read", "image.manage"
    appliesTo { principal: [Principal], resource: [Service], context: Context };
}
`;

export const DEFAULT_POLICY = `// Airlock default policy: least privilege. A request is allowed when a permit matches and
// no forbid does (forbid always wins). docs/policy.md describes the context.

// ---- Who may do what. A role's built-in ceiling applies as well: policy can narrow a role, never widen it.
@id("role-admin")
permit (principal, action, resource)
when { principal.role == "admin" };

@id("role-submitter")
permit (
  principal,
  action in [
    Airlock::Action::"job.submit",
    Airlock::Action::"job.read",
    Airlock::Action::"job.cancel",
    Airlock::Action::"job.logs",
    Airlock::Action::"key.read",
    Airlock::Action::"policy.read",
    Airlock::Action::"image.read"
  ],
  resource
)
when { principal.role == "submitter" };

@id("role-viewer")
permit (
  principal,
  action in [
    Airlock::Action::"job.read",
    Airlock::Action::"job.logs",
    Airlock::Action::"key.read",
    Airlock::Action::"audit.witness",
    Airlock::Action::"policy.read",
    Airlock::Action::"image.read"
  ],
  resource
)
when { principal.role == "viewer" };

// ---- Environments: only the known ones; unsigned code runs only in dev.
@id("known-environments")
forbid (principal, action == Airlock::Action::"job.submit", resource)
unless { ["dev", "staging", "prod"].contains(context.environment) };

@id("unsigned-only-in-dev")
forbid (principal, action == Airlock::Action::"job.submit", resource)
when { !context.signed && context.environment != "dev" };

// ---- prod: signed by a release key, and under gVisor (a user-space kernel).
@id("prod-needs-release-key")
forbid (principal, action == Airlock::Action::"job.submit", resource)
when { context.environment == "prod" && !context.signer.release };

@id("prod-needs-gvisor")
forbid (principal, action == Airlock::Action::"job.submit", resource)
when { context.environment == "prod" && context.runtime != "gvisor" };

// ---- Risky jobs run under gVisor whatever their environment.
@id("high-risk-needs-gvisor")
forbid (principal, action == Airlock::Action::"job.submit", resource)
when { context.risk.score >= ${DEFAULT_GVISOR_RISK} && context.runtime != "gvisor" };

// ---- Images: outside dev, a digest-pinned image runs only once an admin approved it
// (airlock image approve). "host" (the worker's own /usr) is the workers' own, not an image.
@id("approved-images-outside-dev")
forbid (principal, action == Airlock::Action::"job.submit", resource)
when { context.imageDigest != "" && !context.imageApproved && context.environment != "dev" };

// ---- No network and no secrets unless the project's profile lists them.
@id("egress-within-profile")
forbid (principal, action == Airlock::Action::"job.submit", resource)
unless { context.profile.egress.containsAll(context.network.egress) };

@id("secrets-within-profile")
forbid (principal, action == Airlock::Action::"job.submit", resource)
unless { context.profile.secrets.containsAll(context.secrets) };

// ---- Resource ceilings per environment (a profile may set lower ones).
@id("dev-ceilings")
forbid (principal, action == Airlock::Action::"job.submit", resource)
when {
  context.environment == "dev" &&
  (context.resources.milliCpus > 2000 ||
   context.resources.memoryMiB > 4096 ||
   context.resources.pids > 1024 ||
   context.resources.timeoutSeconds > 3600 ||
   context.resources.diskMiB > 8192 ||
   context.resources.outputKiB > 16384)
};

@id("staging-ceilings")
forbid (principal, action == Airlock::Action::"job.submit", resource)
when {
  context.environment == "staging" &&
  (context.resources.milliCpus > 4000 ||
   context.resources.memoryMiB > 8192 ||
   context.resources.pids > 2048 ||
   context.resources.timeoutSeconds > 7200 ||
   context.resources.diskMiB > 16384 ||
   context.resources.outputKiB > 65536)
};

@id("prod-ceilings")
forbid (principal, action == Airlock::Action::"job.submit", resource)
when {
  context.environment == "prod" &&
  (context.resources.milliCpus > 8000 ||
   context.resources.memoryMiB > 16384 ||
   context.resources.pids > 4096 ||
   context.resources.timeoutSeconds > 14400 ||
   context.resources.diskMiB > 32768 ||
   context.resources.outputKiB > 262144)
};
`;

import { createHash } from 'node:crypto';
import type { JobSpecV1 } from '../api/types.js';
import { canonicalJson } from '../audit/canonical.js';
import type { JobFacts, RiskFacts } from './request.js';

/**
 * The risk score of a job, 0–100: a sum of documented factors (docs/policy.md, "Risk"),
 * capped at 100. It is in the policy context (the default policy requires gvisor from 60)
 * and in the job record, so an auditor sees why a job ran where it ran.
 */

export const RISK_WEIGHTS = Object.freeze({
  /** Nobody vouched for the code: no signature. */
  unsigned: 30,
  /** Signed, by a key registered less than RECENT_KEY_MS ago (a planted key is new). */
  'new-key': 10,
  /** This exact script (command, inputs, image) never ran in the project before. */
  'new-script': 15,
  prod: 15,
  /** Network egress asked for: the way data leaves. */
  egress: 15,
  /** Secrets asked for: what an attacker is after. */
  secrets: 15,
  /** Far more resources than the project's recent jobs (cryptomining, a fork bomb). */
  'resources-above-history': 10,
  /** A workload identity whose origin (issuer, repository, workflow) never submitted to the project. */
  'new-origin': 10,
  /** A digest-pinned image nobody approved: everything in it is code nobody vouched for. */
  'unapproved-image': 15,
});

export type RiskFactor = keyof typeof RISK_WEIGHTS;

export const RECENT_KEY_MS = 7 * 24 * 3600 * 1000;
/** "Far above": more than this many times the median of the project's recent jobs. */
export const HISTORY_FACTOR = 4;
/** The history compared against: the project's last jobs, and at least this many of them. */
export const HISTORY_JOBS = 20;
export const HISTORY_MIN_JOBS = 5;

export interface RiskInputs {
  readonly signed: boolean;
  /** When the signing key was registered (signed jobs). */
  readonly keyCreatedAt: number | null;
  readonly now: number;
  readonly scriptSeenBefore: boolean;
  readonly environment: string;
  readonly egress: number;
  readonly secrets: number;
  readonly resourcesAboveHistory: boolean;
  /** null when the principal has no workload identity. */
  readonly originSeenBefore: boolean | null;
  /** Whether the job's pinned image is approved; null for host (not an image). */
  readonly imageApproved: boolean | null;
}

export function riskOf(inputs: RiskInputs): RiskFacts {
  const factors: RiskFactor[] = [];
  if (!inputs.signed) factors.push('unsigned');
  if (inputs.signed && inputs.keyCreatedAt !== null && inputs.now - inputs.keyCreatedAt < RECENT_KEY_MS)
    factors.push('new-key');
  if (!inputs.scriptSeenBefore) factors.push('new-script');
  if (inputs.environment === 'prod') factors.push('prod');
  if (inputs.egress > 0) factors.push('egress');
  if (inputs.secrets > 0) factors.push('secrets');
  if (inputs.resourcesAboveHistory) factors.push('resources-above-history');
  if (inputs.originSeenBefore === false) factors.push('new-origin');
  if (inputs.imageApproved === false) factors.push('unapproved-image');
  const score = Math.min(
    100,
    factors.reduce((sum, factor) => sum + RISK_WEIGHTS[factor], 0),
  );
  return { score, factors };
}

/**
 * Environment variables that change which code runs, not just how it is configured: their
 * values are part of a script's identity. (`BASH_ENV=$(…)` or `NODE_OPTIONS=--import=…`
 * would otherwise run anything under the digest — and the profile — of a trusted script.)
 */
export const CODE_ENV =
  /^(BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PS4|PROMPT_COMMAND|IFS|LD_.*|GCONV_PATH|NODE_OPTIONS|NODE_PATH|PYTHON.*|PERL5?OPT|PERL5?LIB|PERLIO|RUBYOPT|RUBYLIB|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|CLASSPATH|GIT_.*|NPM_CONFIG_.*|npm_config_.*)$/;

/**
 * SHA-256 of what the job runs: its command, its input files, its image, the names of its
 * environment variables, and the values of those that change which code runs (CODE_ENV).
 * Other values (a build number, a flag) and resources configure a script rather than change
 * it, so they do not make it another script.
 */
export function scriptDigestOf(spec: JobSpecV1): string {
  const env = spec.env ?? {};
  const script = {
    command: spec.command,
    inputs: spec.inputs ?? [],
    image: spec.image ?? 'host',
    env: Object.fromEntries(Object.keys(env).map((name) => [name, CODE_ENV.test(name) ? env[name] : null])),
  };
  return `sha256:${createHash('sha256').update(canonicalJson(script), 'utf8').digest('hex')}`;
}

type ResourceFacts = JobFacts['resources'];
const COMPARED: ReadonlyArray<keyof ResourceFacts> = [
  'cpus',
  'memoryMiB',
  'pids',
  'timeoutSeconds',
  'diskMiB',
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? 0)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

/** Whether any resource is more than HISTORY_FACTOR× the median of the project's recent jobs. */
export function aboveHistory(asked: ResourceFacts, history: readonly ResourceFacts[]): boolean {
  if (history.length < HISTORY_MIN_JOBS) return false;
  return COMPARED.some((name) => asked[name] > HISTORY_FACTOR * median(history.map((job) => job[name])));
}

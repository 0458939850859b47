import { AirlockError } from '../errors.js';
import { formatEgressRule, parseEgressEntry } from '../network/allowlist.js';
import { RUNTIME_NAMES } from '../sandbox/job.js';
import type { JobFacts } from './request.js';

/**
 * Permission profiles: the inventory of what a project's scripts may do — ceilings on
 * resources, the runtimes, egress destinations and secrets they may ask for. One per
 * project, and optionally one per script digest (`PROJECT@sha256:…`, more specific, so a
 * single script can be granted what the rest of the project is not). A project without
 * one gets DEFAULT_PROFILE: every runtime, the policy's resource ceilings, no egress, no
 * secrets. A job asking beyond its profile is refused with every exceeded item named.
 */

export interface Profile {
  readonly runtimes: readonly string[];
  readonly resources: Partial<Record<ResourceName, number>>;
  readonly egress: readonly string[];
  readonly secrets: readonly string[];
}

export type ResourceName = 'cpus' | 'memoryMiB' | 'pids' | 'timeoutSeconds' | 'diskMiB' | 'outputKiB';
const RESOURCE_NAMES: readonly ResourceName[] = [
  'cpus',
  'memoryMiB',
  'pids',
  'timeoutSeconds',
  'diskMiB',
  'outputKiB',
];

export const DEFAULT_PROFILE: Profile = Object.freeze({
  runtimes: [...RUNTIME_NAMES].sort(),
  resources: {},
  egress: [],
  secrets: [],
});

export const MAX_PROFILE_BYTES = 64 * 1024;
const MAX_ITEMS = 256;
const PRINTABLE = /^[\x21-\x7e]{1,300}$/;
const SECRET = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$/;
const SCOPE = /^[a-z0-9][a-z0-9._-]{0,63}(@sha256:[0-9a-f]{64})?$/;

function invalid(message: string): never {
  throw new AirlockError('POLICY_INVALID', `profile: ${message}`);
}

export function checkProfileScope(scope: string): void {
  if (!SCOPE.test(scope)) invalid('the scope is a project name, or PROJECT@sha256:<64 hex> for one script');
}

function stringList(value: unknown, name: string, pattern: RegExp | readonly string[]): string[] {
  if (!Array.isArray(value)) invalid(`${name} must be a list of strings`);
  if (value.length > MAX_ITEMS) invalid(`${name} may hold at most ${MAX_ITEMS} items`);
  const seen = new Set<string>();
  for (const item of value) {
    if (typeof item !== 'string') invalid(`${name} must be a list of strings`);
    const ok = Array.isArray(pattern) ? pattern.includes(item) : (pattern as RegExp).test(item);
    if (!ok) invalid(`${name}: "${item.slice(0, 80)}" is not a valid entry`);
    if (seen.has(item)) invalid(`${name}: "${item}" is listed twice`);
    seen.add(item);
  }
  return [...seen].sort();
}

/**
 * Egress entries in the egress proxy's own grammar (docs/network.md), and in its canonical
 * form: a job's entries are normalised the same way and compared as text.
 */
function egressList(value: unknown): string[] {
  const list = stringList(value, 'egress', PRINTABLE);
  for (const item of list) {
    let canonical: string;
    try {
      canonical = formatEgressRule(parseEgressEntry(item));
    } catch (error) {
      invalid((error as Error).message);
    }
    if (canonical !== item) invalid(`egress: write "${item.slice(0, 80)}" as "${canonical}"`);
  }
  return list;
}

/** Parses a profile document (JSON): unknown fields, bad values and duplicates are refused. */
export function parseProfile(text: string): Profile {
  if (Buffer.byteLength(text, 'utf8') > MAX_PROFILE_BYTES) invalid(`at most ${MAX_PROFILE_BYTES} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    invalid(`not JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) invalid('must be a JSON object');
  const object = value as Record<string, unknown>;
  for (const key of Object.keys(object))
    if (!['runtimes', 'resources', 'egress', 'secrets'].includes(key)) invalid(`unknown field "${key}"`);
  const resources: Partial<Record<ResourceName, number>> = {};
  const asked = object.resources ?? {};
  if (typeof asked !== 'object' || asked === null || Array.isArray(asked))
    invalid('resources must be an object');
  for (const [key, limit] of Object.entries(asked)) {
    if (!RESOURCE_NAMES.includes(key as ResourceName)) invalid(`unknown resource "${key}"`);
    if (typeof limit !== 'number' || !Number.isFinite(limit) || limit <= 0 || limit > 2 ** 40)
      invalid(`resources.${key} must be a positive number`);
    resources[key as ResourceName] = limit;
  }
  return {
    runtimes: stringList(object.runtimes ?? [...RUNTIME_NAMES], 'runtimes', RUNTIME_NAMES),
    resources,
    egress: egressList(object.egress ?? []),
    secrets: stringList(object.secrets ?? [], 'secrets', SECRET),
  };
}

/** The stored text of a profile: sorted keys, two-space indentation (stable hashes and diffs). */
export function formatProfile(profile: Profile): string {
  const resources = Object.fromEntries(
    RESOURCE_NAMES.filter((name) => profile.resources[name] !== undefined).map((name) => [
      name,
      profile.resources[name],
    ]),
  );
  return `${JSON.stringify({ egress: profile.egress, resources, runtimes: profile.runtimes, secrets: profile.secrets }, null, 2)}\n`;
}

/** Every item the job asks for beyond its profile, in words; empty when it fits. */
export function exceeded(profile: Profile, job: JobFacts): string[] {
  const items: string[] = [];
  if (!profile.runtimes.includes(job.runtime))
    items.push(`runtime ${job.runtime} (the profile allows ${profile.runtimes.join(', ') || 'none'})`);
  for (const name of RESOURCE_NAMES) {
    const limit = profile.resources[name];
    if (limit !== undefined && job.resources[name] > limit)
      items.push(`resources.${name} ${job.resources[name]} (at most ${limit})`);
  }
  for (const destination of job.egress)
    if (!profile.egress.includes(destination)) items.push(`egress to ${destination} (not in the profile)`);
  for (const secret of job.secrets)
    if (!profile.secrets.includes(secret)) items.push(`secret ${secret} (not in the profile)`);
  return items;
}

export interface ProfileSuggestion {
  /** How many runs it covers. */
  readonly runs: number;
  /** The smallest profile covering every one of those runs. */
  readonly profile: Profile;
  /** Granted by the current profile but unused in those runs: candidates to retire. */
  readonly unused: readonly string[];
}

/** The smallest profile that covers `runs` (newest first), and what `current` grants beyond it. */
export function suggestProfile(runs: readonly JobFacts[], current: Profile): ProfileSuggestion {
  const runtimes = [...new Set(runs.map((run) => run.runtime))].sort();
  const egress = [...new Set(runs.flatMap((run) => run.egress))].sort();
  const secrets = [...new Set(runs.flatMap((run) => run.secrets))].sort();
  const resources: Partial<Record<ResourceName, number>> = {};
  if (runs.length > 0)
    for (const name of RESOURCE_NAMES) resources[name] = Math.max(...runs.map((run) => run.resources[name]));
  const unused = [
    ...current.runtimes
      .filter((runtime) => !runtimes.includes(runtime))
      .map((runtime) => `runtime ${runtime}`),
    ...current.egress.filter((item) => !egress.includes(item)).map((item) => `egress ${item}`),
    ...current.secrets.filter((item) => !secrets.includes(item)).map((item) => `secret ${item}`),
    ...RESOURCE_NAMES.flatMap((name) => {
      const granted = current.resources[name];
      const used = resources[name];
      // Twice what was used is headroom; more than that is a grant nobody needs.
      return granted !== undefined && used !== undefined && granted > 2 * used
        ? [`resources.${name} ${granted} (at most ${used} used)`]
        : [];
    }),
  ];
  return { runs: runs.length, profile: { runtimes, resources, egress, secrets }, unused };
}

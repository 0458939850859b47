import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AirlockError } from '../errors.js';
import type { OciSeccomp, OciSeccompRule } from './oci-spec.js';

/**
 * The seccomp layer. The profile is data (src/sandbox/seccomp/profile.json, whose header
 * says how it was derived); this module turns it into the `linux.seccomp` section for the
 * host's architecture. It is an allowlist: anything not listed answers EPERM.
 */

/** Where the profile lives: beside the sources, resolved from both src/ and dist/src/. */
export const DEFAULT_SECCOMP_PROFILE_PATH = new URL(
  '../../../src/sandbox/seccomp/profile.json',
  import.meta.url,
);

interface ProfileRule extends OciSeccompRule {
  /** Node.js `process.arch` values the rule applies to; absent = all. */
  arches?: string[];
}

interface ProfileFile {
  defaultAction: string;
  defaultErrnoRet: number;
  archMap: Record<string, string[]>;
  syscalls: ProfileRule[];
}

export interface SeccompProfile {
  readonly seccomp: OciSeccomp;
  /** sha256 of the section as written into config.json, for the audit trail. */
  readonly digest: string;
}

function bad(message: string): never {
  throw new AirlockError('INVALID_CONFIG', `seccomp profile: ${message}`);
}

function parseProfile(text: string): ProfileFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    bad(`not valid JSON (${(error as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null) bad('must be an object');
  const profile = raw as Partial<ProfileFile>;
  if (profile.defaultAction !== 'SCMP_ACT_ERRNO')
    bad('defaultAction must be SCMP_ACT_ERRNO: it is an allowlist');
  if (typeof profile.defaultErrnoRet !== 'number') bad('defaultErrnoRet must be a number');
  if (typeof profile.archMap !== 'object' || profile.archMap === null) bad('archMap is missing');
  if (!Array.isArray(profile.syscalls) || profile.syscalls.length === 0)
    bad('syscalls must be a non-empty array');
  for (const rule of profile.syscalls) {
    if (!Array.isArray(rule.names) || rule.names.some((name) => typeof name !== 'string')) {
      bad('every rule needs names');
    }
    if (typeof rule.action !== 'string') bad(`rule for ${rule.names.join(',')} has no action`);
  }
  return profile as ProfileFile;
}

/** The `linux.seccomp` section of a profile for one architecture (Node's `process.arch`). */
export function seccompForArch(profileText: string, arch: string): SeccompProfile {
  const profile = parseProfile(profileText);
  const architectures = profile.archMap[arch];
  if (architectures === undefined) {
    throw new AirlockError(
      'HOST_UNSUPPORTED',
      `the seccomp profile has no entry for the ${arch} architecture; supported: ${Object.keys(profile.archMap).join(', ')}`,
    );
  }
  const syscalls: OciSeccompRule[] = [];
  for (const rule of profile.syscalls) {
    if (rule.arches !== undefined && !rule.arches.includes(arch)) continue;
    const out: OciSeccompRule = { names: [...rule.names], action: rule.action };
    if (rule.errnoRet !== undefined) out.errnoRet = rule.errnoRet;
    if (rule.args !== undefined) out.args = rule.args.map((arg) => ({ ...arg }));
    syscalls.push(out);
  }
  const seccomp: OciSeccomp = {
    defaultAction: profile.defaultAction,
    defaultErrnoRet: profile.defaultErrnoRet,
    architectures: [...architectures],
    syscalls,
  };
  const digest = `sha256:${createHash('sha256').update(JSON.stringify(seccomp)).digest('hex')}`;
  return { seccomp, digest };
}

export function loadSeccompProfile(
  path: URL | string = DEFAULT_SECCOMP_PROFILE_PATH,
  arch = process.arch,
): SeccompProfile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new AirlockError('INVALID_CONFIG', `cannot read the seccomp profile at ${String(path)}`, {
      cause: error,
    });
  }
  return seccompForArch(text, arch);
}

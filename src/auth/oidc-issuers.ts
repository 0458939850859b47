import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { AirlockError, describeError } from '../errors.js';
import { NAME_PATTERN } from '../jobs/spec.js';

/**
 * The OIDC issuers whose ID tokens Airlock accepts as workload identities
 * (AIRLOCK_OIDC_ISSUERS = absolute path of a JSON file holding a list of them). The file is
 * trust configuration — whoever can change it can let their own workloads in — so it is read
 * strictly at server start: unknown fields, a bad URL, an empty list, a duplicate issuer, a
 * role beyond submitter/viewer, a file others may write: INVALID_CONFIG, and the server does
 * not start. docs/identity.md describes the format.
 */

export const SETTING = 'AIRLOCK_OIDC_ISSUERS';

/** The roles a workload identity may have: a CI token never administers Airlock, never acts as a worker. */
export type OidcRole = 'submitter' | 'viewer';

/** Which claim of the token gives each Origin field, and the principal's name. */
export interface OidcClaimNames {
  readonly repository: string;
  readonly ref: string;
  readonly workflow: string;
  readonly environment: string;
  /** The claim that names the principal (`oidc:<issuer host>:<this claim>`). */
  readonly name: string;
}

export interface OidcIssuerConfig {
  /** Compared exactly (byte for byte) with the token's `iss`. */
  readonly issuer: string;
  /** The token's `aud` must contain it. */
  readonly audience: string;
  /** Where the signing keys are; undefined = found by OIDC discovery from the issuer. */
  readonly jwksUri?: string;
  readonly role: OidcRole;
  readonly projects: readonly string[];
  readonly claims: OidcClaimNames;
  /** Claims the token must carry with one of the listed values (exact match); {} = none. */
  readonly require: Readonly<Record<string, readonly string[]>>;
  /** Set to accept every workload the issuer vouches for, without `require` (explicitly only). */
  readonly allowAnyWorkload: boolean;
}

/** GitHub Actions' claim names (https://docs.github.com/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect). */
export const DEFAULT_CLAIMS: OidcClaimNames = {
  repository: 'repository',
  ref: 'ref',
  workflow: 'workflow',
  environment: 'environment',
  name: 'repository',
};

/** Far more than a real file: a bigger one is not an issuer list (or a device read by mistake). */
export const MAX_ISSUERS_FILE_BYTES = 64 * 1024;
const MAX_ISSUERS = 64;
const MAX_PROJECTS = 256;
const MAX_REQUIRED_CLAIMS = 16;
const MAX_REQUIRED_VALUES = 256;
/** An issuer is also the `issuer` of every Origin it produces, which is bounded to 256. */
const MAX_ISSUER_CHARS = 256;
const MAX_URL_CHARS = 2048;
/** Claim names: printable ASCII without spaces (namespaced claims such as https://x/claims/y included). */
const CLAIM_NAME = /^[\x21-\x7e]{1,128}$/;
/** Values a required claim may have: bounded like the claims they are compared with. */
const MAX_CLAIM_VALUE_CHARS = 256;
const UNSAFE_TEXT = /[\p{Cc}\p{Cf}\p{Cs}]/u;
const PROJECT = new RegExp(NAME_PATTERN);

const ISSUER_FIELDS = new Set([
  'issuer',
  'audience',
  'jwksUri',
  'role',
  'projects',
  'claims',
  'require',
  'allowAnyWorkload',
]);
const CLAIM_FIELDS = new Set(Object.keys(DEFAULT_CLAIMS));

function invalid(where: string, message: string): never {
  throw new AirlockError('INVALID_CONFIG', `${SETTING}: ${where}: ${message}`);
}

/** Hosts an http:// URL may name: the machine itself, so tests can run an issuer on loopback. */
export function isLoopbackHost(hostname: string): boolean {
  if (hostname === 'localhost' || hostname === '[::1]') return true;
  const octets = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(hostname);
  return octets !== null && octets[1] === '127' && octets.slice(2).every((part) => Number(part) <= 255);
}

/**
 * An issuer or key-set URL: https, or http on a loopback host only — keys fetched over plain
 * http on a network could be swapped by anyone on the path, and every token then forged. No
 * user:password (it would end up in logs and errors), no fragment; an issuer has no query
 * either (OpenID Connect Discovery §3).
 */
export function checkFetchUrl(text: string, where: string, kind: 'issuer' | 'jwks'): URL {
  if (text.length > (kind === 'issuer' ? MAX_ISSUER_CHARS : MAX_URL_CHARS))
    invalid(where, `is longer than ${kind === 'issuer' ? MAX_ISSUER_CHARS : MAX_URL_CHARS} characters`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    invalid(where, `is not a URL: ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname)))
    invalid(
      where,
      `must be an https:// URL (http:// only on a loopback host: 127.0.0.0/8, [::1], localhost), got ${JSON.stringify(text)}`,
    );
  if (url.username !== '' || url.password !== '') invalid(where, 'must not carry a user name or password');
  if (text.includes('#')) invalid(where, 'must not have a fragment');
  if (kind === 'issuer' && text.includes('?')) invalid(where, 'must not have a query');
  if (UNSAFE_TEXT.test(text) || /\s/.test(text))
    invalid(where, 'must not contain spaces or control characters');
  return url;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function claimName(value: unknown, where: string): string {
  if (typeof value !== 'string' || !CLAIM_NAME.test(value))
    invalid(where, 'must be a claim name: 1–128 printable ASCII characters without spaces');
  return value;
}

function parseIssuer(value: unknown, where: string): OidcIssuerConfig {
  if (!isObject(value)) invalid(where, 'must be an object {"issuer", "audience", "role", "projects", …}');
  for (const key of Object.keys(value))
    if (!ISSUER_FIELDS.has(key))
      invalid(where, `unknown field "${key}"; known: ${[...ISSUER_FIELDS].join(', ')}`);
  const { issuer, audience, jwksUri, role, projects, claims, require, allowAnyWorkload } = value;
  if (typeof issuer !== 'string')
    invalid(`${where}.issuer`, 'is required: the issuer URL, as tokens carry it');
  checkFetchUrl(issuer, `${where}.issuer`, 'issuer');
  if (typeof audience !== 'string' || audience === '' || audience.length > 256 || UNSAFE_TEXT.test(audience))
    invalid(`${where}.audience`, 'is required: 1–256 characters without control characters');
  if (jwksUri !== undefined) {
    if (typeof jwksUri !== 'string') invalid(`${where}.jwksUri`, 'must be a URL');
    checkFetchUrl(jwksUri, `${where}.jwksUri`, 'jwks');
  }
  // A CI token never administers Airlock and never acts as a worker: whoever can make a
  // workflow run could otherwise manage tokens, policy and keys, or claim other jobs.
  if (role === 'admin' || role === 'worker')
    invalid(`${where}.role`, `a workload identity may not be ${role}; use "submitter" or "viewer"`);
  if (role !== 'submitter' && role !== 'viewer')
    invalid(`${where}.role`, 'is required: "submitter" or "viewer"');
  if (!Array.isArray(projects) || projects.length === 0 || projects.length > MAX_PROJECTS)
    invalid(`${where}.projects`, `is required: a list of 1–${MAX_PROJECTS} project names`);
  const seen = new Set<string>();
  for (const [i, project] of projects.entries()) {
    // Least privilege: a workload is given the projects it works on by name, never all of them.
    if (project === '*') invalid(`${where}.projects[${i}]`, '"*" is not allowed here: list the projects');
    if (typeof project !== 'string' || !PROJECT.test(project))
      invalid(`${where}.projects[${i}]`, `must match ${NAME_PATTERN}`);
    if (seen.has(project)) invalid(`${where}.projects[${i}]`, `"${project}" is listed twice`);
    seen.add(project);
  }
  const names: Record<string, string> = { ...DEFAULT_CLAIMS };
  if (claims !== undefined) {
    if (!isObject(claims))
      invalid(`${where}.claims`, 'must be an object mapping origin fields to claim names');
    for (const [key, claim] of Object.entries(claims)) {
      if (!CLAIM_FIELDS.has(key))
        invalid(`${where}.claims`, `unknown field "${key}"; known: ${[...CLAIM_FIELDS].join(', ')}`);
      names[key] = claimName(claim, `${where}.claims.${key}`);
    }
  }
  if (allowAnyWorkload !== undefined && typeof allowAnyWorkload !== 'boolean')
    invalid(`${where}.allowAnyWorkload`, 'must be true or false');
  // A shared issuer (GitHub, GitLab.com) vouches for every repository on it: an entry that
  // pins nothing lets anyone's workflow in. That must be said explicitly, never be a default.
  if (require === undefined && allowAnyWorkload !== true)
    invalid(
      `${where}.require`,
      'is required: pin your own workloads (e.g. {"repository_owner": ["acme"]}), or set "allowAnyWorkload": true to accept every workload this issuer vouches for',
    );
  const required: Record<string, readonly string[]> = {};
  if (require !== undefined) {
    if (!isObject(require) || Object.keys(require).length === 0)
      invalid(
        `${where}.require`,
        'must be an object {"claim": ["allowed value", …]} with at least one claim',
      );
    if (Object.keys(require).length > MAX_REQUIRED_CLAIMS)
      invalid(`${where}.require`, `names more than ${MAX_REQUIRED_CLAIMS} claims`);
    for (const [claim, allowed] of Object.entries(require)) {
      claimName(claim, `${where}.require`);
      if (!Array.isArray(allowed) || allowed.length === 0 || allowed.length > MAX_REQUIRED_VALUES)
        invalid(`${where}.require.${claim}`, `must be a list of 1–${MAX_REQUIRED_VALUES} allowed values`);
      for (const [i, item] of allowed.entries())
        if (
          typeof item !== 'string' ||
          item === '' ||
          item.length > MAX_CLAIM_VALUE_CHARS ||
          UNSAFE_TEXT.test(item)
        )
          invalid(
            `${where}.require.${claim}[${i}]`,
            `must be a string of 1–${MAX_CLAIM_VALUE_CHARS} characters without control characters`,
          );
      required[claim] = [...(allowed as string[])];
    }
  }
  return {
    issuer,
    audience,
    ...(jwksUri !== undefined ? { jwksUri } : {}),
    role,
    projects: [...(projects as string[])],
    claims: names as unknown as OidcClaimNames,
    require: required,
    allowAnyWorkload: allowAnyWorkload === true,
  };
}

/** Validates the parsed JSON of an issuer file; `source` names it in messages. */
export function parseOidcIssuers(value: unknown, source: string): OidcIssuerConfig[] {
  if (!Array.isArray(value) || value.length === 0)
    invalid(
      source,
      'must be a non-empty JSON list of issuers [{"issuer", "audience", "role", "projects"}, …]',
    );
  if (value.length > MAX_ISSUERS) invalid(source, `lists more than ${MAX_ISSUERS} issuers`);
  const issuers = value.map((entry, i) => parseIssuer(entry, `${source}: [${i}]`));
  const seen = new Set<string>();
  for (const [i, entry] of issuers.entries()) {
    // One entry per issuer: two would make which role and projects a token gets depend on order.
    if (seen.has(entry.issuer))
      invalid(`${source}: [${i}].issuer`, `${JSON.stringify(entry.issuer)} is listed twice`);
    seen.add(entry.issuer);
  }
  return issuers;
}

/**
 * Reads and validates the issuer file: a regular file of at most 64 KiB, UTF-8 JSON, that
 * group and others cannot write (they could add an issuer of their own, or widen a role).
 */
export async function loadOidcIssuers(path: string): Promise<OidcIssuerConfig[]> {
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a FIFO put in its place cannot hang the start.
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    invalid(path, `cannot be opened: ${describeError(error)}`);
  }
  let text: string;
  try {
    const info = await handle.stat();
    if (!info.isFile()) invalid(path, 'is not a regular file');
    if ((info.mode & 0o022) !== 0)
      invalid(
        path,
        `can be written by group or others (mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}), who could let their own workloads in: chmod go-w ${path}`,
      );
    const buffer = Buffer.alloc(MAX_ISSUERS_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_ISSUERS_FILE_BYTES) invalid(path, `is larger than ${MAX_ISSUERS_FILE_BYTES} bytes`);
    }
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(buffer.subarray(0, length));
    } catch {
      invalid(path, 'is not UTF-8 text');
    }
  } finally {
    await handle.close();
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    invalid(path, `is not valid JSON: ${describeError(error)}`);
  }
  return parseOidcIssuers(parsed, path);
}

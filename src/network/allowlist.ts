import { AirlockError } from '../errors.js';
import { formatIp, type IpAddress, parseIp } from './addresses.js';

/**
 * Egress allowlists: the destinations a job may reach through the egress proxy, written
 * `host:port`, `*.example.com:port`, `1.2.3.4:port` or `[2001:db8::1]:port`. Entries are
 * parsed strictly (a lenient parser is where "evil.com#@good.com" slips through) into rules,
 * and each request's destination is parsed with the same grammar before it is matched.
 */

export type EgressRule =
  | { readonly kind: 'name'; readonly host: string; readonly port: number }
  /** Matches one or more labels in front of `suffix`, never `suffix` itself. */
  | { readonly kind: 'wildcard'; readonly suffix: string; readonly port: number }
  | { readonly kind: 'address'; readonly host: string; readonly ip: IpAddress; readonly port: number };

/** A destination as a request names it, normalised (lower case, no trailing dot, canonical IP). */
export type EgressTarget =
  | { readonly kind: 'name'; readonly host: string; readonly port: number }
  | { readonly kind: 'address'; readonly host: string; readonly ip: IpAddress; readonly port: number };

/** Bounds on an allowlist: it comes from a job description (hostile input, DESIGN §5.6). */
export const MAX_ALLOW_ENTRIES = 1024;
const MAX_ENTRY_LENGTH = 2 + 253 + 6;
const MAX_NAME_LENGTH = 253;

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const PORT = /^[1-9]\d{0,4}$/;
/** A last label that a URL parser or getaddrinfo reads as a number: "127.1", "0x7f.1", "2130706433". */
const NUMERIC_LABEL = /^(?:0x[0-9a-f]*|\d+)$/;

/** Why `name` is not a host name, or null. Expects lower case. */
function nameProblem(name: string): string | null {
  if (name.length === 0) return 'the host name is empty';
  if (name.length > MAX_NAME_LENGTH) return `the host name is longer than ${MAX_NAME_LENGTH} characters`;
  const labels = name.split('.');
  if (!labels.every((label) => LABEL.test(label)))
    return 'a host name is made of labels of a–z, 0–9 and "-" (1–63 each, no leading or trailing "-"), joined by dots';
  // getaddrinfo resolves "127.1" and "0x7f000001" to 127.0.0.1: such names are IP addresses in disguise.
  if (NUMERIC_LABEL.test(labels[labels.length - 1] ?? ''))
    return 'looks like an IP address in a non-standard form; write an IPv4 address as a dotted quad (1.2.3.4)';
  return null;
}

function parsePort(text: string): number | null {
  if (!PORT.test(text)) return null;
  const port = Number(text);
  return port <= 65535 ? port : null;
}

/** Parses one allowlist entry; throws INVALID_JOB naming the entry and what is wrong with it. */
export function parseEgressEntry(text: unknown): EgressRule {
  // An entry with user information may hold a password: it is described, never repeated.
  // Anything but a string is named by its type: String() of a hostile object may itself throw.
  const shown =
    typeof text !== 'string'
      ? `(${text === null ? 'null' : Array.isArray(text) ? 'a list' : `a ${typeof text}`})`
      : text.includes('@')
        ? '(with user information, not shown)'
        : JSON.stringify(text.slice(0, 80));
  const invalid = (why: string): never => {
    throw new AirlockError('INVALID_JOB', `egress entry ${shown}: ${why}`);
  };
  if (typeof text !== 'string') return invalid('must be a string ("host:port")');
  if (text.length > MAX_ENTRY_LENGTH) return invalid(`is longer than ${MAX_ENTRY_LENGTH} characters`);
  if (/[^\x21-\x7e]/.test(text))
    return invalid('must be printable ASCII without spaces (IDN names in xn-- form)');
  // Credentials and URLs are refused outright, not "cleaned": a parser that guesses is a parser to fool.
  if (text.includes('@')) return invalid('must not carry user information (user@host): only host:port');
  if (/[/?#\\]/.test(text)) return invalid('is host:port only: no scheme, path, query or fragment');

  let hostText: string;
  let portText: string;
  if (text.startsWith('[')) {
    const match = /^\[([^\]]*)\]:([^:]*)$/.exec(text);
    if (match === null) return invalid('an IPv6 entry is written [address]:port');
    hostText = match[1] ?? '';
    portText = match[2] ?? '';
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return invalid('needs a port: host:port');
    hostText = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (hostText.includes(':')) return invalid('an IPv6 address is written in brackets: [2001:db8::1]:443');
  }
  const port = parsePort(portText);
  if (port === null) return invalid('the port must be a decimal number 1–65535 without leading zeros');
  if (hostText !== hostText.toLowerCase())
    return invalid('host names and IPv6 addresses are written in lower case');

  if (text.startsWith('[')) {
    const ip = parseIp(hostText);
    if (ip === null || ip.family !== 6) return invalid('is not an IPv6 address (zone IDs are not allowed)');
    // ::ffff:1.2.3.4 would be a second spelling of an IPv4 entry: one address, one way to write it.
    if (ip.bytes.slice(0, 12).every((byte, i) => byte === (i < 10 ? 0 : 0xff)))
      return invalid('an IPv4-mapped address: write the IPv4 address itself (1.2.3.4:443)');
    return { kind: 'address', host: formatIp(ip), ip, port };
  }
  const ip = parseIp(hostText);
  if (ip !== null) return { kind: 'address', host: formatIp(ip), ip, port };
  if (hostText.endsWith('.')) return invalid('write the host name without the trailing dot');
  if (hostText.startsWith('*.')) {
    const suffix = hostText.slice(2);
    if (suffix.includes('*')) return invalid('a wildcard is allowed only once, as a leading "*."');
    const problem = nameProblem(suffix);
    if (problem !== null) return invalid(problem);
    // "*.com" would grant every site under a top-level domain.
    if (!suffix.includes('.'))
      return invalid('a wildcard must sit above a registered domain (*.example.com), not a top-level domain');
    return { kind: 'wildcard', suffix, port };
  }
  if (hostText.includes('*'))
    return invalid('a wildcard is allowed only as a leading "*." (*.example.com:443)');
  const problem = nameProblem(hostText);
  if (problem !== null) return invalid(problem);
  return { kind: 'name', host: hostText, port };
}

/** The canonical text of a rule; parseEgressEntry(formatEgressRule(rule)) gives the rule back. */
export function formatEgressRule(rule: EgressRule): string {
  switch (rule.kind) {
    case 'name':
      return `${rule.host}:${rule.port}`;
    case 'wildcard':
      return `*.${rule.suffix}:${rule.port}`;
    case 'address':
      return rule.ip.family === 6 ? `[${rule.host}]:${rule.port}` : `${rule.host}:${rule.port}`;
  }
}

export type TargetParse =
  | { readonly ok: true; readonly target: EgressTarget }
  | { readonly ok: false; readonly why: string };

/**
 * Parses the destination of a request: `host:port` (CONNECT) or the authority of an absolute
 * URI (`defaultPort` then applies when the port is absent). Host names are compared case-
 * insensitively after dropping one trailing dot; anything outside the allowlist grammar is
 * refused rather than guessed at.
 */
export function parseTarget(authority: string, defaultPort?: number): TargetParse {
  const fail = (why: string): TargetParse => ({ ok: false, why });
  if (authority.length > MAX_ENTRY_LENGTH) return fail('the destination is too long');
  if (/[^\x21-\x7e]/.test(authority))
    return fail('the destination has spaces, control or non-ASCII characters');
  if (authority.includes('@')) return fail('the destination carries user information (user@host)');
  let hostText: string;
  let portText: string | undefined;
  if (authority.startsWith('[')) {
    const match = /^\[([^\]]*)\](?::([^:]*))?$/.exec(authority);
    if (match === null) return fail('an IPv6 destination is written [address]:port');
    hostText = match[1] ?? '';
    portText = match[2];
    const ip = parseIp(hostText);
    if (ip === null || ip.family !== 6) return fail('the bracketed destination is not an IPv6 address');
  } else {
    const colon = authority.lastIndexOf(':');
    hostText = colon < 0 ? authority : authority.slice(0, colon);
    portText = colon < 0 ? undefined : authority.slice(colon + 1);
  }
  let port: number | null = defaultPort ?? null;
  if (portText !== undefined) port = parsePort(portText);
  if (port === null)
    return fail(
      defaultPort === undefined ? 'the destination needs a port (host:port)' : 'the port is not 1–65535',
    );
  const ip = parseIp(hostText);
  if (ip !== null) return { ok: true, target: { kind: 'address', host: formatIp(ip), ip, port } };
  let host = hostText.toLowerCase();
  if (host.endsWith('.')) host = host.slice(0, -1);
  const problem = nameProblem(host);
  if (problem !== null) return fail(problem);
  return { ok: true, target: { kind: 'name', host, port } };
}

/** The canonical host:port text of a target (IPv6 in brackets). */
export function formatTarget(target: EgressTarget): string {
  return target.kind === 'address' && target.ip.family === 6
    ? `[${target.host}]:${target.port}`
    : `${target.host}:${target.port}`;
}

export class EgressAllowlist {
  readonly #exact = new Map<string, EgressRule>();
  readonly #wildcards = new Map<string, EgressRule>();
  readonly #rules: EgressRule[] = [];

  private constructor() {}

  /** Parses a whole list; throws INVALID_JOB on the first bad entry, or when there are too many. */
  static parse(entries: unknown): EgressAllowlist {
    if (!Array.isArray(entries))
      throw new AirlockError('INVALID_JOB', 'egress: must be a list of "host:port" entries');
    if (entries.length > MAX_ALLOW_ENTRIES)
      throw new AirlockError('INVALID_JOB', `egress: at most ${MAX_ALLOW_ENTRIES} entries`);
    const list = new EgressAllowlist();
    for (const entry of entries) {
      const rule = parseEgressEntry(entry);
      const key = formatEgressRule(rule);
      const map = rule.kind === 'wildcard' ? list.#wildcards : list.#exact;
      if (map.has(key)) continue;
      map.set(key, rule);
      list.#rules.push(rule);
    }
    return list;
  }

  get rules(): readonly EgressRule[] {
    return this.#rules;
  }

  /**
   * The rule that lets a job reach `target`, or null. An IP address matches only an entry
   * naming that address (never a name that happens to resolve to it); a name matches its
   * exact entry or a wildcard over one of its parent domains, on the same port.
   */
  match(target: EgressTarget): EgressRule | null {
    const exact = this.#exact.get(formatTarget(target));
    if (exact !== undefined && exact.kind === target.kind) return exact;
    if (target.kind !== 'name') return null;
    for (let dot = target.host.indexOf('.'); dot >= 0; dot = target.host.indexOf('.', dot + 1)) {
      const wildcard = this.#wildcards.get(`*.${target.host.slice(dot + 1)}:${target.port}`);
      if (wildcard !== undefined) return wildcard;
    }
    return null;
  }
}

/** An allowlist in canonical form: each entry parsed, normalised, duplicates dropped. */
export function normaliseEgress(entries: unknown): string[] {
  return EgressAllowlist.parse(entries).rules.map(formatEgressRule);
}

/**
 * The `network` field of a job spec (DESIGN §6): absent or "none" is no network at all;
 * `{ egress: [...] }` is the allowlist, normalised. INVALID_JOB for anything else. The
 * server, the policy and the worker read a spec's network only through this.
 */
export function egressOfNetwork(network: unknown): string[] {
  if (network === undefined || network === 'none') return [];
  if (typeof network !== 'object' || network === null || Array.isArray(network))
    throw new AirlockError('INVALID_JOB', 'network must be "none" or { "egress": ["host:port", ...] }');
  for (const key of Object.keys(network))
    if (key !== 'egress')
      throw new AirlockError('INVALID_JOB', `network: unknown field ${JSON.stringify(key.slice(0, 40))}`);
  return normaliseEgress((network as { egress?: unknown }).egress ?? []);
}

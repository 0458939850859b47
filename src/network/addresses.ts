import { isIPv4, isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { AirlockError } from '../errors.js';

/**
 * IP addresses as the egress proxy sees them: strict parsing (no zone IDs, no octal or
 * hexadecimal IPv4 forms), one canonical text per address, and the classifier that refuses
 * every address a job must not reach through the proxy — loopback, private, link-local
 * (the cloud metadata service), the host's own addresses — unless an operator granted it.
 */

export interface IpAddress {
  readonly family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  readonly bytes: Uint8Array;
}

export interface AddressRange {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
  readonly prefix: number;
}

/** At most this many granted ranges: the list is scanned per resolved address. */
export const MAX_GRANTS = 256;
/**
 * Narrowest prefix a grant may have: a grant of 0.0.0.0/0 (or any range this wide) would switch
 * the private-address checks off wholesale, which is never what an operator granting one
 * internal registry means.
 */
const MIN_GRANT_PREFIX = { 4: 8, 6: 8 } as const;

const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)){3}$/;

/** A dotted-quad IPv4 address in its one canonical form (no leading zeros), or null. */
function parseIPv4Bytes(text: string): Uint8Array | null {
  if (!IPV4.test(text)) return null;
  return Uint8Array.from(text.split('.').map(Number));
}

function parseIPv6Bytes(text: string): Uint8Array | null {
  // A zone ID (fe80::1%eth0) names an interface of the host: never a destination for a job.
  if (text.length > 45 || text.includes('%') || !isIPv6(text)) return null;
  const bytes = new Uint8Array(16);
  let body = text;
  const lastColon = body.lastIndexOf(':');
  const tail = body.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = parseIPv4Bytes(tail);
    if (v4 === null) return null;
    bytes.set(v4, 12);
    body = `${body.slice(0, lastColon + 1)}0:0`;
  }
  const halves = body.split('::');
  if (halves.length > 2) return null;
  const groupsOf = (part: string | undefined): string[] =>
    part === undefined || part === '' ? [] : part.split(':');
  const left = groupsOf(halves[0]);
  const right = groupsOf(halves[1]);
  const missing = 8 - left.length - right.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const groups = [...left, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...right];
  groups.forEach((group, index) => {
    // The dotted tail was replaced by "0:0" above; keep the bytes already set for it.
    if (tail.includes('.') && index >= 6) return;
    const value = Number.parseInt(group, 16);
    bytes[index * 2] = value >> 8;
    bytes[index * 2 + 1] = value & 0xff;
  });
  return bytes;
}

/** Parses an IP address literal (IPv4 dotted quad, or IPv6 without brackets or zone), or null. */
export function parseIp(text: string): IpAddress | null {
  if (isIPv4(text)) {
    const bytes = parseIPv4Bytes(text);
    return bytes === null ? null : { family: 4, bytes };
  }
  const bytes = parseIPv6Bytes(text);
  return bytes === null ? null : { family: 6, bytes };
}

/** Canonical text: dotted quad, or RFC 5952 (lower case, longest zero run as "::"). */
export function formatIp(ip: IpAddress): string {
  if (ip.family === 4) return Array.from(ip.bytes).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((ip.bytes[i] ?? 0) << 8) | (ip.bytes[i + 1] ?? 0));
  let bestStart = -1;
  let bestLength = 1; // RFC 5952: a single zero group is not compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i += 1;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j += 1;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (list: number[]): string => list.map((group) => group.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

function inRange(ip: IpAddress, range: AddressRange): boolean {
  if (ip.family !== range.family) return false;
  const full = Math.floor(range.prefix / 8);
  for (let i = 0; i < full; i += 1) if (ip.bytes[i] !== range.bytes[i]) return false;
  const rest = range.prefix % 8;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((ip.bytes[full] ?? 0) & mask) === ((range.bytes[full] ?? 0) & mask);
}

function range(text: string): AddressRange {
  const [address = '', prefix = ''] = text.split('/');
  const ip = parseIp(address);
  if (ip === null) throw new TypeError(`bad built-in range ${text}`);
  return { family: ip.family, bytes: ip.bytes, prefix: Number(prefix) };
}

/** The IPv4 part of an IPv4-mapped IPv6 address (::ffff:a.b.c.d), or null. */
function unmapped(ip: IpAddress): IpAddress | null {
  if (ip.family !== 6 || !inRange(ip, MAPPED)) return null;
  return { family: 4, bytes: ip.bytes.slice(12) };
}

const MAPPED = range('::ffff:0:0/96');
const NAT64 = range('64:ff9b::/96');
const SIX_TO_FOUR = range('2002::/16');
const GLOBAL_UNICAST_V6 = range('2000::/3');

/**
 * Special-purpose IPv4 ranges (IANA registry, RFC 6890 and successors) a job may not reach.
 * Order matters only for the label: the first match names the refusal.
 */
const SPECIAL_V4: readonly (readonly [AddressRange, string])[] = [
  [range('0.0.0.0/8'), 'unspecified ("this network")'], // 0.0.0.0 reaches the host's own services on Linux
  [range('127.0.0.0/8'), 'loopback'], // the worker's own services (control plane, runtime sockets)
  [range('10.0.0.0/8'), 'private'], // internal networks behind the worker
  [range('172.16.0.0/12'), 'private'],
  [range('192.168.0.0/16'), 'private'],
  [range('100.64.0.0/10'), 'shared address space (CGNAT)'], // carrier and cloud-internal networks
  [range('169.254.0.0/16'), 'link-local (includes the cloud metadata service 169.254.169.254)'], // credential theft from instance metadata
  [range('192.0.0.0/24'), 'reserved (IETF protocol assignments)'],
  [range('192.0.2.0/24'), 'documentation'],
  [range('198.51.100.0/24'), 'documentation'],
  [range('203.0.113.0/24'), 'documentation'],
  [range('192.88.99.0/24'), 'reserved (6to4 relay anycast)'],
  [range('198.18.0.0/15'), 'reserved (benchmarking)'],
  [range('224.0.0.0/4'), 'multicast'],
  [range('255.255.255.255/32'), 'broadcast'],
  [range('240.0.0.0/4'), 'reserved'],
];

/** Special-purpose IPv6 ranges; anything outside 2000::/3 (global unicast) is refused as well. */
const SPECIAL_V6: readonly (readonly [AddressRange, string])[] = [
  [range('::/128'), 'unspecified'],
  [range('::1/128'), 'loopback'],
  [range('fe80::/10'), 'link-local'],
  [range('fc00::/7'), 'private (unique local)'],
  [range('fec0::/10'), 'private (site-local, deprecated)'],
  [range('ff00::/8'), 'multicast'],
  [range('64:ff9b:1::/48'), 'reserved (local-use NAT64)'],
  [range('100::/64'), 'reserved (discard-only)'],
  [range('2001::/23'), 'reserved (IETF protocol assignments, Teredo)'],
  [range('2001:db8::/32'), 'documentation'],
  [range('3fff::/20'), 'documentation'],
];

/**
 * Why a job may not reach this address (a short label), or null for an ordinary public
 * address. The IPv4 forms hidden inside IPv6 (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96 and
 * 6to4 2002::/16) are judged by the IPv4 address they carry: ::ffff:127.0.0.1 is loopback.
 */
export function specialPurpose(ip: IpAddress): string | null {
  if (ip.family === 4) {
    for (const [special, label] of SPECIAL_V4) if (inRange(ip, special)) return label;
    return null;
  }
  const v4 = unmapped(ip);
  if (v4 !== null) {
    const label = specialPurpose(v4);
    return label === null ? null : `IPv4-mapped ${label}`;
  }
  // NAT64 (an IPv6-only host's way to IPv4 sites) is as reachable as the IPv4 address it carries.
  if (inRange(ip, NAT64)) {
    const label = specialPurpose({ family: 4, bytes: ip.bytes.slice(12) });
    return label === null ? null : `NAT64 form of ${label}`;
  }
  if (inRange(ip, SIX_TO_FOUR)) {
    const label = specialPurpose({ family: 4, bytes: ip.bytes.slice(2, 6) });
    if (label !== null) return `6to4 form of ${label}`;
  }
  for (const [special, label] of SPECIAL_V6) if (inRange(ip, special)) return label;
  if (!inRange(ip, GLOBAL_UNICAST_V6)) return 'reserved (not global unicast)';
  return null;
}

/** Parses a CIDR range ("10.1.0.0/16", "fd00:1::/64") or a single address of an operator's grant. */
export function parseGrant(text: unknown): AddressRange {
  const invalid = (why: string): never => {
    throw new AirlockError(
      'INVALID_CONFIG',
      `egress grant ${typeof text === 'string' ? JSON.stringify(text.slice(0, 80)) : `(a ${typeof text})`}: ${why}`,
    );
  };
  if (typeof text !== 'string') return invalid('must be a string');
  if (text.length > 64) return invalid('is too long for an address range');
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIp(address);
  if (ip === null) return invalid('is not an IPv4 or IPv6 address (CIDR form: 10.1.0.0/16, fd00::/64)');
  const width = ip.family === 4 ? 32 : 128;
  let prefix = width;
  if (slash >= 0) {
    const digits = text.slice(slash + 1);
    if (!/^(?:0|[1-9]\d{0,2})$/.test(digits) || Number(digits) > width)
      return invalid(`the prefix length must be 0–${width}`);
    prefix = Number(digits);
  }
  if (prefix < MIN_GRANT_PREFIX[ip.family])
    return invalid(
      `a /${prefix} would switch the address checks off for most of the network; grant the ranges you mean (/${MIN_GRANT_PREFIX[ip.family]} or narrower)`,
    );
  const grant: AddressRange = { family: ip.family, bytes: ip.bytes, prefix };
  const masked = new Uint8Array(ip.bytes.length);
  for (let i = 0; i < masked.length; i += 1) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    masked[i] = (ip.bytes[i] ?? 0) & ((0xff << (8 - bits)) & 0xff);
  }
  // 10.1.2.3/16 is most likely a typo for one address or for 10.1.0.0/16: ask which.
  if (masked.some((byte, i) => byte !== ip.bytes[i]))
    return invalid(
      `has bits set beyond the /${prefix} prefix (did you mean ${formatIp({ family: ip.family, bytes: masked })}/${prefix}?)`,
    );
  return grant;
}

export function formatGrant(grant: AddressRange): string {
  return `${formatIp(grant)}/${grant.prefix}`;
}

/** Addresses of this host's interfaces, canonical text (IPv4-mapped forms folded to IPv4). */
export function hostAddresses(): Set<string> {
  const own = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const entry of list ?? []) {
      const ip = parseIp(entry.address);
      if (ip !== null) own.add(formatIp(unmapped(ip) ?? ip));
    }
  }
  return own;
}

export type AddressVerdict = { readonly allowed: true } | { readonly allowed: false; readonly why: string };

/**
 * Whether a job may connect to this address: granted ranges first (an operator's explicit
 * grant wins), then the special-purpose ranges, then the host's own addresses (a public
 * address of the worker still reaches its services, such as the control plane).
 */
export function judgeAddress(
  ip: IpAddress,
  grants: readonly AddressRange[],
  ownAddresses: ReadonlySet<string>,
): AddressVerdict {
  const plain = unmapped(ip) ?? ip;
  if (grants.some((grant) => inRange(plain, grant) || inRange(ip, grant))) return { allowed: true };
  const label = specialPurpose(ip);
  if (label !== null) return { allowed: false, why: `${formatIp(ip)} is ${label}` };
  if (ownAddresses.has(formatIp(plain)))
    return { allowed: false, why: `${formatIp(ip)} is an address of this host` };
  return { allowed: true };
}

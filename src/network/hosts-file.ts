import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { AirlockError } from '../errors.js';
import { formatIp, parseIp } from './addresses.js';
import { parseEgressEntry } from './allowlist.js';

/**
 * AIRLOCK_EGRESS_HOSTS: names the egress proxy resolves itself, before DNS — an internal
 * registry's name, or the test servers of Airlock's own tests. A JSON object of host name →
 * list of addresses, read once when the worker starts; a bad file stops it (INVALID_CONFIG).
 * A mapped address is still judged like any other: loopback or a private range needs a grant.
 */

const MAX_FILE_BYTES = 1024 * 1024;
const MAX_NAMES = 10_000;
const MAX_ADDRESSES = 16;

export type Resolver = (host: string) => Promise<readonly string[]>;

function invalid(file: string, why: string): never {
  throw new AirlockError('INVALID_CONFIG', `AIRLOCK_EGRESS_HOSTS ${file}: ${why}`);
}

/** Parses the file's text into name → addresses (canonical text). */
export function parseHostsFile(file: string, text: string): Map<string, string[]> {
  if (Buffer.byteLength(text) > MAX_FILE_BYTES) invalid(file, `is larger than ${MAX_FILE_BYTES} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    invalid(file, `is not JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    invalid(file, 'must be a JSON object of "name": ["address", ...]');
  const entries = Object.entries(value);
  if (entries.length > MAX_NAMES) invalid(file, `names more than ${MAX_NAMES} hosts`);
  const map = new Map<string, string[]>();
  for (const [name, addresses] of entries) {
    // The allowlist's own grammar for a name (lower case, no wildcard, no address).
    let rule: ReturnType<typeof parseEgressEntry>;
    try {
      rule = parseEgressEntry(`${name}:1`);
    } catch (error) {
      invalid(file, (error as Error).message.replace(/:1"/, '"'));
    }
    if (rule.kind !== 'name') invalid(file, `${JSON.stringify(name.slice(0, 80))} must be a host name`);
    if (!Array.isArray(addresses) || addresses.length === 0 || addresses.length > MAX_ADDRESSES)
      invalid(file, `${name}: must list 1 to ${MAX_ADDRESSES} addresses`);
    map.set(
      rule.host,
      addresses.map((address: unknown) => {
        const ip = typeof address === 'string' ? parseIp(address) : null;
        if (ip === null) invalid(file, `${name}: ${JSON.stringify(address)} is not an IP address`);
        return formatIp(ip);
      }),
    );
  }
  return map;
}

/** A resolver: the file's names first, DNS for the rest. */
export function hostsFileResolver(file: string): Resolver {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    invalid(file, `cannot be read: ${(error as Error).message}`);
  }
  const map = parseHostsFile(file, text);
  return async (host) => {
    const mapped = map.get(host.toLowerCase());
    if (mapped !== undefined) return mapped;
    const answers = await lookup(host, { all: true, verbatim: true });
    return answers.map((answer) => answer.address);
  };
}

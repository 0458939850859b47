import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { AirlockError } from '../../src/errors.js';
import {
  type AddressRange,
  formatGrant,
  formatIp,
  type IpAddress,
  judgeAddress,
  parseGrant,
  parseIp,
  specialPurpose,
} from '../../src/network/addresses.js';
import {
  EgressAllowlist,
  type EgressTarget,
  formatEgressRule,
  formatTarget,
  parseEgressEntry,
  parseTarget,
} from '../../src/network/allowlist.js';

/**
 * The egress allowlist grammar and the address classifier, the two parsers every egress
 * decision rests on: examples for each refusal, and fast-check properties for what no list
 * of examples covers (any text, any address in a refused range).
 */

function refusedAs(code: 'INVALID_JOB' | 'INVALID_CONFIG', pattern?: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof AirlockError, `an AirlockError, got ${String(error)}`);
    assert.equal(error.code, code);
    if (pattern !== undefined) assert.match(error.message, pattern);
    return true;
  };
}

function ip(text: string): IpAddress {
  const parsed = parseIp(text);
  assert.ok(parsed !== null, `${text} parses`);
  return parsed;
}

function target(text: string, defaultPort?: number): EgressTarget {
  const parsed = parseTarget(text, defaultPort);
  assert.ok(parsed.ok, `${text} parses as a destination`);
  return parsed.target;
}

const NO_GRANTS: readonly AddressRange[] = [];
const NOT_OWN: ReadonlySet<string> = new Set();

describe('parseEgressEntry', () => {
  test('reads the four forms of an entry', () => {
    assert.deepEqual(parseEgressEntry('registry.npmjs.org:443'), {
      kind: 'name',
      host: 'registry.npmjs.org',
      port: 443,
    });
    assert.deepEqual(parseEgressEntry('*.example.com:8443'), {
      kind: 'wildcard',
      suffix: 'example.com',
      port: 8443,
    });
    assert.deepEqual(parseEgressEntry('192.0.2.7:80'), {
      kind: 'address',
      host: '192.0.2.7',
      ip: ip('192.0.2.7'),
      port: 80,
    });
    assert.deepEqual(parseEgressEntry('[2001:db8::1]:443'), {
      kind: 'address',
      host: '2001:db8::1',
      ip: ip('2001:db8::1'),
      port: 443,
    });
    assert.equal(parseEgressEntry('localhost:1').kind, 'name');
    assert.equal(parseEgressEntry('a:65535').kind, 'name');
  });

  test('writes an IPv6 entry in its canonical form', () => {
    const rule = parseEgressEntry('[2001:0db8:0:0:0:0:0:0001]:443');
    assert.equal(formatEgressRule(rule), '[2001:db8::1]:443');
  });

  const refusals: readonly (readonly [unknown, RegExp])[] = [
    ['', /port/],
    ['example.com', /needs a port/],
    ['example.com:', /port must be/],
    ['example.com:0', /port must be/],
    ['example.com:65536', /port must be/],
    ['example.com:0443', /leading zeros/],
    ['example.com:+443', /port must be/],
    ['example.com:*', /port must be/],
    [':443', /empty/],
    ['Example.com:443', /lower case/],
    ['[2001:DB8::1]:443', /lower case/],
    ['http://example.com:443', /no scheme, path/],
    ['example.com:443/path', /no scheme, path/],
    ['example.com:443?x', /no scheme, path/],
    ['example.com#x:443', /no scheme, path/],
    ['exa\\mple.com:443', /no scheme, path/],
    ['ex ample.com:443', /printable ASCII/],
    ['exämple.com:443', /printable ASCII/],
    ['example.com\n:443', /printable ASCII/],
    ['a.*.example.com:443', /only as a leading/],
    ['*example.com:443', /only as a leading/],
    ['*:443', /only as a leading/],
    ['*.*.example.com:443', /only once/],
    ['*.com:443', /top-level domain/],
    ['*.example.com.:443', /trailing dot/],
    ['example.com.:443', /trailing dot/],
    ['2001:db8::1:443', /in brackets/],
    ['[2001:db8::1]', /\[address\]:port/],
    ['[2001:db8::1]443', /\[address\]:port/],
    ['[192.0.2.1]:443', /not an IPv6 address/],
    ['[fe80::1%eth0]:443', /zone/],
    ['[::ffff:192.0.2.1]:443', /IPv4-mapped/],
    ['127.1:80', /non-standard form/],
    ['0x7f000001:80', /non-standard form/],
    ['2130706433:80', /non-standard form/],
    ['0177.0.0.1:80', /non-standard form/],
    ['-a.example.com:443', /labels of a–z/],
    ['a-.example.com:443', /labels of a–z/],
    ['a_b.example.com:443', /labels of a–z/],
    ['a..example.com:443', /labels of a–z/],
    [`${'a'.repeat(64)}.com:443`, /labels of a–z/],
    [`${'abcdefghi.'.repeat(25)}comx:443`, /longer than 253/],
    [`${'a'.repeat(300)}:443`, /longer than 261/],
    [42, /must be a string/],
    [null, /must be a string/],
    [['example.com:443'], /must be a string/],
  ];
  for (const [entry, pattern] of refusals) {
    test(`refuses ${JSON.stringify(entry)?.slice(0, 40)}`, () => {
      assert.throws(() => parseEgressEntry(entry), refusedAs('INVALID_JOB', pattern));
    });
  }

  test('refuses user information without repeating it (it may be a password)', () => {
    for (const entry of ['alice:hunter2@example.com:443', 'hunter2@example.com:443', '@example.com:443']) {
      assert.throws(
        () => parseEgressEntry(entry),
        (error: unknown) =>
          refusedAs('INVALID_JOB', /user information/)(error) && !String(error).includes('hunter2'),
      );
    }
  });

  test('any text is either a rule or an INVALID_JOB AirlockError, never another failure', () => {
    const alphabet = fc.constantFrom(...'ab.-*:[]@/0123456789fF%\\ \u00e9_x'.split(''));
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: alphabet, maxLength: 40 }),
          fc.string({ unit: 'binary', maxLength: 300 }),
          fc.anything(),
        ),
        (input) => {
          try {
            const rule = parseEgressEntry(input);
            // Whatever was accepted has a canonical text that parses back to the same rule.
            assert.deepEqual(parseEgressEntry(formatEgressRule(rule)), rule);
          } catch (error) {
            assert.ok(
              error instanceof AirlockError && error.code === 'INVALID_JOB',
              `unexpected ${String(error)}`,
            );
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?$/);
  const topLabel = fc.stringMatching(/^[a-z]{2,6}$/);
  const name = fc
    .tuple(fc.array(label, { minLength: 0, maxLength: 4 }), topLabel)
    .map(([labels, top]) => [...labels, top].join('.'));
  const port = fc.integer({ min: 1, max: 65535 });

  test('valid entries round-trip: their canonical text is themselves', () => {
    const canonical = fc.oneof(
      fc.tuple(name, port).map(([host, p]) => `${host}:${p}`),
      fc.tuple(label, name, port).map(([first, rest, p]) => `*.${first}.${rest}:${p}`),
      fc.tuple(fc.ipV4(), port).map(([address, p]) => `${address}:${p}`),
    );
    fc.assert(
      fc.property(canonical, (entry) => {
        assert.equal(formatEgressRule(parseEgressEntry(entry)), entry);
      }),
      { numRuns: 2000 },
    );
  });

  test('any IPv6 spelling parses to the canonical text the WHATWG URL parser gives', () => {
    fc.assert(
      fc.property(fc.ipV6(), port, (address, p) => {
        const parsed = parseIp(address);
        assert.ok(parsed !== null, address);
        const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
        assert.equal(formatIp(parsed), canonical, address);
        const bytes = parsed.bytes;
        const mapped =
          bytes.slice(0, 10).every((byte) => byte === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
        if (mapped) return;
        assert.equal(
          formatEgressRule(parseEgressEntry(`[${address.toLowerCase()}]:${p}`)),
          `[${canonical}]:${p}`,
        );
      }),
      { numRuns: 2000 },
    );
  });
});

describe('EgressAllowlist', () => {
  const list = EgressAllowlist.parse([
    'registry.test:443',
    '*.example.com:443',
    '192.0.2.10:80',
    '[2001:db8::10]:443',
    'registry.test:443', // a duplicate is harmless
  ]);

  test('keeps one rule per distinct entry', () => {
    assert.deepEqual(
      list.rules.map((rule) => formatEgressRule(rule)),
      ['registry.test:443', '*.example.com:443', '192.0.2.10:80', '[2001:db8::10]:443'],
    );
  });

  test('matches a name exactly, on its port, case-insensitively and with one trailing dot', () => {
    assert.ok(list.match(target('registry.test:443')));
    assert.ok(list.match(target('REGISTRY.Test.:443')));
    assert.equal(list.match(target('registry.test:80')), null);
    assert.equal(list.match(target('registry.test.evil:443')), null);
    assert.equal(list.match(target('sub.registry.test:443')), null);
    assert.equal(parseTarget('registry.test..:443').ok, false);
  });

  test('a wildcard matches one or more labels in front of the domain, never the domain or a look-alike', () => {
    for (const host of ['a.example.com', 'a.b.example.com', 'A.Example.COM.'])
      assert.ok(list.match(target(`${host}:443`)), host);
    for (const host of [
      'example.com',
      'evilexample.com',
      'a.example.com.evil.net',
      'example.com.evil.net',
      'a.example.co',
    ])
      assert.equal(list.match(target(`${host}:443`)), null, host);
    assert.equal(list.match(target('a.example.com:80')), null);
  });

  test('an IP address matches only the same address listed as a literal', () => {
    assert.ok(list.match(target('192.0.2.10:80')));
    assert.equal(list.match(target('192.0.2.11:80')), null);
    assert.ok(list.match(target('[2001:db8:0:0::10]:443')));
    // ::ffff:192.0.2.10 is another spelling, not a listed literal.
    assert.equal(list.match(target('[::ffff:192.0.2.10]:80')), null);
  });

  test('refuses a list that is not a list, too long, or has one bad entry', () => {
    assert.throws(() => EgressAllowlist.parse('registry.test:443'), refusedAs('INVALID_JOB', /list/));
    assert.throws(
      () => EgressAllowlist.parse(Array.from({ length: 1025 }, (_, i) => `h${i}.test:443`)),
      refusedAs('INVALID_JOB', /at most 1024/),
    );
    assert.throws(() => EgressAllowlist.parse(['ok.test:443', 'bad']), refusedAs('INVALID_JOB', /"bad"/));
  });
});

describe('parseTarget', () => {
  test('reads host:port and IP literals, with a default port for absolute URIs', () => {
    assert.deepEqual(target('Registry.TEST.:8080'), { kind: 'name', host: 'registry.test', port: 8080 });
    assert.deepEqual(target('registry.test', 80), { kind: 'name', host: 'registry.test', port: 80 });
    assert.equal(formatTarget(target('[2001:DB8::1]', 80)), '[2001:db8::1]:80');
    assert.equal(formatTarget(target('192.0.2.1:443')), '192.0.2.1:443');
  });

  test('refuses what is not a clean destination', () => {
    for (const text of [
      'registry.test', // CONNECT needs a port
      'registry.test:0',
      'registry.test:99999',
      'user@registry.test:443',
      'registry test:443',
      '127.1:80',
      '0x7f.0.0.1:80',
      '[127.0.0.1]:80',
      '[::1',
      '[fe80::1%25eth0]:80',
      'a_b.test:80',
      `${'a'.repeat(300)}:80`,
      '',
    ])
      assert.equal(parseTarget(text).ok, false, text);
  });
});

describe('address classification', () => {
  const refused: readonly (readonly [string, RegExp])[] = [
    ['127.0.0.1', /loopback/],
    ['127.255.255.254', /loopback/],
    ['0.0.0.0', /unspecified/],
    ['10.20.30.40', /private/],
    ['172.16.0.1', /private/],
    ['172.31.255.255', /private/],
    ['192.168.1.1', /private/],
    ['100.64.0.1', /CGNAT/],
    ['100.127.255.255', /CGNAT/],
    ['169.254.169.254', /link-local.*metadata/],
    ['169.254.0.1', /link-local/],
    ['192.0.0.1', /reserved/],
    ['192.0.2.1', /documentation/],
    ['198.51.100.1', /documentation/],
    ['203.0.113.1', /documentation/],
    ['198.18.0.1', /benchmarking/],
    ['224.0.0.1', /multicast/],
    ['239.255.255.250', /multicast/],
    ['255.255.255.255', /broadcast/],
    ['240.0.0.1', /reserved/],
    ['::', /unspecified/],
    ['::1', /loopback/],
    ['fe80::1', /link-local/],
    ['fc00::1', /private/],
    ['fd12:3456::1', /private/],
    ['fec0::1', /site-local/],
    ['ff02::1', /multicast/],
    ['2001:db8::1', /documentation/],
    ['3fff::1', /documentation/],
    ['2001::1', /Teredo/],
    ['100::1', /discard/],
    ['::ffff:127.0.0.1', /IPv4-mapped loopback/],
    ['::ffff:7f00:1', /IPv4-mapped loopback/],
    ['::ffff:169.254.169.254', /IPv4-mapped link-local/],
    ['::ffff:10.0.0.1', /IPv4-mapped private/],
    ['64:ff9b::a9fe:a9fe', /NAT64 form of link-local/],
    ['64:ff9b::127.0.0.1', /NAT64 form of loopback/],
    ['2002:7f00:1::', /6to4 form of loopback/],
    ['2002:a00:1::', /6to4 form of private/],
    ['::127.0.0.1', /not global unicast/],
    ['4000::1', /not global unicast/],
  ];
  for (const [address, pattern] of refused) {
    test(`refuses ${address}`, () => {
      const verdict = judgeAddress(ip(address), NO_GRANTS, NOT_OWN);
      assert.equal(verdict.allowed, false);
      assert.match(verdict.allowed ? '' : verdict.why, pattern);
    });
  }

  test('lets ordinary public addresses through', () => {
    for (const address of [
      '8.8.8.8',
      '1.1.1.1',
      '172.32.0.1',
      '100.128.0.1',
      '192.169.0.1',
      '169.255.0.1',
      '::ffff:8.8.8.8',
      '64:ff9b::808:808',
      '2606:4700:4700::1111',
      '2a00:1450::1',
    ]) {
      assert.equal(specialPurpose(ip(address)), null, address);
      assert.deepEqual(judgeAddress(ip(address), NO_GRANTS, NOT_OWN), { allowed: true }, address);
    }
  });

  test("refuses the host's own addresses, also in IPv4-mapped form", () => {
    const own = new Set(['203.0.114.9', '2a00:1450::9']);
    for (const address of ['203.0.114.9', '::ffff:203.0.114.9', '2a00:1450::9']) {
      const verdict = judgeAddress(ip(address), NO_GRANTS, own);
      assert.deepEqual(verdict, {
        allowed: false,
        why: `${formatIp(ip(address))} is an address of this host`,
      });
    }
  });

  test('a grant lets its range through, and only its range', () => {
    const grants = [parseGrant('10.1.0.0/16'), parseGrant('127.0.0.1'), parseGrant('fd00:1::/64')];
    for (const address of ['10.1.2.3', '10.1.255.255', '127.0.0.1', '::ffff:10.1.0.9', 'fd00:1::5'])
      assert.deepEqual(judgeAddress(ip(address), grants, new Set(['127.0.0.1'])), { allowed: true }, address);
    for (const address of ['10.2.0.1', '127.0.0.2', '169.254.169.254', 'fd00:2::5', '::1'])
      assert.equal(judgeAddress(ip(address), grants, NOT_OWN).allowed, false, address);
  });

  const octet = fc.integer({ min: 0, max: 255 });
  const inRange = (first: readonly number[]) =>
    fc
      .array(octet, { minLength: 4 - first.length, maxLength: 4 - first.length })
      .map((rest) => [...first, ...rest].join('.'));

  test('property: every address in 127/8, 10/8 and 169.254/16 is refused without a grant, also IPv4-mapped', () => {
    fc.assert(
      fc.property(fc.oneof(inRange([127]), inRange([10]), inRange([169, 254])), (address) => {
        assert.equal(judgeAddress(ip(address), NO_GRANTS, NOT_OWN).allowed, false, address);
        assert.equal(judgeAddress(ip(`::ffff:${address}`), NO_GRANTS, NOT_OWN).allowed, false, address);
        // ... and let through when an operator granted exactly that address.
        assert.equal(judgeAddress(ip(address), [parseGrant(address)], NOT_OWN).allowed, true, address);
      }),
      { numRuns: 2000 },
    );
  });

  test('property: a grant covers exactly the addresses under its prefix', () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.integer({ min: 8, max: 32 }), fc.ipV4(), (base, prefix, probe) => {
        const baseValue = ip(base).bytes.reduce((value, byte) => value * 256 + byte, 0);
        const probeValue = ip(probe).bytes.reduce((value, byte) => value * 256 + byte, 0);
        const size = 2 ** (32 - prefix);
        const network = baseValue - (baseValue % size);
        const networkText = [24, 16, 8, 0].map((shift) => Math.floor(network / 2 ** shift) % 256).join('.');
        const grant = parseGrant(`${networkText}/${prefix}`);
        const inside = Math.floor(probeValue / size) === Math.floor(network / size);
        // A probe outside the grant may still be public (allowed): check only the grant's effect.
        if (inside) assert.equal(judgeAddress(ip(probe), [grant], NOT_OWN).allowed, true);
        assert.equal(formatGrant(grant), `${networkText}/${prefix}`);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('parseIp', () => {
  test('refuses every form but the dotted quad and plain IPv6', () => {
    for (const text of [
      '127.1',
      '0177.0.0.1',
      '0x7f.0.0.1',
      '2130706433',
      '1.2.3.04',
      '1.2.3.4.5',
      'fe80::1%eth0',
      '::1%1',
      '1:2:3:4:5:6:7:8:9',
      ':::',
      '',
      'localhost',
    ])
      assert.equal(parseIp(text), null, text);
  });
});

describe('parseGrant', () => {
  test('reads CIDR ranges and single addresses', () => {
    assert.equal(formatGrant(parseGrant('10.0.0.0/8')), '10.0.0.0/8');
    assert.equal(formatGrant(parseGrant('127.0.0.1')), '127.0.0.1/32');
    assert.equal(formatGrant(parseGrant('fd00::/8')), 'fd00::/8');
    assert.equal(formatGrant(parseGrant('2001:db8::1')), '2001:db8::1/128');
  });

  test('refuses malformed, overly wide and ambiguous ranges', () => {
    const cases: readonly (readonly [unknown, RegExp])[] = [
      ['0.0.0.0/0', /switch the address checks off/],
      ['::/0', /switch the address checks off/],
      ['10.0.0.0/7', /switch the address checks off/],
      ['10.0.0.1/8', /did you mean 10\.0\.0\.0\/8/],
      ['10.0.0.0/33', /prefix length/],
      ['10.0.0.0/08', /prefix length/],
      ['10.0.0.0/', /prefix length/],
      ['registry.internal', /not an IPv4 or IPv6/],
      ['10.0.0.0/8/8', /prefix length/],
      [7, /must be a string/],
    ];
    for (const [text, pattern] of cases)
      assert.throws(() => parseGrant(text), refusedAs('INVALID_CONFIG', pattern));
  });
});

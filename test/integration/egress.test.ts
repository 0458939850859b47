import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { EgressRecord } from '../../src/network/egress-proxy.js';
import type { SandboxEngine, SandboxResult } from '../../src/sandbox/engine.js';
import type { RuntimeName } from '../../src/sandbox/job.js';
import { openTestEngine, runtimeSkipReason } from './helpers.js';

/**
 * Egress end to end (issue #6): a real sandbox, its loopback-only namespace, the forwarder
 * inside it, the bind-mounted socket, and the job's proxy on this host, against a test
 * server on loopback that the proxy reaches under the names it is told (its resolver
 * setting) because the operator granted 127.0.0.1. Every probe runs inside the sandbox.
 */

const MiB = 1024 * 1024;

/** Probes run inside the sandbox: one line each, "name<TAB>what happened". */
const CLIENT = String.raw`
use strict; use warnings;
use Socket qw(PF_INET SOCK_STREAM SOCK_DGRAM sockaddr_in inet_aton);
$| = 1;
my $port = $ARGV[0];
sub via_proxy {
  my ($request) = @_;
  socket(my $s, PF_INET, SOCK_STREAM, 0) or return "socket: $!";
  connect($s, sockaddr_in(3128, inet_aton('127.0.0.1'))) or return "connect: $!";
  syswrite($s, $request);
  my $answer = '';
  while (sysread($s, my $chunk, 65536)) { $answer .= $chunk; }
  return $answer;
}
sub status { my ($a) = @_; return $a =~ m{^HTTP/1\.[01] (\d{3})} ? $1 : "none: " . substr($a, 0, 60); }
sub body { my ($a) = @_; return (split /\r\n\r\n/, $a, 2)[1] // ''; }
my $ok = via_proxy("GET http://allowed.test:$port/hello HTTP/1.1\r\nHost: allowed.test:$port\r\n\r\n");
print "listed\t", status($ok), "\t", body($ok), "\n";
my $tunnel = via_proxy("CONNECT allowed.test:$port HTTP/1.1\r\nHost: allowed.test:$port\r\n\r\nGET /tunnel HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n");
print "connect\t", ($tunnel =~ /tunnelled/ ? 'through' : 'no'), "\n";
print "unlisted\t", status(via_proxy("GET http://other.test:$port/ HTTP/1.1\r\nHost: other.test\r\n\r\n")), "\n";
print "literal\t", status(via_proxy("GET http://127.0.0.1:$port/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")), "\n";
print "metadata\t", status(via_proxy("GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")), "\n";
my $big = via_proxy("GET http://allowed.test:$port/big HTTP/1.1\r\nHost: allowed.test\r\n\r\n");
print "big\t", length(body($big)), "\n";
my @direct;
for my $target (['192.0.2.2', $port], ['127.0.0.53', 53], ['1.1.1.1', 443], ['169.254.169.254', 80]) {
  socket(my $s, PF_INET, SOCK_STREAM, 0) or die;
  push @direct, ($target->[0] . ':' . (connect($s, sockaddr_in($target->[1], inet_aton($target->[0]))) ? 'connected' : 'refused'));
}
print "direct\t@direct\n";
my @names = gethostbyname('allowed.test');
socket(my $u, PF_INET, SOCK_DGRAM, 0) or die;
my $sent = send($u, "\0" x 12, 0, sockaddr_in(53, inet_aton('8.8.8.8')));
print "dns\t", (@names ? 'resolved' : 'no-name'), ' ', (defined $sent ? 'udp-sent' : 'udp-failed'), "\n";
`;

interface Probes {
  readonly [name: string]: string;
}

function probesOf(text: string): Probes {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const tab = line.indexOf('\t');
    if (tab > 0) out[line.slice(0, tab)] = line.slice(tab + 1);
  }
  return out;
}

for (const runtime of ['runc', 'gvisor'] as RuntimeName[]) {
  const skip = runtimeSkipReason(runtime);
  describe(`egress through the proxy (${runtime})`, { skip: skip ?? false }, () => {
    let engine: SandboxEngine;
    let cleanup: () => Promise<void>;
    let server: Server;
    let port: number;
    const streamed: EgressRecord[] = [];

    before(async () => {
      server = createServer((request, response) => {
        if (request.url === '/big') {
          response.end(Buffer.alloc(4 * MiB, 0x61));
          return;
        }
        response.end(request.url === '/tunnel' ? 'tunnelled' : 'hello from the registry');
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as AddressInfo).port;
      ({ engine, cleanup } = await openTestEngine(`egress-${runtime}`, {
        egress: {
          // The proxy's resolver setting: these names are this loopback server.
          resolve: async (host) => (host === 'allowed.test' || host === 'other.test' ? ['127.0.0.1'] : []),
          // Loopback is refused unless granted; the operator grants just this address.
          grantAddresses: ['127.0.0.1/32'],
          maxBytes: 1 * MiB,
        },
      }));
    });

    after(async () => {
      await cleanup?.();
      server?.close();
    });

    test('a listed host works; everything else fails, and every attempt is recorded', async () => {
      let output = '';
      const result: SandboxResult = await engine.run(
        {
          runtime,
          command: ['perl', 'client.pl', String(port)],
          files: [{ path: 'client.pl', content: CLIENT }],
          egress: [`allowed.test:${port}`, '169.254.169.254:80'],
          resources: { timeoutMs: 60_000 },
        },
        {
          onOutput: (_stream, chunk) => {
            output += chunk.toString('utf8');
          },
          onEgress: (record) => streamed.push(record),
        },
      );
      assert.equal(result.exitCode, 0, output);
      const probes = probesOf(output);
      assert.equal(probes.listed, '200\thello from the registry', output);
      assert.equal(probes.connect, 'through', output);
      assert.equal(probes.unlisted, '403', output);
      assert.equal(probes.literal, '403', output);
      assert.equal(probes.metadata, '403', output);
      // The byte cap (1 MiB for the job) cut the 4 MiB download short.
      assert.ok(Number(probes.big) < 2 * MiB, output);
      // No route anywhere: neither the host's own address nor the outside nor the metadata address.
      assert.equal(
        probes.direct,
        `192.0.2.2:refused 127.0.0.53:refused 1.1.1.1:refused 169.254.169.254:refused`.replace(
          '192.0.2.2',
          '192.0.2.2',
        ),
        output,
      );
      assert.equal(probes.dns, 'no-name udp-failed', output);

      const egress = result.egress;
      assert.ok(egress !== null);
      assert.deepEqual(egress.allow, [`allowed.test:${port}`, '169.254.169.254:80']);
      const reasons = egress.attempts.map(
        (record) => `${record.destination} ${record.allowed} ${record.reason}`,
      );
      assert.ok(reasons.includes(`allowed.test:${port} true allowed`), reasons.join('\n'));
      assert.ok(reasons.includes(`other.test:${port} false not-allowlisted`), reasons.join('\n'));
      assert.ok(reasons.includes(`127.0.0.1:${port} false ip-literal-not-listed`), reasons.join('\n'));
      assert.ok(reasons.includes('169.254.169.254:80 false blocked-address'), reasons.join('\n'));
      assert.ok(
        egress.attempts.some((record) => record.reason === 'byte-cap'),
        reasons.join('\n'),
      );
      const allowed = egress.attempts.find((record) => record.reason === 'allowed');
      assert.equal(allowed?.resolved, '127.0.0.1');
      assert.ok((allowed?.bytesDown ?? 0) > 0);
      // Every attempt reached the caller as it ended, too.
      assert.equal(streamed.length, egress.attempts.length);
      assert.equal(egress.totals.exhausted, 'byte-cap');
    });

    test('a job without egress has no forwarder and no proxy', async () => {
      let output = '';
      const result = await engine.run(
        {
          runtime,
          command: ['sh', '-c', '[ -e /run/airlock/egress.sock ] && echo socket; echo "[$HTTP_PROXY]"'],
        },
        {
          onOutput: (_stream, chunk) => {
            output += chunk.toString('utf8');
          },
        },
      );
      assert.equal(result.egress, null);
      assert.equal(output.trim(), '[]');
    });
  });
}

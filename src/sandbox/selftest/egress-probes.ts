import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SandboxEngine } from '../engine.js';
import type { RuntimeName } from '../job.js';

/**
 * The selftest's egress probes (issue #6): a job granted egress to one test name reaches it,
 * and everything else fails — an unlisted name, the listed server by IP literal, the metadata
 * address even when listed, a DNS query, a direct TCP connection. The "registry" is a server
 * on this host's loopback that the job's proxy reaches under a test name, with loopback
 * granted for this run only (the operator's settings are not used). Each refusal must show
 * both inside the sandbox and in the proxy's own record.
 */

const LISTED = 'listed.selftest.airlock.test';
const UNLISTED = 'unlisted.selftest.airlock.test';
const BODY = 'airlock-selftest-egress';

/** Runs inside the sandbox: one line per probe, "name<TAB>what it saw". */
const INSIDE = String.raw`
use strict; use warnings;
use Socket qw(PF_INET SOCK_STREAM SOCK_DGRAM sockaddr_in inet_aton);
$| = 1;
my ($port, $listed, $unlisted) = @ARGV;
sub via_proxy {
  my ($target) = @_;
  socket(my $s, PF_INET, SOCK_STREAM, 0) or return "socket: $!";
  connect($s, sockaddr_in(3128, inet_aton('127.0.0.1'))) or return "no forwarder: $!";
  syswrite($s, "GET http://$target/ HTTP/1.1\r\nHost: $target\r\n\r\n");
  my $answer = '';
  while (sysread($s, my $chunk, 65536)) { $answer .= $chunk; }
  return $answer =~ m{^HTTP/1\.[01] (\d{3})} ? "$1 " . ((split /\r\n\r\n/, $answer, 2)[1] // '') : 'no answer';
}
print "listed\t", via_proxy("$listed:$port"), "\n";
print "unlisted\t", via_proxy("$unlisted:$port"), "\n";
print "literal\t", via_proxy("127.0.0.1:$port"), "\n";
print "metadata\t", via_proxy('169.254.169.254:80'), "\n";
my @names = gethostbyname($listed);
socket(my $u, PF_INET, SOCK_DGRAM, 0) or die;
my $sent = send($u, "\0" x 12, 0, sockaddr_in(53, inet_aton('8.8.8.8')));
print "dns\t", (@names ? 'name resolved' : 'no name'), (defined $sent ? ', UDP to 8.8.8.8:53 sent' : ", UDP to 8.8.8.8:53: $!"), "\n";
my @reached;
for my $target (['1.1.1.1', 443], ['169.254.169.254', 80]) {
  socket(my $s, PF_INET, SOCK_STREAM, 0) or die;
  push @reached, "$target->[0]:$target->[1]" if connect($s, sockaddr_in($target->[1], inet_aton($target->[0])));
}
print "direct\t", (@reached ? "connected to @reached" : 'no connection to 1.1.1.1:443, 169.254.169.254:80'), "\n";
`;

export async function egressProbes(
  engine: SandboxEngine,
  runtime: RuntimeName,
  record: (name: string, pass: boolean, detail: string) => void,
): Promise<void> {
  const server = createServer((_request, response) => response.end(BODY));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  try {
    const { port } = server.address() as AddressInfo;
    const chunks: Buffer[] = [];
    const result = await engine.run(
      {
        runtime,
        command: ['perl', 'egress.pl', String(port), LISTED, UNLISTED],
        files: [{ path: 'egress.pl', content: INSIDE }],
        egress: [`${LISTED}:${port}`, '169.254.169.254:80'],
        resources: { timeoutMs: 60_000 },
      },
      {
        onOutput: (_stream, chunk) => chunks.push(chunk),
        egressSettings: {
          resolve: async (host) => (host === LISTED || host === UNLISTED ? ['127.0.0.1'] : []),
          grantAddresses: ['127.0.0.1/32'],
          connectTimeoutMs: 5000,
        },
      },
    );
    const seen = new Map<string, string>();
    for (const line of Buffer.concat(chunks).toString('utf8').split('\n')) {
      const tab = line.indexOf('\t');
      if (tab > 0) seen.set(line.slice(0, tab), line.slice(tab + 1));
    }
    const reasonOf = (destination: string): string =>
      result.egress?.attempts.find((attempt) => attempt.destination === destination)?.reason ?? 'no record';
    const check = (
      name: string,
      inside: string | undefined,
      want: RegExp,
      destination: string,
      reason: string,
    ) => {
      const recorded = reasonOf(destination);
      record(
        name,
        inside !== undefined && want.test(inside) && recorded === reason,
        `inside: ${inside ?? 'no answer'}; proxy recorded ${destination}: ${recorded}`,
      );
    };
    check(
      'egress-listed-host-works',
      seen.get('listed'),
      new RegExp(`^200 ${BODY}$`),
      `${LISTED}:${port}`,
      'allowed',
    );
    check('egress-unlisted-refused', seen.get('unlisted'), /^403 /, `${UNLISTED}:${port}`, 'not-allowlisted');
    check(
      'egress-ip-literal-refused',
      seen.get('literal'),
      /^403 /,
      `127.0.0.1:${port}`,
      'ip-literal-not-listed',
    );
    check('egress-metadata-refused', seen.get('metadata'), /^403 /, '169.254.169.254:80', 'blocked-address');
    const dns = seen.get('dns');
    record('egress-dns-fails', dns !== undefined && /^no name, UDP .*: /.test(dns), dns ?? 'no answer');
    const direct = seen.get('direct');
    record(
      'egress-direct-tcp-fails',
      direct !== undefined && /^no connection/.test(direct),
      direct ?? 'no answer',
    );
  } finally {
    server.close();
  }
}

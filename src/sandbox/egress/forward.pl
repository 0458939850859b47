# Airlock egress forwarder. Runs INSIDE a job's sandbox, only for a job granted egress
# (docs/network.md, decision 0009). Usage: perl forward.pl -- COMMAND [ARG...]
#
# It listens on 127.0.0.1:3128 in the job's own network namespace (loopback only: the
# sandbox has no route anywhere) and relays every connection, byte for byte, to the job's
# egress proxy on the worker through the one Unix socket Airlock bind-mounted at
# /run/airlock/egress.sock. Then it runs the job's command in its own place (exec), so the
# command keeps the process, the exit status and the signals it would have had.
#
# It decides nothing: the proxy behind the socket checks every request. It runs as the
# job's user with the job's limits, so the job can kill it (and so lose its egress) or talk
# to the socket itself (the same proxy, the same rules). Perl because it is in every Debian
# userland (perl-base is essential); only core modules.
use strict;
use warnings;
use Socket qw(PF_INET PF_UNIX SOCK_STREAM SOL_SOCKET SO_REUSEADDR INADDR_LOOPBACK sockaddr_in pack_sockaddr_un);
use POSIX ();

my $SOCKET = '/run/airlock/egress.sock';
my $PORT = 3128;
my $CHUNK = 256 * 1024;

shift @ARGV if @ARGV && $ARGV[0] eq '--';
die "airlock: egress forwarder: no command to run\n" unless @ARGV;

# Listening before the command starts: its first connection cannot come too early.
socket(my $listen, PF_INET, SOCK_STREAM, 0) or die "airlock: egress forwarder: socket: $!\n";
setsockopt($listen, SOL_SOCKET, SO_REUSEADDR, 1);
bind($listen, sockaddr_in($PORT, INADDR_LOOPBACK))
  or die "airlock: egress forwarder: cannot listen on 127.0.0.1:$PORT: $!\n";
listen($listen, 128) or die "airlock: egress forwarder: listen: $!\n";

my $forwarder = fork();
die "airlock: egress forwarder: fork: $!\n" unless defined $forwarder;
if ($forwarder != 0) {
  # The job's command, in this process.
  close $listen;
  { no warnings 'exec'; exec { $ARGV[0] } @ARGV; }
  my $code = $!{ENOENT} ? 127 : 126;
  print STDERR "airlock: cannot run $ARGV[0]: $!\n";
  POSIX::_exit($code);
}

# The forwarder: two short-lived processes per connection (one per direction), reaped by the kernel.
$0 = 'airlock-egress-forwarder';
$SIG{CHLD} = 'IGNORE';
open(STDIN, '<', '/dev/null');
open(STDOUT, '>', '/dev/null');
while (1) {
  my $client;
  unless (accept($client, $listen)) {
    select(undef, undef, undef, 0.05) unless $!{EINTR};    # EMFILE and friends: back off
    next;
  }
  my $relay = fork();
  if (!defined $relay) { close $client; next; }
  if ($relay == 0) {
    close $listen;
    relay($client);
    POSIX::_exit(0);
  }
  close $client;
}

sub relay {
  my ($client) = @_;
  my $up;
  unless (socket($up, PF_UNIX, SOCK_STREAM, 0) && connect($up, pack_sockaddr_un($SOCKET))) {
    my $why = "$!";
    syswrite($client, "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: text/plain\r\n"
      . "Content-Length: " . (length($why) + 43) . "\r\n\r\nairlock: the egress proxy is unreachable: $why\n");
    return;
  }
  # One process per direction, each a plain blocking copy: no select(), which gVisor does
  # not offer on a host socket. The end of one direction is passed on as a half-close.
  my $other = fork();
  return unless defined $other;
  if ($other == 0) {
    pump($client, $up);
    POSIX::_exit(0);
  }
  pump($up, $client);
}

sub pump {
  my ($from, $to) = @_;
  my $buffer;
  while (1) {
    my $read = sysread($from, $buffer, $CHUNK);
    if (!defined $read) { next if $!{EINTR}; last; }
    last if $read == 0;
    my $done = 0;
    while ($done < $read) {
      my $wrote = syswrite($to, $buffer, $read - $done, $done);
      if (!defined $wrote) { next if $!{EINTR}; return; }
      $done += $wrote;
    }
  }
  shutdown($to, 1);
}

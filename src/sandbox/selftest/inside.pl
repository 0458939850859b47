# Airlock selftest: probes that run INSIDE a sandbox (never on the host: some of them try to
# write /proc/sys/kernel/core_pattern and /proc/sysrq-trigger, which root on the host could).
# Perl because it is on every Debian/Ubuntu userland (perl-base is essential) and can make raw
# system calls. Usage: perl inside.pl RUNTIME HOSTPATH...   (HOSTPATHs must be invisible here)
# Output: one line per probe: "PROBE<TAB>name<TAB>pass|fail<TAB>what it saw".
use strict;
use warnings;
use POSIX qw(uname);
use Socket;

my ($runtime, @host_paths) = @ARGV;
$runtime //= 'runc';
my $gvisor = $runtime eq 'gvisor';
$| = 1;

sub report {
  my ($name, $ok, $detail) = @_;
  $detail //= '';
  $detail =~ s/[\t\n]+/ /g;
  print "PROBE\t$name\t" . ($ok ? 'pass' : 'fail') . "\t$detail\n";
}

sub probe {
  my ($name, $code) = @_;
  my ($ok, $detail) = eval { $code->() };
  if ($@) { report($name, 0, "probe error: $@"); return; }
  report($name, $ok, $detail);
}

sub slurp {
  my ($path) = @_;
  open(my $fh, '<', $path) or return undef;
  local $/;
  my $text = <$fh>;
  close $fh;
  return $text;
}

# System call numbers of the two architectures Airlock ships a seccomp profile for.
my %x86_64 = (
  mount => 165, umount2 => 166, unshare => 272, setns => 308, keyctl => 250, add_key => 248,
  bpf => 321, ptrace => 101, userfaultfd => 323, io_uring_setup => 425, perf_event_open => 298,
  init_module => 175, finit_module => 313, delete_module => 176, kexec_load => 246, clone => 56,
  clone3 => 435, ioctl => 16, mknodat => 259, prctl => 157, getrlimit => 97,
  open_by_handle_at => 304, pivot_root => 155, process_vm_readv => 310, swapon => 167,
  inotify_init1 => 294, mq_open => 240,
);
my %aarch64 = (
  mount => 40, umount2 => 39, unshare => 97, setns => 268, keyctl => 219, add_key => 217,
  bpf => 280, ptrace => 117, userfaultfd => 282, io_uring_setup => 425, perf_event_open => 241,
  init_module => 105, finit_module => 273, delete_module => 106, kexec_load => 104, clone => 220,
  clone3 => 435, ioctl => 29, mknodat => 33, prctl => 167, getrlimit => 163,
  open_by_handle_at => 265, pivot_root => 41, process_vm_readv => 270, swapon => 224,
  inotify_init1 => 26, mq_open => 180,
);
my $machine = (uname())[4];
my %nr = $machine eq 'aarch64' ? %aarch64 : %x86_64;

# Calls a system call; returns (result, errno).
sub sys {
  my ($name, @args) = @_;
  $! = 0;
  my $r = syscall($nr{$name}, @args);
  return ($r, $! + 0, "$!");
}

# --- identity and privileges --------------------------------------------------------------

probe('capabilities-empty', sub {
  my $status = slurp('/proc/self/status') // die "no /proc/self/status\n";
  my @caps = $status =~ /^(Cap\w+):\s*([0-9a-f]+)$/mg;
  my %c = @caps;
  die "no Cap lines\n" unless %c;
  my @nonzero = grep { $c{$_} !~ /^0+$/ } sort keys %c;
  return (!@nonzero, join(' ', map { "$_=$c{$_}" } sort keys %c));
});

probe('no-new-privs', sub {
  my ($r) = sys('prctl', 39, 0, 0, 0, 0);    # PR_GET_NO_NEW_PRIVS
  return ($r == 1, "PR_GET_NO_NEW_PRIVS=$r");
});

probe('seccomp-filter-active', sub {
  my ($mode) = sys('prctl', 21, 0, 0, 0, 0);    # PR_GET_SECCOMP: 2 = filter
  # io_uring_setup with a NULL params pointer: EFAULT from an unfiltered kernel, EPERM from the filter.
  my ($r, $errno, $text) = sys('io_uring_setup', 1, 0);
  return ($mode == 2 && $r == -1 && $errno == 1, "PR_GET_SECCOMP=$mode; io_uring_setup: $text");
});

probe('non-root-user', sub {
  return ($< != 0 && $> != 0 && $( !~ /^0\b/, "uid=$< euid=$> gid=$(");
});

probe('user-namespace-mapping', sub {
  my $map = slurp('/proc/self/uid_map') // die "no uid_map\n";
  my @lines = grep { /\S/ } split /\n/, $map;
  my ($inside, $outside, $count) = split ' ', $lines[0];
  if ($gvisor) {
    # gVisor's kernel shows its own view; the host side is checked by the host-uid probe.
    return (1, "gVisor view: $inside $outside $count (host UID checked from the host)");
  }
  return ($outside != 0 && $count <= 65536, "uid_map: $inside -> host $outside (+$count)");
});

# --- what the job can see -----------------------------------------------------------------

probe('no-host-processes', sub {
  opendir(my $dh, '/proc') or die "cannot list /proc\n";
  my @pids = sort { $a <=> $b } grep { /^\d+$/ } readdir($dh);
  closedir $dh;
  my $init = slurp('/proc/1/cmdline') // '';
  $init =~ s/\0/ /g;
  return (@pids <= 8 && $init !~ m{^(/sbin/init|/lib/systemd|systemd)}, scalar(@pids) . " processes visible; pid 1: $init");
});

probe('no-host-files', sub {
  my @visible = grep { -e $_ } (
    '/etc/shadow', '/etc/gshadow', '/etc/sudoers', '/etc/ssh', '/etc/machine-id', '/etc/subuid',
    '/root', '/home', '/boot', '/var/lib', '/var/log', '/var/run', '/run/systemd', '/run/docker.sock',
    '/var/run/docker.sock', '/run/containerd', '/run/crun', '/run/runc', '/etc/ssl/private', @host_paths,
  );
  return (!@visible, @visible ? 'visible: ' . join(' ', @visible) : 'no host secrets, sockets or state directories');
});

probe('generated-etc', sub {
  my $passwd = slurp('/etc/passwd') // '';
  my @users = map { (split /:/)[0] } grep { /\S/ } split /\n/, $passwd;
  my $resolv = slurp('/etc/resolv.conf') // '';
  my $ok = join(',', sort @users) eq 'job,nobody,root' && $resolv !~ /^\s*nameserver/m;
  return ($ok, 'users: ' . join(',', @users) . ($resolv =~ /nameserver/ ? '; resolv.conf names a resolver' : '; no resolver'));
});

probe('hostname-isolated', sub {
  my $name = (uname())[1];
  return ($name eq 'sandbox', "hostname $name");
});

probe('cgroup-namespace', sub {
  my $cg = slurp('/proc/self/cgroup') // '';
  return ($cg !~ /airlock/, $cg eq '' ? 'no cgroup paths visible' : 'cgroup paths: ' . join(' ', split /\n/, $cg));
});

# --- filesystem ---------------------------------------------------------------------------

probe('root-read-only', sub {
  my @written;
  for my $path ('/airlock-probe', '/etc/airlock-probe', '/usr/airlock-probe', '/usr/bin/airlock-probe') {
    if (open(my $fh, '>', $path)) { close $fh; push @written, $path; unlink $path; }
  }
  return (!@written, @written ? 'wrote ' . join(' ', @written) : '/, /etc and /usr refuse writes');
});

for my $path ('/proc/sys/kernel/core_pattern', '/proc/sysrq-trigger', '/proc/sys/kernel/modprobe') {
  my $name = $path eq '/proc/sysrq-trigger' ? 'sysrq-trigger-read-only' : $path =~ /modprobe/ ? 'modprobe-read-only' : 'core-pattern-read-only';
  probe($name, sub {
    # Opened for append and closed without writing a byte: even if it opened, nothing changes.
    if (open(my $fh, '>>', $path)) { close $fh; return (0, "$path opened for writing"); }
    return (1, "$path: $!");
  });
}

probe('proc-masked', sub {
  my @readable;
  for my $path ('/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug', '/proc/interrupts') {
    next unless -e $path;
    my $text = slurp($path);
    push @readable, $path if defined $text && length($text) > 0;
  }
  return (!@readable, @readable ? 'readable: ' . join(' ', @readable) : 'kcore, keys, timer_list, sched_debug, interrupts empty or absent');
});

probe('sys-firmware-masked', sub {
  return (1, '/sys/firmware absent') unless -d '/sys/firmware';
  opendir(my $dh, '/sys/firmware') or return (1, "/sys/firmware: $!");
  my @entries = grep { !/^\.\.?$/ } readdir($dh);
  return (!@entries, @entries ? 'entries: ' . join(' ', @entries) : '/sys/firmware empty');
});

probe('no-block-devices', sub {
  my %allowed = map { $_ => 1 } qw(null zero full random urandom tty);
  # gVisor's kernel adds its own emulated fuse and ptmx: no host device stands behind them.
  if ($gvisor) { $allowed{$_} = 1 for qw(fuse ptmx); }
  my @bad;
  opendir(my $dh, '/dev') or die "cannot list /dev\n";
  for my $name (readdir $dh) {
    my $path = "/dev/$name";
    next if -l $path;
    push @bad, "block:$name" if -b $path;
    push @bad, "char:$name" if -c $path && !$allowed{$name};
  }
  closedir $dh;
  return (!@bad, @bad ? join(' ', @bad) : 'only null zero full random urandom tty' . ($gvisor ? ' (+ gVisor-emulated fuse, ptmx)' : ''));
});

probe('mknod-refused', sub {
  # S_IFBLK|0600 for 8:0 (a host disk) and S_IFCHR|0600 for 1:1 (/dev/mem), in /tmp.
  my ($rb, undef, $tb) = sys('mknodat', -100, my $p1 = '/tmp/airlock-blk', 0060600, (8 << 8) | 0);
  my ($rc, undef, $tc) = sys('mknodat', -100, my $p2 = '/tmp/airlock-mem', 0020600, (1 << 8) | 1);
  unlink '/tmp/airlock-blk', '/tmp/airlock-mem';
  return ($rb == -1 && $rc == -1, "block device: $tb; /dev/mem: $tc");
});

probe('mounts-nosuid-nodev', sub {
  my $info = slurp('/proc/self/mountinfo') // die "no mountinfo\n";
  if ($gvisor) {
    # gVisor does not report per-mount flags; set-id is neutralised by no_new_privs (probed above)
    # and device files cannot be created (mknod probe).
    return (1, 'gVisor: flags not reported; no_new_privs and mknod probes cover set-id and devices');
  }
  my @bad;
  for my $line (split /\n/, $info) {
    my @f = split ' ', $line;
    my ($point, $opts) = ($f[4], $f[5]);
    next unless $point =~ m{^(/usr|/workspace|/tmp|/bin|/lib|/lib64|/sbin)$};
    push @bad, "$point($opts)" unless $opts =~ /\bnosuid\b/ && $opts =~ /\bnodev\b/;
  }
  return (!@bad, @bad ? 'missing nosuid/nodev: ' . join(' ', @bad) : '/usr, /workspace and /tmp are nosuid,nodev');
});

# --- system calls -------------------------------------------------------------------------

# Refused means blocked before the kernel looked at the arguments: EPERM (the seccomp filter,
# or no capability) or ENOSYS (not implemented, as in gVisor). The arguments given are invalid
# on purpose, so a call that got through fails with EFAULT or EINVAL and the probe fails.
sub refused {
  my ($name, @args) = @_;
  my ($r, $errno, $text) = sys($name, @args);
  return ($r == -1 && ($errno == 1 || $errno == 38), "$name: " . ($r == -1 ? $text : "returned $r"));
}

probe('mount-refused', sub { refused('mount', my $a = 'none', my $b = '/tmp', my $c = 'tmpfs', 0, 0) });
probe('umount-refused', sub { refused('umount2', my $a = '/proc', 2) });
probe('pivot-root-refused', sub { refused('pivot_root', my $a = '/tmp', my $b = '/tmp') });
probe('unshare-refused', sub {
  my @flags = (0x10000000, 0x40000000, 0x20000, 0x20000000);    # NEWUSER NEWNET NEWNS NEWPID
  my @allowed = grep { (sys('unshare', $_))[0] != -1 } @flags;
  return (!@allowed, @allowed ? 'unshare allowed for ' . join(',', map { sprintf '0x%x', $_ } @allowed) : 'unshare(NEWUSER|NEWNET|NEWNS|NEWPID): refused');
});
probe('setns-refused', sub {
  open(my $fh, '<', '/proc/self/ns/net') or return (1, 'no /proc/self/ns/net');
  return refused('setns', fileno($fh), 0);
});
probe('clone-namespace-refused', sub {
  # clone(CLONE_NEWUSER|SIGCHLD) with no new stack: if it succeeded the child exits at once.
  my ($r, $errno, $text) = sys('clone', 0x10000000 | 17, 0, 0, 0, 0);
  if ($r == 0) { POSIX::_exit(0); }
  waitpid($r, 0) if $r > 0;
  return ($r == -1, 'clone(CLONE_NEWUSER): ' . ($r == -1 ? $text : 'created a child'));
});
probe('clone3-enosys', sub {
  my ($r, $errno, $text) = sys('clone3', 0, 0);
  return ($r == -1 && $errno == 38, "clone3: $text");
});
probe('keyctl-refused', sub { refused('keyctl', 0, -3, 0) });     # KEYCTL_GET_KEYRING_ID(@s)
probe('add-key-refused', sub { refused('add_key', my $a = 'user', my $b = 'airlock', my $c = 'x', 1, -3) });
probe('bpf-refused', sub { refused('bpf', 0, 0, 0) });
probe('ptrace-refused', sub { refused('ptrace', 0, 0, 0, 0) });   # PTRACE_TRACEME
probe('process-vm-refused', sub { refused('process_vm_readv', 1, 0, 0, 0, 0, 0) });
probe('userfaultfd-refused', sub { refused('userfaultfd', 1) });  # UFFD_USER_MODE_ONLY
probe('io-uring-refused', sub { refused('io_uring_setup', 1, 0) });
probe('perf-event-refused', sub { refused('perf_event_open', 0, 0, -1, -1, 0) });
probe('kernel-module-refused', sub {
  my @ok = grep { ($_->[0]) != -1 } ([sys('init_module', 0, 0, my $a = '')], [sys('finit_module', -1, my $b = '', 0)], [sys('delete_module', my $c = 'airlock', 0)]);
  return (!@ok, @ok ? 'a module call succeeded' : 'init_module, finit_module, delete_module refused');
});
probe('kexec-refused', sub { refused('kexec_load', 0, 0, 0, 0) });
probe('open-by-handle-refused', sub { refused('open_by_handle_at', -100, 0, 0) });
probe('tiocsti-refused', sub {
  # TIOCSTI on stdin (not a terminal): ENOTTY if it reached the tty layer, EPERM from the filter;
  # the second form sets a high bit the kernel ignores (the ioctl command is 32 bits).
  my ($r1, $e1, $t1) = sys('ioctl', 0, 0x5412, 0);
  my ($r2, $e2, $t2) = sys('ioctl', 0, 0x100005412, 0);
  return ($r1 == -1 && $e1 == 1 && $r2 == -1 && $e2 == 1, "TIOCSTI: $t1; TIOCSTI|1<<32: $t2");
});

probe('socket-families-limited', sub {
  # AF_VSOCK (40) reaches the hypervisor; AF_PACKET (17) and AF_ALG (38) are kernel surface a
  # build does not need. EPERM is the filter; EAFNOSUPPORT would mean the call got through.
  my @open;
  for my $family (40, 17, 38, 30) {
    $! = 0;
    if (socket(my $s, $family, SOCK_STREAM, 0)) { push @open, $family; next }
    push @open, "$family($!)" unless $! + 0 == 1;
  }
  socket(my $inet, PF_INET, SOCK_STREAM, 0) or push @open, "AF_INET refused: $!";
  return (!@open, @open ? 'not refused by the filter: ' . join(' ', @open) : 'vsock, packet, alg, tipc refused; inet works');
});

probe('inotify-mqueue-refused', sub {
  # Both are charged to the host root user, whatever the job's user: one job could use up the host's.
  my ($ri, $ei, $ti) = sys('inotify_init1', 0);
  my ($rm, $em, $tm) = sys('mq_open', my $name = 'airlock-probe', 0x40 | 2, 0600, 0);
  return ($ri == -1 && $ei == 1 && $rm == -1 && $em == 1, "inotify_init1: $ti; mq_open: $tm");
});

# --- limits ---------------------------------------------------------------------------------

probe('core-dumps-off', sub {
  my $buf = "\0" x 16;
  my ($r) = sys('getrlimit', 4, $buf);    # RLIMIT_CORE
  my ($soft, $hard) = unpack('QQ', $buf);
  return ($r == 0 && $soft == 0 && $hard == 0, "RLIMIT_CORE soft=$soft hard=$hard");
});

# --- network --------------------------------------------------------------------------------

probe('only-loopback', sub {
  my $dev = slurp('/proc/net/dev') // die "no /proc/net/dev\n";
  my @ifaces = map { /^\s*([^:\s]+):/ ? $1 : () } split /\n/, $dev;
  return ("@ifaces" eq 'lo', 'interfaces: ' . join(' ', @ifaces));
});

probe('no-route-out', sub {
  my @reached;
  for my $target (['1.1.1.1', 443], ['169.254.169.254', 80], ['10.0.0.1', 22]) {
    socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!\n";
    my $addr = sockaddr_in($target->[1], inet_aton($target->[0]));
    push @reached, "$target->[0]:$target->[1]" if connect($s, $addr);
    close $s;
  }
  my @lines = split /\n/, (slurp('/proc/net/route') // '');
  shift @lines;    # header
  my @routes = grep { /\S/ } @lines;
  return (!@reached && !@routes, (@reached ? 'connected to ' . join(' ', @reached) : 'no connection to 1.1.1.1, 169.254.169.254 (metadata), 10.0.0.1') . '; ' . scalar(@routes) . ' routes');
});

probe('no-dns', sub {
  my @addrs = gethostbyname('example.com');
  socket(my $u, PF_INET, SOCK_DGRAM, 0) or die "socket: $!\n";
  my $sent = send($u, "\0" x 12, 0, sockaddr_in(53, inet_aton('8.8.8.8')));
  return (!@addrs && !defined $sent, (@addrs ? 'example.com resolved' : 'example.com does not resolve') . '; ' . (defined $sent ? 'UDP to 8.8.8.8:53 sent' : "UDP to 8.8.8.8:53: $!"));
});

print "DONE\n";

#!/usr/bin/perl
# Airlock's host helper (docs/decisions/0012-host-helper.md): does the sandbox engine's host
# work for the Node.js process that started it. Node.js starts a process by forking itself,
# which costs in proportion to its memory (about 3 ms from a 100 MiB worker); this process is
# a few MiB, and makes disks with system calls instead of starting a tool for each step.
# A Node.js process runs two of them: one for processes and deadlines, one for disks (a disk
# operation may block for a while, and must never hold up a job's output or a deadline).
# Only modules of perl-base (present on every Debian and Ubuntu system) are used.
#
# Requests on stdin, each framed as its length in bytes (decimal), a newline, then the fields
# separated by NUL bytes (fields cannot contain NUL: paths, argv and environment cannot):
#   spawn  ID SETSID FILE ARGC ARG... NAME=VALUE...   start FILE with argv ARG..., that
#                                                     environment, stdin from /dev/null
#   kill   ID SIGNAL GROUP                            KILL, TERM, INT or HUP; GROUP 1: its group
#   disk   ID IMAGE BYTES MOUNTPOINT                  allocate the (existing, empty) image in
#       full, format it ext4 by writing the metadata of a filesystem of that size made once
#       with mkfs.ext4 and laid out for a job (see lay_out), and mount it on a loop device
#       (nosuid, nodev, noatime; the device is freed when it is unmounted)
#   unmount ID PATH      unmount PATH, then remove it (an empty directory once unmounted)
#   arm    ID DIR MS     a job's deadline: MS from now every process listed under the job's
#       cgroup directory DIR is killed (cgroup.kill where there is one, then SIGKILL to each
#       PID until none is left); this survives the Node.js process
#   disarm ID WATCH      the deadline armed by request WATCH is not needed
# Reports on stdout, a JSON object a line, "out" followed by raw bytes:
#   {"t":"spawned","id":N,"pid":P}
#   {"t":"failed","id":N,"errno":CODE,"message":TEXT}     the process could not be started
#   {"t":"out","id":N,"s":1|2,"n":BYTES}\n then BYTES bytes of its stdout (1) or stderr (2)
#   {"t":"exit","id":N,"code":C|null,"signal":NAME|null}  after it was reaped and both of its
#                                                          pipes reached end of file
#   {"t":"done","id":N}  or  {"t":"failed","id":N,"errno":CODE,"step":STEP,"message":TEXT}
#                        for disk, unmount, arm and disarm
# Arguments are passed as argv, never through a shell. When stdin ends (the Node.js process
# is gone) the helper keeps draining and reaping what it started and keeps every armed
# deadline, then exits; the next sweep removes the rest. A request it cannot read ends it.
use strict;
use warnings;
use Config;
use Errno qw(EINTR EAGAIN ENOENT);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK O_RDWR O_RDONLY O_NOFOLLOW SEEK_SET);
use POSIX qw(WNOHANG);

# Nothing the Node.js process may have inherited reaches the processes started here.
POSIX::close($_) for 3 .. 1023;

# System calls made by number (x86-64 and arm64 only; checked by Airlock before it starts).
my %syscalls = (
  x86_64  => { fallocate => 285, mount => 165, umount2 => 166, clock_gettime => 228, prctl => 157 },
  aarch64 => { fallocate => 47,  mount => 40,  umount2 => 39,  clock_gettime => 113, prctl => 167 },
);
my ($arch) = ($Config{archname} =~ /\A(x86_64|aarch64)/);
my $SYS = defined $arch ? $syscalls{$arch} : undef;

# CLOCK_MONOTONIC (1) through clock_gettime(2) (Time::HiRes is not part of perl-base), chosen
# once: a clock that changed between two readings would make a deadline fire at once or never.
my $MONOTONIC = do {
  my $timespec = "\0" x 16;
  $SYS && syscall($SYS->{clock_gettime}, 1, $timespec) == 0;
};
sub now {
  return time() unless $MONOTONIC;
  my $timespec = "\0" x 16;
  syscall($SYS->{clock_gettime}, 1, $timespec);
  my ($seconds, $nanoseconds) = unpack('q q', $timespec);
  return $seconds + $nanoseconds / 1e9;
}

# A request is bounded: argv and environment of a host command, never job data.
my $MAX_REQUEST = 1 << 20;

$SIG{PIPE} = 'IGNORE';
my ($wake_r, $wake_w);
pipe($wake_r, $wake_w) or die "pipe: $!";
nonblocking($wake_r);
nonblocking($wake_w);
$SIG{CHLD} = sub { syswrite($wake_w, 'x') };

my %by_id;     # id => { pid, out => fh, err => fh, open => pipes not at EOF, status => [code, signal] }
my %by_pid;    # pid => id
my %reading;   # fileno => [id, stream, fh]
my $input = '';
my $stdin_open = 1;
my $output = '';    # reports not yet written (stdout may be slower than the children)
nonblocking(\*STDIN);
nonblocking(\*STDOUT);
binmode STDIN;
binmode STDOUT;

sub nonblocking {
  my ($fh) = @_;
  my $flags = fcntl($fh, F_GETFL, 0) or die "fcntl: $!";
  fcntl($fh, F_SETFL, $flags | O_NONBLOCK) or die "fcntl: $!";
}

# Reports are flat objects: these keys hold integers, every other key a string (or null).
my %NUMERIC = map { $_ => 1 } qw(id pid s n code);

sub json_string {
  my ($text) = @_;
  $text =~ s/([\\"])/\\$1/g;
  # Control characters and bytes past ASCII (a path in a message) as \u00XX.
  $text =~ s/([\x00-\x1f\x7f-\xff])/sprintf('\\u%04x', ord $1)/ge;
  return qq("$text");
}

sub report {
  my ($message, $bytes) = @_;
  # Once the Node.js process is gone nobody reads reports: drop them.
  return unless defined fileno(STDOUT);
  # A report line stays short (Node.js refuses a longer one): messages are cut.
  $message->{message} = substr($message->{message}, 0, 400) . '…' if defined $message->{message} && length($message->{message}) > 400;
  my @fields;
  for my $key (sort keys %$message) {
    my $value = $message->{$key};
    my $encoded = !defined $value ? 'null'
      : $NUMERIC{$key} ? sprintf('%d', $value)
      : json_string("$value");
    push @fields, json_string($key) . ':' . $encoded;
  }
  $output .= '{' . join(',', @fields) . "}\n";
  $output .= $bytes if defined $bytes;
}

sub flush_output {
  return unless defined fileno(STDOUT);
  while (length $output) {
    my $n = syswrite(STDOUT, $output);
    if (!defined $n) {
      return if $! == EAGAIN || $! == EINTR;
      # The reader is gone: nothing more can be reported.
      $output = '';
      close STDOUT;
      return;
    }
    substr($output, 0, $n, '');
  }
}

my @signal_names = split ' ', $Config{sig_name};

sub signal_name {
  my ($number) = @_;
  return defined $signal_names[$number] ? "SIG$signal_names[$number]" : "SIG$number";
}

sub start {
  my ($request) = @_;
  my $id = $request->{id};
  my ($out_r, $out_w, $err_r, $err_w, $status_r, $status_w);
  pipe($out_r, $out_w) or return report({ t => 'failed', id => $id, errno => 'EMFILE', message => "pipe: $!" });
  pipe($err_r, $err_w) or return report({ t => 'failed', id => $id, errno => 'EMFILE', message => "pipe: $!" });
  pipe($status_r, $status_w) or return report({ t => 'failed', id => $id, errno => 'EMFILE', message => "pipe: $!" });
  my $helper = $$;
  my $pid = fork();
  if (!defined $pid) {
    return report({ t => 'failed', id => $id, errno => 'EAGAIN', message => "fork: $!" });
  }
  if ($pid == 0) {
    # The child: default signal handling (an ignored signal would stay ignored across exec),
    # its own session if asked, the pipes as 0, 1 and 2, nothing else open (Perl opens every
    # descriptor above 2 close-on-exec).
    $SIG{$_} = 'DEFAULT' for qw(PIPE CHLD INT TERM HUP QUIT);
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), POSIX::SigSet->new());
    POSIX::setsid() if $request->{setsid};
    # It dies with the helper (PR_SET_PDEATHSIG, SIGKILL): a runtime whose helper is gone is
    # unsupervised, and Airlock then removes what it started. (Its own children are not
    # affected: a container that is already running is killed by Airlock from its cgroup.)
    syscall($SYS->{prctl}, 1, 9) if $SYS;
    # The helper may have died between the fork and the line above.
    POSIX::_exit(126) if getppid() != $helper;
    open(STDIN, '<', '/dev/null') or POSIX::_exit(126);
    open(STDOUT, '>&', $out_w) or POSIX::_exit(126);
    open(STDERR, '>&', $err_w) or POSIX::_exit(126);
    %ENV = %{ $request->{env} };
    my @argv = @{ $request->{argv} };
    my $file = $request->{file};
    { no warnings 'exec'; exec { $file } @argv; }
    my $errno = ($! + 0);
    syswrite($status_w, pack('N', $errno));
    POSIX::_exit(127);
  }
  close $out_w;
  close $err_w;
  close $status_w;
  # Did exec succeed? The status pipe closes on exec (close-on-exec) or carries its errno.
  my $buffer = '';
  while (1) {
    my $n = sysread($status_r, $buffer, 4, length $buffer);
    next if !defined $n && $! == EINTR;
    last;
  }
  close $status_r;
  if (length($buffer) == 4) {
    local $! = unpack('N', $buffer);
    my $message = "$!";
    my %codes = (2 => 'ENOENT', 13 => 'EACCES', 8 => 'ENOEXEC', 20 => 'ENOTDIR');
    # The child exits 127 at once; it is reaped with the others and not reported.
    $by_pid{$pid} = undef;
    close $out_r;
    close $err_r;
    return report({ t => 'failed', id => $id, errno => $codes{ unpack('N', $buffer) } // 'EIO', message => $message });
  }
  nonblocking($out_r);
  nonblocking($err_r);
  $by_id{$id} = { pid => $pid, leader => ($request->{setsid} ? $pid : undef), out => $out_r, err => $err_r, open => 2 };
  $by_pid{$pid} = $id;
  $reading{ fileno $out_r } = [ $id, 1, $out_r ];
  $reading{ fileno $err_r } = [ $id, 2, $err_r ];
  report({ t => 'spawned', id => $id, pid => $pid });
}

sub finish_if_done {
  my ($id) = @_;
  my $child = $by_id{$id} or return;
  return if $child->{open} > 0 || !defined $child->{status};
  my ($code, $signal) = @{ $child->{status} };
  delete $by_id{$id};
  report({ t => 'exit', id => $id, code => $code, signal => $signal });
}

sub reap {
  while ((my $pid = waitpid(-1, WNOHANG)) > 0) {
    my $status = $?;
    next unless exists $by_pid{$pid};
    my $id = delete $by_pid{$pid};
    next unless defined $id && $by_id{$id};
    $by_id{$id}{pid} = undef;
    $by_id{$id}{status} = ($status & 127)
      ? [ undef, signal_name($status & 127) ]
      : [ $status >> 8, undef ];
    finish_if_done($id);
  }
}

# --- job disks (docs/decisions/0001 and 0012) -----------------------------------------------

use constant {
  LOOP_CTL_GET_FREE => 0x4C82,
  LOOP_CONFIGURE    => 0x4C0A,
  LO_FLAGS_AUTOCLEAR => 4,
  MS_NOSUID => 2, MS_NODEV => 4, MS_NOATIME => 1024,
};
my %errno_names;
for my $name (@Errno::EXPORT_OK) {
  my $value = eval { no strict 'refs'; &{"Errno::$name"}() };
  $errno_names{$value} //= $name if defined $value;
}
my %templates;    # disk size => [[offset, bytes], ...]: what mkfs.ext4 wrote
my $MKFS = '/sbin/mkfs.ext4';
for my $dir (qw(/usr/sbin /sbin /usr/bin /bin)) {
  if (-x "$dir/mkfs.ext4") { $MKFS = "$dir/mkfs.ext4"; last }
}

sub disk_error {
  my ($step, $what) = @_;
  my $code = $! + 0;
  return { errno => $errno_names{$code} // 'EIO', step => $step, message => "$what: $!" };
}

# mkfs.ext4 on a file. No journal (the disk is thrown away), no reserved blocks, inode tables
# initialised lazily and never zeroed (noinit_itable at mount). Returns its wait status.
sub run_mkfs {
  my ($path) = @_;
  my $pid = fork();
  return undef unless defined $pid;
  if ($pid == 0) {
    $SIG{$_} = 'DEFAULT' for qw(PIPE CHLD);
    open(STDIN, '<', '/dev/null');
    open(STDOUT, '>', '/dev/null');
    # Its messages would mix with the helper's own (which explain the helper's death).
    open(STDERR, '>', '/dev/null');
    %ENV = (PATH => '/usr/sbin:/usr/bin:/sbin:/bin', LANG => 'C');
    { no warnings 'exec';
      exec { $MKFS } 'mkfs.ext4', '-q', '-F', '-O', '^has_journal', '-m', '0',
        '-E', 'lazy_itable_init=1,nodiscard,root_owner=0:0', $path; }
    POSIX::_exit(127);
  }
  while (1) {
    my $got = waitpid($pid, 0);
    return $? if $got == $pid;
    next if $got == -1 && $! == EINTR;
    return undef;
  }
}

# A job's disk as Airlock hands it out: its root closed to everyone but root (0700), work/
# and tmp/ made and closed (0700, root's until the engine gives them to the job's user), no
# lost+found (a fresh one is empty, and nothing ever checks these disks).
sub lay_out {
  my ($root) = @_;
  chmod(0700, $root) or return disk_error('format', "chmod $root");
  for my $name (qw(work tmp)) {
    mkdir("$root/$name", 0700) or return disk_error('format', "mkdir $root/$name");
    chmod(0700, "$root/$name") or return disk_error('format', "chmod $root/$name");
  }
  rmdir("$root/lost+found") or $! == ENOENT or return disk_error('format', "rmdir $root/lost+found");
  return undef;
}

# What a fresh ext4 of this size consists of: formatted once into a sparse file next to the
# first image of that size and laid out for a job (mounted once on the job's mount point for
# that), the ranges written are kept (about 600 KiB for 1 GiB). Every disk of that size is
# then the same laid-out filesystem, with no file operation on it before the job. Undef when
# the filesystem's metadata is too large to keep (a very large disk): then each disk of that
# size is formatted by mkfs.ext4 itself and laid out after its mount.
my $MAX_TEMPLATE = 16 << 20;
my $MAX_TEMPLATES = 4;
sub template_for {
  my ($bytes, $near, $mount_point) = @_;
  return $templates{$bytes} if exists $templates{$bytes};
  my $path = "$near.template";
  unlink $path;
  sysopen(my $fh, $path, O_RDWR | Fcntl::O_CREAT() | Fcntl::O_EXCL() | O_NOFOLLOW, 0600)
    or return (undef, disk_error('format', 'cannot create the template'));
  truncate($fh, $bytes) or do { unlink $path; return (undef, disk_error('format', 'cannot size the template')) };
  close $fh;
  my $status = run_mkfs($path);
  if (defined $status && $status == 0) {
    # Laid out through the kernel's own ext4, on the job's mount point (where a crash leaves
    # nothing the sweep does not already unmount).
    my $failure;
    if (sysopen(my $template, $path, O_RDWR | O_NOFOLLOW)) {
      $failure = attach_and_mount($template, $path, $mount_point);
      close $template;
      if (!$failure) {
        $failure = lay_out($mount_point);
        syscall($SYS->{umount2}, $mount_point, 8) == 0
          or $failure //= disk_error('format', "umount the template from $mount_point");
      }
    } else {
      $failure = disk_error('format', 'cannot open the template');
    }
    if ($failure) { unlink $path; return (undef, $failure) }
  }
  my @ranges;
  my $total = 0;
  if (defined $status && $status == 0 && sysopen(my $read, $path, O_RDONLY | O_NOFOLLOW)) {
    my $offset = 0;
    # SEEK_DATA (3) and SEEK_HOLE (4): the ranges mkfs.ext4 wrote.
    while ($offset < $bytes && $total <= $MAX_TEMPLATE) {
      my $data = sysseek($read, $offset, 3);
      last unless defined $data;
      my $hole = sysseek($read, $data, 4);
      last unless defined $hole && $hole > $data;
      my $want = $hole - $data;
      $total += $want;
      last if $total > $MAX_TEMPLATE;
      my $chunk = '';
      sysseek($read, $data, SEEK_SET);
      while (length($chunk) < $want) {
        my $n = sysread($read, $chunk, $want - length($chunk), length $chunk);
        last unless $n;
      }
      push @ranges, [ $data + 0, $chunk ];
      $offset = $hole;
    }
    close $read;
  }
  unlink $path;
  if (!defined $status || $status != 0 || !@ranges) {
    return (undef, { errno => 'EIO', step => 'format', message => 'mkfs.ext4 failed (wait status ' . ($status // 'none') . ')' });
  }
  # A few sizes are kept; jobs with other sizes make their own.
  delete $templates{ (keys %templates)[0] } while keys(%templates) >= $MAX_TEMPLATES;
  $templates{$bytes} = $total > $MAX_TEMPLATE ? undef : \@ranges;
  return ($templates{$bytes});
}

sub make_disk {
  my ($request) = @_;
  return { errno => 'ENOSYS', step => 'allocate', message => "no system call numbers for $Config{archname}" } unless $SYS;
  my ($image, $bytes, $mount_point) = @{$request}{qw(image bytes mountPoint)};
  return { errno => 'EINVAL', step => 'allocate', message => 'bad disk request' }
    unless defined $image && defined $mount_point && defined $bytes && $bytes =~ /\A[1-9][0-9]{0,15}\z/;
  # The image was created empty by Airlock (0600, O_EXCL); never follow a link to it.
  sysopen(my $fh, $image, O_RDWR | O_NOFOLLOW) or return disk_error('allocate', 'cannot open the image');
  # Allocated in full: the host's free space is reserved before the job starts.
  syscall($SYS->{fallocate}, fileno($fh), 0, 0, $bytes + 0) == 0
    or return disk_error('allocate', 'fallocate');
  my ($ranges, $failure) = template_for($bytes + 0, $image, $mount_point);
  return $failure if $failure;
  if (!$ranges) {
    my $status = run_mkfs($image);
    return { errno => 'EIO', step => 'format', message => 'mkfs.ext4 failed (wait status ' . ($status // 'none') . ')' }
      unless defined $status && $status == 0;
  }
  for my $range (@{ $ranges // [] }) {
    my ($offset, $chunk) = @$range;
    sysseek($fh, $offset, SEEK_SET) or return disk_error('format', 'seek');
    my $written = 0;
    while ($written < length $chunk) {
      my $n = syswrite($fh, $chunk, length($chunk) - $written, $written);
      return disk_error('format', 'write') unless defined $n && $n > 0;
      $written += $n;
    }
  }
  my $error = attach_and_mount($fh, $image, $mount_point);
  close $fh;
  return $error if $error;
  # A disk formatted by mkfs.ext4 itself is laid out now; one from a template already is.
  return $ranges ? undef : lay_out($mount_point);
}

# Mounts the image open on $fh on $mount_point through a free loop device, configured in one
# step (Linux 5.8+) to free itself once unmounted. Undef, or the failure.
sub attach_and_mount {
  my ($fh, $image, $mount_point) = @_;
  # Another process may take the same device first (EBUSY): then the next free one.
  my $control;
  sysopen($control, '/dev/loop-control', O_RDWR) or return disk_error('mount', 'cannot open /dev/loop-control');
  my ($loop, $device);
  for my $attempt (1 .. 20) {
    my $number = ioctl($control, LOOP_CTL_GET_FREE, 0);
    return disk_error('mount', 'no free loop device') unless defined $number;
    $device = '/dev/loop' . ($number + 0);
    sysopen($loop, $device, O_RDWR) or return disk_error('mount', "cannot open $device");
    my $name = substr($image, 0, 63);
    my $config = pack('L L Q5 L4 a64 a64 a32 Q2 Q8',
      fileno($fh), 0, 0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR, $name, '', '', 0, 0, (0) x 8);
    last if ioctl($loop, LOOP_CONFIGURE, $config);
    my $error = disk_error('mount', "cannot configure $device");
    # LOOP_CONFIGURE came with Linux 5.8: older kernels answer ENOTTY or EINVAL.
    $error->{message} .= ' (Airlock needs Linux 5.8 or later: LOOP_CONFIGURE)'
      if $error->{errno} eq 'ENOTTY' || $error->{errno} eq 'EINVAL';
    close $loop;
    undef $loop;
    return $error unless $error->{errno} eq 'EBUSY' && $attempt < 20;
  }
  close $control;
  my $flags = MS_NOSUID | MS_NODEV | MS_NOATIME;
  # (syscall() needs writable strings, not literals.)
  my ($fstype, $options) = ('ext4', 'noinit_itable');
  my $ok = syscall($SYS->{mount}, $device, $mount_point, $fstype, $flags, $options) == 0;
  my $error = $ok ? undef : disk_error('mount', "mount $device on $mount_point");
  # Closing the last descriptor of an auto-clearing device that is not mounted frees it; a
  # mounted one is freed when it is unmounted.
  close $loop;
  return $error;
}

sub unmount {
  my ($request) = @_;
  return { errno => 'ENOSYS', step => 'unmount', message => "no system call numbers for $Config{archname}" } unless $SYS;
  my $path = $request->{path};
  return { errno => 'EINVAL', step => 'unmount', message => 'no path' } unless defined $path;
  # UMOUNT_NOFOLLOW (8): the path's last component is not followed if it is a link.
  return disk_error('unmount', "umount $path") unless syscall($SYS->{umount2}, $path, 8) == 0;
  # The mount point, empty once unmounted, goes too (here rather than in Node.js: removing a
  # directory that was just a mount point can wait a while on the kernel).
  rmdir($path) or $! == ENOENT or return disk_error('unmount', "rmdir $path");
  return undef;
}

# --- watchdogs ---------------------------------------------------------------------------

my %watches;    # id => { dir, due (monotonic seconds), strikes }
my $MAX_WATCHES = 65536;

# The PIDs listed in every cgroup.procs below $dir (a job's cgroup may have children).
sub cgroup_pids {
  my ($dir) = @_;
  my @pids;
  my @stack = ($dir);
  while (@stack) {
    my $current = pop @stack;
    opendir(my $dh, $current) or next;
    for my $name (readdir $dh) {
      next if $name eq '.' || $name eq '..';
      my $path = "$current/$name";
      if ($name eq 'cgroup.procs') {
        open(my $fh, '<', $path) or next;
        push @pids, grep { /\A[0-9]+\z/ } map { chomp; $_ } <$fh>;
      } elsif (!-l $path && -d _) {
        push @stack, $path;
      }
    }
  }
  return @pids;
}

# A due watchdog strikes: the whole cgroup is killed, again every 100 ms (for 10 s at most)
# until no process is left in it.
sub strike {
  my ($id) = @_;
  my $watch = $watches{$id};
  if ($watch->{strikes} == 0 && -e "$watch->{dir}/cgroup.kill") {
    if (open(my $fh, '>', "$watch->{dir}/cgroup.kill")) { print $fh "1\n"; close $fh }
  }
  my @pids = cgroup_pids($watch->{dir});
  $watch->{strikes} += 1;
  if (!@pids || $watch->{strikes} > 100) {
    delete $watches{$id};
    return;
  }
  kill 'KILL', @pids;
  $watch->{due} = now() + 0.1;
}

sub strike_due {
  my $time = now();
  for my $id (keys %watches) {
    strike($id) if $watches{$id}{due} <= $time;
  }
}

sub next_due_in {
  my $next = 1;
  my $time = now();
  for my $watch (values %watches) {
    my $in = $watch->{due} - $time;
    $next = $in if $in < $next;
  }
  return $next < 0 ? 0 : $next;
}

# A request Airlock never sends: the stream cannot be trusted any more, so the helper ends
# (Node.js sees it die and fails what it ran).
sub refuse {
  my ($why) = @_;
  print STDERR "airlock host helper: $why\n";
  # What was already reported (a process started) reaches Node.js before the helper ends.
  if (defined fileno(STDOUT) && length $output) {
    my $flags = fcntl(STDOUT, F_GETFL, 0);
    fcntl(STDOUT, F_SETFL, $flags & ~O_NONBLOCK) if $flags;
    while (length $output) {
      my $n = syswrite(STDOUT, $output);
      last unless $n;
      substr($output, 0, $n, '');
    }
  }
  exit 70;
}

sub handle {
  my ($payload) = @_;
  my @fields = split /\0/, $payload, -1;
  my ($op, $id) = splice(@fields, 0, 2);
  refuse('a request without an id') unless defined $id && $id =~ /\A[0-9]{1,15}\z/;
  $id = $id + 0;
  if ($op eq 'spawn') {
    my ($setsid, $file, $argc) = splice(@fields, 0, 3);
    refuse('a bad spawn request')
      unless defined $argc && $argc =~ /\A[0-9]{1,5}\z/ && $argc <= @fields && length $file && !$by_id{$id};
    my @argv = splice(@fields, 0, $argc);
    my %env;
    for my $pair (@fields) {
      my ($name, $value) = split /=/, $pair, 2;
      refuse('a bad environment entry') unless defined $value && length $name;
      $env{$name} = $value;
    }
    start({ id => $id, setsid => $setsid eq '1', file => $file, argv => \@argv, env => \%env });
  } elsif ($op eq 'disk' || $op eq 'unmount') {
    refuse("a bad $op request") unless @fields == ($op eq 'disk' ? 3 : 1);
    my $failure = $op eq 'disk'
      ? make_disk({ image => $fields[0], bytes => $fields[1], mountPoint => $fields[2] })
      : unmount({ path => $fields[0] });
    report($failure ? { t => 'failed', id => $id, %$failure } : { t => 'done', id => $id });
  } elsif ($op eq 'arm') {
    my ($dir, $ms) = @fields;
    refuse('a bad arm request') unless @fields == 2 && length $dir && $ms =~ /\A[0-9]{1,12}\z/;
    if (keys(%watches) >= $MAX_WATCHES) {
      return report({ t => 'failed', id => $id, errno => 'EAGAIN', step => 'arm', message => 'too many deadlines' });
    }
    $watches{$id} = { dir => $dir, due => now() + $ms / 1000, strikes => 0 };
    report({ t => 'done', id => $id });
  } elsif ($op eq 'disarm') {
    refuse('a bad disarm request') unless @fields == 1;
    delete $watches{ $fields[0] };
    report({ t => 'done', id => $id });
  } elsif ($op eq 'kill') {
    my ($name, $group) = @fields;
    refuse('a bad kill request') unless @fields == 2 && $name =~ /\A(?:KILL|TERM|INT|HUP)\z/;
    my $child = $by_id{$id} or return;
    if ($group eq '1' && defined $child->{leader}) {
      # Its group (it was started in a session of its own), only while the leader is not
      # reaped: afterwards the group's number could name another group. (What the leader left
      # behind in the job's cgroup is killed from the cgroup.)
      kill($name, -$child->{leader}) if defined $child->{pid};
    } elsif (defined $child->{pid}) {
      # Only a process not yet reaped is signalled: its PID cannot have been reused.
      kill($name, $child->{pid});
    }
  } else {
    refuse('an unknown request');
  }
}

while ($stdin_open || %by_id || keys %by_pid || %watches) {
  my ($rin, $win) = ('', '');
  vec($rin, fileno($wake_r), 1) = 1;
  vec($rin, fileno(STDIN), 1) = 1 if $stdin_open;
  # Back-pressure: while Node.js has not taken 8 MiB of reports, the children wait.
  if (length($output) < (8 << 20)) { vec($rin, $_, 1) = 1 for keys %reading }
  vec($win, fileno(STDOUT), 1) = 1 if length $output && defined fileno(STDOUT);
  my $ready = select(my $rout = $rin, my $wout = $win, undef, next_due_in());
  if (!defined $ready || $ready < 0) {
    if ($! == EINTR) { strike_due(); next }
    die "select: $!";
  }
  if (vec($rout, fileno($wake_r), 1)) {
    1 while sysread($wake_r, my $drain, 256);
  }
  reap();
  if ($stdin_open && vec($rout, fileno(STDIN), 1)) {
    my $n = sysread(STDIN, $input, 65536, length $input);
    if (defined $n && $n == 0) {
      $stdin_open = 0;
      # Without its Node.js process nothing reads reports.
      $output = '';
      close STDOUT;
    } elsif (defined $n) {
      # Whole frames only: "LENGTH\n" then LENGTH bytes.
      while ((my $end = index($input, "\n")) >= 0) {
        my $length = substr($input, 0, $end);
        refuse('a bad frame') unless $length =~ /\A[0-9]{1,7}\z/ && $length <= $MAX_REQUEST;
        last if length($input) < $end + 1 + $length;
        substr($input, 0, $end + 1, '');
        handle(substr($input, 0, $length, ''));
      }
      refuse('a bad frame') if index($input, "\n") < 0 && length($input) > 16;
    }
  }
  for my $fd (keys %reading) {
    next unless vec($rout // '', $fd, 1);
    my ($id, $stream, $fh) = @{ $reading{$fd} };
    my $n = sysread($fh, my $chunk, 65536);
    next if !defined $n && ($! == EAGAIN || $! == EINTR);
    if (!$n) {
      delete $reading{$fd};
      close $fh;
      $by_id{$id}{open} -= 1 if $by_id{$id};
      finish_if_done($id);
      next;
    }
    report({ t => 'out', id => $id, s => $stream, n => $n }, $chunk);
  }
  reap();
  strike_due();
  flush_output();
}
exit 0;

package Test::WSGI;

# Helpers shared by the ngx_http_wsgi_module tests (t/*.t).  Kept apart
# from Test::Nginx so that the tests also run with upstream's Test::Nginx.
# Every wait here is bounded.

###############################################################################

use warnings;
use strict;

use Exporter qw/ import /;
use IO::Select;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ http http_get http_content /;

our @EXPORT_OK = qw/ worker_shutting_down slurp poll wait_file wait_glob wait_log read_until
	state_dir worker_pid rss_kb fd_count wsgi_status http_post
	http_post_chunked pattern_body reload_wait wait_stall load_test_build /;

# TEST_WSGI_TIME_FACTOR (default 1) stretches every wait below, for runs
# where nginx is slow on purpose (scripts/memcheck runs it under valgrind)
our $FACTOR = $ENV{TEST_WSGI_TIME_FACTOR} || 1;

###############################################################################

# a test file that needs a test build of the module (panic-inject,
# test-hooks: scripts/test builds it and names it in the environment
# variable $var) loads it instead of the suite's module; without it the
# whole file skips, naming what it needs
sub load_test_build {
	my ($var, $what) = @_;
	my $module = $ENV{$var};
	Test::More::plan(skip_all => "$var not set (a $what build)")
		unless $module && -f $module;
	$ENV{TEST_NGINX_GLOBALS} = ($ENV{TEST_NGINX_GLOBALS} // '')
		=~ s/load_module\s+[^;]*ngx_http_wsgi_module[^;]*;//r;
	$ENV{TEST_NGINX_GLOBALS} .= " load_module $module;";
	return $module;
}

# the whole content of $file, or '' if it cannot be read
sub slurp {
	my ($file) = @_;
	open my $fh, '<', $file or return '';
	local $/;
	return scalar(<$fh>) // '';
}

# poll a count the app writes to $file (bytes yielded, say) until it stays the same for 5 checks 0.1 s
# apart (bounded: 30 s); returns (stalled, bytes)
sub wait_stall {
	my ($file) = @_;
	my ($last, $same, $end) = (-1, 0, time + 30);
	while (time < $end) {
		my $v = slurp($file);
		$v = 0 unless length $v;
		if ($v == $last && $v > 0) {
			return (1, $v) if ++$same >= 5;
		} else {
			($last, $same) = ($v, 0);
		}
		sleep 0.1;
	}
	return (0, $last);
}

# call $cond until it returns true, for up to $secs (default 15) seconds
sub poll {
	my ($cond, $secs) = @_;
	my $end = time + ($secs || 15) * $FACTOR;
	while (time < $end) {
		return 1 if $cond->();
		sleep 0.01;
	}
	return $cond->() ? 1 : 0;
}

# wait up to $secs (default 10) seconds for $file to exist
sub wait_file {
	my ($file, $secs) = @_;
	return poll(sub { -e $file }, $secs || 10);
}

# wait up to $secs (default 10) seconds for a file matching $pattern
sub wait_glob {
	my ($pattern, $secs) = @_;
	return poll(sub { my @m = glob($pattern); scalar @m }, $secs || 10);
}

# wait up to 10 seconds for $file, past byte $off (default 0), to match $re
sub wait_log {
	my ($file, $re, $off) = @_;
	return poll(sub { substr(slurp($file), $off || 0) =~ $re }, 10);
}

# read from socket $s until what was read matches $re, EOF, or $secs
# (default 10) seconds in all; returns what was read
sub read_until {
	my ($s, $re, $secs) = @_;
	my ($buf, $end) = ('', time + ($secs || 10) * $FACTOR);
	my $sel = IO::Select->new($s);
	while ($buf !~ $re) {
		my $left = $end - time;
		last unless $left > 0 && $sel->can_read($left);
		last unless sysread($s, $buf, 65536, length $buf);
	}
	return $buf;
}

# make $t's testdir/state writable by the workers (nobody); returns its path
sub state_dir {
	my ($t) = @_;
	my $state = $t->testdir() . '/state';
	mkdir($state);
	chmod(0777, $state);
	return $state;
}

# the pid of a worker process of $t's nginx (the only one with
# worker_processes 1), or undef
sub worker_pid {
	my ($t) = @_;
	my ($master) = slurp($t->testdir() . '/nginx.pid') =~ /(\d+)/ or return;
	opendir my $d, '/proc' or return;
	for my $pid (grep { /^\d+$/ } readdir $d) {
		my $st = slurp("/proc/$pid/stat");
		next unless $st =~ /^\d+ \(.*\) \S (\d+)/s && $1 == $master;
		my $cmd = slurp("/proc/$pid/cmdline");
		# no process titles under valgrind: any child is the worker
		return $pid if $cmd =~ /worker process/ || $cmd !~ /nginx: /;
	}
	return;
}

# live (non-zombie) children of $ppid
sub _children {
	my ($ppid) = @_;
	opendir my $d, '/proc' or return;
	return grep {
		slurp("/proc/$_/stat") =~ /^\d+ \(.*\) ([^Z]) (\d+)/s && $2 == $ppid
	} grep { /^\d+$/ } readdir $d;
}

# $t->reload() (upstream's sends SIGHUP and returns), then wait up to 30
# seconds until the new configuration serves: new workers exist and every
# old one has exited or is "shutting down" (its listening sockets are
# closed by then).  True once so; false if nginx refused the reload
# ([emerg] in the log: the old workers go on) or on the time limit.
sub reload_wait {
	my ($t) = @_;
	my $dir = $t->testdir();
	my ($master) = slurp("$dir/nginx.pid") =~ /(\d+)/ or return 0;
	my %old = map { $_ => 1 } _children($master);
	my $offset = -s "$dir/error.log" || 0;
	my $refused;

	$t->reload();

	my $done = poll(sub {
		return $refused = 1
			if substr(slurp("$dir/error.log"), $offset) =~ /\[emerg\]/;
		my @new = grep { !$old{$_} } _children($master);
		my @serving = grep { !worker_shutting_down($t, $_) } _children($master);
		return @new && !grep { $old{$_} } @serving;
	}, 30);
	return $done && !$refused;
}

# Is worker $pid of $t's nginx leaving (closed its listening sockets,
# finishing what it holds)? nginx says so in its process title, which it
# writes over its argv; under valgrind (scripts/memcheck) that argv is a
# copy and /proc/PID/cmdline keeps valgrind's command line, so the error
# log's "gracefully shutting down" notice from that pid is read instead.
sub worker_shutting_down {
	my ($t, $pid) = @_;
	my $cmd = slurp("/proc/$pid/cmdline");
	return $cmd =~ /worker process is shutting/ ? 1 : 0 if $cmd =~ /nginx: /;
	return slurp($t->testdir() . '/error.log')
		=~ /\[notice\] $pid#\d+: gracefully shutting down/ ? 1 : 0;
}

# resident set size of $pid in kB, or -1 if it cannot be read; with
# TEST_WSGI_RSS=off always 1, which makes growth checks pass: under
# valgrind (scripts/memcheck) RSS holds its queue of freed blocks (20 MB)
# and redzones, and leaks are valgrind's to find
sub rss_kb {
	my ($pid) = @_;
	return 1 if ($ENV{TEST_WSGI_RSS} // '') eq 'off';
	return slurp("/proc/$pid/status") =~ /^VmRSS:\s+(\d+) kB/m ? $1 : -1;
}

# number of open file descriptors of $pid, or -1 if it cannot be read
sub fd_count {
	my ($pid) = @_;
	opendir my $d, "/proc/$pid/fd" or return -1;
	return scalar grep { /^\d+$/ } readdir $d;
}

# body of GET /status$query (a location with wsgi_status), or ''
sub wsgi_status {
	my ($query) = @_;
	return http_content(http_get('/status' . ($query // ''))) // '';
}

# POST $body to $uri over HTTP/1.0, with extra header lines @headers
sub http_post {
	my ($uri, $body, @headers) = @_;
	my $h = join '', map { "$_\n" } @headers;
	return http(<<EOF . $body);
POST $uri HTTP/1.0
Host: localhost
${h}Content-Length: ${\ length $body }

EOF
}

# POST to $uri with a chunked body, one chunk per element of @chunks
sub http_post_chunked {
	my ($uri, @chunks) = @_;
	my $body = join '', map { sprintf("%x\r\n%s\r\n", length $_, $_) } @chunks;
	return http(<<EOF . $body . "0\r\n\r\n");
POST $uri HTTP/1.1
Host: localhost
Connection: close
Transfer-Encoding: chunked

EOF
}

# $len deterministic, non-repeating bytes
sub pattern_body {
	my ($len) = @_;
	my $s = '';
	for (my $i = 0; length $s < $len; $i++) {
		$s .= pack('N*', $i * 16384 .. $i * 16384 + 16383);
	}
	return substr($s, 0, $len);
}

###############################################################################

1;

###############################################################################

package Test::Nginx;

# Minimal, independently written replacement for the Test::Nginx module of
# the nginx-tests suite.  It implements the subset of that API which the
# ngx-wsgi tests use, with the same names, arguments and semantics, so the
# same .t files run under either library.  Core Perl modules only.
#
# Environment (same names as upstream):
#   TEST_NGINX_BINARY       nginx binary (default ../nginx/objs/nginx)
#   TEST_NGINX_GLOBALS      appended to %%TEST_GLOBALS%% (e.g. load_module)
#   TEST_NGINX_GLOBALS_HTTP appended to %%TEST_GLOBALS_HTTP%%
#   TEST_NGINX_LEAVE        keep the test directory
#   TEST_NGINX_VERBOSE      log requests/responses (to stderr)
#   TEST_NGINX_CATLOG       print error.log at the end
#   TEST_NGINX_TIMEOUT      client I/O timeout in seconds (default 8)

use warnings;
use strict;

use base qw/ Exporter /;

our @EXPORT = qw/ log_in log_out http http_get http_head port /;
our @EXPORT_OK = qw/ http_start http_end http_content
	http_gzip_request http_gzip_like /;
our %EXPORT_TAGS = (gzip => [ qw/ http_gzip_request http_gzip_like / ]);

use File::Temp qw/ tempdir /;
use IO::Select;
use IO::Socket::INET;
use POSIX qw/ WNOHANG /;
use Test::More ();
use Time::HiRes qw/ time sleep /;

our $NGINX = defined $ENV{TEST_NGINX_BINARY} ? $ENV{TEST_NGINX_BINARY}
	: '../nginx/objs/nginx';
our $TIMEOUT = $ENV{TEST_NGINX_TIMEOUT} || 8;
our %ports;          # requested port => { port => N, socket => lock }
our $TODO;           # used by Test::More while running the end check

my $configure;       # cached "nginx -V" output

###############################################################################
# construction and end-of-test checks

sub new {
	my ($class) = @_;
	my $self = bless { _pid => $$, _alerts => 1, _skip => [] },
		ref $class || $class;

	$self->{_testdir} = tempdir('nginx-test-XXXXXXXXXX', TMPDIR => 1,
		CLEANUP => !$ENV{TEST_NGINX_LEAVE})
		or die "Can't create temp directory: $!\n";

	# workers run as an unprivileged user when started as root
	chmod 0755, $self->{_testdir};

	Test::More::BAIL_OUT("no $NGINX binary found") unless -x $NGINX;

	return $self;
}

# As upstream: the end-of-test checks run when the object goes away.  A
# named sub that uses the test's $t keeps it alive until global
# destruction, after Test::More has counted the tests, and the plan comes
# out short: pass $t to such subs instead.
sub DESTROY { $_[0]->_finish() }

sub _finish {
	my ($self) = @_;
	return if $self->{_pid} != $$ or $self->{_finished}++;
	local ($?, $!, $@);

	$self->stop();
	$self->stop_daemons();

	# the extra test planned by plan(): no [alert]/[crit]/[emerg] lines
	if (Test::More->builder->expected_tests) {
		my @bad = $self->_bad_log_lines();
		local $TODO = 'alerts' unless $self->{_alerts};
		Test::More::ok(!@bad, 'no alerts')
			or Test::More::diag(join "\n", @bad);
	}

	if ($ENV{TEST_NGINX_CATLOG}) {
		print STDERR $self->_slurp('error.log');
	}
	if ($ENV{TEST_NGINX_LEAVE}) {
		Test::More::diag("Leaving test directory $self->{_testdir}");
	}
}

sub _bad_log_lines {
	my ($self) = @_;
	my @bad;

	LINE: for my $line (split /\n/, $self->_slurp('error.log')) {
		next unless $line =~ /\[(alert|crit|emerg)\]|Sanitizer/;
		my $level = $1 || '';
		for (@{$self->{_skip}}) {
			my ($lvl, $re) = @$_;
			next LINE if ($lvl eq $level || $lvl eq '') && $line =~ $re;
		}
		push @bad, $line;
	}

	return @bad;
}

# skip_errors_check($level, @regexes): error.log lines of that level
# matching any of the regexes do not fail the end check.
sub skip_errors_check {
	my ($self, $level, @res) = @_;
	push @{$self->{_skip}}, map { [ $level // '', qr/$_/ ] } @res;
	return $self;
}

# the end check is still done, but as a TODO test
sub todo_alerts {
	my ($self) = @_;
	$self->{_alerts} = 0;
	return $self;
}

# like upstream: one extra test for the end-of-run log check
sub plan {
	my ($self, $n) = @_;
	Test::More::plan(tests => $n + 1);
	return $self;
}

###############################################################################
# feature checks

sub _configure {
	$configure = `$NGINX -V 2>&1` // '' unless defined $configure;
	return $configure;
}

# modules built in unless configured --without-<name>
my %default_on = map { $_ => "--without-http_${_}_module" } qw/
	charset gzip ssi mirror userid access auth_basic autoindex geo map
	referer rewrite proxy fastcgi uwsgi scgi grpc memcached limit_conn
	limit_req empty_gif browser split_clients upstream_hash upstream_ip_hash
	upstream_least_conn upstream_random upstream_keepalive upstream_zone /;
$default_on{http} = '--without-http';
$default_on{cache} = '--without-http-cache';
$default_on{pcre} = '--without-pcre';

# modules that need --with-<flag>
my %opt_in = (
	(map { $_ => "--with-http_${_}_module" } qw/ ssl v2 v3 realip sub
		auth_request flv mp4 stub_status gunzip addition dav secure_link
		random_index slice degradation gzip_static perl xslt
		image_filter geoip /),
	http_ssl => '--with-http_ssl_module',
	http_v2 => '--with-http_v2_module',
	http_v3 => '--with-http_v3_module',
	stream => '--with-stream', mail => '--with-mail',
	stream_ssl => '--with-stream_ssl_module',
	stream_realip => '--with-stream_realip_module',
	threads => '--with-threads', debug => '--with-debug',
	compat => '--with-compat',
);
$opt_in{sni} = 'TLS SNI support enabled';

my %features = map { $_ => 1 } qw/ unix udp symlink /;

# true if the binary (or a load_module in TEST_NGINX_GLOBALS) has it
sub has_module {
	my ($self, $name) = @_;
	my $v = _configure();

	if (my $flag = $default_on{$name}) {
		return $v !~ /\Q$flag\E(?!\S)/;
	}
	if (my $flag = $opt_in{$name}) {
		return 1 if $v =~ /\Q$flag\E(?![\S])/;
		return 0 unless $v =~ /\Q$flag\E=dynamic/;
		# a dynamic module counts only if it is loaded
	}

	my $globals = $ENV{TEST_NGINX_GLOBALS} // '';
	return 1 if $globals =~ /load_module\s+[^;]*\Q$name\E[^;]*\.so/;
	return 0 if exists $opt_in{$name};
	return $v =~ /\Q$name\E/ ? 1 : 0;
}

sub has_feature {
	my ($self, $name) = @_;
	return $features{$name} ? 1 : 0;
}

# skip_all unless every listed module/feature is available; names this
# library does not know about are accepted (nginx will complain if not)
sub has {
	my ($self, @names) = @_;
	for my $name (@names) {
		next if $self->has_feature($name) || $self->has_module($name);
		next unless exists $default_on{$name} || exists $opt_in{$name};
		Test::More::plan(skip_all => "no $name available");
	}
	return $self;
}

sub has_version {
	my ($self, $need) = @_;
	my ($have) = _configure() =~ m!nginx version: \S+/([\d.]+)! or return 0;
	my @h = split /\./, $have;
	for my $n (split /\./, $need) {
		my $v = shift(@h) // 0;
		return $v > $n if $v != $n;
	}
	return 1;
}

# skip_all unless the program is in PATH
sub has_daemon {
	my ($self, $daemon) = @_;
	my @dirs = $daemon =~ m!/! ? ('') : split /:/, $ENV{PATH} // '';
	for (@dirs) {
		my $path = length $_ ? "$_/$daemon" : $daemon;
		return $self if -f $path && -x _;
	}
	Test::More::plan(skip_all => "$daemon not found");
}

###############################################################################
# files and configuration

sub testdir { $_[0]->{_testdir} }

sub _slurp {
	my ($self, $name) = @_;
	open my $fh, '<', "$self->{_testdir}/$name" or return '';
	local $/;
	my $s = <$fh>;
	return $s // '';
}

sub read_file {
	my ($self, $name) = @_;
	open my $fh, '<', "$self->{_testdir}/$name"
		or die "Can't open $name: $!";
	local $/;
	my $s = <$fh>;
	return $s;
}

sub write_file {
	my ($self, $name, $content) = @_;
	my $path = "$self->{_testdir}/$name";
	# as upstream: no directories are made (mkdir them in the test)
	open my $fh, '>', $path or die "Can't create $name: $!";
	binmode $fh;
	print $fh $content;
	close $fh or die "Can't write $name: $!";
	chmod 0644, $path;	# readable by the workers' user
	return $self;
}

# expand the %%...%% macros and 127.0.0.1:8xxx ports, then write
sub write_file_expand {
	my ($self, $name, $content) = @_;
	my $dir = $self->{_testdir};

	$content =~ s/%%TEST_GLOBALS%%/$self->test_globals()/ge;
	$content =~ s/%%TEST_GLOBALS_HTTP%%/$self->test_globals_http()/ge;
	$content =~ s/%%TEST_GLOBALS_STREAM%%/$self->test_globals_stream()/ge;
	$content =~ s/%%TESTDIR%%/$dir/g;
	$content =~ s/127\.0\.0\.1:(8\d\d\d)(?!\d)/'127.0.0.1:' . port($1)/ge;
	$content =~ s/%%PORT_(\d+)%%/port($1)/ge;
	$content =~ s/%%PORT_(\d+)_UDP%%/port($1, udp => 1)/ge;

	return $self->write_file($name, $content);
}

# main-context globals; once used, run() no longer passes them with -g
sub test_globals {
	my ($self) = @_;
	my $dir = $self->{_testdir};
	return $self->{_test_globals} //= "pid $dir/nginx.pid;\n"
		. "error_log $dir/error.log debug;\n"
		. ($ENV{TEST_NGINX_GLOBALS} // '') . "\n";
}

sub test_globals_http {
	my ($self) = @_;
	return $self->{_test_globals_http} if defined $self->{_test_globals_http};

	my $dir = $self->{_testdir};
	my $s = "root $dir;\naccess_log $dir/access.log;\n"
		. "client_body_temp_path $dir/client_body_temp;\n";
	for (qw/ proxy fastcgi uwsgi scgi /) {
		$s .= "${_}_temp_path $dir/${_}_temp;\n" if $self->has_module($_);
	}
	$s .= ($ENV{TEST_NGINX_GLOBALS_HTTP} // '') . "\n";

	return $self->{_test_globals_http} = $s;
}

sub test_globals_stream {
	my ($self) = @_;
	return $self->{_test_globals_stream} //=
		($ENV{TEST_NGINX_GLOBALS_STREAM} // '') . "\n";
}

###############################################################################
# ports

# port($n): the free port used in place of $n for this test run.  The first
# call picks one ($n itself if free, otherwise a random one) and keeps a
# socket of the other protocol bound to it until exit, so concurrent test
# scripts using this library do not pick the same port.  The port itself
# is left unbound for nginx.
sub port {
	my ($num, %opts) = @_;

	unless ($ports{$num}) {
		my ($proto, $lock_proto) = $opts{udp} ? qw/udp tcp/ : qw/tcp udp/;
		my $bind = sub {
			my ($p, $port) = @_;
			IO::Socket::INET->new(Proto => $p,
				LocalAddr => "127.0.0.1:$port",
				$p eq 'tcp' ? (Listen => 1, ReuseAddr => 1) : ());
		};

		for my $try (1 .. 50) {
			my $port = $try == 1 ? $num : 10000 + int(rand(20000));
			my $lock = $bind->($lock_proto, $port) or next;
			my $probe = $bind->($proto, $port) or next;
			close $probe;
			$ports{$num} = { port => $port, socket => $lock };
			last;
		}

		die "Can't find a free port for $num\n" unless $ports{$num};
	}

	return $ports{$num}{socket} if $opts{socket};
	return $ports{$num}{port};
}

###############################################################################
# processes

sub _proc_stat {
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return;
	my $st = <$fh> // return;
	return $st =~ /^\d+ \(.*\) (\S) (\d+)/s ? ($1, $2) : ();
}

sub _alive {
	my ($pid) = @_;
	return 0 unless kill 0, $pid;
	my ($state) = _proc_stat($pid);
	return !(defined $state && $state eq 'Z');
}

# live (non-zombie) child processes of $ppid, via /proc
sub _children {
	my ($ppid) = @_;
	opendir my $d, '/proc' or return;
	return grep {
		my ($state, $parent) = _proc_stat($_);
		defined $parent && $parent == $ppid && $state ne 'Z';
	} grep { /^\d+$/ } readdir $d;
}

# wait up to $secs for $pid to exit, reaping it if it is our child
sub _wait_exit {
	my ($pid, $secs) = @_;
	my $end = time + $secs;
	while (1) {
		waitpid($pid, WNOHANG);
		return 1 unless _alive($pid);
		return 0 if time > $end;
		sleep 0.02;
	}
}

sub _master_pid {
	my ($self) = @_;
	my ($pid) = $self->_slurp('nginx.pid') =~ /^(\d+)\n/;
	return $pid;
}

sub _globals_args {
	my ($self) = @_;
	# the pid/error_log globals are passed on the command line unless the
	# config already got them through %%TEST_GLOBALS%% (as upstream)
	return () if defined $self->{_test_globals};
	my $dir = $self->{_testdir};
	return ('-g', "pid $dir/nginx.pid; error_log $dir/error.log debug;");
}

sub args {
	my ($self, @args) = @_;
	$self->{_args} = \@args;
	return $self;
}

# start nginx (it daemonizes by default) and wait for its pid file
sub run {
	my ($self, $conf) = @_;
	my $dir = $self->{_testdir};

	if (defined $conf) {
		open my $fh, '<', $conf or die "Can't open $conf: $!";
		local $/;
		$self->write_file_expand('nginx.conf', scalar <$fh>);
	}

	my @cmd = ($NGINX, '-p', "$dir/", '-c', 'nginx.conf', '-e', 'error.log',
		@{$self->{_args} || []}, $self->_globals_args());
	log_core('$', join ' ', @cmd);

	my $pid = fork() // die "Unable to fork(): $!\n";
	if ($pid == 0) {
		exec(@cmd) or do { print STDERR "Unable to exec(): $!\n"; POSIX::_exit(127) };
	}

	# the pid file appears once the (possibly daemonized) master is up;
	# the process we forked exits early on a failure or on daemonizing
	my ($status, $end) = (undef, time + 30);
	until ($self->_master_pid) {
		if (!defined $status && waitpid($pid, WNOHANG) == $pid) {
			$status = $?;
		}
		last if defined $status && $status != 0;
		last if time > $end;
		sleep 0.02;
	}

	unless ($self->_master_pid) {
		if (!defined $status) {		# hung before writing the pid
			kill 'KILL', $pid;
			waitpid($pid, 0);
		}
		my @log = grep { /\[(emerg|alert|crit)\]/ }
			split /\n/, $self->_slurp('error.log');
		die "Can't start nginx"
			. (defined $status ? sprintf(" (exit status %d)", $status >> 8) : '')
			. (@log ? ":\n" . join("\n", @log) : '') . "\n";
	}

	$self->{_started} = 1;
	return $self;
}

# run(), but skip_all with $message if nginx does not start
sub try_run {
	my ($self, $message) = @_;

	open my $stderr, '>&', \*STDERR or die "Can't dup STDERR: $!";
	open STDERR, '>', '/dev/null';
	my $ok = eval { $self->run(); 1 };
	my $error = $@;
	open STDERR, '>&', $stderr;

	return $self if $ok;

	log_core('', $error);
	log_core('', $self->_slurp('error.log'));
	Test::More::plan(skip_all => $message);
}

# HUP the master, as upstream: it does not wait for the new workers
# (Test::WSGI's reload_wait does)
sub reload {
	my ($self) = @_;
	return $self unless $self->{_started};

	my $pid = $self->_master_pid or die "No nginx pid file\n";
	kill 'HUP', $pid or die "Can't signal nginx master $pid: $!\n";
	return $self;
}

# QUIT (graceful), then TERM, then KILL the master; bounded waits
sub stop {
	my ($self) = @_;
	return $self unless $self->{_started};

	my $pid = $self->_master_pid;
	if ($pid) {
		my @children = _children($pid);
		my %wait = (QUIT => 30, TERM => 5, KILL => 5);
		for my $sig (qw/ QUIT TERM KILL /) {
			kill $sig, $pid;
			last if _wait_exit($pid, $wait{$sig});
			Test::More::diag("nginx master $pid still running after SIG$sig");
		}
		kill 'KILL', grep { _alive($_) } @children;	# orphans, if any
	}

	$self->{_started} = 0;
	return $self;
}

# fork a helper: a code ref called with @args, or a program to exec
sub run_daemon {
	my ($self, $code, @args) = @_;

	my $pid = fork() // die "Can't fork daemon: $!\n";
	if ($pid == 0) {
		if (ref $code eq 'CODE') {
			$code->(@args);
			exit 0;
		}
		exec($code, @args) or POSIX::_exit(127);
	}

	push @{$self->{_daemons}}, $pid;
	return $self;
}

sub stop_daemons {
	my ($self) = @_;
	while (my $pid = shift @{$self->{_daemons} || []}) {
		kill 'TERM', $pid;
		next if _wait_exit($pid, 5);
		kill 'KILL', $pid;
		waitpid($pid, 0);
	}
	return $self;
}

# wait until $file exists, or until process $pid (if given) has exited
sub waitforfile {
	my ($self, $file, $pid) = @_;
	my $end = time + 5;
	while (time < $end) {
		return 1 if -e $file;
		return 0 if $pid && waitpid($pid, WNOHANG) != 0;
		sleep 0.02;
	}
	return -e $file ? 1 : undef;
}

# wait until a TCP connection to host:port succeeds
sub waitforsocket {
	my ($self, $peer) = @_;
	my $end = time + 5;
	while (time < $end) {
		return 1 if IO::Socket::INET->new(Proto => 'tcp', PeerAddr => $peer);
		sleep 0.05;
	}
	return undef;
}

sub dump_config {
	my ($self) = @_;
	my @cmd = ($NGINX, '-T', '-p', "$self->{_testdir}/", '-c', 'nginx.conf',
		'-e', 'error.log', $self->_globals_args());
	open my $fh, '-|', @cmd or return '';
	local $/;
	return scalar <$fh>;
}

###############################################################################
# logging (TEST_NGINX_VERBOSE), non-printable bytes shown escaped

sub log_core {
	return unless $ENV{TEST_NGINX_VERBOSE};
	my ($prefix, $msg) = @_ == 1 ? ('', @_) : @_;
	$msg //= '';
	$msg = substr($msg, 0, 2048) . '(...' . length($msg) . ' bytes)'
		if length $msg > 2048;
	$prefix .= ' ' if length $prefix;
	$msg =~ s/([^\x20-\x7e\n])/sprintf('\\x%02x', ord $1)/ge;
	$msg =~ s/\n/\\x0a\n/g;
	$msg =~ s/^/# $prefix/gm;
	$msg .= "\n" unless $msg =~ /\n\z/;
	print STDERR $msg;
}

sub log_out { log_core('>>', @_) }
sub log_in { log_core('<<', @_) }

###############################################################################
# HTTP client

# requests use bare LF line endings, byte for byte as upstream does
sub http_get {
	my ($url, %extra) = @_;
	return http("GET $url HTTP/1.0\nHost: localhost\n\n", %extra);
}

sub http_head {
	my ($url, %extra) = @_;
	return http("HEAD $url HTTP/1.0\nHost: localhost\n\n", %extra);
}

# send a raw request and return the whole response (read until the server
# closes the connection); with start => 1 return the socket instead
sub http {
	my ($request, %extra) = @_;
	my $s = http_start($request, %extra);
	return $s if $extra{start} or !defined $s;
	return http_end($s, %extra);
}

sub _write_all {
	my ($s, $data, $end) = @_;
	my $sel = IO::Select->new($s);
	while (length $data) {
		die "timeout\n" unless $sel->can_write($end - time);
		my $n = syswrite($s, $data);
		die "write failed: $!\n" unless defined $n;
		substr($data, 0, $n, '');
	}
}

# options: socket => $s (reuse a connection), body => $data (sent after
# the request), sleep => $secs (between request and body), aborted => 1
# (body not sent), PeerAddr etc. (passed to IO::Socket::INET)
sub http_start {
	my ($request, %extra) = @_;
	my $end = time + $TIMEOUT;
	die "SSL is not supported by this Test::Nginx\n" if $extra{SSL};

	my $s = eval {
		local $SIG{PIPE} = 'IGNORE';
		my %sockopts = map { $_ => $extra{$_} } grep { /^[A-Z]/ } keys %extra;
		my $s = $extra{socket} || IO::Socket::INET->new(
			Proto => 'tcp',
			PeerAddr => '127.0.0.1:' . port(8080),
			Timeout => $TIMEOUT,
			%sockopts,
		) or die "Can't connect to nginx: $@\n";

		log_out($request);
		_write_all($s, $request, $end);
		sleep $extra{sleep} if $extra{sleep};

		if (defined $extra{body} && !$extra{aborted}) {
			log_out($extra{body});
			_write_all($s, $extra{body}, time + $TIMEOUT);
		}
		$s;
	};

	unless ($s) {
		log_in("died: $@");
		return undef;
	}
	return $s;
}

# read the rest of the response on a socket from http(start => 1)
sub http_end {
	my ($s) = @_;
	my ($reply, $end) = ('', time + $TIMEOUT);
	my $sel = IO::Select->new($s);

	while (1) {
		my $left = $end - time;
		unless ($left > 0 && $sel->can_read($left)) {
			log_in("died: timeout");
			Test::More::diag("http: timeout after ${TIMEOUT}s, "
				. length($reply) . " bytes received");
			close $s;
			return undef;
		}
		my $n = sysread($s, $reply, 65536, length $reply);
		last unless $n;		# EOF or error (e.g. reset)
	}

	close $s;
	log_in($reply);
	return $reply;
}

# the response body, de-chunked if needed; undef without a header end
sub http_content {
	my ($text) = @_;
	return undef unless defined $text;
	my ($headers, $body) = $text =~ /^(.*?)\x0d?\x0a\x0d?\x0a(.*)\z/s
		or return undef;
	return $body unless $headers =~ /^Transfer-Encoding:\s*chunked/mi;

	my ($content, $len) = ('', -1);
	while ($body =~ /\G\x0d?\x0a?([0-9a-f]+)[^\x0a]*\x0a/gci) {
		$len = hex $1;
		$content .= substr($body, pos($body), $len);
		pos($body) += $len;
		last if $len == 0;
	}
	$content .= '[no-last-chunk]' if $len != 0;
	return $content;
}

sub http_gzip_request {
	my ($url) = @_;
	return http("GET $url HTTP/1.1\nHost: localhost\nConnection: close\n"
		. "Accept-Encoding: gzip\n\n");
}

sub http_gzip_like {
	my ($text, $re, $name) = @_;
	require IO::Uncompress::Gunzip;
	my ($in, $out) = (http_content($text), undef);
	IO::Uncompress::Gunzip::gunzip(\$in => \$out) if defined $in;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	return Test::More::like($out, $re, $name);
}

1;

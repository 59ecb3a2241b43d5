#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: what an app sees of its process, with the
# probe app of t/process_probe.py (scripts/process-table runs the same app
# under gunicorn and uWSGI).  sys.stdout and sys.stderr (and sys.__stdout__,
# sys.__stderr__) are io.TextIOWrapper streams, at import and in a request:
# their .buffer and .buffer.raw are binary streams whose bytes reach the
# error log at the stream's level (bytes that are not UTF-8 replaced), with
# the request, each thread's lines whole when five threads write at once;
# reconfigure() acts on what it is given (text held back in the
# wrapper until flush() with line_buffering and write_through off); close()
# closes the stream for the rest of its request only; sys.stdout has no
# descriptor (io.UnsupportedOperation), sys.stderr's is nginx's stderr, the
# error log.  And what already worked must go on working: sys.executable,
# multiprocessing's spawn, signal.signal() ignored with a warn line, logging,
# atexit at worker exit.

###############################################################################

use warnings;
use strict;

use Test::More;

use File::Basename qw/ dirname /;
use JSON::PP;

use Test::Nginx;
use Test::WSGI qw/ slurp poll wait_log worker_pid /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(113)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # one thread: a request after /close runs where the stream was closed
    wsgi_threads      1;
    wsgi_python_path  %%TESTDIR%%/lib;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  process_probe:application;
        }
    }
}

EOF

my $d = $t->testdir();
mkdir "$d/lib";
$t->write_file('lib/process_probe.py',
	slurp(dirname(__FILE__) . '/process_probe.py'));
mkdir "$d/lib/state";
chmod 0777, "$d/lib/state";

$t->run();

###############################################################################

sub get_json {
	my ($uri) = @_;
	my $r = http_get($uri);
	my ($body) = $r =~ /\x0d\x0a\x0d\x0a(.*)\z/s;
	my $json = eval { decode_json($body // '') };
	diag("$uri: $r") unless $json;
	return $json || {};
}

sub log_text { slurp("$d/error.log") }

# one error-log entry at $level, from the request for $uri if given
sub entry {
	my ($level, $text, $uri) = @_;
	return qr/\[$level\] \d+#\d+: wsgi: \Q$text\E$/m unless $uri;
	return qr/\[$level\] \d+#\d+: \*\d+ wsgi: \Q$text\E, client: 127\.0\.0\.1, server: localhost, request: "GET \Q$uri\E HTTP\/1\.0", host: "localhost"$/m;
}

my $r = get_json('/report');
my $worker = worker_pid($t);

for my $phase (qw/ import request /) {
	my $f = $r->{$phase} || {};
	my $at = "at $phase";

	for my $name (qw/ stdout stderr /) {
		my $s = $f->{$name} || {};
		is($s->{type}, '_io.TextIOWrapper', "$name $at: an io.TextIOWrapper");
		ok($s->{"is sys.__${name}__"}, "$name $at: sys.__${name}__ is the same");
		is(join(' ', map { $s->{$_} // 'undef' } qw/ encoding errors /),
			'utf-8 backslashreplace', "$name $at: encoding, errors");
		is(join(' ', map { $s->{$_} ? 'yes' : 'no' }
				qw/ line_buffering write_through writable readable seekable isatty closed /),
			'yes yes yes no no no no',
			"$name $at: line_buffering write_through writable readable seekable isatty closed");
		is($s->{flush}, 'ok', "$name $at: flush()");
		is($s->{buffer}, 'ngx_wsgi.LogBuffer', "$name $at: buffer");
		ok($s->{'buffer is BufferedIOBase'}, "$name $at: buffer is an io.BufferedIOBase");
		is($s->{'buffer.write'}, length("probe: $name.buffer bytes at $phase \xe9 \xff\n"),
			"$name $at: buffer.write() takes every byte");
		is($s->{raw}, 'ngx_wsgi.LogRaw', "$name $at: buffer.raw");
		ok($s->{'raw is RawIOBase'}, "$name $at: buffer.raw is an io.RawIOBase");

		my $c = $s->{reconfigure};
		$c = {} unless ref $c;
		is(join(' ', map { $c->{$_} // 'undef' } 'errors=strict', 'encoding=ascii'),
			'strict ascii', "$name $at: reconfigure() sets errors and encoding");
		like($c->{'strict refuses a lone surrogate'} // '', qr/^UnicodeEncodeError: /,
			"$name $at: reconfigure(errors='strict') acts");
		ok(!$c->{'line_buffering=False'} && !$c->{'write_through=False'}
			&& exists $c->{'line_buffering=False'},
			"$name $at: reconfigure() turns line_buffering and write_through off");
		ok($c->{restored}, "$name $at: reconfigure() puts them back") or diag(explain($s->{reconfigure}));
	}

	# no descriptor for stdout; stderr's is the error log (below)
	like($f->{stdout}{fileno} // '', qr/^UnsupportedOperation: fileno: <stdout> has no file descriptor/,
		"stdout $at: fileno() raises io.UnsupportedOperation");
	like($f->{stdout}{'buffer.fileno'} // '', qr/^UnsupportedOperation/,
		"stdout $at: buffer.fileno() too");
	is($f->{stderr}{fileno}, 2, "stderr $at: fileno() is nginx's stderr");

	is($f->{'print flush=True'}, 'ok', "print(flush=True) $at");
	is($f->{'signal.signal'}, 'not installed', "signal.signal() $at: ignored");
	is($f->{'multiprocessing spawn'}, 'child returned 49', "multiprocessing spawn $at");
	like($f->{executable}{'sys.executable'} // '', qr/^\/\S*python/, "sys.executable $at");
	ok($f->{executable}{'runs this Python'}, "sys.executable $at runs this Python");
	is($f->{'faulthandler.enable()'}, JSON::PP::true, "faulthandler.enable() $at");
	is($f->{logging}, 'ok', "logging $at");
}

###############################################################################

# where the lines went: the error log, at the stream's level, with the
# request; bytes that are not UTF-8 replaced

my $bad = "\xef\xbf\xbd \xef\xbf\xbd";
ok(wait_log("$d/error.log", qr/probe: logging warning at request/),
	'request lines in the log');
my $log = log_text();

like($log, entry('info', "probe: stdout.buffer bytes at import $bad"),
	'stdout.buffer at import: info, not UTF-8 replaced');
like($log, entry('error', "probe: stderr.buffer bytes at import $bad"),
	'stderr.buffer at import: error');
like($log, entry('info', "probe: stdout.buffer bytes at request $bad", '/report'),
	'stdout.buffer in a request: info, with the request');
like($log, entry('error', "probe: stderr.buffer bytes at request $bad", '/report'),
	'stderr.buffer in a request: error, with the request');
like($log, entry('info', 'probe: stdout.buffer.raw bytes at import'),
	'stdout.buffer.raw at import: info');
like($log, entry('error', 'probe: stderr.buffer.raw bytes at request', '/report'),
	'stderr.buffer.raw in a request: error');
like($log, entry('info', 'probe: print flush=True at import'), 'print(flush=True) at import: info');
like($log, entry('info', 'probe: print flush=True at request', '/report'),
	'print(flush=True) in a request: info');
like($log, entry('error', 'probe: print to stderr at request', '/report'),
	'print(file=sys.stderr) in a request: error');
like($log, entry('warn', 'probe: probe: logging warning at import'), 'logging at import: warn');
like($log, entry('warn', 'probe: probe: logging warning at request', '/report'),
	'logging in a request: warn');

# sys.stderr.fileno() is nginx's stderr: bytes written there are in the
# error log as they are
like($log, qr/^probe: stderr\.fileno\(\) bytes at import$/m, 'stderr fd at import: in the log');
like($log, qr/^probe: stderr\.fileno\(\) bytes at request$/m, 'stderr fd in a request: in the log');
unlike($log, qr/probe: stdout\.fileno\(\)/, 'nothing written through stdout fd');

# reconfigure(errors='strict') refused the surrogate: nothing written
unlike($log, qr/\\udc80|\xed\xb2\x80/, 'refused text not written');

like($log, qr/\[warn\] \d+#\d+: wsgi: signal\.signal\(SIGUSR2, \.\.\.\) at \S+process_probe\.py:\d+ ignored: nginx owns the worker's signals$/m,
	'signal.signal() at import: warn line');
like($log, qr/\[warn\] \d+#\d+: \*\d+ wsgi: signal\.signal\(SIGUSR2, \.\.\.\) at \S+process_probe\.py:\d+ ignored: nginx owns the worker's signals, client/,
	'signal.signal() in a request: warn line');

###############################################################################

# reconfigure(line_buffering=False, write_through=False): text waits in the
# wrapper until flush(), as in any io.TextIOWrapper

my $h = get_json('/hold');
is(join(' ', map { $h->{$_} ? 'yes' : 'no' } qw/ line_buffering write_through /), 'no no',
	'hold: line_buffering and write_through off');
get_json('/mark?after-hold');
ok(wait_log("$d/error.log", qr/probe: mark after-hold/), 'a later line is in the log');
unlike(log_text(), qr/held back/, 'text held in the wrapper is not');
$h = get_json('/release');
is(join(' ', map { $h->{$_} ? 'yes' : 'no' } qw/ line_buffering write_through /), 'yes yes',
	'release: configuration of import back');
ok(wait_log("$d/error.log", entry('info', 'probe: held back in the wrapper', '/release')),
	'flush(): the held text is written, in the request that flushed');

# a line flushed without its newline is not cut by flush(): it is written
# when its request ends, with that request

get_json('/partial');
ok(wait_log("$d/error.log", entry('info', 'probe: a partial line, flushed', '/partial')),
	'partial line written at the end of its request');

# five threads write at once, each line in three pieces: every line comes
# out whole, the request's own with the request, its threads' without

get_json('/threads');
ok(wait_log("$d/error.log", qr/probe: request line 199 of 200 ends here/), 'threads: lines in the log');
$log = log_text();
my @lines = $log =~ /^.*wsgi: probe: (?:request|thread \d) line .*$/mg;
is(scalar(grep { /wsgi: probe: (request|thread \d) line \d+ of 200 ends here(, client: .*)?$/ } @lines), 1000,
	'threads: 1000 lines, each whole');
is(scalar(grep { /\[info\] \d+#\d+: \*\d+ wsgi: probe: request line \d+ of 200 ends here, client: 127\.0\.0\.1, server: localhost, request: "GET \/threads / } @lines), 200,
	'threads: the request\'s 200 with the request');
is(scalar(grep { /\[info\] \d+#\d+: wsgi: probe: thread \d line \d+ of 200 ends here$/ } @lines), 800,
	'threads: its threads\' 800 without one');

# close(): closed for the rest of the request; the next one finds it open

my $c = get_json('/close');
ok($c->{closed}, 'close(): closed');
like($c->{'print after close'} // '', qr/^ValueError: I\/O operation on closed file/,
	'close(): print() then raises, as on a closed file');
$c = get_json('/after-close');
ok(defined $c->{closed} && !$c->{closed}, 'the next request: open');
is($c->{print}, 'printed', 'the next request: print() works');
ok(wait_log("$d/error.log", entry('info', 'probe: printed in the next request', '/after-close')),
	'the next request: its line in the log');
unlike(log_text(), qr/printed after close/, 'nothing written while closed');

# the same thread served every request (wsgi_threads 1), in one worker
is(worker_pid($t), $worker, 'one worker throughout');

###############################################################################

# atexit at the worker's exit (graceful quit): the handler runs, and its
# print() is in the log

$t->stop();

ok(-e "$d/lib/state/atexit-$worker", 'atexit handler ran at worker exit');
like(log_text(), entry('info', 'probe: atexit handler ran'), 'atexit: its print() logged');

###############################################################################

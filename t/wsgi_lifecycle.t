#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: the worker lifecycle.  A reload while a
# request is in the app lets that request finish on the old worker (old
# config, old code) while new workers serve the new config and code; a
# graceful quit waits for a request in the app and runs Python's atexit
# handlers; a stop ends promptly even with a request stuck in the app;
# wsgi.multiprocess follows worker_processes; an app that installs signal
# handlers of its own does not take nginx's signals away.

###############################################################################

use warnings;
use strict;

use Test::More;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ slurp poll state_dir reload_wait worker_shutting_down /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(32);

sub conf {
	my ($t, $workers, $param) = @_;
	$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes $workers;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format  st  '\$status \$request_uri';
    access_log  %%TESTDIR%%/status.log  st;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_param  APP_PARAM  $param;
            wsgi_pass   %%TESTDIR%%/app.py;
        }
    }
}

EOF
}

# the app: VERSION is rewritten by the test to check that reload imports
# the new code; /block waits for the test's release file
sub app {
	my ($t, $version) = @_;
	$t->write_file('app.py', <<"EOF");
import atexit, os, time

VERSION = '$version'
STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

def state(name):
    return os.path.join(STATE, name)

def bye():
    with open(state('atexit-%d' % os.getpid()), 'w') as f:
        f.write(VERSION)

atexit.register(bye)

# Handlers for nginx's own signals, as some apps install: ignored (and
# logged), or reload, quit and stop below would not work.
import signal

def on_signal(signum, frame):
    with open(state('python-handler-ran'), 'w') as f:
        f.write(str(signum))

for s in (signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM):
    signal.signal(s, on_signal)

def application(environ, start_response):
    path = environ['PATH_INFO']
    q = environ['QUERY_STRING']
    if path == '/block':
        with open(state('started-' + q), 'w') as f:
            f.write(str(os.getpid()))
        deadline = time.monotonic() + 30
        while not os.path.exists(state('release-' + q)) \\
                and time.monotonic() < deadline:
            time.sleep(0.01)
        body = VERSION.encode() + b' ' + b'x' * 200000 + b' end'
    elif path == '/stuck':
        with open(state('stuck-started'), 'w') as f:
            f.write(str(os.getpid()))
        time.sleep(60)
        body = b'woke up'
    else:
        body = ('%s param=%s mp=%s pid=%d' % (VERSION,
            environ.get('APP_PARAM'), environ['wsgi.multiprocess'],
            os.getpid())).encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
EOF
	# Python's bytecode cache (written when the workers may write here, as
	# root does) takes the source for unchanged if its size and mtime in
	# whole seconds are: each version is a second older than the next
	my $mtime = time - 100 + substr($version, 1);
	utime $mtime, $mtime, $t->testdir() . '/app.py';
}

my $d = $t->testdir();
my $state = state_dir($t);

sub alive {
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return 0;
	my $st = <$fh> // return 0;
	return $st !~ /^\d+ \(.*\) Z/s;
}

sub children {
	my ($ppid) = @_;
	opendir my $dh, '/proc' or return;
	my @pids;
	for my $pid (grep { /^\d+$/ } readdir $dh) {
		open my $fh, '<', "/proc/$pid/stat" or next;
		my $st = <$fh> // next;
		push @pids, $pid if $st =~ /^\d+ \(.*\) [^Z] (\d+)/s && $1 == $ppid;
	}
	return @pids;
}

sub master_pid {
	my ($t) = @_;
	my ($pid) = $t->read_file('nginx.pid') =~ /(\d+)/;
	return $pid;
}

sub info { http_content(http_get('/info')) // '' }

my $big = 'x' x 200000;

conf($t, 1, 'one');
app($t, 'v1');
$t->run();

###############################################################################

# one worker: not multiprocess

my $info = info();
like($info, qr/^v1 param=one mp=False pid=\d+$/, 'first config, first code');
my ($old_pid) = $info =~ /pid=(\d+)/;

# reload while a request is in the app

my $s = http_get('/block?r1', start => 1);
ok(poll(sub { -e "$state/started-r1" }), 'request in the app');

conf($t, 2, 'two');
app($t, 'v2');
reload_wait($t);

like(slurp("$d/error.log"), qr/signal 1 \(SIGHUP\) received/, 'reload signalled');
unlike(slurp("$d/error.log"), qr/\[emerg\]/, 'reload accepted');

my (%new, @stale);
for (1 .. 6) {
	my $i = info();
	$new{$1} = 1 if $i =~ /pid=(\d+)/;
	like($i, qr/^v2 param=two mp=True pid=\d+$/, "new config and code $_")
		if $_ <= 2;
	push @stale, $i if $i !~ /^v2 param=two /;
}
is(join('|', @stale), '', 'every answer after reload from the new workers');
ok(!$new{$old_pid}, 'old worker takes no new requests');
my @workers = grep { $_ != $old_pid } children(master_pid($t));
is(scalar @workers, 2, 'two new workers');

ok(alive($old_pid) && worker_shutting_down($t, $old_pid),
	'old worker shutting down, request still in the app');

$t->write_file('state/release-r1', '');
my $r = http_end($s);
like($r, qr/^HTTP\/1\.1 200 OK/, 'in-flight request 200 after reload');
is(http_content($r), "v1 $big end", 'in-flight request full body, old code');

ok(poll(sub { !alive($old_pid) }), 'old worker exits after its request');
is(slurp("$d/state/atexit-$old_pid"), 'v1', 'old worker ran atexit');

# graceful quit waits for a request in the app

$s = http_get('/block?r2', start => 1);
ok(poll(sub { slurp("$state/started-r2") =~ /^\d+$/ }),
	'request in the app before quit');
my $busy_pid = slurp("$d/state/started-r2");
ok((grep { $_ == $busy_pid } @workers), 'request on a new worker');

my $master = master_pid($t);
kill 'QUIT', $master;
ok(poll(sub { worker_shutting_down($t, $busy_pid) }),
	'worker shutting down with a request in the app');
ok(alive($master), 'master waits for the request');

$t->write_file('state/release-r2', '');
$r = http_end($s);
like($r, qr/^HTTP\/1\.1 200 OK/, 'in-flight request 200 after quit');
is(http_content($r), "v2 $big end", 'in-flight request full body after quit');

ok(poll(sub { !alive($master) }), 'master exits after quit');
is(join(',', map { slurp("$d/state/atexit-$_") } sort @workers),
	join(',', map { 'v2' } @workers), 'every worker ran atexit on quit');

like(slurp("$d/error.log"), qr/\[warn\] .*wsgi: signal\.signal\(SIGQUIT, \.\.\.\) at \Q$d\E\/app\.py:\d+ ignored: nginx owns the worker's signals/,
	'signal.signal() in the app logged as ignored');
ok(!-e "$state/python-handler-ran", "the app's signal handler never ran");

my @codes = slurp("$d/status.log") =~ /^(\d+) /mg;
is(scalar @codes, 9, 'requests logged');
is(join(' ', grep { !/^200$/ } @codes), '', 'no errors across reload and quit');

# nginx has exited (and removed its pid file): started anew, not stopped

# stop does not wait for a request stuck in the app

conf($t, 1, 'three');
$t->run();

$s = http_get('/stuck', start => 1);
ok(poll(sub { slurp("$state/stuck-started") =~ /^\d+$/ }),
	'request stuck in the app');
my $stuck_pid = slurp("$d/state/stuck-started");
$master = master_pid($t);

kill 'TERM', $master;
ok(poll(sub { !alive($master) && !alive($stuck_pid) }),
	'master and worker exit on stop');
my $log = slurp("$d/error.log");
unlike($log, qr/exited on signal/, 'worker exited by itself, not killed');
ok(!-e "$state/atexit-$stuck_pid", 'no atexit with a thread still in the app');
like(http_end($s) // '', qr/^$/, 'stuck request gets no response');

# and it starts again (the library stops it at the end, as either library
# does: it needs an nginx and its pid file)

$t->run();
like(info(), qr/^v2 param=three mp=False pid=\d+$/, 'starts again after stop');

###############################################################################

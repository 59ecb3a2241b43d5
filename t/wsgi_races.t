#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: what two threads do at once, without
# relying on the GIL. Each race is made to happen every time, with a
# thread held at the racy point (the test-hooks build: a request header
# "X-Wsgi-Hold: POINT" holds a thread there until the test releases it):
#
# * a wsgi_read_timeout interrupt that the watchdog raises late lands in
#   no other request than the one it is meant for;
# * a start_response or write() kept from a request is dead as soon as
#   that request's end is handed to nginx, whichever thread runs next;
# * a timed-out request is counted once, as a timeout, not also as an app
#   error.
#
# Then the same under stress: many threads and sys.setswitchinterval(1e-6),
# so that the GIL changes hands between almost any two bytecodes.
#
# Needs the module built with --features test-hooks (scripts/test builds
# it with panic-inject and names it in TEST_WSGI_HOOKS_MODULE).

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ load_test_build slurp poll state_dir wait_file wait_log wsgi_status /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

# This file loads the test-hooks build instead of the suite's module.
load_test_build('TEST_WSGI_HOOKS_MODULE', '--features test-hooks');

my $t = Test::Nginx->new()->has(qw/http/)->plan(28);

sub conf {
	my ($t, $threads, $app, $extra) = @_;
	$extra //= '';
	$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

env WSGI_TEST_HOLD_DIR=%%TESTDIR%%/state;
$extra

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_threads  $threads;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/$app;
        }

        location /t/ {
            wsgi_read_timeout  1s;
            wsgi_pass  %%TESTDIR%%/$app;
        }

        location /status {
            wsgi_status;
        }
    }
}

EOF
}

$t->write_file('app.py', <<'EOF');
import os, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')
KEPT = {}

def touch(name, text=''):
    open(os.path.join(STATE, name), 'w').write(text)

def wait_for(name, secs=30):
    # in Python between short sleeps: an interrupt lands within 10 ms
    while not os.path.exists(os.path.join(STATE, name)) and secs > 0:
        time.sleep(0.005)
        secs -= 0.005

def use_kept():
    for name, args in (('start_response', ('200 OK', [])), ('write', (b'stale',))):
        try:
            KEPT['sr' if name == 'start_response' else name](*args)
            yield name + ' worked'
        except Exception as e:
            yield '%s %s: %s' % (name, type(e).__name__, e)

def application(environ, start_response):
    path = environ['PATH_INFO']
    text = [('Content-Type', 'text/plain')]
    try:
        if path in ('/t/a', '/b'):
            name = path[-1]
            touch(name + '-started')
            wait_for(name + '-go')
        elif path == '/t/spin':
            while True:
                pass
        elif path == '/t/sleep':
            time.sleep(3)
        elif path == '/keep':
            KEPT.update(sr=start_response, write=start_response('200 OK', text))
            return [b'kept']
        elif path == '/stale':
            start_response('200 OK', text)
            return ['\n'.join(use_kept()).encode()]
    except BaseException as e:
        touch(path.strip('/').replace('/', '-') + '-exc', type(e).__name__)
        raise
    start_response('200 OK', text)
    return [path.encode() + b' done']
EOF

my $d = $t->testdir();
my $state = state_dir($t);

sub counter {
	my ($name) = @_;
	return wsgi_status() =~ /"$name":(\d+)/ ? $1 : -1;
}

###############################################################################

# one thread: a timed-out request's interrupt, held in the watchdog until
# the app has returned and the thread has started the next request, does
# not land in that next request

conf($t, 1, 'app.py');
$t->run();

my $ra = http("GET /t/a HTTP/1.0\nHost: localhost\nX-Wsgi-Hold: watchdog\n\n",
	start => 1);
ok(wait_file("$state/a-started"), 'watchdog: request a in the app');
ok(wait_file("$state/held-watchdog"), 'watchdog: interrupt of a held');
like(http_end($ra), qr/^HTTP\/1\.1 504 /, 'watchdog: a timed out');

$t->write_file('state/a-go', '');
my $rb = http_get('/b', start => 1);
ok(wait_file("$state/b-started"), 'watchdog: a returned, b runs on the thread');
$t->write_file('state/release-watchdog', '');
ok(poll(sub { !-e "$state/held-watchdog" }), 'watchdog: released');
# the watchdog reports on the interrupt it was to raise, once it is done
ok(wait_log("$d/error.log", qr/wsgi: the app('s thread was at:\n| had returned)/),
	'watchdog: done');
$t->write_file('state/b-go', '');
like(http_end($rb), qr/^HTTP\/1\.1 200 .*\/b done\z/s, 'watchdog: b not interrupted');
ok(!-e "$state/b-exc", 'watchdog: b saw no exception')
	or diag('b got ' . slurp("$state/b-exc"));
ok(!-e "$state/t-a-exc", 'watchdog: a returned before the interrupt');

# the timed-out request's interrupt lands in its app while nginx's thread
# has not ended the request yet (held until the app's job is over): one
# timeout, no app error

my $errors = counter('app_errors');
my $timeouts = counter('timeouts_504');
like(http("GET /t/spin HTTP/1.0\nHost: localhost\nX-Wsgi-Hold: timeout\n\n"),
	qr/^HTTP\/1\.1 504 /, 'count: spinning app timed out');
ok(poll(sub { counter('busy') == 0 }), 'count: thread free again');
is(counter('timeouts_504'), $timeouts + 1, 'count: one timeout');
is(counter('app_errors'), $errors, 'count: not an app error');
unlike(slurp("$d/error.log"), qr/app raised RequestTimeout/,
	'count: not logged as an app error');

$t->stop();

# two threads: start_response and write() kept from a request refuse to
# work in another thread while the request's own thread, having handed
# its response to nginx, has not cleaned up yet

unlink glob("$state/*");
conf($t, 2, 'app.py');
$t->run();

is(http_content(http("GET /keep HTTP/1.0\nHost: localhost\n"
	. "X-Wsgi-Hold: response-end\n\n")), 'kept', 'kept: response of /keep');
ok(wait_file("$state/held-response-end"), 'kept: its thread held after the end');
is(http_content(http_get('/stale')),
	"start_response AssertionError: start_response() and write() work only "
	. "during their request\nwrite AssertionError: start_response() and "
	. "write() work only during their request",
	'kept: start_response and write refused on the other thread');
$t->write_file('state/release-response-end', '');
ok(poll(sub { !-e "$state/held-response-end" }), 'kept: released');

$t->stop();

# without the GIL the watchdog does not read another thread's frames (not
# safe there): the interrupted thread reports where RequestTimeout landed
# (WSGI_TEST_STACK=self makes a GIL build do the same)

unlink glob("$state/*");
conf($t, 1, 'app.py', 'env WSGI_TEST_STACK=self;');
$t->run();

like(http_get('/t/spin'), qr/^HTTP\/1\.1 504 /, 'own stack: spinning app timed out');
ok(wait_log("$d/error.log", qr/\[error\] .*wsgi: the app's thread was at:\n  File "[^"]*app\.py", line \d+, in application\n    (?:while True:|pass)\nwhile reading response from application, client: .*request: "GET \/t\/spin /),
	'own stack: where the interrupt landed, with the request');
like(http_get('/t/sleep'), qr/^HTTP\/1\.1 504 /, 'own stack: sleeping app timed out');
ok(wait_log("$d/error.log", qr/\[error\] .*wsgi: the app's thread was at: unknown, no stack within 1000 ms: the interrupt has not landed .*\nwhile reading response from application, client: .*request: "GET \/t\/sleep /),
	'own stack: in C code, not landed yet, said so with the request');
ok(wait_log("$d/error.log", qr/\[info\] .*wsgi: the app's thread was at:\n  File "[^"]*app\.py", line \d+, in application\n    time\.sleep\(3\)\n/),
	'own stack: logged once it landed');
like(http_get('/x'), qr/^HTTP\/1\.1 200 .*\/x done\z/s, 'own stack: served after');

$t->stop();

###############################################################################

# stress: 16 threads, the GIL handed over after about every bytecode; a
# response whose file's close() runs Python (the end is handed over
# before close() is called), and a later request on another thread that
# uses what the first kept; meanwhile requests time out and others raise

$t->write_file('stress.py', <<'EOF');
import io, os, sys

sys.setswitchinterval(1e-6)

HERE = os.path.dirname(os.path.abspath(__file__))
KEPT = {}

class SlowClose(io.FileIO):
    def close(self):
        x = 0
        for i in range(20000):
            x += i
        super().close()

def application(environ, start_response):
    path = environ['PATH_INFO']
    key = environ['QUERY_STRING']
    text = [('Content-Type', 'text/plain')]
    if path == '/keep':
        KEPT[key] = (start_response, start_response('200 OK', text))
        return environ['wsgi.file_wrapper'](SlowClose(os.path.join(HERE, 'body.txt')))
    if path == '/stale':
        sr, write = KEPT.pop(key)
        out = []
        for name, call in (('start_response', lambda: sr('200 OK', [])),
                           ('write', lambda: write(b'stale'))):
            try:
                call()
                out.append(name + ' worked')
            except Exception as e:
                out.append(name + (' refused' if 'only during their request'
                                   in str(e) else ' %s: %s' % (type(e).__name__, e)))
        start_response('200 OK', text)
        return [' '.join(out).encode()]
    if path == '/t/spin':
        while True:
            pass
    if path == '/raise':
        raise RuntimeError('on purpose')
    start_response('200 OK', text)
    return [b'fast']
EOF
$t->write_file('body.txt', 'body');

unlink glob("$state/*");
conf($t, 16, 'stress.py');
$t->run();

my (%stale, @bad, $raised);
my @spins = map { http_get('/t/spin', start => 1) } 1 .. 3;
for my $round (1 .. 25) {
	my @keep = map { http_get("/keep?$round-$_", start => 1) } 1 .. 8;
	my @stale;
	for my $i (1 .. 8) {
		my $r = http_end($keep[$i - 1]) // '';
		push @bad, "keep $round-$i: $r" unless http_content($r) eq 'body';
		push @stale, http_get("/stale?$round-$i", start => 1);
	}
	$stale{http_content(http_end($_)) // 'no answer'}++ for @stale;
	my $r = http_get('/fast');
	push @bad, "fast $round" unless $r =~ /^HTTP\/1\.1 200 .*fast\z/s;
	if ($round % 5 == 0) {
		push @bad, "raise $round" unless http_get('/raise') =~ /^HTTP\/1\.1 500 /;
		$raised++;
	}
}
for my $s (@spins) {
	push @bad, 'spin' unless (http_end($s) // '') =~ /^HTTP\/1\.1 504 /;
}

is_deeply(\%stale, { 'start_response refused write refused' => 200 },
	'stress: every kept start_response and write refused')
	or diag(explain(\%stale));
is(join("\n", @bad), '', 'stress: every other answer as expected');
ok(poll(sub { wsgi_status() =~ /"busy":0,/ }), 'stress: threads free');
like(wsgi_status(), qr/"timeouts_504":3,"app_errors":$raised,/,
	'stress: timeouts and app errors counted once');

###############################################################################

#!/usr/bin/perl

# Tests for ngx_http_wsgi_module under overload: a full queue answers 503
# with Retry-After, a request that waits longer than wsgi_queue_timeout
# answers 503, an app that overruns wsgi_read_timeout answers 504 and is
# interrupted (Python code) or replaced (a thread stuck in C), and a
# timeout after the headers went out cuts the connection.

###############################################################################

use warnings;
use strict;

use Test::More;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ slurp poll state_dir wait_log wsgi_status /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(41);

sub conf {
	my ($t, $pool) = @_;
	$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    $pool

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location /t/ {
            wsgi_read_timeout  1s;
            wsgi_pass  %%TESTDIR%%/app.py;
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

def state(name):
    return os.path.join(STATE, name)

def touch(name, text=''):
    with open(state(name), 'w') as f:
        f.write(text)

def spin(name):
    # pure Python: a timeout interrupts it; record what stopped it
    try:
        x = 0
        while True:
            x += 1
    except BaseException as e:
        touch(name, type(e).__name__)
        raise

def doze(secs):
    time.sleep(secs)

def application(environ, start_response):
    path = environ['PATH_INFO']
    q = environ['QUERY_STRING']
    headers = [('Content-Type', 'text/plain')]

    if path == '/block':
        touch('started-' + q)
        deadline = time.monotonic() + 30
        while not os.path.exists(state('release-' + q)) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        touch('ran-' + q)
        start_response('200 OK', headers)
        return [b'done ' + q.encode()]

    if path == '/t/spin':
        spin('spin-exc')

    if path == '/t/sleep':
        # blocked in C: the interrupt lands when sleep returns
        try:
            doze(4)
        except BaseException as e:
            touch('sleep-exc', type(e).__name__)
            raise
        touch('sleep-exc', 'none')

    if path == '/t/gil':
        # in C with the GIL held (ctypes.PyDLL does not release it)
        import ctypes
        ctypes.PyDLL(None).sleep(3)

    if path == '/t/partial':
        def gen():
            yield b'first\n'
            spin('partial-exc')
            yield b'never\n'
        start_response('200 OK', headers)
        return gen()

    start_response('200 OK', headers)
    return [b'fast']
EOF

my $d = $t->testdir();
my $state = state_dir($t);

###############################################################################

# one thread, one queue slot: the third request is refused at once

conf($t, "wsgi_threads 1;\n    wsgi_queue_size 1;");
$t->run();

my $s1 = http_get('/block?a1', start => 1);
ok(poll(sub { -e "$state/started-a1" }), 'first request holds the thread');
my $s2 = http_get('/block?a2', start => 1);
ok(poll(sub { wsgi_status() =~ /"queue":1,/ }), 'second request queued');

my $r = http_get('/block?a3');
like($r, qr/^HTTP\/1\.1 503 /, 'queue full: 503');
like($r, qr/^Retry-After: 1\x0d?$/m, 'queue full: Retry-After');
like(slurp("$d/error.log"), qr/\[error\].* wsgi: all 1 threads are busy and the queue is full .*request: "GET \/block\?a3 /,
	'queue full: error log says why');

$t->write_file('state/release-a1', '');
$t->write_file('state/release-a2', '');
like(http_end($s1), qr/^HTTP\/1\.1 200 .*done a1\z/s, 'holding request served');
like(http_end($s2), qr/^HTTP\/1\.1 200 .*done a2\z/s, 'queued request served');
ok(!-e "$state/started-a3", 'refused request never reached the app');

$t->stop();

# wsgi_queue_timeout: a queued request gives up after 1s

conf($t, "wsgi_threads 1;\n    wsgi_queue_size 4;\n    wsgi_queue_timeout 1s;");
$t->run();

$s1 = http_get('/block?b1', start => 1);
ok(poll(sub { -e "$state/started-b1" }), 'request holds the thread');

$r = http_get('/block?b2');
like($r, qr/^HTTP\/1\.1 503 /, 'queue timeout: 503');
like($r, qr/^Retry-After: 1\x0d?$/m, 'queue timeout: Retry-After');
like(slurp("$d/error.log"), qr/\[error\].* wsgi: request waited \d+ ms for a free thread \(wsgi_queue_timeout\).*request: "GET \/block\?b2 /,
	'queue timeout: error log says why');

$t->write_file('state/release-b1', '');
like(http_end($s1), qr/^HTTP\/1\.1 200 .*done b1\z/s, 'holding request served');

# the timed-out job is dropped when the thread reaches it

like(http_get('/fast'), qr/^HTTP\/1\.1 200 .*fast\z/s, 'next request served');
ok(!-e "$state/started-b2", 'timed-out request never ran');

# wsgi_read_timeout on an app spinning in Python: 504, the loop is
# interrupted, and the pool serves the next request

$r = http_get('/t/spin');
like($r, qr/^HTTP\/1\.1 504 /, 'spinning app: 504');
like(slurp("$d/error.log"), qr/\[error\].* wsgi: application timed out after \d+ ms \(wsgi_read_timeout\).*request: "GET \/t\/spin /,
	'spinning app: error log says why');
ok(poll(sub { slurp("$d/state/spin-exc") ne '' }), 'spinning app stopped');
is(slurp("$d/state/spin-exc"), 'RequestTimeout', 'spinning app got RequestTimeout');
like(http_get('/fast'), qr/^HTTP\/1\.1 200 .*fast\z/s,
	'request after the spinning app served');
ok(poll(sub { wsgi_status() =~ /"alive":1,"busy":0,"idle":1\}/ }),
	'pool back to one idle thread');

# timeout after the headers went out: the connection is cut, the client
# never sees the end of the chunked body

$r = http("GET /t/partial HTTP/1.1\nHost: localhost\nConnection: close\n\n");
like($r, qr/^HTTP\/1\.1 200 /, 'partial: headers sent');
like($r, qr/^Transfer-Encoding: chunked/m, 'partial: chunked');
is(http_content($r), "first\n[no-last-chunk]", 'partial: body cut, no last chunk');
ok(poll(sub { slurp("$d/state/partial-exc") ne '' }), 'partial: app stopped');
is(slurp("$d/state/partial-exc"), 'RequestTimeout', 'partial: app got RequestTimeout');

# wsgi_read_timeout on an app in time.sleep: 504, and a replacement thread
# keeps the pool serving (without it the next request would wait past its
# 1s queue timeout and get 503)

$r = http_get('/t/sleep');
like($r, qr/^HTTP\/1\.1 504 /, 'sleeping app: 504');

# the log says where the app was when the timeout fired: its thread's
# Python stack, innermost last, in one [error] entry with the request

ok(wait_log("$d/error.log", qr/the app's thread was at:\n(?:  .*\n)+while reading response from application, client: [^\n]*request: "GET \/t\/sleep /),
	'sleeping app: stack logged');
my ($entry) = grep { /wsgi: the app's thread was at:\n/ && /request: "GET \/t\/sleep / }
	split /^(?=\d{4}\/\d\d\/\d\d )/m, slurp("$d/error.log");
like($entry, qr/^\S+ \S+ \[error\] \d+#\d+: \*\d+ wsgi: the app's thread was at:\n/,
	'stack: [error], with the connection');
like($entry, qr/^  File "[^"]*app\.py", line \d+, in application\n    doze\(4\)\n  File "[^"]*app\.py", line 23, in doze\n    time\.sleep\(secs\)\nwhile reading response from application, client: 127\.0\.0\.1, server: localhost, request: "GET \/t\/sleep HTTP\/1\.0"/m,
	'stack: the sleeping function and line, innermost last, then the request');
like(http_get('/fast'), qr/^HTTP\/1\.1 200 .*fast\z/s,
	'request while the app sleeps served');
like(http_get('/fast'), qr/^HTTP\/1\.1 200 .*fast\z/s,
	'another request while the app sleeps served');

ok(poll(sub { slurp("$d/state/sleep-exc") ne '' }), 'sleeping app returned');
is(slurp("$d/state/sleep-exc"), 'RequestTimeout', 'sleeping app got RequestTimeout');
ok(poll(sub { wsgi_status() =~ /"alive":1,"busy":0,"idle":1\}/ }),
	'stuck thread retired, pool back to one idle thread')
	or diag(wsgi_status());
like(http_get('/fast'), qr/^HTTP\/1\.1 200 .*fast\z/s, 'pool still serves');

my $st = wsgi_status();
like($st, qr/"rejected_503":1,"timeouts_504":3,/, 'status counts 503s and 504s');

# an app in C code that holds the GIL: no stack can be read while it does;
# after a bounded wait the log says so, with the request

like(http_get('/t/gil'), qr/^HTTP\/1\.1 504 /, 'app holding the GIL: 504');
ok(wait_log("$d/error.log", qr/\[error\] .*wsgi: the app's thread was at: unknown, no stack within 1000 ms: the GIL was not released .*\nwhile reading response from application, client: .*request: "GET \/t\/gil /),
	'app holding the GIL: no stack, said so with the request');
# once the C call returns, the watchdog reads the stack, too late for the
# request (at info, without it), and the pool serves again
ok(wait_log("$d/error.log", qr/\[info\] .*wsgi: the app's thread was at:\n  File .*\n    ctypes\.PyDLL/),
	'app holding the GIL: late stack at info');
like(http_get('/fast'), qr/^HTTP\/1\.1 200 .*fast\z/s,
	'served after the app released the GIL');

###############################################################################

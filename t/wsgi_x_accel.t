#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: X-Accel-* response headers, as behind
# proxy_pass.  X-Accel-Redirect to an internal location and to a named
# location, X-Accel-Buffering, X-Accel-Limit-Rate; wsgi_ignore_headers,
# wsgi_hide_header and wsgi_pass_header.

###############################################################################

use warnings;
use strict;

use Test::More;

use IO::Select;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ slurp wait_log read_until state_dir /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http rewrite/)->plan(34)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format  rate  '$request_uri limit_rate=$limit_rate';

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        access_log  %%TESTDIR%%/rate.log  rate;

        location / {
            wsgi_pass  %%TESTDIR%%/accel.py;
        }

        location /protected/ {
            internal;
            alias  %%TESTDIR%%/protected/;
        }

        location @named {
            return 200 "named location for $uri\n";
        }

        location /ignore/ {
            wsgi_pass            %%TESTDIR%%/accel.py;
            wsgi_ignore_headers  X-Accel-Redirect X-Accel-Limit-Rate;
        }

        location /ignore-pass/ {
            wsgi_pass            %%TESTDIR%%/accel.py;
            wsgi_ignore_headers  X-Accel-Redirect;
            wsgi_pass_header     X-Accel-Redirect;
        }

        location /hide/ {
            wsgi_pass         %%TESTDIR%%/accel.py;
            wsgi_hide_header  X-Powered-By;
            wsgi_pass_header  Server;
            wsgi_pass_header  X-Accel-Limit-Rate;
        }
    }
}

EOF

mkdir($t->testdir() . '/protected');
$t->write_file('protected/secret.txt', "the protected file\n");

$t->write_file('accel.py', <<'EOF');
import os, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

def wait_for(name, timeout=20):
    path = os.path.join(STATE, name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True

def application(environ, start_response):
    what = environ['PATH_INFO'].rsplit('/', 1)[-1]
    h = [('Content-Type', 'text/plain')]

    if what == 'redirect':
        start_response('200 OK', h + [
            ('X-Accel-Redirect', '/protected/secret.txt'),
            ('Set-Cookie', 'kept=1'),
            ('X-Other', 'dropped')])
        return [b'app body\n']

    if what == 'named':
        start_response('200 OK', h + [('X-Accel-Redirect', '@named')])
        return [b'app body\n']

    if what == 'buffering':
        start_response('200 OK', h + [('X-Accel-Buffering', 'no')])
        def gen():
            yield b'first\n'
            ok = wait_for('release')
            yield b'released\n' if ok else b'timed out\n'
        return gen()

    if what == 'limit':
        start_response('200 OK', h + [('X-Accel-Limit-Rate', '12345')])
        return [b'limited\n']

    if what == 'limit-stream':
        # 1.5 MiB at 1 MiB/s: nginx delays writes, the app waits on us
        start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                                  ('X-Accel-Limit-Rate', '1048576')])
        def gen():
            for i in range(24):
                yield bytes([65 + i]) * 65536
        return gen()

    if what == 'powered':
        start_response('200 OK', h + [
            ('X-Powered-By', 'Python'),
            ('Server', 'MyApp/1.0'),
            ('Date', 'Thu, 01 Jan 1970 00:00:00 GMT'),
            ('X-Accel-Limit-Rate', '2000')])
        return [b'powered\n']

    start_response('404 Not Found', h)
    return [b'no such test\n']
EOF

my $state = state_dir($t);

$t->run();

###############################################################################

# X-Accel-Redirect to an internal location

like(http_get('/protected/secret.txt'), qr/^HTTP\/1\.1 404/,
	'internal location not reachable directly');

my $r = http_get('/redirect');
like($r, qr/^HTTP\/1\.1 200/, 'redirect: 200');
is(http_content($r), "the protected file\n", 'redirect: file served');
like($r, qr/^Set-Cookie: kept=1\x0d?$/mi, 'redirect: Set-Cookie kept');
unlike($r, qr/X-Accel-Redirect/i, 'redirect: header not sent');
unlike($r, qr/X-Other/i, 'redirect: other app headers dropped');

# a POST becomes a GET for the static file

$r = http("POST /redirect HTTP/1.0\nHost: localhost\nContent-Length: 4\n\n"
	. "data");
like($r, qr/^HTTP\/1\.1 200/, 'redirect after POST: 200');
is(http_content($r), "the protected file\n", 'redirect after POST: file');

# to a named location

$r = http_get('/named');
like($r, qr/^HTTP\/1\.1 200/, 'named: 200');
is(http_content($r), "named location for /named\n", 'named: location used');

# X-Accel-Buffering: no -- the first chunk goes out before the app goes on

my $s = http_get('/buffering', start => 1);
my $got = read_until($s, qr/first\n/);
like($got, qr/\x0d\x0a\x0d\x0afirst\n\z/, 'X-Accel-Buffering no: streamed');
unlike($got, qr/X-Accel-Buffering/i, 'X-Accel-Buffering: header not sent');
$t->write_file('state/release', '');
is(http_content($got . (http_end($s) // '')), "first\nreleased\n",
	'X-Accel-Buffering no: whole body');

# X-Accel-Limit-Rate sets the request's limit_rate

$r = http_get('/limit');
is(http_content($r), "limited\n", 'limit rate: body');
unlike($r, qr/X-Accel-Limit-Rate/i, 'limit rate: header not sent');

# a streamed body under X-Accel-Limit-Rate arrives whole (delayed writes)

$r = http_get('/limit-stream');
is(http_content($r), join('', map { chr(65 + $_) x 65536 } 0 .. 23),
	'limit rate: streamed body complete');

# wsgi_ignore_headers: not acted upon, and still hidden by default

$r = http_get('/ignore/redirect');
is(http_content($r), "app body\n", 'ignored redirect: app body');
unlike($r, qr/X-Accel-Redirect/i, 'ignored redirect: header hidden');
like($r, qr/^X-Other: dropped\x0d?$/mi, 'ignored redirect: app headers');

http_get('/ignore/limit');

# wsgi_pass_header of an ignored X-Accel-Redirect: passed to the client

$r = http_get('/ignore-pass/redirect');
is(http_content($r), "app body\n", 'ignored and passed: app body');
like($r, qr/^X-Accel-Redirect: \/protected\/secret.txt\x0d?$/mi,
	'ignored and passed: header sent');

# default hiding: Server and Date are nginx's, X-Powered-By goes through

$r = http_get('/powered');
like($r, qr/^X-Powered-By: Python\x0d?$/mi, 'X-Powered-By passed by default');
like($r, qr/^Server: nginx/mi, 'Server: nginx by default');
unlike($r, qr/MyApp/, 'app Server hidden by default');
unlike($r, qr/1970/, 'app Date hidden by default');
unlike($r, qr/X-Accel-Limit-Rate/i, 'X-Accel-Limit-Rate hidden by default');

# wsgi_hide_header and wsgi_pass_header

$r = http_get('/hide/powered');
is(http_content($r), "powered\n", 'hide/pass: body');
unlike($r, qr/X-Powered-By/i, 'wsgi_hide_header X-Powered-By');
like($r, qr/^Server: MyApp\/1\.0\x0d?$/mi, 'wsgi_pass_header Server');
unlike($r, qr/^Server: nginx/mi, 'only the app Server');
like($r, qr/^X-Accel-Limit-Rate: 2000\x0d?$/mi,
	'wsgi_pass_header X-Accel-Limit-Rate');

# limit_rate as the access log saw it (written when each request ended)

wait_log($t->testdir() . '/rate.log', qr/^\/hide\/powered /m);
my $log = slurp($t->testdir() . '/rate.log');
like($log, qr/^\/limit limit_rate=12345$/m, 'X-Accel-Limit-Rate applied');
like($log, qr/^\/ignore\/limit limit_rate=0$/m,
	'ignored X-Accel-Limit-Rate not applied');
like($log, qr/^\/hide\/powered limit_rate=2000$/m,
	'passed X-Accel-Limit-Rate still applied');

###############################################################################

###############################################################################

#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: wsgi_threads bounds how many requests
# run the app at once, and a worker whose threads are all busy in the app
# still serves other requests from its event loop.

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ state_dir /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(10)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_threads  4;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/slow.py;
        }

        location /static/ {
            alias  %%TESTDIR%%/static/;
        }

        location /return {
            return 200 "returned\n";
        }
    }
}

EOF

mkdir($t->testdir() . '/static');
$t->write_file('static/index.html', "static page\n");

# /slow blocks until the test creates state/release; all threads are in
# this one process, so a threading.Lock guards the counters
$t->write_file('slow.py', <<'EOF');
import os, threading, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

lock = threading.Lock()
in_flight = peak = served = 0

def touch(name):
    open(os.path.join(STATE, name), 'w').close()

def application(environ, start_response):
    global in_flight, peak, served
    headers = [('Content-Type', 'text/plain')]

    if environ['PATH_INFO'] == '/peak':
        with lock:
            body = 'peak=%d served=%d in_flight=%d' % (peak, served, in_flight)
        start_response('200 OK', headers)
        return [body.encode()]

    with lock:
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 4:
            touch('four-running')
    try:
        release = os.path.join(STATE, 'release')
        deadline = time.monotonic() + 30
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        with lock:
            in_flight -= 1
            served += 1

    start_response('200 OK', headers)
    return [b'slow done thread=%d' % threading.get_ident()]
EOF

my $state = state_dir($t);

$t->run();

###############################################################################

# 16 requests for 4 threads: 4 run and block, 12 wait in the queue

my @s = map { http_get("/slow?$_", start => 1) } 1 .. 16;
is(scalar(grep { defined } @s), 16, '16 requests sent');

ok($t->waitforfile("$state/four-running"), 'four requests in the app');

# the worker is not blocked: static files and return still answered

like(http_get('/static/index.html'), qr/\x0d\x0a\x0d\x0astatic page\n\z/,
	'static file while all threads are busy');
like(http_get('/return'), qr/\x0d\x0a\x0d\x0areturned\n\z/,
	'return while all threads are busy');

# release them: all 16 complete, on at most 4 distinct threads

$t->write_file('state/release', '');

my @r = map { http_end($_) } @s;
is(scalar(grep { defined && /^HTTP\/1\.1 200 OK/ } @r), 16, 'all 200');
is(scalar(grep { defined && /slow done/ } @r), 16, 'all answered by the app');

my %threads = map { /thread=(\d+)/ ? ($1 => 1) : () } grep { defined } @r;
is(scalar(keys %threads), 4, 'four pool threads');

# never more than wsgi_threads requests in the app at once

my $peak = http_content(http_get('/peak'));
like($peak, qr/^peak=4 /, 'peak is wsgi_threads');
like($peak, qr/ served=16 /, 'all served');
like($peak, qr/ in_flight=0$/, 'none left in flight');

###############################################################################

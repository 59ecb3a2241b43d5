#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: a worker that goes quiet after a large
# response gives its memory back.  The body's Python bytes object is sent
# without a copy; once nginx has sent it, a pool thread must drop it (that
# needs the interpreter).  A busy thread does so before its next job; when
# every thread is idle, the module wakes one as soon as a megabyte or more
# waits, instead of keeping the memory until the next request.

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx;
use Test::WSGI qw/ poll rss_kb worker_pid /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(5)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_threads  2;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }
    }
}

EOF

$t->write_file('app.py', <<'EOF');
def application(environ, start_response):
    if environ['PATH_INFO'] == '/big':
        # one bytes object, made per request: 64 MiB of the worker's memory
        # that only the response still holds
        body = b'x' * (64 << 20)
    else:
        body = b'small'
    start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                              ('Content-Length', str(len(body)))])
    return [body]
EOF

$t->run();

###############################################################################

SKIP: {
skip 'TEST_WSGI_RSS=off (RSS means nothing here)', 5
	if ($ENV{TEST_WSGI_RSS} // '') eq 'off';

like(http_get('/'), qr/small$/, 'small response');
my $pid = worker_pid($t);
ok($pid, 'the worker');
my $before = rss_kb($pid);

my $r = http_get('/big');
is(length($r =~ s/^.*?\r\n\r\n//sr), 64 << 20, 'the 64 MiB response arrived whole');

# no request follows: the memory must come back by itself
my $after;
ok(poll(sub { $after = rss_kb($pid); $after < $before + 16 * 1024 }, 15),
	'the idle worker gave the response\'s memory back')
	or diag("RSS $before kB before, $after kB after");

like(http_get('/'), qr/small$/, 'and serves on');
}

###############################################################################

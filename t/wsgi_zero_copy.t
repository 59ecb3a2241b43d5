#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: large bytes objects reach the client
# without a copy, byte-exact, and the module's reference to each one is
# released (on a pool thread, with the GIL) once nginx has sent it: the
# object's reference count returns to what it was before the request.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::MD5 qw/ md5_hex /;

use Test::Nginx qw/ :DEFAULT http_content /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(11)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # one thread: the request that reads the reference count runs on the
    # thread that served (and now releases) the big responses
    wsgi_threads  1;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass         %%TESTDIR%%/app.py;
            wsgi_buffer_size  64k;
        }
    }
}

EOF

$t->write_file('app.py', <<'EOF');
import sys

# 256 KiB, every byte position distinguishable modulo 251
BIG = bytes(i % 251 for i in range(256 * 1024))
SMALL = b'small body\n'
BASE = sys.getrefcount(BIG)

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/refs':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'extra=%d' % (sys.getrefcount(BIG) - BASE)]
    if path == '/list':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return [BIG]
    if path == '/stream':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        def gen():
            for _ in range(40):
                yield BIG
        return gen()
    if path == '/cut':
        # Content-Length shorter than the object: only that much is sent
        start_response('200 OK', [('Content-Length', '100000')])
        return [BIG]
    if path == '/mixed':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return [SMALL, BIG, SMALL]
    start_response('404 Not Found', [])
    return [b'']
EOF

$t->run();

###############################################################################

my $big = join '', map { chr($_ % 251) } 0 .. 256 * 1024 - 1;

my $r = http_get('/list');
is(md5_hex(http_content($r) // ''), md5_hex($big), 'list of one big bytes');
like(http_get('/refs'), qr/extra=0$/, 'list: reference released');

$r = http_get('/stream');
is(length(http_content($r) // ''), 40 * length($big), 'stream: length');
is(md5_hex(http_content($r) // ''), md5_hex($big x 40), 'stream: md5');
like(http_get('/refs'), qr/extra=0$/, 'stream: references released');

$r = http_get('/cut');
like($r, qr/^Content-Length: 100000\x0d?$/m, 'cut: Content-Length');
is(http_content($r), substr($big, 0, 100000), 'cut: body cut at Content-Length');
like(http_get('/refs'), qr/extra=0$/, 'cut: reference released');

$r = http_get('/mixed');
is(http_content($r), "small body\n" . $big . "small body\n", 'mixed list');

# a client that leaves mid-stream: the held objects are released too
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080))
	or die "connect: $!";
print $s "GET /stream HTTP/1.0\r\nHost: localhost\r\n\r\n";
my $got = '';
while (length($got) < 100_000) {
	my $n = sysread($s, $got, 65536, length $got);
	last unless $n;
}
close $s;
ok(length($got) >= 100_000, 'abort: first bytes read');

# the aborted generator may still be finishing: wait until the thread is
# free again (its next request runs after it), then look
my $refs;
for (1 .. 50) {
	$refs = http_get('/refs');
	last if $refs =~ /extra=0$/;
	select undef, undef, undef, 0.1;
}
like($refs, qr/extra=0$/, 'abort: references released');

###############################################################################

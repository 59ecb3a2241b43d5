#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: streamed responses over the protocols
# nginx speaks.  HTTP/1.0 (close-delimited, not chunked), HTTP/1.1
# keep-alive and pipelining (answers complete and in order), TLS
# (wsgi.url_scheme https, HTTPS=on) and HTTP/2 (streamed as produced,
# byte-exact).  TLS and HTTP/2 use openssl and curl when present.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::MD5 qw/ md5_hex /;
use IO::Select;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ wait_file wait_log read_until state_dir /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

sub in_path {
	my ($prog) = @_;
	return grep { -x "$_/$prog" } split /:/, $ENV{PATH} // '';
}

my $t = Test::Nginx->new()->has(qw/http/);

# TLS needs the ssl module and openssl to make a certificate; HTTP/2 also
# needs the http_v2 module, and both need curl as the client
my $tls = '';
$tls = 'no http_ssl module in nginx' unless $t->has_module('http_ssl');
$tls ||= 'no http_v2 module in nginx' unless $t->has_module('http_v2');
$tls ||= 'openssl not found' unless in_path('openssl');
$tls ||= 'curl not found' unless in_path('curl');
$tls ||= 'curl without HTTP2' unless `curl -V 2>/dev/null` =~ /^Features:.*\bHTTP2\b/m;

my $tls_server = $tls ? '' : <<'EOF';
    server {
        listen       127.0.0.1:8443 ssl;
        http2        on;
        server_name  localhost;

        ssl_certificate      cert.pem;
        ssl_certificate_key  key.pem;

        client_max_body_size     64m;
        client_body_buffer_size  16k;

        location / {
            wsgi_pass  %%TESTDIR%%/proto.py;
        }

        location /unbuffered/ {
            wsgi_pass               %%TESTDIR%%/proto.py;
            wsgi_request_buffering  off;
        }
    }
EOF

# "http2 on" is nginx 1.25.1+; older nginx says "listen ... ssl http2"
$tls_server =~ s/ ssl;\n(\s+)http2        on;\n/ ssl http2;\n/
	unless $t->has_version('1.25.1');

$t->plan(44)->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/proto.py;
        }
    }

$tls_server
}

EOF

$t->write_file('proto.py', <<'EOF');
import os, struct, time

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
    path = environ['PATH_INFO']
    q = environ['QUERY_STRING']
    plain = [('Content-Type', 'text/plain')]

    if path == '/env':
        start_response('200 OK', plain)
        keys = ('wsgi.url_scheme', 'HTTPS', 'SERVER_PROTOCOL', 'REMOTE_PORT')
        return [' '.join('%s=%s' % (k, environ.get(k, '-')) for k in keys).encode()
                + (' q=' + q).encode()]

    if path == '/stream':
        start_response('200 OK', plain)
        def gen():
            for i in range(int(q)):
                yield b'part %d\n' % i
        return gen()

    if path == '/wait':
        start_response('200 OK', plain)
        def gen():
            yield b'first\n'
            yield b'released\n' if wait_for('release-' + q) else b'timed out\n'
        return gen()

    if path == '/forever':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        def gen():
            try:
                if q == 'pre':
                    open(os.path.join(STATE, 'started-' + q), 'w').close()
                    wait_for('release-' + q)
                for i in range(100000):
                    yield b'x' * 65536
            except GeneratorExit:
                open(os.path.join(STATE, 'genexit-' + q), 'w').close()
                raise
        return gen()

    if path.endswith('/upload'):
        import hashlib
        h, n = hashlib.md5(), 0
        while True:
            b = environ['wsgi.input'].read(65536)
            if not b:
                break
            h.update(b)
            n += len(b)
        start_response('200 OK', plain)
        return [b'len=%d md5=%s' % (n, h.hexdigest().encode())]

    if path == '/file':
        f = open(os.path.join(os.path.dirname(STATE), 'data.bin'), 'rb')
        f.seek(int(q))
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](f)

    if path == '/big':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        def gen():
            for i in range(int(q)):
                yield struct.pack('>Q', i) + bytes([i % 251]) * (65536 - 8)
        return gen()

    start_response('404 Not Found', plain)
    return [b'not found\n']
EOF

my $d = $t->testdir();

# 5 MiB + a bit, pseudo-random, for uploads and wsgi.file_wrapper
my $data = join '', map { pack('N', int(rand(2**32))) } 1 .. (5 * 262144 + 77);
$t->write_file('data.bin', $data);
my $state = state_dir($t);

unless ($tls) {
	system("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost "
		. "-days 2 -keyout $d/key.pem -out $d/cert.pem >/dev/null 2>&1") == 0
		or die "openssl req failed\n";
}

$t->run();

###############################################################################

my $parts5 = join '', map { "part $_\n" } 0 .. 4;

# HTTP/1.0: a streamed body is delimited by the end of the connection

my $r = http("GET /stream?5 HTTP/1.0\r\nHost: localhost\r\n\r\n");
like($r, qr/^HTTP\/1\.1 200/, 'HTTP/1.0: 200');
unlike($r, qr/^Transfer-Encoding/mi, 'HTTP/1.0: not chunked');
unlike($r, qr/^Content-Length/mi, 'HTTP/1.0: no length');
like($r, qr/\x0d\x0a\x0d\x0a\Q$parts5\E\z/, 'HTTP/1.0: body up to the close');

# HTTP/1.1 keep-alive: two requests, one connection

my $s = http("GET /stream?5 HTTP/1.1\r\nHost: localhost\r\n\r\n", start => 1);
my ($head, $body) = read_response($s);
like($head, qr/^Transfer-Encoding: chunked\x0d?$/mi, 'keep-alive: chunked');
is($body, $parts5, 'keep-alive: first response');

http("GET /env?second HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
	socket => $s, start => 1);
($head, $body) = read_response($s);
like($body, qr/ q=second$/, 'keep-alive: second response on the connection');
like($body, qr/SERVER_PROTOCOL=HTTP\/1\.1 /, 'keep-alive: HTTP/1.1');
close $s;

# HEAD of a streamed response: no body, the connection stays usable

$s = http("HEAD /stream?5 HTTP/1.1\r\nHost: localhost\r\n\r\n"
	. "GET /env?after-head HTTP/1.1\r\nHost: localhost\r\n"
	. "Connection: close\r\n\r\n", start => 1);
my $all = read_until($s, qr/ q=after-head\z/);
like($all, qr/^HTTP\/1\.1 200 .*?\x0d\x0a\x0d\x0aHTTP\/1\.1 200 /s,
	'HEAD: no body before the next response');
like($all, qr/ q=after-head\z/, 'HEAD: next request answered');
close $s;

# pipelining: three requests in one write, answered in order

$s = http("GET /stream?2 HTTP/1.1\r\nHost: localhost\r\n\r\n"
	. "GET /env?p2 HTTP/1.1\r\nHost: localhost\r\n\r\n"
	. "GET /stream?5 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
	start => 1);
my @bodies = map { (read_response($s))[1] } 1 .. 3;
is($bodies[0], "part 0\npart 1\n", 'pipelined: first');
like($bodies[1], qr/ q=p2$/, 'pipelined: second');
is($bodies[2], $parts5, 'pipelined: third');
close $s;

# plain http for comparison

like(http_get('/env?plain'), qr/wsgi\.url_scheme=http HTTPS=- /,
	'plain: url_scheme http, no HTTPS');

SKIP: {
skip $tls, 30 if $tls;

my $base = 'https://127.0.0.1:' . port(8443);

# TLS with HTTP/1.1

my $out = curl('--http1.1', '-w', ' version=%{http_version}', "$base/env?tls");
like($out, qr/^wsgi\.url_scheme=https /, 'TLS: url_scheme https');
like($out, qr/ HTTPS=on /, 'TLS: HTTPS=on');
like($out, qr/ version=1\.1$/, 'TLS: HTTP/1.1');

$out = curl('--http1.1', "$base/stream?5");
is($out, $parts5, 'TLS: streamed body');

# HTTP/2

$out = curl('--http2', '-w', ' version=%{http_version}', "$base/env?h2");
like($out, qr/^wsgi\.url_scheme=https HTTPS=on /, 'HTTP/2: https environ');
like($out, qr/ SERVER_PROTOCOL=HTTP\/2\.0 /, 'HTTP/2: SERVER_PROTOCOL');
like($out, qr/ version=2$/, 'HTTP/2: negotiated');

$out = curl('--http2', "$base/stream?5");
is($out, $parts5, 'HTTP/2: streamed body');

# the first chunk arrives before the app produces the rest

my $pid = open(my $fh, '-|', 'curl', '-sSkN', '--http2', "$base/wait?h2")
	or die "curl: $!";
my $got = read_until($fh, qr/first\n/);
is($got, "first\n", 'HTTP/2: first chunk streamed');
$t->write_file('state/release-h2', '');
$got .= read_until($fh, qr/released\n|timed out\n/);
is($got, "first\nreleased\n", 'HTTP/2: rest after release');
close $fh;

# 8 MiB byte-exact over HTTP/2 and over TLS HTTP/1.1

my $expect = md5_hex(join '',
	map { pack('Q>', $_) . (chr($_ % 251) x (65536 - 8)) } 0 .. 127);

for my $v ('--http2', '--http1.1') {
	$out = curl($v, "$base/big?128");
	is(length $out, 128 * 65536, "$v: 8 MiB length");
	is(md5_hex($out), $expect, "$v: 8 MiB md5");
}

# two HTTP/2 streams on one connection

$out = curl('--http2', "$base/stream?2", "$base/env?second-stream");
like($out, qr/^part 0\npart 1\nwsgi\.url_scheme=https .* q=second-stream$/s,
	'HTTP/2: two requests in one curl run');

# request bodies, buffered and not, and wsgi.file_wrapper, over TLS and
# HTTP/2

my $dlen = length $data;
my $dmd5 = md5_hex($data);
for my $v ('--http2', '--http1.1') {
	for my $loc ('', '/unbuffered') {
		$out = curl($v, '--data-binary', "\@$d/data.bin",
			'-H', 'Content-Type: application/octet-stream',
			"$base$loc/upload");
		is($out, "len=$dlen md5=$dmd5", "$v: upload to '$loc/upload'");

		# no length: chunked in HTTP/1.1, just DATA frames in HTTP/2
		$out = curl($v, '--data-binary', "\@$d/data.bin",
			'-H', 'Content-Length:', '-H', 'Transfer-Encoding: chunked',
			"$base$loc/upload");
		is($out, "len=$dlen md5=$dmd5",
			"$v: upload without length to '$loc/upload'");
	}
	$out = curl($v, "$base/file?1000");
	is(md5_hex($out), md5_hex(substr($data, 1000)), "$v: file_wrapper");
}

# client gone mid-stream and before the first chunk: GeneratorExit

$pid = open($fh, '-|', 'curl', '-sSkN', '--http2', "$base/forever?mid")
	or die "curl: $!";
like(read_until($fh, qr/^x/), qr/^x/, 'HTTP/2 abort mid-stream: streaming');
kill 'TERM', $pid;
close $fh;
ok(wait_file("$state/genexit-mid"), 'HTTP/2 abort mid-stream: GeneratorExit');

my $log = "$d/error.log";
my $off = -s $log;
$pid = open($fh, '-|', 'curl', '-sSkN', '--http2', "$base/forever?pre")
	or die "curl: $!";
ok(wait_file("$state/started-pre"), 'HTTP/2 abort before first chunk: running');
kill 'TERM', $pid;
close $fh;
ok(wait_log($log, qr/\[info\].*client prematurely closed/, $off),
	'HTTP/2 abort before first chunk: info line');
$t->write_file('state/release-pre', '');
ok(wait_file("$state/genexit-pre"),
	'HTTP/2 abort before first chunk: GeneratorExit');

}

###############################################################################

# curl's output for the URLs (-k: the certificate is self-signed)
sub curl {
	my (@args) = @_;
	open my $fh, '-|', 'curl', '-sSk', '--max-time', '20', @args
		or die "curl: $!";
	binmode $fh;
	local $/;
	my $out = <$fh> // '';
	close $fh;
	return $out;
}

# reads exactly one response (Content-Length or chunked) from a
# connection that may carry more; returns (head, body)
my %pending;
sub read_response {
	my ($s) = @_;
	my $buf = delete $pending{$s} // '';
	my $sel = IO::Select->new($s);
	my $end = time + 8;
	my $more = sub {
		my $left = $end - time;
		return 0 unless $left > 0 && $sel->can_read($left);
		return sysread($s, $buf, 65536, length $buf);
	};

	while ($buf !~ /\x0d\x0a\x0d\x0a/) { $more->() or return }
	$buf =~ s/^(.*?\x0d\x0a)\x0d\x0a//s;
	my $head = $1;
	my $body = '';

	if ($head =~ /^Content-Length:\s*(\d+)/mi) {
		my $len = $1;
		while (length $buf < $len) { $more->() or last }
		$body = substr($buf, 0, $len, '');
	} elsif ($head =~ /^Transfer-Encoding:\s*chunked/mi) {
		while (1) {
			while ($buf !~ /^[0-9a-f]+\x0d\x0a/i) { $more->() or last }
			my ($line) = $buf =~ /^([0-9a-f]+)\x0d\x0a/i or last;
			my $len = hex $line;
			my $need = length($line) + 2 + $len + 2;
			while (length $buf < $need) { $more->() or last }
			$body .= substr($buf, length($line) + 2, $len);
			substr($buf, 0, $need, '');
			last if $len == 0;
		}
	}

	$pending{$s} = $buf;
	return ($head, $body);
}

###############################################################################

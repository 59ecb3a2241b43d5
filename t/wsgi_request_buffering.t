#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: request bodies, buffered (memory and temp
# file) and with wsgi_request_buffering off, where the app reads the body
# while the client still sends it; byte-exact large uploads with
# Content-Length and chunked; client_max_body_size.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::MD5 qw/ md5_hex /;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ slurp wait_file wait_log state_dir /;
use Socket ();

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(30)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    client_max_body_size     64m;
    client_body_buffer_size  16k;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location /buffered/ {
            wsgi_pass  %%TESTDIR%%/upload.py;
        }

        location /unbuffered/ {
            wsgi_pass               %%TESTDIR%%/upload.py;
            wsgi_request_buffering  off;
        }

        # the app does not read the body: the read timeout is the app's
        location /unread-timeout/ {
            wsgi_pass               %%TESTDIR%%/upload.py;
            wsgi_request_buffering  off;
            wsgi_buffer_size        4k;
            wsgi_read_timeout       1s;
        }

        location /unread/ {
            wsgi_pass               %%TESTDIR%%/upload.py;
            wsgi_request_buffering  off;
            wsgi_buffer_size        4k;
        }

        location /small/ {
            wsgi_pass             %%TESTDIR%%/upload.py;
            client_max_body_size  1k;
        }

        location /small-unbuffered/ {
            wsgi_pass               %%TESTDIR%%/upload.py;
            wsgi_request_buffering  off;
            client_max_body_size    1k;
        }
    }
}

EOF

$t->write_file('upload.py', <<'EOF');
import hashlib, os, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

def record(name, data):
    tmp = os.path.join(STATE, name + '.tmp')
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, os.path.join(STATE, name))

def application(environ, start_response):
    what = environ['PATH_INFO'].rsplit('/', 1)[-1]
    q = environ['QUERY_STRING']
    inp = environ['wsgi.input']

    if what == 'md5':
        h, n = hashlib.md5(), 0
        while True:
            b = inp.read(65536)
            if not b:
                break
            h.update(b)
            n += len(b)
        body = ('len=%d md5=%s cl=%s' % (n, h.hexdigest(),
                environ.get('CONTENT_LENGTH', '-'))).encode()

    elif what == 'ignore':
        # reads nothing; waits (in Python, so a timeout can interrupt it)
        # until the test says so
        record('ignoring-' + q, b'')
        try:
            for _ in range(600):
                if os.path.exists(os.path.join(STATE, 'release-' + q)):
                    break
                time.sleep(0.05)
        except BaseException as e:
            record('ignore-ended-' + q, type(e).__name__.encode())
            raise
        record('ignore-ended-' + q, b'released')
        body = b'ignored'

    elif what == 'early':
        # the first 11 bytes, announced to the test, then the rest
        first = inp.read(11)
        record('got-first-' + q, first)
        try:
            rest = inp.read()
        except OSError as e:
            record('read-error-' + q, repr(e).encode())
            raise
        body = b'first=' + first + b' rest=' + rest

    else:
        body = b'len=%d' % len(inp.read())

    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
EOF

my $state = state_dir($t);

$t->run();

###############################################################################

# unbuffered: the app reads the first part while the client holds back
# the rest until the app has announced it (chunked, then Content-Length)

my $s = http("POST /unbuffered/early?c HTTP/1.1\r\nHost: localhost\r\n"
	. "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
	. "b\r\nfirst part;\r\n", start => 1);
ok(wait_file("$state/got-first-c"), 'chunked: app read before the rest was sent');
is(slurp("$state/got-first-c"), 'first part;', 'chunked: first part');
http("5\r\nrest.\r\n0\r\n\r\n", socket => $s, start => 1);
is(http_content(http_end($s)), 'first=first part; rest=rest.',
	'chunked: whole body');

$s = http("POST /unbuffered/early?l HTTP/1.1\r\nHost: localhost\r\n"
	. "Connection: close\r\nContent-Length: 16\r\n\r\n"
	. "first part;", start => 1);
ok(wait_file("$state/got-first-l"), 'length: app read before the rest was sent');
is(slurp("$state/got-first-l"), 'first part;', 'length: first part');
http("rest.", socket => $s, start => 1);
is(http_content(http_end($s)), 'first=first part; rest=rest.',
	'length: whole body');

# 32 MiB, byte-exact, both ways, with Content-Length and chunked

my $base = join '', map { pack('N', int(rand(2**32))) } 1 .. 262144;
my $data = join '', map { pack('N', $_) . substr($base, 4) } 0 .. 31;
my $len = length $data;
my $md5 = md5_hex($data);

# chunks of assorted sizes, so that chunk headers fall anywhere
my ($chunked, $pos, $i) = ('', 0, 0);
my @sizes = (1, 1000, 65536, 70001, 3, 12345, 300000);
while ($pos < $len) {
	my $n = $sizes[$i++ % @sizes];
	$n = $len - $pos if $n > $len - $pos;
	$chunked .= sprintf("%x\r\n", $n) . substr($data, $pos, $n) . "\r\n";
	$pos += $n;
}
$chunked .= "0\r\n\r\n";

my $log = $t->testdir() . '/error.log';
my $off = -s $log;

for my $where (qw/ buffered unbuffered /) {
	my $r = http("POST /$where/md5 HTTP/1.0\r\nHost: localhost\r\n"
		. "Content-Length: $len\r\n\r\n", body => $data);
	is(http_content($r), "len=$len md5=$md5 cl=$len",
		"$where: 32 MiB with Content-Length");

	my $cl = $where eq 'buffered' ? $len : '-';
	$r = http("POST /$where/md5 HTTP/1.1\r\nHost: localhost\r\n"
		. "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
		body => $chunked);
	is(http_content($r), "len=$len md5=$md5 cl=$cl", "$where: 32 MiB chunked");
}

like(substr(slurp($log), $off),
	qr/\[warn\].*client request body is buffered to a temporary file.*buffered\/md5/,
	'buffered: body went through a temp file');

# client_max_body_size

my $big = 'x' x 2000;
my $big_chunked = sprintf("%x\r\n%s\r\n0\r\n\r\n", 2000, $big);

for my $where (qw/ small small-unbuffered /) {
	like(http("POST /$where/len HTTP/1.0\r\nHost: localhost\r\n"
		. "Content-Length: 2000\r\n\r\n", body => $big),
		qr/^HTTP\/1\.1 413/, "$where: Content-Length over the limit");
	like(http("POST /$where/len HTTP/1.1\r\nHost: localhost\r\n"
		. "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
		body => $big_chunked),
		qr/^HTTP\/1\.1 413/, "$where: chunked over the limit");
}

# over the limit once the app already reads: 413, the app's read fails

$s = http("POST /small-unbuffered/early?x HTTP/1.1\r\nHost: localhost\r\n"
	. "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
	. "b\r\nfirst part;\r\n", start => 1);
ok(wait_file("$state/got-first-x"), 'limit while reading: app started');
http($big_chunked, socket => $s, start => 1);
like(http_end($s), qr/^HTTP\/1\.1 413/, 'limit while reading: 413');
ok(wait_file("$state/read-error-x"), 'limit while reading: read() raised');

# an app that does not read an unbuffered body: nginx stops reading it, and
# wsgi_read_timeout still applies to the app

my $part = 'x' x 262144;
$off = -s $log;
my $r = http("POST /unread-timeout/ignore?t HTTP/1.0\r\nHost: localhost\r\n"
	. "Content-Length: 1048576\r\n\r\n" . $part);
like($r, qr/^HTTP\/1\.1 504 /, 'unread body: 504 after wsgi_read_timeout');
ok(wait_file("$state/ignore-ended-t"), 'unread body: app stopped');
is(slurp("$state/ignore-ended-t"), 'RequestTimeout', 'unread body: interrupted');
like(substr(slurp($log), $off), qr/\[error\].*wsgi: application timed out/,
	'unread body: timeout logged');

# the client resets the connection while its body waits for the app

$s = http("POST /unread/ignore?r HTTP/1.0\r\nHost: localhost\r\n"
	. "Content-Length: 1048576\r\n\r\n" . $part, start => 1);
ok(wait_file("$state/ignoring-r"), 'reset: app started');
setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_LINGER(), pack('ii', 1, 0));
close $s;
ok(wait_log($log, qr/wsgi: client prematurely closed connection while waiting for application/, $off),
	'reset: noticed while the app does not read');
open my $fh, '>', "$state/release-r" or die $!;
close $fh;
ok(wait_file("$state/ignore-ended-r"), 'reset: app finished');
# or closes it, short of the body it announced (with room left in the
# socket's buffer: a full one holds the client's FIN back, so then the
# read timeout decides)

$off = -s $log;
$s = http("POST /unread/ignore?f HTTP/1.0\r\nHost: localhost\r\n"
	. "Content-Length: 1048576\r\n\r\n" . ('x' x 40000), start => 1);
ok(wait_file("$state/ignoring-f"), 'closed: app started');
close $s;
ok(wait_log($log, qr/wsgi: client prematurely closed connection while waiting for application/, $off),
	'closed: noticed while the app does not read');
open $fh, '>', "$state/release-f" or die $!;
close $fh;

# a client that sent its whole body and closed its side is not gone

$s = http("POST /unread/ignore?h HTTP/1.0\r\nHost: localhost\r\n"
	. "Content-Length: 262144\r\n\r\n" . $part, start => 1);
ok(wait_file("$state/ignoring-h"), 'half-closed: app started');
shutdown($s, 1);
open $fh, '>', "$state/release-h" or die $!;
close $fh;
like(http_end($s), qr/^HTTP\/1\.1 200 .*ignored\z/s, 'half-closed: response');

like(http_get('/unread/len'), qr/^HTTP\/1\.1 200 .*len=0\z/s, 'still serving');

###############################################################################

###############################################################################

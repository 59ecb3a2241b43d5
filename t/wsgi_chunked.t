#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: request bodies without a length.  nginx
# takes the chunk framing off (HTTP/1.1) or reads DATA frames (HTTP/2), so
# the app reads decoded bytes and its environ must say so: no
# HTTP_TRANSFER_ENCODING; buffered, CONTENT_LENGTH is the decoded length;
# with wsgi_request_buffering off, no CONTENT_LENGTH (it is not known yet)
# and wsgi.input_terminated is true.  HTTP/2 is spoken as h2c with prior
# knowledge by a few lines of Perl below, which (unlike curl) can send a
# transfer-encoding header on an HTTP/2 request.

###############################################################################

use warnings;
use strict;

use Test::More;
use JSON::PP;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw/ time /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ http_post http_post_chunked read_until /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);

my $h2 = $t->has_module('http_v2') ? '' : 'no http_v2 module in nginx';

my $h2_server = $h2 ? '' : <<'EOF';
    server {
        listen       127.0.0.1:8081;
        http2        on;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/echo.py;
        }

        location /unbuffered/ {
            wsgi_pass               %%TESTDIR%%/echo.py;
            wsgi_request_buffering  off;
        }
    }
EOF

# "http2 on" is nginx 1.25.1+; older nginx says "listen ... http2"
$h2_server =~ s/;\n(\s+)http2        on;\n/ http2;\n/
	unless $t->has_version('1.25.1');

$t->plan(29)->write_file_expand('nginx.conf', <<"EOF");

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
            wsgi_pass  %%TESTDIR%%/echo.py;
        }

        location /unbuffered/ {
            wsgi_pass               %%TESTDIR%%/echo.py;
            wsgi_request_buffering  off;
        }
    }

$h2_server
}

EOF

# the environ keys about the body, and the body as the app reads it; with
# ?stream, the environ goes out as a first line once 5 body bytes are in,
# then the body, read to its end
$t->write_file('echo.py', <<'EOF');
import json

def application(environ, start_response):
    inp = environ['wsgi.input']
    out = {k: environ.get(k) for k in (
        'CONTENT_LENGTH', 'HTTP_TRANSFER_ENCODING', 'SERVER_PROTOCOL')}
    out['wsgi.input_terminated'] = environ.get('wsgi.input_terminated')
    start_response('200 OK', [('Content-Type', 'application/json')])
    if environ['QUERY_STRING'] == 'stream':
        first = inp.read(5)
        def gen():
            yield json.dumps(out).encode() + b'\n'
            yield first + inp.read()
        return gen()
    out['body'] = inp.read().decode('latin-1')
    return [json.dumps(out).encode()]
EOF

$t->run();

###############################################################################

my $chunks = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

# HTTP/1.1 chunked, buffered: the decoded length

my $e = env(http(<<EOF . $chunks));
POST / HTTP/1.1
Host: localhost
Connection: close
Transfer-Encoding: chunked

EOF
is($e->{body}, 'hello world', 'HTTP/1.1 chunked: decoded body');
is($e->{CONTENT_LENGTH}, '11', 'HTTP/1.1 chunked: CONTENT_LENGTH decoded length');
is($e->{HTTP_TRANSFER_ENCODING}, undef,
	'HTTP/1.1 chunked: no HTTP_TRANSFER_ENCODING');

# unbuffered, the whole body in with the headers: its length is known

$e = env(http(<<EOF . $chunks));
POST /unbuffered/ HTTP/1.1
Host: localhost
Connection: close
Transfer-Encoding: chunked

EOF
is($e->{body}, 'hello world', 'HTTP/1.1 chunked unbuffered, all in: decoded body');
is($e->{CONTENT_LENGTH}, '11', 'HTTP/1.1 chunked unbuffered, all in: CONTENT_LENGTH');
is($e->{HTTP_TRANSFER_ENCODING}, undef,
	'HTTP/1.1 chunked unbuffered, all in: no HTTP_TRANSFER_ENCODING');

# unbuffered, the app called before the rest is sent: the length is unknown

my $s = http(<<EOF . "5\r\nhello\r\n", start => 1);
POST /unbuffered/?stream HTTP/1.1
Host: localhost
Connection: close
Transfer-Encoding: chunked

EOF
my $got = read_until($s, qr/\x0d\x0a\x0d\x0a[0-9a-f]+\x0d\x0a[^\x0a]*\x0a/i);
syswrite($s, "6\r\n world\r\n0\r\n\r\n");
$got .= http_end($s) // '';
my ($line, $rest) = split /\n/, http_content($got) // '', 2;
$e = eval { decode_json($line // '') } || {};
is($rest, 'hello world', 'HTTP/1.1 chunked unbuffered, streamed: decoded body');
is($e->{CONTENT_LENGTH}, undef,
	'HTTP/1.1 chunked unbuffered, streamed: no CONTENT_LENGTH');
is($e->{HTTP_TRANSFER_ENCODING}, undef,
	'HTTP/1.1 chunked unbuffered, streamed: no HTTP_TRANSFER_ENCODING');
ok($e->{'wsgi.input_terminated'},
	'HTTP/1.1 chunked unbuffered, streamed: wsgi.input_terminated');

# a larger body in many chunks, so that chunk headers would show if left in

my $big = join '', map { sprintf('%05d;', $_) } 1 .. 5000;
$e = env(http_post_chunked('/', unpack('(A1000)*', $big)));
is($e->{body}, $big, 'HTTP/1.1 30000 bytes in 30 chunks: decoded body');
is($e->{CONTENT_LENGTH}, length $big, 'HTTP/1.1 30000 bytes: CONTENT_LENGTH');

$e = env(http_post_chunked('/unbuffered/', unpack('(A1000)*', $big)));
is($e->{body}, $big, 'HTTP/1.1 30000 bytes unbuffered: decoded body');

# with a Content-Length the app sees it in both modes

$e = env(http_post('/', 'hello world'));
is($e->{CONTENT_LENGTH}, '11', 'Content-Length: CONTENT_LENGTH');
$e = env(http_post('/unbuffered/', 'hello world'));
is($e->{CONTENT_LENGTH}, '11', 'Content-Length unbuffered: CONTENT_LENGTH');
is($e->{body}, 'hello world', 'Content-Length unbuffered: body');

# HTTP/2: a request without content-length but with a transfer-encoding
# header (malformed in HTTP/2; nginx 1.28 passes it on, later versions
# answer 400 themselves); the body in DATA frames

SKIP: {
skip $h2, 13 if $h2;

my ($status, $body);
my @te = ('transfer-encoding' => 'chunked');

SKIP: {
($status, $body) = h2c('POST', '/', [@te], 'hello', ' world');

if (defined $status && $status == 400) {
	like($t->read_file('error.log'),
		qr/\[info\].*client sent "Transfer-Encoding" header/,
		'HTTP/2 with transfer-encoding: nginx refuses it itself');
	skip 'this nginx refuses transfer-encoding in HTTP/2 (400)', 8;
}

is($status, 200, 'HTTP/2 buffered: status');
$e = eval { decode_json($body) } || {};
is($e->{SERVER_PROTOCOL}, 'HTTP/2.0', 'HTTP/2 buffered: HTTP/2');
is($e->{body}, 'hello world', 'HTTP/2 buffered: body');
is($e->{CONTENT_LENGTH}, '11', 'HTTP/2 buffered: CONTENT_LENGTH');
is($e->{HTTP_TRANSFER_ENCODING}, undef,
	'HTTP/2 buffered: no HTTP_TRANSFER_ENCODING');

# unbuffered: the rest of the body only after the app has answered its
# first line (undef in the DATA list: wait for response data)

($status, $body) = h2c('POST', '/unbuffered/?stream', [@te],
	'hello', undef, ' world');
($line, $rest) = split /\n/, $body, 2;
$e = eval { decode_json($line // '') } || {};
is($rest, 'hello world', 'HTTP/2 unbuffered: body');
is($e->{CONTENT_LENGTH}, undef, 'HTTP/2 unbuffered: no CONTENT_LENGTH');
is($e->{HTTP_TRANSFER_ENCODING}, undef,
	'HTTP/2 unbuffered: no HTTP_TRANSFER_ENCODING');
ok($e->{'wsgi.input_terminated'}, 'HTTP/2 unbuffered: wsgi.input_terminated');

}

# without the header, as HTTP/2 clients send it

($status, $body) = h2c('POST', '/', [], 'hello', ' world');
$e = eval { decode_json($body) } || {};
is($e->{CONTENT_LENGTH}, '11', 'HTTP/2 no length buffered: CONTENT_LENGTH');
is($e->{body}, 'hello world', 'HTTP/2 no length buffered: body');

($status, $body) = h2c('POST', '/unbuffered/', [], 'hello', ' world');
$e = eval { decode_json($body) } || {};
is($e->{CONTENT_LENGTH}, undef, 'HTTP/2 no length unbuffered: no CONTENT_LENGTH');
is($e->{body}, 'hello world', 'HTTP/2 no length unbuffered: body');

}

###############################################################################

# the JSON body of a response, decoded; {} if there is none
sub env {
	my ($r) = @_;
	return eval { decode_json(http_content($r) // '') } || {};
}

# One HTTP/2 request over cleartext with prior knowledge: headers as
# HPACK literals (no indexing, no Huffman), each element of @data a DATA
# frame, the last one ending the stream; an undef element waits for the
# first response DATA before the frames after it are sent.  Returns
# (status, body).
sub h2c {
	my ($method, $path, $headers, @data) = @_;

	my $s = IO::Socket::INET->new(Proto => 'tcp',
		PeerAddr => '127.0.0.1:' . port(8081))
		or die "Can't connect to nginx: $@\n";

	my $int = sub {		# HPACK integer, 7-bit prefix (H = 0)
		my ($n) = @_;
		return chr($n) if $n < 127;
		my $o = chr(127);
		for ($n -= 127; $n >= 128; $n >>= 7) { $o .= chr(($n & 127) | 128) }
		return $o . chr($n);
	};
	my $block = '';
	my @h = (':method' => $method, ':scheme' => 'http', ':path' => $path,
		':authority' => 'localhost', @$headers);
	while (my ($n, $v) = splice @h, 0, 2) {
		$block .= "\x00" . $int->(length $n) . $n . $int->(length $v) . $v;
	}

	my $frame = sub {
		my ($type, $flags, $id, $payload) = @_;
		return substr(pack('N', length $payload), 1)
			. pack('CCN', $type, $flags, $id) . $payload;
	};

	my $out = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" . $frame->(4, 0, 0, '')
		. $frame->(1, 0x4 | (@data ? 0 : 0x1), 1, $block);
	my $send = sub {	# the frames up to the next undef
		while (@data) {
			my $d = shift @data;
			last unless defined $d;
			$out .= $frame->(0, @data ? 0 : 0x1, 1, $d);
		}
		syswrite($s, $out) == length $out or die "write: $!\n";
		$out = '';
	};
	$send->();

	# frames until the stream ends; :status is one of HPACK's indexed
	# statuses or a literal with the :status name index
	my ($buf, $status, $body, $end) = ('', undef, '', time + 8);
	my $sel = IO::Select->new($s);
	while (1) {
		while (length $buf >= 9) {
			my ($len, $type, $flags, $id) =
				unpack('NCCN', "\0" . substr($buf, 0, 9));
			$id &= 0x7fffffff;
			last if length $buf < 9 + $len;
			my $payload = substr($buf, 9, $len);
			substr($buf, 0, 9 + $len, '');
			if ($type == 4 && !($flags & 1)) {	# SETTINGS: ack
				syswrite($s, $frame->(4, 1, 0, ''));
			}
			next unless $id == 1;
			if ($type == 1) {
				$payload = substr($payload, 1 + ord $payload)
					if $flags & 0x8;	# PADDED
				$payload = substr($payload, 5) if $flags & 0x20; # PRIORITY
				# HPACK's static table: :status 200 204 206 304 400 404 500
				my %indexed = (0x88 => 200, 0x89 => 204, 0x8a => 206,
					0x8b => 304, 0x8c => 400, 0x8d => 404, 0x8e => 500);
				$status = $indexed{ord $payload} if exists $indexed{ord $payload};
				$status = $1 if $payload =~ /^\x48\x03(\d{3})/;
			} elsif ($type == 0) {
				$payload = substr($payload, 1, $len - 1 - ord $payload)
					if $flags & 0x8;
				$body .= $payload;
				$send->() if @data && length $body;
			} elsif ($type == 3) {	# RST_STREAM
				return ($status, $body);
			}
			return ($status, $body) if $flags & 0x1 && ($type == 0 || $type == 1);
		}
		my $left = $end - time;
		last unless $left > 0 && $sel->can_read($left);
		last unless sysread($s, $buf, 65536, length $buf);
	}
	return ($status, $body);
}

###############################################################################

#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: a streamed response goes out as the app
# produces it (a generator's first chunk, a write() call), and a client
# that does not read stops the app (backpressure) without the worker's
# memory growing or a thread spinning; the body is byte-exact afterwards.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::MD5;
use IO::Select;
use IO::Socket::INET;
use Socket qw/ SOL_SOCKET SO_RCVBUF /;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ slurp read_until state_dir worker_pid rss_kb wait_stall /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(17)
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
        listen       127.0.0.1:8080 sndbuf=64k;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/stream.py;
        }

        location /big {
            wsgi_pass         %%TESTDIR%%/stream.py;
            wsgi_buffer_size  64k;
        }
    }
}

EOF

# blocks of 64 KiB, each different (number + fill byte), so a lost,
# repeated or reordered block changes the checksum
$t->write_file('stream.py', <<'EOF');
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

def record(name, text):
    tmp = os.path.join(STATE, name + '.tmp')
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, os.path.join(STATE, name))

def block(i):
    return struct.pack('>Q', i) + bytes([i % 251]) * (65536 - 8)

def application(environ, start_response):
    path = environ['PATH_INFO']
    q = environ['QUERY_STRING']
    plain = [('Content-Type', 'text/plain')]

    if path == '/first':
        start_response('200 OK', plain)
        def gen():
            yield b'first chunk\n'
            ok = wait_for('release-' + q)
            yield b'rest ' + (b'released' if ok else b'timed out') + b'\n'
        return gen()

    if path == '/write':
        write = start_response('200 OK', plain)
        write(b'written first\n')
        ok = wait_for('release-' + q)
        return [b'then returned ' + (b'released' if ok else b'timed out') + b'\n']

    if path == '/big':
        n = int(q)
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        def gen():
            for i in range(n):
                yield block(i)
                record('yielded', str((i + 1) * 65536))
        return gen()

    start_response('200 OK', plain)
    return [b'hello\n']
EOF

my $state = state_dir($t);

$t->run();

###############################################################################

# the first chunk of a generator reaches the client while the app still
# waits (it waits for a file the test creates only after reading it)

my $s = http("GET /first?gen HTTP/1.1\r\nHost: localhost\r\n"
	. "Connection: close\r\n\r\n", start => 1);
my $got = read_until($s, qr/first chunk\n/);
like($got, qr/\x0d\x0a\x0d\x0a.*first chunk\n/s, 'generator: first chunk sent');
unlike($got, qr/rest/, 'generator: before the rest was produced');
like($got, qr/Transfer-Encoding: chunked/i, 'generator: chunked');

$t->write_file('state/release-gen', '');
my $rest = http_end($s);
is(http_content($got . ($rest // '')), "first chunk\nrest released\n",
	'generator: whole body after release');

# the same through the write() callable

$s = http("GET /write?w HTTP/1.0\r\nHost: localhost\r\n\r\n", start => 1);
$got = read_until($s, qr/written first\n/);
like($got, qr/\x0d\x0a\x0d\x0awritten first\n\z/, 'write(): sent at once');

$t->write_file('state/release-w', '');
$rest = http_end($s);
is(http_content($got . ($rest // '')),
	"written first\nthen returned released\n", 'write(): whole body');

# backpressure: 64 MiB in 64 KiB blocks to a client that does not read

my $blocks = 1024;
my $total = $blocks * 65536;

# warm up the code paths (and the allocators) with a smaller body
my $warm = http_get("/big?16");
is(length(http_content($warm) // ''), 16 * 65536, 'warm-up body');

my $worker = worker_pid($t);
ok($worker, 'worker pid');
my $rss0 = rss_kb($worker);

$s = slow_client("GET /big?$blocks HTTP/1.0\r\nHost: localhost\r\n\r\n");
my ($stalled, $yielded) = wait_stall("$state/yielded");
ok($stalled, 'app stalls while the client does not read');
cmp_ok($yielded, '<', 8 * 1024 * 1024,
	'app stalled after a few MiB (of 64 MiB)');

my $rss1 = rss_kb($worker);
my $cpu0 = cpu_ticks($worker);
sleep 1;	# observation window: a blocked thread uses no CPU
my $cpu1 = cpu_ticks($worker);
my $rss2 = rss_kb($worker);
my $grow = ($rss1 > $rss2 ? $rss1 : $rss2) - $rss0;

cmp_ok($grow, '<', 16 * 1024, 'worker RSS stays bounded while stalled');
cmp_ok($cpu1 - $cpu0, '<', 50, 'stalled thread does not spin');
is(slurp("$state/yielded"), $yielded, 'app still stalled');

diag(sprintf('stalled after %d bytes yielded; RSS %d kB -> %d kB (+%d kB); '
	. '%d CPU ticks in 1 s', $yielded, $rss0, $rss0 + $grow, $grow,
	$cpu1 - $cpu0));

# the event loop is free meanwhile
like(http_get('/hello'), qr/\x0d\x0a\x0d\x0ahello\n\z/,
	'other requests served while stalled');

# now read it all: byte-exact

my ($len, $md5) = read_body_md5($s);
is($len, $total, 'whole body received');

my $ctx = Digest::MD5->new();
$ctx->add(pack('Q>', $_) . (chr($_ % 251) x (65536 - 8))) for 0 .. $blocks - 1;
is($md5, $ctx->hexdigest(), 'body md5');

is(slurp("$state/yielded"), $total, 'app yielded everything');

###############################################################################

# a client with a small receive window that sends its request and then
# does not read
sub slow_client {
	my ($request) = @_;
	my $s = IO::Socket::INET->new(Proto => 'tcp') or die "socket: $!";
	setsockopt($s, SOL_SOCKET, SO_RCVBUF, 65536) or die "setsockopt: $!";
	my $addr = Socket::pack_sockaddr_in(port(8080),
		Socket::inet_aton('127.0.0.1'));
	connect($s, $addr) or die "connect: $!";
	syswrite($s, $request) == length $request or die "write: $!";
	return $s;
}

# read a close-delimited HTTP/1.0 response; (body length, body md5)
sub read_body_md5 {
	my ($s) = @_;
	my ($head, $buf, $len) = (1, '', 0);
	my $ctx = Digest::MD5->new();
	my $sel = IO::Select->new($s);
	while ($sel->can_read(10)) {
		my $n = sysread($s, $buf, 262144, length $buf);
		last unless $n;
		if ($head) {
			next unless $buf =~ s/^.*?\x0d\x0a\x0d\x0a//s;
			$head = 0;
		}
		$len += length $buf;
		$ctx->add($buf);
		$buf = '';
	}
	close $s;
	return ($len, $ctx->hexdigest());
}

# utime + stime of the whole process, in clock ticks
sub cpu_ticks {
	my ($pid) = @_;
	my @f = split ' ', (slurp("/proc/$pid/stat") =~ /\)\s+(.*)/s)[0];
	return $f[11] + $f[12];
}

###############################################################################

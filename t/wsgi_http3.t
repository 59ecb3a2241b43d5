#!/usr/bin/perl

# Tests for ngx_http_wsgi_module over HTTP/3 (QUIC), with a real QUIC
# client (t/h3client.py on aioquic, from t/requirements.txt): a GET; a
# request body of a few MiB read by the app, buffered and with
# wsgi_request_buffering off (then read while the client still sends); a streamed response to a client that stops
# reading holds the app back (backpressure), then arrives byte-exact; a
# client that abandons a stream (STOP_SENDING) gets the app's iterable
# closed (also when it was held back by that client not reading), and the
# worker goes on serving on that connection and new ones;
# so does one that closes its connection mid-response.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::SHA qw/ sha256_hex /;
use File::Basename qw/ dirname /;

use Test::Nginx;
use Test::WSGI qw/ slurp wait_file wait_stall state_dir /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new();
plan(skip_all => 'nginx built without --with-http_v3_module (no HTTP/3: '
	. 'nginx before 1.25.0, or the distribution\'s)')
	unless $t->has_module('http_v3');
$t->has(qw/http http_ssl http_v3/);

my $python = $ENV{TEST_WSGI_PYTHON};
plan(skip_all => 'no TEST_WSGI_PYTHON (the test venv of scripts/test, '
	. 'with aioquic from t/requirements.txt)')
	unless $python && -x $python;
# aioquic (every version) builds only with the limited C API, which a
# free-threaded Python refuses: t/requirements.txt leaves it out there
plan(skip_all => 'a free-threaded Python: aioquic, the HTTP/3 client, builds '
	. 'only with the limited C API, which free-threaded builds refuse')
	if `'$python' -c 'import sysconfig; print(sysconfig.get_config_var("Py_GIL_DISABLED"))' 2>/dev/null` =~ /^1$/m;
plan(skip_all => "aioquic not importable by $python (t/requirements.txt)")
	unless system("'$python' -c 'import aioquic.h3.connection' 2>/dev/null") == 0;

my ($openssl) = grep { -x } map { "$_/openssl" } split /:/, $ENV{PATH} // '';
plan(skip_all => 'no openssl to make a certificate (scripts/test installs it)')
	unless $openssl;

$t->plan(28)->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    client_max_body_size     64m;
    client_body_buffer_size  16k;

    wsgi_threads  4;

    server {
        listen       127.0.0.1:%%PORT_8980_UDP%% quic;
        server_name  localhost;

        ssl_certificate      localhost.crt;
        ssl_certificate_key  localhost.key;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location /unbuffered/ {
            wsgi_pass               %%TESTDIR%%/app.py;
            wsgi_request_buffering  off;
        }
    }
}

EOF

my $d = $t->testdir();

system("$openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
	. "-addext subjectAltName=DNS:localhost "
	. "-keyout $d/localhost.key -out $d/localhost.crt >/dev/null 2>&1") == 0
	or die "openssl req failed\n";

# blocks of 64 KiB, each different (number + fill byte), so a lost,
# repeated or reordered block changes the checksum
$t->write_file('app.py', <<'EOF');
import hashlib, os, struct

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

def record(name, text):
    tmp = os.path.join(STATE, name + '.tmp')
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, os.path.join(STATE, name))

def block(i):
    return struct.pack('>Q', i) + bytes([i % 251]) * (65536 - 8)

class Endless:
    """Blocks until the client goes; close() says how many were made."""
    def __init__(self, name):
        self.name = name
        self.n = 0
    def __iter__(self):
        return self
    def __next__(self):
        if self.n >= 100000:
            raise StopIteration
        self.n += 1
        record('made-' + self.name, str(self.n))
        return block(self.n)
    def close(self):
        record('closed-' + self.name, str(self.n))

def application(environ, start_response):
    path = environ['PATH_INFO']
    q = environ['QUERY_STRING']

    if path.endswith('/upload'):
        h = hashlib.sha256()
        n = 0
        read = environ['wsgi.input'].read
        while True:
            data = read(65536)
            if not data:
                break
            if n == 0 and q:
                record('read-' + q, str(len(data)))
            n += len(data)
            h.update(data)
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [('%s %d %s' % (environ['SERVER_PROTOCOL'], n,
                               h.hexdigest())).encode()]

    if path == '/big':
        n = int(q)
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        def gen():
            for i in range(n):
                yield block(i)
                record('yielded', str((i + 1) * 65536))
        return gen()

    if path == '/endless':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return Endless(q)

    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('hello %s %s\n' % (environ['SERVER_PROTOCOL'],
                                environ['wsgi.url_scheme'])).encode()]
EOF

my $state = state_dir($t);

$t->run();

###############################################################################

my $client = dirname(__FILE__) . '/h3client.py';
my @h3 = ($python, $client, port(8980, udp => 1), "$d/localhost.crt");

# GET

like(h3(), qr/^status=200 .*\nbody=b'hello HTTP\/3\.0 https\\n'$/m,
	'GET over HTTP/3');

# a request body of 4 MiB + 1, read by the app: length and sha256

my $len = 4 * 1024 * 1024 + 1;
my $body = join('', map { chr($_ % 251) } 0 .. 250) x (int($len / 251) + 1);
$body = substr($body, 0, $len);
my $sha = sha256_hex($body);

like(h3('--body', $len, 'POST', '/upload'),
	qr/^status=200 .*\nbody=b'HTTP\/3\.0 $len $sha'$/m,
	'POST body, buffered: the app read it byte-exact');
like(h3('--body', $len, 'POST', '/unbuffered/upload'),
	qr/^status=200 .*\nbody=b'HTTP\/3\.0 $len $sha'$/m,
	'POST body, wsgi_request_buffering off: the app read it byte-exact');

# with wsgi_request_buffering off the app reads the body while the client
# still sends it: the client sends 1 MiB (no content-length) and the rest
# only once the app has read its first bytes

like(h3('--body', $len, '--hold-after', 1024 * 1024,
		'--until', "$state/read-early", 'POST', '/unbuffered/upload?early'),
	qr/^status=200 .*\nbody=b'HTTP\/3\.0 $len $sha'$/m,
	'unbuffered: the app read the body as it came, byte-exact');
cmp_ok(slurp("$state/read-early"), '<=', 1024 * 1024,
	'unbuffered: first read before the rest was sent');

# backpressure: 16 MiB in 64 KiB blocks to a client that stops reading
# (no acknowledgements, no flow control credit) after 256 KiB

my $blocks = 256;
my $total = $blocks * 65536;
my $ctx = Digest::SHA->new(256);
$ctx->add(pack('Q>', $_) . (chr($_ % 251) x (65536 - 8))) for 0 .. $blocks - 1;
my $big_sha = $ctx->hexdigest();

open(my $slow, '-|', @h3, '--window', 262144, '--stall-after', 262144,
	'--stalled', "$state/client-stalled", '--resume', "$state/client-resume",
	'GET', "/big?$blocks") or die "h3client: $!";

ok(wait_file("$state/client-stalled", 30), 'slow client: stopped reading');
my ($stalled, $yielded) = wait_stall("$state/yielded");
ok($stalled, 'app stalls while the client does not read');
cmp_ok($yielded, '<', $total / 2, 'app stalled before half of 16 MiB');
diag("stalled after $yielded bytes yielded");

# the worker serves others meanwhile
like(h3(), qr/^status=200 .*\nbody=b'hello HTTP\/3\.0 https\\n'$/m,
	'other HTTP/3 requests served while stalled');
is(slurp("$state/yielded"), $yielded, 'app still stalled');

$t->write_file('state/client-resume', '');
my $out = join('', <$slow>);
close $slow;
is($?, 0, 'slow client: exit status');
like($out, qr/^status=200 length=$total sha256=$big_sha /m,
	'slow client: whole body, byte-exact');
is(slurp("$state/yielded"), $total, 'app yielded everything');

# a client that abandons a stream mid-response (STOP_SENDING): the app's
# iterable is closed, and the same connection goes on with a new request

$out = h3('--abandon-after', 1024 * 1024, '--wait', "$state/closed-stop",
	'GET', '/endless?stop', 'GET', '/hello');
like($out, qr/^abandoned after \d+$/m, 'abandon: stream abandoned');
ok(-e "$state/closed-stop", 'abandon: the iterable was closed');
cmp_ok(slurp("$state/closed-stop"), '<', 100000,
	'abandon: closed before the app made all of it');
like($out, qr/^status=200 .*\nbody=b'hello HTTP\/3\.0 https\\n'$/m,
	'abandon: next request on the same connection');
like(h3(), qr/^status=200 .*\nbody=b'hello HTTP\/3\.0 https\\n'$/m,
	'abandon: a new connection');

# a client that stops reading, so the app is held back, then abandons the
# stream: the iterable is closed there, and the connection goes on

open($slow, '-|', @h3, '--window', 262144, '--stall-after', 262144,
	'--stalled', "$state/stall2-stalled", '--resume', "$state/stall2-resume",
	'--abandon-after', 262144, '--wait', "$state/closed-held",
	'GET', '/endless?held', 'GET', '/hello') or die "h3client: $!";

ok(wait_file("$state/stall2-stalled", 30), 'held, then abandoned: stopped reading');
($stalled, $yielded) = wait_stall("$state/made-held");
ok($stalled, 'held, then abandoned: the app is held back');
ok(!-e "$state/closed-held", 'held, then abandoned: not closed while held');

$t->write_file('state/stall2-resume', '');
$out = join('', <$slow>);
close $slow;
like($out, qr/^abandoned after \d+$/m, 'held, then abandoned: abandoned');
is(slurp("$state/closed-held"), $yielded,
	'held, then abandoned: closed where it was held');
like($out, qr/^status=200 .*\nbody=b'hello HTTP\/3\.0 https\\n'$/m,
	'held, then abandoned: next request on the same connection');

# a client that closes the whole connection mid-response
# (CONNECTION_CLOSE): the iterable is closed too

like(h3('--close-after', 1024 * 1024, 'GET', '/endless?conn'),
	qr/^closed after \d+$/m, 'connection close: closed mid-response');
ok(wait_file("$state/closed-conn", 30),
	'connection close: the iterable was closed');
cmp_ok(slurp("$state/closed-conn"), '<', 100000,
	'connection close: before the app made all of it');

# and a streamed response once more (Test::Nginx then checks the error
# log for alerts, such as a worker that died)

like(h3('GET', '/big?4'), qr/^status=200 length=262144 /m,
	'a response after all of it');

###############################################################################

# run t/h3client.py with these arguments (a GET / by default); its output
sub h3 {
	my @args = @_ ? @_ : ('GET', '/');
	open(my $fh, '-|', @h3, @args) or die "h3client: $!";
	my $out = join('', <$fh>);
	close $fh;
	return $out;
}

###############################################################################

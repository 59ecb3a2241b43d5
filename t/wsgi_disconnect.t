#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: a client that goes away mid-stream, or
# while the app has not produced anything yet.  The iterable's close() is
# called, a GeneratorExit reaches the generator, an info line is logged,
# and the only pool thread is free for the next request.  Repeated many
# times, the worker keeps the same descriptors and flat memory.

###############################################################################

use warnings;
use strict;

use Test::More;

use IO::Select;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ wait_file wait_glob wait_log read_until state_dir worker_pid rss_kb fd_count /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(18)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_threads  1;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/gone.py;
        }
    }
}

EOF

# /stream: a generator that streams 64 KiB chunks until stopped
# /sleep:  a generator that waits for state/release-<q> before its first
#          chunk, then streams
# /iter:   an iterable object with its own close()
# /count:  what the app saw
$t->write_file('gone.py', <<'EOF');
import os, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')
CHUNK = b'x' * 65536
counts = {'calls': 0, 'genexit': 0, 'closes': 0, 'ran_out': 0}

def touch(name):
    open(os.path.join(STATE, name), 'w').close()

def wait_for(name, timeout=20):
    path = os.path.join(STATE, name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True

def stream(q, wait):
    try:
        if wait:
            touch('started-' + q)
            wait_for('release-' + q)
        for i in range(20000):
            yield CHUNK
        counts['ran_out'] += 1
    except GeneratorExit:
        counts['genexit'] += 1
        if not q.startswith('L'):
            touch('genexit-' + q)
        raise

class Chunks:
    def __init__(self, q):
        self.q = q
        self.n = 0
    def __iter__(self):
        return self
    def __next__(self):
        self.n += 1
        if self.n > 20000:
            counts['ran_out'] += 1
            raise StopIteration
        return CHUNK
    def close(self):
        counts['closes'] += 1
        touch('closed-%s-%d' % (self.q, self.n))

def application(environ, start_response):
    path = environ['PATH_INFO']
    q = environ['QUERY_STRING']
    if path == '/count':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [' '.join('%s=%d' % kv for kv in sorted(counts.items())).encode()]
    if path == '/hello':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'hello\n']
    counts['calls'] += 1
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    if path == '/iter':
        return Chunks(q)
    return stream(q, path == '/sleep')
EOF

my $state = state_dir($t);

$t->run();

###############################################################################

my $log = $t->testdir() . '/error.log';

# gone mid-stream: the client reads the start of the body, then closes

my $off = -s $log;
my $s = http_get('/stream?a', start => 1);
like(read_until($s, qr/\x0d\x0a\x0d\x0ax/), qr/^HTTP\/1\.1 200/,
	'mid-stream: streaming');
close $s;

ok(wait_file("$state/genexit-a"), 'mid-stream: GeneratorExit in generator');
ok(wait_log($log, qr/\[info\].*(prematurely closed|reset by peer|broken pipe)/i, $off),
	'mid-stream: info line logged');
like(http_get('/hello'), qr/hello/, 'mid-stream: thread free again');

# gone before the first chunk: the app is still waiting

$off = -s $log;
$s = http_get('/sleep?b', start => 1);
ok(wait_file("$state/started-b"), 'before first chunk: app running');
close $s;

ok(wait_log($log, qr/\[info\].*client prematurely closed connection/, $off),
	'before first chunk: info line logged');
$t->write_file('state/release-b', '');
ok(wait_file("$state/genexit-b"), 'before first chunk: GeneratorExit');
like(http_get('/hello'), qr/hello/, 'before first chunk: thread free again');

# an iterable object: its close() is called

$s = http_get('/iter?c', start => 1);
read_until($s, qr/\x0d\x0a\x0d\x0ax/);
close $s;

ok(wait_glob("$state/closed-c-*"), 'iterable: close() called');
my ($n) = (glob("$state/closed-c-*"))[0] =~ /-(\d+)$/;
cmp_ok($n, '<', 20000, 'iterable: stopped early');
like(http_get('/hello'), qr/hello/, 'iterable: thread free again');

like(http_content(http_get('/count')),
	qr/^calls=3 closes=1 genexit=2 ran_out=0$/, 'counts after 3 aborts');

# many times: no descriptor or memory left behind

my $worker = worker_pid($t);
ok($worker, 'worker pid');

abort_loop($t, 'W', 30);		# warm up
like(http_get('/hello'), qr/hello/, 'warm-up done');
my ($fd0, $rss0) = (fd_count($worker), rss_kb($worker));

my $t0 = time;
my $ok = abort_loop($t, 'L', 300);
is($ok, 300, '300 aborted requests');

my $counts = http_content(http_get('/count'));
like($counts, qr/^calls=333 closes=111 genexit=222 ran_out=0$/,
	'every aborted response closed');

my ($fd1, $rss1) = (fd_count($worker), rss_kb($worker));
is($fd1, $fd0, 'same number of open descriptors');
cmp_ok($rss1 - $rss0, '<', 8 * 1024, 'RSS flat');

diag(sprintf('300 aborts in %.1f s; fds %d -> %d; RSS %d kB -> %d kB',
	time - $t0, $fd0, $fd1, $rss0, $rss1));

###############################################################################

# $n aborted requests, in turn mid-stream (/stream), before the first chunk
# (/sleep) and on an object iterable (/iter); returns how many went as
# planned
sub abort_loop {
	my ($t, $tag, $n) = @_;
	my $ok = 0;
	for my $i (1 .. $n) {
		my $q = "$tag$i";
		my $kind = $i % 3;
		my $uri = $kind == 0 ? "/sleep?$q" : $kind == 1 ? "/stream?$q"
			: "/iter?$q";
		my $s = http_get($uri, start => 1) or next;
		if ($kind == 0) {
			wait_file("$state/started-$q") or next;
			close $s;
			$t->write_file("state/release-$q", '');
		} else {
			read_until($s, qr/\x0d\x0a\x0d\x0ax/) =~ /^HTTP/ or next;
			close $s;
		}
		$ok++;
	}
	return $ok;
}

###############################################################################

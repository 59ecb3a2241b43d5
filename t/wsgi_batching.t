#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: under load a pool thread goes on to the
# next queued job without waking nginx for the response it just finished
# (one wake-up per batch).  A burst of short requests followed by one that
# blocks: every short response must go out while the blocking one still
# runs (nothing waits for a slow neighbour), none lost or doubled.  The
# hand-off protocol itself is unit-tested in src/message.rs.

###############################################################################

use warnings;
use strict;

use Test::More;

use IO::Socket::INET;

use Test::Nginx qw/ :DEFAULT port /;
use Test::WSGI qw/ slurp poll read_until state_dir /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(5)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # one thread: jobs run strictly one after another, in queue order
    wsgi_threads  1;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }
    }
}

EOF

# /fast answers its sequence number; /hold records how many /fast requests
# the app finished before it, then blocks until state/release exists
$t->write_file('app.py', <<'EOF');
import os, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')
fast = 0

def application(environ, start_response):
    global fast
    if environ['PATH_INFO'] == '/hold':
        with open(os.path.join(STATE, 'hold.tmp'), 'w') as f:
            f.write(str(fast))
        os.rename(os.path.join(STATE, 'hold.tmp'),
                  os.path.join(STATE, 'hold-started'))
        release = os.path.join(STATE, 'release')
        deadline = time.monotonic() + 30
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'held']
    fast += 1
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'fast n=%d' % fast]
EOF

my $state = state_dir($t);

$t->run();

###############################################################################

# a burst: 30 connections are opened first, then their requests and a
# last one for /hold are written back to back, so nginx queues them in a
# batch and the thread runs them one after another; nothing comes after

my @s = map { IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080))
	or die "connect: $!" } 1 .. 31;
my $n = 0;
for my $s (@s) {
	my $uri = ++$n <= 30 ? '/fast' : '/hold';
	syswrite($s, "GET $uri HTTP/1.0\r\nHost: localhost\r\n\r\n");
}
my $hold = pop @s;

ok(poll(sub { -e "$state/hold-started" }), 'the blocking job started');
my $before = slurp("$state/hold-started");

# every /fast the app finished before /hold began reaches its client while
# /hold still blocks, the last one included: the thread went from it
# straight to /hold, holding back its wake-up, and no request came after

my @r = map { read_until($_, qr/fast n=\d+\z/, 10) } @s;
my %got = map { /fast n=(\d+)\z/ ? ($1 => 1) : () } @r;
is($before, 30, 'all 30 ran before the blocking job');
is(join(' ', grep { !$got{$_} } 1 .. 30), '',
	'their responses delivered while it still blocks');
ok(!-e "$state/release", 'the blocking job had not been released');

# release it

$t->write_file('state/release', '');
like(read_until($hold, qr/held\z/), qr/\x0d\x0a\x0d\x0aheld\z/,
	'blocking job answered');

###############################################################################

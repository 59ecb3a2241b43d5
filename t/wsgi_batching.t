#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: under load a pool thread goes on to the
# next queued job without waking nginx for the response it just finished
# (one wake-up per batch), and nginx's deferral timer bounds how long such
# a response waits.  Bursts of short requests followed by one that blocks:
# every short response must go out while the blocking one still runs
# (nothing waits for a slow neighbour), none lost or doubled.  With the
# timer's drain taken out, this fails (checked: 3 runs out of 3).  The
# hand-off protocol itself is unit-tested in crates/wsgi-pool/src/message.rs.

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

my $t = Test::Nginx->new()->has(qw/http/)->plan(3)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

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

# Rounds of a burst: 100 connections are opened first, then their requests
# and a last one for /hold are written back to back, so nginx queues them
# as they arrive and the thread runs them one after another; nothing comes
# after. Whenever /hold was queued before the last /fast finished, the
# thread went from it straight to /hold, holding back its wake-up, and
# only nginx's deferral timer can deliver it (how often the race goes that
# way depends on the machine; many rounds make it certain enough that a
# missing timer is seen). The app's moving average of run times needs the
# 100 short requests to forget the previous round's long /hold.

my (@ran_before, @missing, @released);

for my $round (1 .. 12) {
	my @s = map { IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080))
		or die "connect: $!" } 1 .. 101;
	my $n = 0;
	for my $s (@s) {
		my $uri = ++$n <= 100 ? '/fast' : '/hold';
		syswrite($s, "GET $uri HTTP/1.0\r\nHost: localhost\r\n\r\n");
	}
	my $hold = pop @s;

	poll(sub { -e "$state/hold-started" });
	my $before = slurp("$state/hold-started");
	push @ran_before, $before == 100 * $round ? () : "round $round: $before";

	# every /fast reaches its client while /hold still blocks
	my @r = map { read_until($_, qr/fast n=\d+\z/, 10) } @s;
	my %got = map { /fast n=(\d+)\z/ ? ($1 => 1) : () } @r;
	my @lost = grep { !$got{$_} } 100 * ($round - 1) + 1 .. 100 * $round;
	push @missing, "round $round: @lost" if @lost;
	push @released, $round if -e "$state/release";

	# release it, then clear the state for the next round
	$t->write_file('state/release', '');
	push @missing, "round $round: hold"
		unless read_until($hold, qr/held\z/) =~ /\x0d\x0a\x0d\x0aheld\z/;
	unlink "$state/release", "$state/hold-started";
}

is(join(', ', @ran_before), '', 'each /hold ran after its round\'s 100 /fast');
is(join(', ', @missing), '', 'every response delivered, /fast while /hold blocked');
is(join(', ', @released), '', 'no /hold had been released early');

###############################################################################

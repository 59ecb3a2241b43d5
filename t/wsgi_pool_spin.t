#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: how idle pool threads wait for work.
# A thread that runs out of work parks (after a spin, if WSGI_POOL_SPIN_US
# asks for one); nginx wakes a parked thread only when none is awake.  Checked here: every request of a
# concurrent burst is answered; a job taken as short that turns out long
# (its thread counted awake) does not hold up the request queued behind
# it; an idle worker uses no CPU; a bad WSGI_POOL_SPIN_US is reported and
# the default used.

###############################################################################

use warnings;
use strict;

use Test::More;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ slurp worker_pid wait_log /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(6)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

env WSGI_POOL_SPIN_US=20us;

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
import time

def application(environ, start_response):
    if environ['PATH_INFO'] == '/slow':
        time.sleep(1.5)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [environ['QUERY_STRING'].encode()]
EOF

$t->run();

###############################################################################

like(http_get('/?x'), qr/x$/, 'app answers');
ok(wait_log($t->testdir() . '/error.log',
	qr/\[warn\].*invalid WSGI_POOL_SPIN_US "20us" \(microseconds, 0 to 10000\), using 0/),
	'bad WSGI_POOL_SPIN_US reported');

# bursts of concurrent requests, between which threads spin and park

my $ok = 0;
for my $round (1 .. 20) {
	my @s = map { http_get("/?$round-$_", start => 1) } 1 .. 8;
	$ok += grep { http_end($s[$_ - 1]) =~ /\n$round-$_\z/ } 1 .. 8;
	sleep(0.01 * ($round % 3));
}
is($ok, 160, 'every request of 20 bursts answered');

# a long job after short ones: its thread stays counted awake while it
# runs, so nginx wakes nobody for the next request; the 1 ms timer sees
# the queue stall and wakes the parked thread

my $slow = http_get('/slow', start => 1);
sleep(0.2);
my $start = time();
like(http_get('/?behind'), qr/behind$/, 'request behind a long job');
cmp_ok(time() - $start, '<', 0.5, 'not held up by the long job');
http_end($slow);

# an idle worker: no CPU (utime + stime in clock ticks) over 2 s, once
# the spin has ended

my $pid = worker_pid($t);
sleep(0.5);
my $cpu = sub {
	my @f = split ' ', (slurp("/proc/$pid/stat") =~ /\)\s(.*)/s)[0];
	return $f[11] + $f[12];
};
my $before = $cpu->();
sleep(2);
my $after = $cpu->();
cmp_ok($after - $before, '<=', 1, 'idle worker uses no CPU');

###############################################################################

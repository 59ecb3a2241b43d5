#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: wsgi_max_requests.  A worker that has
# handed the configured number of requests to the app exits gracefully
# (the request in flight completes, atexit handlers run) and the master
# starts a new one with a fresh interpreter; no request is refused on the
# way.  With jitter, the limit lies between the number and number + jitter.

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx qw/ :DEFAULT http_end /;
use Test::WSGI qw/ slurp poll wait_log state_dir /;

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

    wsgi_max_requests  5 jitter=3;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location /static {
            return 200 "static";
        }
    }
}

EOF

$t->write_file('app.py', <<'EOF');
import atexit, os, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')
served = 0

@atexit.register
def bye():
    with open(os.path.join(STATE, 'exit-%d' % os.getpid()), 'w') as f:
        f.write(str(served))

def application(environ, start_response):
    global served
    served += 1
    if environ['PATH_INFO'] == '/slow':
        time.sleep(0.5)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('%d %d' % (os.getpid(), served)).encode()]
EOF

my $state = state_dir($t);

$t->run();

###############################################################################

# sequential requests: each answered; the pid changes after 5 to 8 of them

my (@pids, $failed);
for (1 .. 20) {
	my $r = http_get('/');
	my ($pid, $n) = $r =~ /\x0d\x0a\x0d\x0a(\d+) (\d+)\z/;
	$failed++, next unless $pid;
	push @pids, [$pid, $n];
}
ok(!$failed, 'every request answered');

my $first = $pids[0][0];
my $count = grep { $_->[0] == $first } @pids;
ok($count >= 5 && $count <= 8, "first worker served $count (5 to 8)");
isnt($pids[-1][0], $first, 'a new worker took over');
is($pids[$count][1], 1, 'new worker: fresh interpreter');

ok(poll(sub { -e "$state/exit-$first" }, 10), 'atexit ran in the old worker');
is(slurp("$state/exit-$first"), $count, 'old worker served its share');

my $log = $t->read_file('error.log');
like($log, qr/\[notice\].*wsgi: worker process has handed $count requests to the app \(wsgi_max_requests\), exiting gracefully/,
	'limit logged');
like($log, qr/worker process $first exited with code 0/, 'old worker exit 0');

# requests in flight when a worker reaches its limit complete, and those
# that arrive while it exits wait for the new worker

my @s = map { http_get('/slow', start => 1) } 1 .. 10;
my @slow = map { http_end($_) // '' } @s;
is(scalar(grep { /^HTTP\/1\.1 200 OK.*\x0d\x0a\x0d\x0a\d+ \d+\z/s } @slow), 10,
	'concurrent requests across a restart all answered');

like(http_get('/static'), qr/static\z/, 'static still served');
unlike(http_get('/'), qr/^HTTP\/1\.1 5/, 'app still served');

###############################################################################

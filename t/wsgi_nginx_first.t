#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: wsgi_nginx_first.  On by default: the
# worker's own thread (nginx's event loop) takes the kernel's shortest time
# slice, 0.1 ms, so that it preempts a pool thread running Python when it
# wakes; pool threads keep the kernel's default.  With off, nginx's thread
# keeps the default as well.  Per-thread slices need Linux 6.12; before,
# the start notice says so and nothing changes.

###############################################################################

use warnings;
use strict;

use Test::More;
use POSIX ();

use Test::Nginx;
use Test::WSGI qw/ slurp worker_pid /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my ($major, $minor) = (POSIX::uname())[2] =~ /^(\d+)\.(\d+)/;
my $slices = $major > 6 || ($major == 6 && $minor >= 12);

my $t = Test::Nginx->new()->has(qw/http/)->plan(9)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

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
        location /static {
            return 200 "static\n";
        }
    }
}

EOF

$t->write_file('app.py', <<'EOF');
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
EOF

$t->run();

###############################################################################

# se.slice (ns) of nginx's thread and of each pool thread of the worker,
# from /proc/PID/task/TID/sched
sub slices {
	my ($pid) = @_;
	my ($main, @pool);
	for my $task (glob "/proc/$pid/task/*") {
		my ($tid) = $task =~ /(\d+)$/;
		my $comm = slurp("$task/comm");
		my ($slice) = slurp("$task/sched") =~ /^se\.slice\s*:\s*(\d+)/m;
		if ($tid == $pid) {
			$main = $slice;
		} elsif ($comm =~ /^wsgi-\d+$/) {
			push @pool, $slice;
		}
	}
	return ($main, @pool);
}

like(http_get('/'), qr/ok$/, 'app answers');
like(http_get('/static'), qr/static$/, 'nginx answers');

my ($main, @pool) = slices(worker_pid($t));
is(scalar @pool, 2, 'two pool threads');

SKIP: {
skip 'per-thread time slices need Linux 6.12', 3 unless $slices;

is($main, 100000, 'nginx\'s thread: 0.1 ms slice');
is(scalar(grep { defined && $_ > 100000 } @pool), 2,
	'pool threads: the kernel\'s default slice');
like($t->read_file('error.log'),
	qr/nginx's thread first \(100 µs time slice\) while starting worker/,
	'start notice');

}

# wsgi_nginx_first off: nginx's thread keeps the default slice

$t->stop();
my $conf = $t->read_file('nginx.conf');
$conf =~ s/(wsgi_threads  2;)/$1\n    wsgi_nginx_first  off;/ or die;
$t->write_file('nginx.conf', $conf);
$t->write_file('error.log', '');
$t->run();

like(http_get('/'), qr/ok$/, 'off: app answers');
($main, @pool) = slices(worker_pid($t));

SKIP: {
skip 'per-thread time slices need Linux 6.12', 2 unless $slices;

is(scalar(grep { $_ == $main } @pool), 2,
	'off: nginx\'s thread has the pool threads\' slice');
unlike($t->read_file('error.log'), qr/nginx's thread first/,
	'off: no notice');

}

###############################################################################

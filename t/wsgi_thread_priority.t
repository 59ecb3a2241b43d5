#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: wsgi_thread_priority low and idle.  With
# low each pool thread puts itself in SCHED_BATCH with its nice value 5
# above the worker's, with idle in SCHED_IDLE; nginx's own thread keeps the
# worker's policy and nice.

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx;
use Test::WSGI qw/ slurp worker_pid /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(9)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_threads          2;
    wsgi_thread_priority  low;

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
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
EOF

$t->run();

###############################################################################

# (comm, nice, policy) of each thread of the worker: /proc/PID/task/TID/stat
# fields 19 (nice) and 41 (policy), counted after the ")" of comm
sub threads {
	my ($pid) = @_;
	my %threads;
	for my $task (glob "/proc/$pid/task/*") {
		my ($tid) = $task =~ /(\d+)$/;
		my ($comm, $rest) = slurp("$task/stat") =~ /\((.*)\) (.*)/s
			or next;
		my @f = split ' ', $rest;
		$threads{$tid} = { comm => $comm, nice => $f[16], policy => $f[38] };
	}
	my @pool = grep { $_->{comm} =~ /^wsgi-\d+$/ } values %threads;
	return ($threads{$pid}, @pool);
}

like(http_get('/'), qr/ok$/, 'app answers');
my ($main, @pool) = threads(worker_pid($t));
is(scalar @pool, 2, 'two pool threads');
is($main->{policy}, 0, 'nginx\'s thread: SCHED_OTHER');
is(scalar(grep { $_->{policy} == 3 } @pool), 2, 'pool threads: SCHED_BATCH');
is(scalar(grep { $_->{nice} == $main->{nice} + 5 } @pool), 2,
	'pool threads: nice 5 above nginx\'s thread');

# wsgi_thread_priority idle: SCHED_IDLE (5), nice unchanged

$t->stop();
my $conf = $t->read_file('nginx.conf');
$conf =~ s/wsgi_thread_priority  low;/wsgi_thread_priority  idle;/ or die;
$t->write_file('nginx.conf', $conf);
$t->run();

like(http_get('/'), qr/ok$/, 'idle: app answers');
($main, @pool) = threads(worker_pid($t));
is($main->{policy}, 0, 'idle: nginx\'s thread: SCHED_OTHER');
is(scalar(grep { $_->{policy} == 5 } @pool), 2, 'idle: pool threads: SCHED_IDLE');
is(scalar(grep { $_->{nice} == $main->{nice} } @pool), 2,
	'idle: pool threads keep nginx\'s nice');

###############################################################################

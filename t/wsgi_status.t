#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: wsgi_status counters (JSON and
# Prometheus) after a known sequence of requests, and the $wsgi_queue_time,
# $wsgi_app_time and $wsgi_thread variables in an access log.

###############################################################################

use warnings;
use strict;

use Test::More;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ poll state_dir wsgi_status /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(32)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format  wsgi  '$request_uri $status q=$wsgi_queue_time '
                      'a=$wsgi_app_time t=$wsgi_thread';
    access_log  %%TESTDIR%%/wsgi.log  wsgi;

    wsgi_threads     1;
    wsgi_queue_size  1;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location /t/ {
            wsgi_read_timeout  1s;
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location /status {
            wsgi_status;
        }

        location /return {
            return 200 "returned\n";
        }
    }
}

EOF

$t->write_file('app.py', <<'EOF');
import os, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

def application(environ, start_response):
    path = environ['PATH_INFO']
    q = environ['QUERY_STRING']
    if path == '/raise':
        raise ValueError('on purpose')
    if path == '/t/spin':
        while True:
            pass
    if path == '/block':
        open(os.path.join(STATE, 'started-' + q), 'w').close()
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(STATE, 'release-' + q)) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'done']
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'hello']
EOF

my $d = $t->testdir();
my $state = state_dir($t);

$t->run();

# "gil": whether the worker's Python runs with the GIL, as that Python
# says of itself (sys._is_gil_enabled(), true where it does not exist)
my $gil = '(?:true|false)';
if (my $py = $ENV{TEST_WSGI_PYTHON}) {
	my $said = `$py -c "import sys; print(str(getattr(sys, '_is_gil_enabled', lambda: True)()).lower())" 2>/dev/null`;
	$gil = $1 if $said =~ /^(true|false)$/m;
}

# the whole JSON document, pid aside
sub json {
	my (%v) = (threads => 1, alive => 1, busy => 0, idle => 1, queue => 0,
		in_flight => 0, requests => 0, responses => 0, rejected_503 => 0,
		timeouts_504 => 0, app_errors => 0, client_aborts => 0,
		bytes_out => 0, @_);
	return qr/^\{"pid":\d+,"threads":\{"configured":$v{threads},"alive":$v{alive},"busy":$v{busy},"idle":$v{idle}\},"queue":$v{queue},"in_flight":$v{in_flight},"requests":$v{requests},"responses":$v{responses},"rejected_503":$v{rejected_503},"timeouts_504":$v{timeouts_504},"app_errors":$v{app_errors},"client_aborts":$v{client_aborts},"bytes_out":$v{bytes_out},"wakeups":\d+,"gil":$gil\}\n\z/;
}

# the status once it settles: a pool thread counts itself idle just after
# the response it sent, so a client can be faster than that
sub status_like {
	my ($re, $name) = @_;
	my $got;
	poll(sub { ($got = wsgi_status()) =~ $re }, 10);
	like($got, $re, $name);
}

###############################################################################

like(http_get('/status'), qr/^Content-Type: application\/json/m, 'json type');
status_like(json(), 'fresh worker: all zero');

like(http_get('/hello'), qr/200 OK.*hello\z/s, 'hello 1') for 1 .. 3;
status_like(json(requests => 3, responses => 3, bytes_out => 15),
	'three responses, their bytes');

like(http_get('/raise'), qr/^HTTP\/1\.1 500 /, 'app error: 500');
status_like(json(requests => 4, responses => 4, app_errors => 1,
	bytes_out => 15), 'app error counted');

like(http_get('/t/spin'), qr/^HTTP\/1\.1 504 /, 'timeout: 504');
ok(poll(sub { wsgi_status() =~ /"alive":1,"busy":0,/ }), 'interrupted thread replaced');
status_like(json(requests => 5, responses => 5,
	app_errors => 1, timeouts_504 => 1, bytes_out => 15),
	'timeout counted');

# one request in the app, one queued, one refused

my $s1 = http_get('/block?1', start => 1);
ok(poll(sub { -e "$state/started-1" }), 'first request in the app');
my $s2 = http_get('/block?2', start => 1);
ok(poll(sub { wsgi_status() =~ /"queue":1,/ }), 'second request queued');
status_like(json(busy => 1, idle => 0, queue => 1, in_flight => 2,
	requests => 7, responses => 5, timeouts_504 => 1, app_errors => 1,
	bytes_out => 15), 'busy, queued, in flight');

like(http_get('/block?3'), qr/^HTTP\/1\.1 503 /, 'queue full: 503');

$t->write_file('state/release-1', '');
$t->write_file('state/release-2', '');
like(http_end($s1), qr/200 OK.*done\z/s, 'first blocked request');
like(http_end($s2), qr/200 OK.*done\z/s, 'queued request');

# a client that goes away while the app runs

my $s4 = http_get('/block?4', start => 1);
ok(poll(sub { -e "$state/started-4" }), 'request in the app');
close $s4;
ok(poll(sub { wsgi_status() =~ /"client_aborts":1,/ }), 'client abort noticed');
$t->write_file('state/release-4', '');
ok(poll(sub { wsgi_status() =~ /"busy":0,/ }), 'app done');

# requests == responses once idle: every request handed to the pool
# ended exactly once

my $final = json(requests => 9, responses => 9, rejected_503 => 1,
	timeouts_504 => 1, app_errors => 1, client_aborts => 1, bytes_out => 23);
my $json = wsgi_status();
like($json, $final, 'final counters');
my ($pid) = $json =~ /"pid":(\d+)/;

my $p = http_get('/status?format=prometheus');
like($p, qr/^Content-Type: text\/plain; version=0\.0\.4/m, 'prometheus type');
$p = http_content($p);
my %m = $p =~ /^wsgi_(\w+)\{pid="$pid"\} (\d+)$/mg;
my $gil_enabled = $gil eq 'false' ? 0 : 1;
like(join(' ', map { "$_=$m{$_}" } sort keys %m),
	qr/^app_errors_total=1 bytes_out_total=23 client_aborts_total=1 gil_enabled=${\($gil =~ m{^(true|false)$} ? $gil_enabled : '[01]')} queue_length=0 rejected_total=1 requests_total=9 responses_total=9 threads=1 threads_busy=0 threads_idle=1 timeouts_total=1 wakeups_total=\d+$/,
	'prometheus values');
like($p, qr/^# TYPE wsgi_requests_total counter$/m, 'prometheus counter type');
like($p, qr/^# TYPE wsgi_threads_busy gauge$/m, 'prometheus gauge type');

# the variables in the access log

http_get('/return');

$t->stop();

my %log = map { /^(\S+ \d+) (.*)$/ ? ($1 => $2) : () }
	split /\n/, $t->read_file('wsgi.log');
my $n = qr/\d+\.\d{3}/;

like($log{'/hello 200'}, qr/^q=$n a=$n t=\d+$/, 'app: all three');
like($log{'/raise 500'}, qr/^q=$n a=$n t=\d+$/, 'app error: all three');
like($log{'/t/spin 504'}, qr/^q=$n a=- t=\d+$/,
	'timeout: no app time without a response');
like($log{'/block?3 503'}, qr/^q=- a=- t=-$/, 'refused: none');
like($log{'/block?4 499'}, qr/^q=$n a=- t=\d+$/, 'client abort: queue and thread');
like($log{'/return 200'}, qr/^q=- a=- t=-$/, 'return: none');
like($log{'/status 200'}, qr/^q=- a=- t=-$/, 'status: none');

###############################################################################

#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: a panic in any function nginx calls into
# is caught: logged at "alert" with the request's context, the request
# ends with a 500 (the worker keeps serving), and a panic in the eventfd
# wake-up or the deferral timer loses no response.
#
# Needs the module built with --features panic-inject (scripts/test builds
# it and names it in TEST_WSGI_PANIC_MODULE): a request header
# "X-Wsgi-Panic: NAME" makes the entry point NAME panic.

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx qw/ :DEFAULT http_end /;
use Test::WSGI qw/ load_test_build slurp state_dir wait_file wait_log /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

# This file loads the panic-inject build instead of the suite's module.
load_test_build('TEST_WSGI_PANIC_MODULE', '--features panic-inject');

my $t = Test::Nginx->new()->has(qw/http/)->plan(36)->todo_alerts()
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_threads  4;

    log_format  wsgi  '$request $wsgi_thread $wsgi_app_time';

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        access_log  %%TESTDIR%%/wsgi.log  wsgi;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location /slow {
            wsgi_read_timeout  1s;
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location /status {
            wsgi_status;
        }
    }
}

EOF

my $state = state_dir($t);

$t->write_file('app.py', <<'EOF');
import os, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

def application(environ, start_response):
    if environ['PATH_INFO'] in ('/slow', '/hold'):
        mark = environ['QUERY_STRING']
        if mark:
            open(os.path.join(STATE, mark), 'w').close()
        time.sleep(5)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'pid %d' % os.getpid()]
EOF

$t->run();

###############################################################################

my $log = $t->testdir() . '/error.log';

sub get {
	my ($uri, $point) = @_;
	my $h = defined $point ? "X-Wsgi-Panic: $point\r\n" : '';
	return http("GET $uri HTTP/1.0\r\nHost: localhost\r\n$h\r\n");
}

my ($pid) = get('/') =~ /pid (\d+)/;
ok($pid, 'app answers');

# entry points of a request: each panics, the request gets a 500, the
# alert names the entry point and the request

for my $point ('content handler', 'request body handler',
	'wake-up of the request', 'status handler')
{
	my $uri = $point eq 'status handler' ? '/status' : '/';
	like(get($uri, $point), qr/^HTTP\/1\.[01] 500 /, "$point: 500");
	ok(wait_log($log, qr/\[alert\].*wsgi: panic in \Q$point\E: injected panic in \Q$point\E at src\/\S+\.rs:\d+ while handling request.*request: "GET \Q$uri\E HTTP\/1\.0"/),
		"$point: alert with the request");
	like(get('/'), qr/pid $pid\z/, "$point: same worker serves on");
}

# the timer (wsgi_read_timeout) of a request whose app is still running

like(get('/slow', 'timer'), qr/^HTTP\/1\.[01] 500 /, 'timer: 500');
ok(wait_log($log, qr/\[alert\].*wsgi: panic in timer: injected panic in timer.*request: "GET \/slow HTTP\/1\.0"/),
	'timer: alert with the request');
like(get('/'), qr/pid $pid\z/, 'timer: same worker serves on');

# the read event handler (the client's connection is watched while the
# app runs): a byte sent once the app has started wakes it

my $s = http("GET /slow?started HTTP/1.1\r\nHost: localhost\r\n"
	. "X-Wsgi-Panic: read event handler\r\n\r\n", start => 1);
ok(wait_file("$state/started"), 'read event handler: app started');
print $s 'G';
like(http_end($s), qr/^HTTP\/1\.1 500 /, 'read event handler: 500');
ok(wait_log($log, qr/\[alert\].*wsgi: panic in read event handler: injected/),
	'read event handler: alert');
like(get('/'), qr/pid $pid\z/, 'read event handler: same worker serves on');

# (the alerts are expected: todo_alerts)

# the eventfd wake-up and the deferral timer have no request: their panic
# is logged and the responses they were to pick up still go out

like(get('/', 'wakeup'), qr/pid $pid\z/, 'wakeup armed: response');
like(get('/'), qr/pid $pid\z/, 'wakeup: response after');
ok(wait_log($log, qr/\[alert\].*wsgi: panic in wake-up handler: injected panic in wakeup/),
	'wakeup: alert');
like(get('/'), qr/pid $pid\z/, 'wakeup: same worker serves on');

like(get('/', 'tick'), qr/pid $pid\z/, 'tick armed: response');
like(get('/'), qr/pid $pid\z/, 'tick: response after');
ok(wait_log($log, qr/\[alert\].*wsgi: panic in deferral timer: injected panic in tick/),
	'tick: alert');

# a $wsgi_* variable's getter (the access log asks for it after the
# response): the alert, an empty value, and the worker serves on

like(get('/', 'wsgi_thread'), qr/pid $pid\z/, 'variable getter: the response is whole');
ok(wait_log($log, qr/\[alert\].*wsgi: panic in wsgi_thread: injected panic in wsgi_thread/),
	'variable getter: alert');
like(get('/'), qr/pid $pid\z/, 'variable getter: same worker serves on');

# the request's state cannot be allocated (an out-of-memory pool, played by
# "X-Wsgi-Fail: request slot"): a 500, and the worker's count of requests
# in flight stays right for the one that is

my $held = http("GET /hold?held HTTP/1.0\r\nHost: localhost\r\n\r\n", start => 1);
ok(wait_file("$state/held"), 'allocation failure: a request in flight');
like(http("GET / HTTP/1.0\r\nHost: localhost\r\nX-Wsgi-Fail: request slot\r\n\r\n"),
	qr/^HTTP\/1\.[01] 500 /, 'allocation failure: 500');
like(get('/status'), qr/"in_flight":1,/, 'allocation failure: the request in flight is still counted');
like(http_end($held), qr/pid $pid\z/, 'the request in flight completes');
like(get('/status'), qr/"in_flight":0,/, 'and then none is counted');

$t->stop();

unlike(slurp($log), qr/\[(crit|emerg)\]|exited on signal/, 'no crash, no crit');

###############################################################################

#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: wsgi_intercept_errors, as
# proxy_intercept_errors.  A status with an error_page in the location goes
# to that page and the app's body is dropped (its iterable closed); other
# statuses, and every status with the directive off, pass through; a 401
# keeps the app's WWW-Authenticate.

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx;
use Test::WSGI qw/ slurp wait_file state_dir wsgi_status /;

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

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        root  %%TESTDIR%%/pages;

        location /i/ {
            wsgi_intercept_errors  on;
            error_page  404 /404.html;
            error_page  401 /401.html;
            error_page  500 502 503 = /5xx.html;
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location /off/ {
            error_page  404 /404.html;
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location = /status {
            wsgi_status;
        }
    }

    server {
        listen       127.0.0.1:8081;
        server_name  localhost;

        root  %%TESTDIR%%/pages;

        # inherited from the server level
        wsgi_intercept_errors  on;
        error_page  404 /404.html;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location = /404.html {
        }
    }
}

EOF

$t->write_file('app.py', <<'EOF');
import os

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

class Body:
    def __init__(self, name):
        self.name = name
    def __iter__(self):
        yield b'app body '
        yield b'for ' + self.name.encode()
    def close(self):
        with open(os.path.join(STATE, 'closed-' + self.name), 'w') as f:
            f.write('closed')

def application(environ, start_response):
    name = environ['PATH_INFO'].rsplit('/', 1)[-1]
    status = {'404': '404 Not Found', '403': '403 Forbidden',
              '401': '401 Unauthorized', '500': '500 Oops',
              '200': '200 OK', 'gen404': '404 Not Found'}[name]
    headers = [('Content-Type', 'text/plain'), ('X-App', 'yes')]
    if name == '401':
        headers.append(('WWW-Authenticate', 'Basic realm="app"'))
    start_response(status, headers)
    if name == 'gen404':
        return Body(name)
    return [b'app body for ' + name.encode()]
EOF

mkdir($t->testdir() . '/pages');
$t->write_file('pages/404.html', 'error page 404');
$t->write_file('pages/401.html', 'error page 401');
$t->write_file('pages/5xx.html', 'error page 5xx');
my $state = state_dir($t);
chmod(0755, $t->testdir() . '/pages');

$t->run();

###############################################################################

my $r;

# an error_page for the status: nginx's page, the app's body dropped

$r = http_get('/i/404');
like($r, qr/^HTTP\/1\.1 404 Not Found\x0d\x0a/, 'intercepted 404 status');
like($r, qr/\x0d\x0a\x0d\x0aerror page 404\z/, 'intercepted 404 page');
unlike($r, qr/^X-App:/mi, 'intercepted 404 without the app headers');

# a generator's close() still runs

$r = http_get('/i/gen404');
like($r, qr/\x0d\x0a\x0d\x0aerror page 404\z/, 'intercepted generator');
ok(wait_file("$state/closed-gen404"), 'intercepted generator closed');

# "error_page ... = uri": the page's own status

$r = http_get('/i/500');
like($r, qr/^HTTP\/1\.1 200 OK\x0d\x0a.*error page 5xx\z/s,
	'intercepted 500 with "=" error_page');

# 401 keeps the app's challenge

$r = http_get('/i/401');
like($r, qr/^HTTP\/1\.1 401 /, 'intercepted 401 status');
like($r, qr/^WWW-Authenticate: Basic realm="app"\x0d?$/mi,
	'intercepted 401 keeps WWW-Authenticate');
like($r, qr/error page 401\z/, 'intercepted 401 page');

# no error_page for the status, or a success: the app's response

$r = http_get('/i/403');
like($r, qr/^HTTP\/1\.1 403 Forbidden\x0d\x0a.*^X-App: yes.*app body for 403\z/ms,
	'403 without error_page passes');
like(http_get('/i/200'), qr/^HTTP\/1\.1 200 OK\x0d\x0a.*app body for 200\z/s,
	'200 passes');

# off (the default): the app's own error body, error_page or not

$r = http_get('/off/404');
like($r, qr/^HTTP\/1\.1 404 Not Found\x0d\x0a.*app body for 404\z/s,
	'off: the app\'s 404');

# inherited from the server level

like(get8081('/x/404'), qr/error page 404\z/, 'inherited');
like(get8081('/x/gen404'), qr/error page 404\z/,
	'inherited, generator');
like(get8081('/x/200'), qr/app body for 200\z/, 'inherited, 200');

# the worker keeps serving and counts one response per request

my $st = wsgi_status();
my ($requests) = $st =~ /"requests":(\d+)/;
my ($responses) = $st =~ /"responses":(\d+)/;
is($requests, 10, 'requests counted');
is($responses, $requests, 'one response per request');
like($st, qr/"app_errors":0,/, 'no app errors');

###############################################################################

sub get8081 {
	my ($uri) = @_;
	return http(<<EOF, PeerAddr => '127.0.0.1:' . port(8081));
GET $uri HTTP/1.0
Host: localhost

EOF
}

###############################################################################

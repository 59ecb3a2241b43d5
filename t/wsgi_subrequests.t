#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: apps as subrequests.  SSI includes of
# app locations (several in one page, in order, with their query strings),
# a mirror subrequest reading the same request body as the main request,
# and, where nginx has it, auth_request with the app deciding: 2xx lets the
# request through (and its headers reach auth_request_set), 401/403 refuse.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::MD5 qw/ md5_hex /;

use Test::Nginx;
use Test::WSGI qw/ slurp wait_file state_dir /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http ssi/);
my $auth = $t->has_module('auth_request');

my $auth_conf = $auth ? <<'EOF' : '';
        location /private/ {
            auth_request      /auth;
            auth_request_set  $user $sent_http_x_user;
            add_header        X-User $user;
        }

        location = /auth {
            internal;
            wsgi_pass  %%TESTDIR%%/app.py;
        }
EOF

$t->plan(14)->write_file_expand('nginx.conf', <<"EOF");

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

        root  %%TESTDIR%%/www;

        location /ssi/ {
            ssi  on;
        }

        location /app/ {
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        # the same request body to the app twice: the main request and a
        # mirror subrequest
        location /mirrored/ {
            mirror  /shadow;
            client_body_buffer_size  1m;
            wsgi_pass  %%TESTDIR%%/app.py;
        }

        location = /shadow {
            internal;
            wsgi_pass  %%TESTDIR%%/app.py;
        }

$auth_conf
    }
}

EOF

$t->write_file('app.py', <<'EOF');
import hashlib, os, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/auth':
        token = environ.get('HTTP_X_TOKEN')
        if token == 'good':
            start_response('200 OK', [('X-User', 'alice')])
            return [b'']
        status = '403 Forbidden' if token else '401 Unauthorized'
        start_response(status, [('WWW-Authenticate', 'Bearer')])
        return [b'no']
    if path in ('/shadow', '/mirrored/echo'):
        body = environ['wsgi.input'].read()
        digest = '%d:%s' % (len(body), hashlib.md5(body).hexdigest())
        if path == '/shadow':
            with open(os.path.join(STATE, 'shadow'), 'w') as f:
                f.write(digest)
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [digest.encode()]
    if path == '/app/slow':
        time.sleep(0.2)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    q = environ['QUERY_STRING']
    return [('[%s%s]' % (path, '?' + q if q else '')).encode()]
EOF

mkdir($t->testdir() . '/www');
mkdir($t->testdir() . '/www/ssi');
mkdir($t->testdir() . '/www/private');
$t->write_file('www/ssi/page.html',
	'A<!--# include virtual="/app/one" -->'
	. 'B<!--# include virtual="/app/slow" -->'
	. 'C<!--# include virtual="/app/two?x=1" -->D');
$t->write_file('www/private/file.txt', 'SECRET');
my $state = state_dir($t);

$t->run();

###############################################################################

# SSI: each include is a subrequest answered by the app, in page order
# (the slow one does not let the next overtake it)

my $r = http_get('/ssi/page.html');
like($r, qr/^HTTP\/1\.1 200 OK/, 'ssi page');
like($r, qr/\x0d\x0a\x0d\x0aA\[\/app\/one\]B\[\/app\/slow\]C\[\/app\/two\?x=1\]D\z/,
	'ssi includes from the app, in order');

$r = http_get('/ssi/page.html');
like($r, qr/A\[\/app\/one\]B\[\/app\/slow\]C\[\/app\/two\?x=1\]D\z/,
	'ssi page again');

like(http_get('/app/direct'), qr/\[\/app\/direct\]\z/, 'app directly');

# mirror: the main request and the mirror subrequest both read the body

my $body = join '', map { chr(65 + $_ % 26) x 100 } 0 .. 2999;
my $digest = length($body) . ':' . md5_hex($body);
$r = http(<<EOF . $body);
POST /mirrored/echo HTTP/1.0
Host: localhost
Content-Length: @{[ length $body ]}

EOF
like($r, qr/\x0d\x0a\x0d\x0a\Q$digest\E\z/, 'mirror: main request body');
ok(wait_file("$state/shadow"), 'mirror: subrequest ran');
is(slurp("$state/shadow"), $digest, 'mirror: subrequest body');

# auth_request: the app decides

SKIP: {
skip 'no auth_request in this nginx', 7 unless $auth;

$r = http(<<EOF);
GET /private/file.txt HTTP/1.0
Host: localhost
X-Token: good

EOF
like($r, qr/^HTTP\/1\.1 200 OK/, 'auth_request allowed');
like($r, qr/\x0d\x0a\x0d\x0aSECRET\z/, 'auth_request allowed: the file');
like($r, qr/^X-User: alice\x0d?$/mi, 'auth_request_set from the app header');

$r = http_get('/private/file.txt');
like($r, qr/^HTTP\/1\.1 401 /, 'auth_request 401 from the app');
like($r, qr/^WWW-Authenticate: Bearer\x0d?$/mi, 'auth_request 401 challenge');
unlike($r, qr/SECRET/, 'auth_request 401: no file');

$r = http(<<EOF);
GET /private/file.txt HTTP/1.0
Host: localhost
X-Token: bad

EOF
like($r, qr/^HTTP\/1\.1 403 /, 'auth_request 403 from the app');

}

###############################################################################

#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: an app wrapped in wsgiref.validate's
# validator, which asserts on every PEP 3333 rule of the server side
# (environ, wsgi.input, wsgi.errors, start_response, iteration, close).

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx;
use Test::WSGI qw/ http_post /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(21)
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

        location / {
            wsgi_pass  %%TESTDIR%%/validated.py;
        }

        # a control: the validator's complaints do reach the error log
        location /control {
            wsgi_pass  %%TESTDIR%%/validated.py:control;
        }
    }
}

EOF

$t->write_file('static.txt', "static file contents\n");

$t->write_file('validated.py', <<'EOF');
import os
from wsgiref.validate import validator

HERE = os.path.dirname(os.path.abspath(__file__))

def app(environ, start_response):
    method, path = environ['REQUEST_METHOD'], environ['PATH_INFO']
    inp = environ['wsgi.input']
    headers = [('Content-Type', 'text/plain')]

    errors = environ['wsgi.errors']
    errors.write('validated %s %s\n' % (method, path))
    errors.writelines(['lines ', 'written\n'])
    errors.flush()

    if path == '/file':
        start_response('200 OK', headers)
        return environ['wsgi.file_wrapper'](
            open(os.path.join(HERE, 'static.txt'), 'rb'), 4)

    if path == '/write':
        write = start_response('200 OK', headers)
        write(b'written, ')
        return [b'returned']

    if path == '/post':
        n = int(environ.get('CONTENT_LENGTH') or 0)
        body = b'got ' + inp.read(n) + b' rest ' + inp.read(100)
    elif path == '/lines':
        body = b'|'.join([inp.readline(), inp.readline(3)] + inp.readlines())
    elif path == '/iter':
        body = b'|'.join(line for line in inp)
    else:
        body = ('%s %s' % (method, path)).encode('latin-1')

    start_response('200 OK', headers + [('Content-Length', str(len(body)))])
    return [body]

application = validator(app)

def bad_status(environ, start_response):
    start_response('200', [('Content-Type', 'text/plain')])
    return [b'status without a reason']

control = validator(bad_status)
EOF

$t->run();

###############################################################################

my $r;

# GET, HEAD, query strings, a decoded path

like(http_get('/'), qr/^HTTP\/1\.1 200 .*\x0d\x0a\x0d\x0aGET \/\z/s, 'get');
like(http_get('/caf%C3%A9/x?a=b&c'), qr/\x0d\x0a\x0d\x0aGET \/caf\xc3\xa9\/x\z/,
	'get with query and decoded path');

$r = http_head('/');
like($r, qr/^HTTP\/1\.1 200 .*^Content-Length: 6\x0d?$/msi, 'head');
like($r, qr/\x0d\x0a\x0d\x0a\z/, 'head no body');

# POST bodies read through the validator's wsgi.input wrapper

like(http_post('/post', 'hello'), qr/\x0d\x0a\x0d\x0agot hello rest \z/, 'post');
like(http_post('/post', ''), qr/\x0d\x0a\x0d\x0agot  rest \z/, 'post empty');
# nginx 1.29+ rejects a chunked body whose lines end in a bare LF: CRLF.
like(http("POST /post HTTP/1.1\x0d\x0a"
	. "Host: localhost\x0d\x0a"
	. "Connection: close\x0d\x0a"
	. "Transfer-Encoding: chunked\x0d\x0a\x0d\x0a"
	. "8\x0d\x0achunked \x0d\x0a4\x0d\x0abody\x0d\x0a0\x0d\x0a\x0d\x0a"),
	qr/\x0d\x0a\x0d\x0agot chunked body rest \z/, 'post chunked');

like(http_post('/lines', "first\nsecond\nthird\nlast"),
	qr/\x0d\x0a\x0d\x0afirst\n\|sec\|ond\n\|third\n\|last\z/,
	'readline(), readline(n), readlines()');
like(http_post('/iter', "a\nb\n\nc"), qr/\x0d\x0a\x0d\x0aa\n\|b\n\|\n\|c\z/,
	'iteration');

# response paths: wsgi.file_wrapper and write()

like(http_get('/file'), qr/\x0d\x0a\x0d\x0astatic file contents\n\z/,
	'file_wrapper');
like(http_get('/write'), qr/\x0d\x0a\x0d\x0awritten, returned\z/, 'write()');

# nothing the validator complains about, and wsgi.errors works

my $log = $t->read_file('error.log');

unlike($log, qr/AssertionError/, 'no AssertionError');
unlike($log, qr/WSGIWarning/, 'no WSGIWarning');
unlike($log, qr/wsgiref/, 'no wsgiref messages');
unlike($log, qr/wsgi: app (raised|returned)/, 'no app errors');
like($log, qr/\[error\].*wsgi: validated GET \/, client/, 'wsgi.errors write()');
like($log, qr/wsgi: lines written, client/, 'wsgi.errors writelines()');
like($log, qr/wsgi: validated POST \/post, client/, 'wsgi.errors post');

# the control: a validator warning would have been seen

like(http_get('/control'), qr/^HTTP\/1\.1 200 OK\x0d\x0a/, 'control');
like($t->read_file('error.log'),
	qr/wsgi: .*wsgiref.*WSGIWarning: The status string \('200'\)/,
	'control: validator warning in the error log');

like(http_get('/'), qr/\x0d\x0a\x0d\x0aGET \/\z/, 'get again');

###############################################################################

###############################################################################

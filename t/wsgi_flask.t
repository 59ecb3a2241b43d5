#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: a real Flask app (from the test venv,
# wsgi_python_home): URL parameters, JSON responses and request bodies,
# form POSTs, multipart uploads (buffered and with wsgi_request_buffering
# off), a response streamed with stream_with_context, custom 404 and 500
# handlers, url_for redirects, and the same app mounted under a prefix
# with wsgi_script_name.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::MD5 qw/ md5_hex /;
use IO::Select;
use Time::HiRes qw/ time /;

use Test::Nginx qw/ :DEFAULT http_content /;
use Test::WSGI qw/ read_until http_post /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $venv = $ENV{TEST_WSGI_VENV};
plan(skip_all => 'TEST_WSGI_VENV not set (a venv with Flask from '
	. 't/requirements.txt, made by scripts/test)')
	unless defined $venv && length $venv;

my $t = Test::Nginx->new()->has(qw/http/)->plan(59)
	->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_python_home  $venv;

    client_max_body_size  4m;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/flask_app.py:app;
        }

        # the same app (imported once), mounted under a prefix
        location /app/ {
            wsgi_pass         %%TESTDIR%%/flask_app.py:app;
            wsgi_script_name  /app;
        }

        # and with the request body streamed to wsgi.input
        location /unbuffered/ {
            wsgi_pass               %%TESTDIR%%/flask_app.py:app;
            wsgi_script_name        /unbuffered;
            wsgi_request_buffering  off;
        }
    }
}

EOF

$t->write_file('flask_app.py', <<'EOF');
import hashlib, os, time

from flask import (Flask, Response, jsonify, redirect, request,
                   stream_with_context, url_for)

HERE = os.path.dirname(os.path.abspath(__file__))

app = Flask(__name__)


@app.route('/hello/<name>')
def hello(name):
    return f'hello {name}'


@app.route('/items/<int:item_id>')
def item(item_id):
    return jsonify(id=item_id, double=item_id * 2,
                   type=type(item_id).__name__)


@app.route('/files/<path:sub>')
def files(sub):
    return jsonify(sub=sub, page=request.args.get('page', type=int))


@app.route('/json', methods=['POST'])
def echo_json():
    data = request.get_json()
    return jsonify(name=data['name'], name_len=len(data['name']),
                   total=sum(data['numbers'])), 201


@app.route('/form', methods=['POST'])
def form():
    f = request.form
    return jsonify(name=f['name'], name_len=len(f['name']),
                   tags=f.getlist('tag'), comment=f.get('comment'))


@app.route('/upload', methods=['POST'])
def upload():
    up = request.files['file']
    data = up.read()
    return jsonify(filename=up.filename, mimetype=up.mimetype,
                   size=len(data), md5=hashlib.md5(data).hexdigest(),
                   note=request.form.get('note'))


@app.route('/stream')
def stream():
    release = os.path.join(HERE, 'release')

    def generate():
        yield 'first\n'
        # the test reads "first" and then creates the file: a bounded
        # poll, so a response that is not streamed fails instead of hanging
        for _ in range(500):
            if os.path.exists(release):
                break
            time.sleep(0.01)
        # the request context is still there, thanks to stream_with_context
        yield f'who={request.args["who"]} path={request.path}\n'
        yield 'last\n'

    return Response(stream_with_context(generate()), mimetype='text/plain')


@app.route('/go/<name>')
def go(name):
    return redirect(url_for('hello', name=name))


@app.route('/where/<path:rest>')
def where(rest):
    return jsonify(path=request.path, script_root=request.script_root,
                   url=request.url, rest=rest,
                   hello=url_for('hello', name='x'),
                   external=url_for('hello', name='x', _external=True))


@app.route('/boom')
def boom():
    raise RuntimeError('boom from a view')


@app.errorhandler(404)
def not_found(e):
    return jsonify(error='custom not found', path=request.path), 404


@app.errorhandler(500)
def server_error(e):
    return jsonify(error='custom internal error',
                   cause=repr(getattr(e, 'original_exception', None))), 500
EOF

$t->run();

###############################################################################

# URL parameters

like(http_get('/hello/world'), qr/^HTTP\/1\.1 200 .*\x0d\x0a\x0d\x0ahello world\z/s,
	'string parameter');
like(http_get('/hello/caf%C3%A9'), qr/\x0d\x0a\x0d\x0ahello caf\xc3\xa9\z/,
	'percent-encoded UTF-8 parameter');

my $r = http_get('/items/21');
like($r, qr/^Content-Type: application\/json\x0d$/m, 'int parameter: json');
like($r, qr/"double":42/, 'int parameter: converted');
like($r, qr/"type":"int"/, 'int parameter: type');
like(http_get('/items/x1'), qr/^HTTP\/1\.1 404 /, 'int parameter: no match');

$r = http_get('/files/a/b/c.txt?page=3');
like($r, qr/"sub":"a\/b\/c\.txt"/, 'path parameter');
like($r, qr/"page":3/, 'query argument');

# JSON request bodies

my $json = qq({"name": "caf\xc3\xa9", "numbers": [1, 2, 3.5]});
$r = post('/json', 'application/json', $json);
like($r, qr/^HTTP\/1\.1 201 /, 'json post: status');
like($r, qr/^Content-Type: application\/json\x0d$/m, 'json post: type');
like($r, qr/"name":"caf\\u00e9"/, 'json post: unicode');
like($r, qr/"name_len":4/, 'json post: decoded as UTF-8');
like($r, qr/"total":6\.5/, 'json post: numbers');

# the same body, chunked

$r = http(<<EOF . chunked($json, 7));
POST /json HTTP/1.1
Host: localhost
Connection: close
Content-Type: application/json
Transfer-Encoding: chunked

EOF
like($r, qr/^HTTP\/1\.1 201 .*"total":6\.5/s, 'json post: chunked body');

like(http_get('/json'), qr/^HTTP\/1\.1 405 /, 'json: GET not allowed');

# form POST

$r = post('/form', 'application/x-www-form-urlencoded',
	'name=caf%C3%A9+au+lait&tag=a&tag=b%26c&comment=');
like($r, qr/^HTTP\/1\.1 200 /, 'form: status');
like($r, qr/"name":"caf\\u00e9 au lait"/, 'form: decoded value');
like($r, qr/"name_len":12/, 'form: decoded length');
like($r, qr/"tags":\["a","b&c"\]/, 'form: repeated field');
like($r, qr/"comment":""/, 'form: empty field');

# multipart uploads: binary data bigger than client_body_buffer_size
# (so nginx keeps it in a temp file), md5 computed by the app

srand(20240501);
my $data = join '', map { chr(int(rand(256))) } 1 .. 300_000;
$data .= "\r\n--not-the-boundary\r\n\r\n";

for my $prefix ('', '/app', '/unbuffered') {
	$r = upload("$prefix/upload", 'data.bin', $data, 'uploaded');
	like($r, qr/^HTTP\/1\.1 200 /, "upload $prefix: status");
	like($r, qr/"md5":"${\ md5_hex($data) }"/, "upload $prefix: md5");
	like($r, qr/"size":${\ length $data }\b/, "upload $prefix: size");
	like($r, qr/"filename":"data\.bin"/, "upload $prefix: filename");
	like($r, qr/"note":"uploaded"/, "upload $prefix: other field");
}

like(upload('/upload', 'empty.txt', '', 'none'), qr/"size":0\b/,
	'upload: empty file');

# streaming: the first chunk arrives while the generator is still
# waiting, the rest after the test lets it go

my $s = http(<<EOF, start => 1);
GET /stream?who=tester HTTP/1.1
Host: localhost
Connection: close

EOF
my $got = read_until($s, qr/first\n/);
like($got, qr/^HTTP\/1\.1 200 .*^Transfer-Encoding: chunked\x0d$/ms,
	'stream: chunked');
like($got, qr/first\n/, 'stream: first chunk before the rest');
unlike($got, qr/last/, 'stream: not all at once');
$t->write_file('release', '');
$got .= read_until($s, qr/\x0d\x0a0\x0d\x0a\x0d\x0a\z/);
is(http_content($got), "first\nwho=tester path=/stream\nlast\n",
	'stream: request context in the generator');

# error handlers

$r = http_get('/no/such/page');
like($r, qr/^HTTP\/1\.1 404 /, 'custom 404: status');
like($r, qr/\{"error":"custom not found","path":"\/no\/such\/page"\}/,
	'custom 404: body');

$r = http_get('/boom');
like($r, qr/^HTTP\/1\.1 500 /, 'custom 500: status');
like($r, qr/"cause":"RuntimeError\('boom from a view'\)"/,
	'custom 500: original exception');
like($r, qr/"error":"custom internal error"/, 'custom 500: body');

# redirects built with url_for

$r = http_get('/go/bob');
like($r, qr/^HTTP\/1\.1 302 /, 'redirect: status');
like($r, qr/^Location: (http:\/\/localhost(:\d+)?)?\/hello\/bob\x0d$/m,
	'redirect: url_for');

# mounted under /app

$r = http_get('/app/where/a/b?q=1');
like($r, qr/"path":"\/where\/a\/b"/, 'prefix: request.path');
like($r, qr/"script_root":"\/app"/, 'prefix: script_root');
like($r, qr/"hello":"\/app\/hello\/x"/, 'prefix: url_for');
like($r, qr/"external":"http:\/\/localhost\/app\/hello\/x"/,
	'prefix: url_for external');
like($r, qr/"url":"http:\/\/localhost\/app\/where\/a\/b\?q=1"/,
	'prefix: request.url');

$r = http_get('/where/a/b');
like($r, qr/"script_root":""/, 'root: script_root');
like($r, qr/"hello":"\/hello\/x"/, 'root: url_for');

like(http_get('/app/go/ann'),
	qr/^Location: (http:\/\/localhost(:\d+)?)?\/app\/hello\/ann\x0d$/m,
	'prefix: redirect');
like(http_get('/app/hello/you'), qr/\x0d\x0a\x0d\x0ahello you\z/,
	'prefix: route');
like(http_get('/app/nothing'), qr/^HTTP\/1\.1 404 .*"path":"\/nothing"/s,
	'prefix: custom 404');

# Flask logged the exception to nginx's error log

my $log = $t->read_file('error.log');
like($log, qr/\[error\].*Exception on \/boom \[GET\]/, 'exception logged');
like($log, qr/RuntimeError: boom from a view/, 'exception logged: traceback');

###############################################################################

# POST $body as $type
sub post {
	my ($uri, $type, $body) = @_;
	return http_post($uri, $body, "Content-Type: $type");
}

sub upload {
	my ($uri, $name, $content, $note) = @_;
	my $b = 'ngxwsgiBoundary7MA4YWxk';
	my $body = "--$b\r\n"
		. "Content-Disposition: form-data; name=\"note\"\r\n\r\n"
		. "$note\r\n"
		. "--$b\r\n"
		. "Content-Disposition: form-data; name=\"file\"; "
		. "filename=\"$name\"\r\n"
		. "Content-Type: application/octet-stream\r\n\r\n"
		. $content . "\r\n"
		. "--$b--\r\n";
	return post($uri, "multipart/form-data; boundary=$b", $body);
}

sub chunked {
	my ($body, $size) = @_;
	my $out = '';
	while (length $body) {
		my $c = substr($body, 0, $size, '');
		$out .= sprintf("%x\r\n%s\r\n", length $c, $c);
	}
	return $out . "0\r\n\r\n";
}

###############################################################################

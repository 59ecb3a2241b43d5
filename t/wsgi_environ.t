#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: the environ dict an app receives
# (PEP 3333 / CGI keys, wsgi.* keys, wsgi_script_name, wsgi_param).

###############################################################################

use warnings;
use strict;

use Test::More;
use JSON::PP;
use Cwd ();

use Test::Nginx qw/ :DEFAULT http_end /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(53)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

# nginx's own way to give workers environment variables: os.environ
env  WSGI_TEST_SETTING=from-nginx-env;

# the app's current directory (uWSGI's chdir)
working_directory  %%TESTDIR%%;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        # a server-level set, inherited by locations without wsgi_param
        wsgi_param  SRV_A  "server-a";
        wsgi_param  SRV_B  "server-b";

        location / {
            wsgi_pass  %%TESTDIR%%/environ.py;
        }

        location /app/ {
            wsgi_pass         %%TESTDIR%%/environ.py;
            wsgi_script_name  /app;
        }

        # a location-level set replaces the server-level one entirely
        location /params/ {
            wsgi_pass   %%TESTDIR%%/environ.py;
            wsgi_param  P_ADDR      $remote_addr;
            wsgi_param  P_MIXED     "$request_method $uri!";
            wsgi_param  P_ARG       $arg_v  if_not_empty;
            wsgi_param  P_EMPTY     ""      if_not_empty;
            wsgi_param  P_KEPT      "";
        }
    }

    # nginx passes header names with underscores on only with this
    server {
        listen       127.0.0.1:8081;
        server_name  localhost;
        underscores_in_headers  on;

        location / {
            wsgi_pass  %%TESTDIR%%/environ.py;
        }
    }
}

EOF

# Every value as a string: str as is, anything else as its repr().
$t->write_file('environ.py', <<'EOF');
import json
import os

def application(environ, start_response):
    out = {}
    for k, v in environ.items():
        out[k] = v if isinstance(v, str) else repr(v)
    out['has wsgi.input.read'] = repr(callable(environ['wsgi.input'].read))
    out['has wsgi.errors.write'] = repr(callable(environ['wsgi.errors'].write))
    out['file_wrapper callable'] = repr(callable(environ['wsgi.file_wrapper']))
    out['os.environ WSGI_TEST_SETTING'] = repr(os.environ.get('WSGI_TEST_SETTING'))
    out['os.getcwd'] = os.getcwd()
    if environ.get('QUERY_STRING') == 'executable':
        # sys.executable names this same Python, as scripts expect
        import subprocess, sys
        try:
            out['sys.executable runs'] = subprocess.run(
                [sys.executable, '-c', 'import sys; print(sys.version_info[:2])'],
                capture_output=True, timeout=30).stdout.decode().strip() \
                + ' ' + str(sys.version_info[:2])
        except Exception as e:
            out['sys.executable runs'] = '%r %r' % (sys.executable, e)
    body = json.dumps(out, sort_keys=True, ensure_ascii=True).encode('ascii')
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
EOF

$t->run();

###############################################################################

my $port = port(8080);
my ($e, $r);

# basic CGI keys for a GET without a mount point

my $s = http_get('/some/path?x=1', start => 1);
my $client_port = $s->sockport();
$r = http_end($s);
$e = environ($r);

like($r, qr/^HTTP\/1\.1 200 OK/, 'environ app answers');
is($e->{REQUEST_METHOD}, 'GET', 'REQUEST_METHOD');
is($e->{'os.environ WSGI_TEST_SETTING'}, "'from-nginx-env'",
	'nginx env directive reaches os.environ');
ok(!exists $e->{WSGI_TEST_SETTING}, 'process environment is not environ');
is($e->{'os.getcwd'}, Cwd::realpath($t->testdir()), 'working_directory is the app\'s cwd');
is($e->{SCRIPT_NAME}, '', 'SCRIPT_NAME empty without wsgi_script_name');
is($e->{PATH_INFO}, '/some/path', 'PATH_INFO is the whole path');
is($e->{QUERY_STRING}, 'x=1', 'QUERY_STRING');
is($e->{SERVER_NAME}, 'localhost', 'SERVER_NAME from server_name');
is($e->{SERVER_PORT}, $port, 'SERVER_PORT is the listening port');
is($e->{SERVER_PROTOCOL}, 'HTTP/1.0', 'SERVER_PROTOCOL of an HTTP/1.0 request');
is($e->{REMOTE_ADDR}, '127.0.0.1', 'REMOTE_ADDR');
is($e->{REMOTE_PORT}, $client_port, 'REMOTE_PORT is the client port');
is($e->{HTTP_HOST}, 'localhost', 'HTTP_HOST');
ok(!exists $e->{CONTENT_LENGTH}, 'no CONTENT_LENGTH for a GET without body');

# subprocess.run([sys.executable, ...]) runs the embedded Python's version
# (embedded, Python leaves sys.executable empty by itself)

$e = environ(http_get('/?executable'));
like($e->{'sys.executable runs'}, qr/^(\(\d+, \d+\)) \1$/,
	'sys.executable is this Python');

# wsgi.* keys

is($e->{'wsgi.version'}, '(1, 0)', 'wsgi.version');
is($e->{'wsgi.url_scheme'}, 'http', 'wsgi.url_scheme');
is($e->{'wsgi.multithread'}, 'True', 'wsgi.multithread');
is($e->{'wsgi.multiprocess'}, 'False', 'wsgi.multiprocess, one worker');
is($e->{'wsgi.run_once'}, 'False', 'wsgi.run_once');
is($e->{'wsgi.input_terminated'}, 'True', 'wsgi.input_terminated');
is($e->{'file_wrapper callable'}, 'True', 'wsgi.file_wrapper');
is($e->{'has wsgi.input.read'}, 'True', 'wsgi.input');
is($e->{'has wsgi.errors.write'}, 'True', 'wsgi.errors');

# HTTP/1.1 request line

$e = environ(http(<<EOF));
GET / HTTP/1.1
Host: localhost
Connection: close

EOF

is($e->{SERVER_PROTOCOL}, 'HTTP/1.1', 'SERVER_PROTOCOL of an HTTP/1.1 request');

# raw REQUEST_URI and QUERY_STRING, decoded PATH_INFO: the UTF-8 bytes of
# "café" arrive as latin-1 characters ("native strings" of PEP 3333)

$r = http_get('/caf%C3%A9?a=1%20b&c=%2F');
like($r, qr/"PATH_INFO": "\/caf\\u00c3\\u00a9"/, 'PATH_INFO json');
$e = environ($r);
is($e->{PATH_INFO}, "/caf\x{c3}\x{a9}", 'PATH_INFO percent-decoded, latin-1');
is($e->{QUERY_STRING}, 'a=1%20b&c=%2F', 'QUERY_STRING not decoded');
is($e->{REQUEST_URI}, '/caf%C3%A9?a=1%20b&c=%2F', 'REQUEST_URI raw');

# wsgi_script_name splits the path

$e = environ(http_get('/app/x/y?q'));
is($e->{SCRIPT_NAME}, '/app', 'SCRIPT_NAME with wsgi_script_name');
is($e->{PATH_INFO}, '/x/y', 'PATH_INFO after the mount point');

$e = environ(http_get('/app/'));
is($e->{PATH_INFO}, '/', 'PATH_INFO of the mount point itself');

# request headers: HTTP_* keys, repeated headers joined

$e = environ(http(<<EOF));
GET / HTTP/1.0
Host: localhost
X-Custom-Header: custom value
X-Multi: one
X-Multi: two
Cookie: a=1
Cookie: b=2

EOF

is($e->{HTTP_X_CUSTOM_HEADER}, 'custom value', 'HTTP_ key from header name');
is($e->{HTTP_X_MULTI}, 'one,two', 'repeated header joined with ","');
is($e->{HTTP_COOKIE}, 'a=1; b=2', 'repeated Cookie joined with "; "');

# a header name with an underscore would map to the same key as its dashed
# form: it is dropped, so X_Forwarded_For cannot add to X-Forwarded-For

$e = environ(http(<<EOF, PeerAddr => '127.0.0.1:' . port(8081)));
GET / HTTP/1.0
Host: localhost
X-Forwarded-For: 192.0.2.1
X_Forwarded_For: 198.51.100.6
X_Only_Underscores: yes
X-Dashed: yes

EOF

is($e->{HTTP_X_FORWARDED_FOR}, '192.0.2.1', 'underscored header not merged');
ok(!exists $e->{HTTP_X_ONLY_UNDERSCORES}, 'underscored header dropped');
is($e->{HTTP_X_DASHED}, 'yes', 'dashed header beside it passed');

# headers in changing orders and names (the pool threads remember which
# name came at which position): every request sees exactly its own

my @names = qw/ X-Alpha X-Beta X-Gamma User-Agent Accept X-Delta /;
my $mismatch = '';
for my $round (0 .. 23) {
	my @order = map { $names[($_ * 5 + $round) % @names] } 0 .. 2 + $round % 4;
	my %want = map { my $k = uc $_; $k =~ tr/-/_/; ("HTTP_$k" => "$_ $round") } @order;
	my $req = "GET / HTTP/1.0\nHost: localhost\n"
		. join('', map { "$_: $_ $round\n" } @order) . "\n";
	my $got = environ(http($req));
	for my $k (map { "HTTP_$_" } qw/ X_ALPHA X_BETA X_GAMMA USER_AGENT ACCEPT X_DELTA /) {
		my ($w, $g) = ($want{$k} // '-', $got->{$k} // '-');
		$mismatch .= "round $round $k: want $w, got $g\n" if $w ne $g;
	}
}
is($mismatch, '', 'headers in changing orders each reach their own keys');

# a POST body: CONTENT_TYPE and CONTENT_LENGTH, never as HTTP_*

$e = environ(http(<<EOF));
POST / HTTP/1.0
Host: localhost
Content-Type: text/plain; charset=utf-8
Content-Length: 5

hello
EOF

is($e->{REQUEST_METHOD}, 'POST', 'POST REQUEST_METHOD');
is($e->{CONTENT_TYPE}, 'text/plain; charset=utf-8', 'CONTENT_TYPE');
is($e->{CONTENT_LENGTH}, '5', 'CONTENT_LENGTH');
ok(!exists $e->{HTTP_CONTENT_TYPE}, 'no HTTP_CONTENT_TYPE');
ok(!exists $e->{HTTP_CONTENT_LENGTH}, 'no HTTP_CONTENT_LENGTH');

# wsgi_param: inherited server-level set, variables, if_not_empty

$e = environ(http_get('/'));
is($e->{SRV_A} . ' ' . $e->{SRV_B}, 'server-a server-b',
	'server-level wsgi_param inherited');

$e = environ(http_get('/params/p?v=42'));
is($e->{P_ADDR}, '127.0.0.1', 'wsgi_param with $remote_addr');
is($e->{P_MIXED}, 'GET /params/p!', 'wsgi_param with text and variables');
is($e->{P_ARG}, '42', 'if_not_empty with a value');
ok(exists $e->{P_KEPT} && $e->{P_KEPT} eq '', 'empty wsgi_param kept');
ok(!exists $e->{P_EMPTY}, 'empty wsgi_param skipped with if_not_empty');
ok(!exists $e->{SRV_A}, 'location wsgi_param replaces server-level set');

$e = environ(http_get('/params/p'));
ok(!exists $e->{P_ARG}, 'if_not_empty with an empty variable');

###############################################################################

sub environ {
	my ($r) = @_;
	return {} unless defined $r && $r =~ /\x0d\x0a\x0d\x0a(.*)\z/s;
	return eval { JSON::PP->new->decode($1) } || {};
}

###############################################################################

#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: several apps in one server, each with
# its own wsgi_pass target form, and apps that fail to import: their
# locations answer 500 and log why, the others keep working.

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(30)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_python_path   %%TESTDIR%%/lib;

    # let nginx start with the broken apps below: each worker then
    # reports them, and only their locations fail
    wsgi_import_check  off;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        # module:callable, found through wsgi_python_path
        location /one/ {
            wsgi_pass  app_one:application;
        }

        # a dotted module and a dotted callable
        location /pkg/ {
            wsgi_pass  pkg.sub:Holder.app;
        }

        # a file, with and without a callable name
        location /two/ {
            wsgi_pass  %%TESTDIR%%/two.py:app;
        }

        location /two-default/ {
            wsgi_pass  %%TESTDIR%%/two.py;
        }

        # apps that cannot be loaded
        location /missing/ {
            wsgi_pass  no_such_module_xyz:application;
        }

        location /imports-missing/ {
            wsgi_pass  %%TESTDIR%%/imports_missing.py;
        }

        location /syntax-module/ {
            wsgi_pass  syntax_mod:application;
        }

        location /syntax/ {
            wsgi_pass  %%TESTDIR%%/syntax_error.py;
        }

        location /no-attr/ {
            wsgi_pass  app_one:no_such_callable;
        }

        location /not-callable/ {
            wsgi_pass  app_one:NOT_CALLABLE;
        }

        location /no-file/ {
            wsgi_pass  %%TESTDIR%%/no_such_file.py;
        }
    }
}

EOF

# upstream's write_file makes no directories
mkdir($t->testdir() . "/$_") for qw{ lib lib/pkg };
$t->write_file('lib/app_one.py', <<'EOF');
NOT_CALLABLE = 42

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'app one ' + __name__.encode()]
EOF

$t->write_file('lib/pkg/__init__.py', '');
$t->write_file('lib/pkg/sub.py', <<'EOF');
class Holder:
    @staticmethod
    def app(environ, start_response):
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'pkg.sub Holder.app']
EOF

$t->write_file('two.py', <<'EOF');
def app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'app two: app']

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'app two: application']
EOF

$t->write_file('imports_missing.py', <<'EOF');
import os
import no_such_dependency_xyz

def application(environ, start_response):
    start_response('200 OK', [])
    return [b'not reached']
EOF

$t->write_file('lib/syntax_mod.py', <<'EOF');
def application(environ, start_response:
    return [b'not reached']
EOF

$t->write_file('syntax_error.py', <<'EOF');
def application(environ, start_response)
    return [b'not reached']
EOF

$t->run();

###############################################################################

# each location runs its own app

like(http_get('/one/'), qr/\x0d\x0a\x0d\x0aapp one app_one\z/, 'module app');
like(http_get('/pkg/'), qr/\x0d\x0a\x0d\x0apkg.sub Holder.app\z/,
	'dotted module and callable');
like(http_get('/two/'), qr/\x0d\x0a\x0d\x0aapp two: app\z/, 'file app');
like(http_get('/two-default/'), qr/\x0d\x0a\x0d\x0aapp two: application\z/,
	'file app, default callable');

# apps that failed to load: 500, and the reason in the error log

like(http_get('/missing/'), qr/^HTTP\/1\.1 500 /, 'missing module');
like(http_get('/imports-missing/'), qr/^HTTP\/1\.1 500 /,
	'module importing a missing module');
like(http_get('/syntax/'), qr/^HTTP\/1\.1 500 /, 'syntax error');
like(http_get('/no-attr/'), qr/^HTTP\/1\.1 500 /, 'no such callable');
like(http_get('/not-callable/'), qr/^HTTP\/1\.1 500 /, 'not callable');
like(http_get('/no-file/'), qr/^HTTP\/1\.1 500 /, 'no such file');

my $log = $t->read_file('error.log');
my $d = $t->testdir();
my $load = qr/\[error\].*wsgi: cannot load application/;
my $tb = qr/\nTraceback \(most recent call last\):\n/;

# at worker start: the import error, naming the target

like($log, qr/$load "no_such_module_xyz:application": ModuleNotFoundError/,
	'missing module: log');

like($log, qr/No module named 'no_such_module_xyz' \(sys\.path: .*"\Q$d\E".*; see wsgi_python_path/,
	'missing module: where Python looked');

my $file = qr/File "\Q$d\E\/imports_missing\.py", line 2, in <module>/;
like($log, qr/$load "\Q$d\E\/imports_missing\.py:application": Module/,
	'module importing a missing module: log');
like($log, qr/'no_such_dependency_xyz'$tb(?:  .*\n)*  $file/,
	'module importing a missing module: traceback');

like($log, qr/$load "\Q$d\E\/syntax_error\.py:application": SyntaxError: /,
	'syntax error: log');
like($log, qr/SyntaxError: .* \(syntax_error\.py, line 1\)\n  File "\Q$d\E\/syntax_error\.py", line 1\n    def application\(environ, start_response\)\n +\^/,
	'syntax error: full path, line and caret, no loader frames');

# Python 3.10+ points at the unclosed "(" on line 1, 3.9 at line 2
like($log, qr/$load "syntax_mod:application": SyntaxError: .*\n  File "\Q$d\E\/lib\/syntax_mod\.py", line (?:1\n    def application\(environ, start_response:|2\n    return \[b'not reached'\])\n +\^/,
	'syntax error in a module: full path, line and caret');
like(http_get('/syntax-module/'), qr/^HTTP\/1\.1 500 /, 'syntax error in a module: 500');

like($log, qr/$load "app_one:no_such_callable": AttributeError: /,
	'no such callable: log');
like($log, qr/$load "app_one:NOT_CALLABLE": TypeError: .* is not callable/,
	'not callable: log');
like($log, qr/$load "\Q$d\E\/no_such_file\.py:application": FileNotFound/,
	'no such file: log');

# per request: which app failed, pointing at the worker start error

for my $app ('no_such_module_xyz:application',
	"$d/imports_missing.py:application",
	"$d/syntax_error.py:application")
{
	my $failed = qr/\[error\].*wsgi: application "\Q$app\E" failed to load/;
	like($log, qr/$failed \(see the error at worker start\) while handling/,
		"request log for $app");
}

# the apps that loaded still work, in the same server

like(http_get('/one/x'), qr/\x0d\x0a\x0d\x0aapp one app_one\z/,
	'module app still works');
like(http_get('/pkg/'), qr/\x0d\x0a\x0d\x0apkg.sub Holder.app\z/,
	'dotted app still works');
like(http_get('/two/'), qr/\x0d\x0a\x0d\x0aapp two: app\z/,
	'file app still works');
like(http_get('/two-default/'), qr/\x0d\x0a\x0d\x0aapp two: application\z/,
	'file app, default callable, still works');

# no import was retried per request: one load error per app

my @loads = $log =~ /cannot load application "no_such_module_xyz/g;
is(scalar @loads, 1, 'missing module reported once');
http_get('/missing/');
@loads = $t->read_file('error.log')
	=~ /cannot load application "no_such_module_xyz/g;
is(scalar @loads, 1, 'missing module still reported once');

###############################################################################

#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: wsgi_python_home with a virtualenv.
# A package installed only in the venv (flask, from t/requirements.txt)
# imports from the venv's site-packages, sys.prefix is the venv and the
# system's site-packages are not on sys.path; without wsgi_python_home
# the same app does not import: nginx -t refuses it (wsgi_import_check),
# and with the check off its location answers 500.

###############################################################################

use warnings;
use strict;

use Test::More;

use Cwd qw/ realpath /;

use Test::Nginx;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $venv = $ENV{TEST_WSGI_VENV};
plan(skip_all => 'TEST_WSGI_VENV not set (a venv with t/requirements.txt, '
	. 'made by scripts/test)') unless defined $venv && length $venv;
plan(skip_all => "TEST_WSGI_VENV $venv has no bin/python")
	unless -x "$venv/bin/python";
$venv = realpath($venv);

# the venv's package must not be importable by the system python itself,
# or "without wsgi_python_home it fails" proves nothing

# the Python the venv was made from (the one the module embeds): its own
# prefix, wherever it is installed (/usr, pyenv, /opt ...), and its
# interpreter, asked rather than assumed

my $base_prefix = `"$venv/bin/python" -c 'import sys; print(sys.base_prefix)'`;
chomp $base_prefix;
my $base_python = `"$venv/bin/python" -c 'import sys, os; print(os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2]))'`;
chomp $base_python;
$base_python = '/usr/bin/python3' unless -x $base_python;

my $sys_has_flask =
	system("'$base_python' -c 'import flask' 2>/dev/null") == 0;

my $t = Test::Nginx->new()->has(qw/http/)->plan(26);
my $d = $t->testdir();

# a plain WSGI app reporting where things come from; it imports flask
# lazily, so it also runs without the venv

$t->write_file('info.py', <<'EOF');
import json, os, sys

def application(environ, start_response):
    try:
        import flask
        flask_file = os.path.realpath(flask.__file__)
        flask_version = __import__('importlib.metadata').metadata.version('flask')
    except ImportError as e:
        flask_file = None
        flask_version = repr(e)
    info = {
        'prefix': os.path.realpath(sys.prefix),
        'base_prefix': sys.base_prefix,
        'executable': sys.executable,
        'flask_file': flask_file,
        'flask_version': flask_version,
        'system_site': any(p.startswith('/usr/lib/python3/dist-packages')
                           or p.startswith('/usr/local/lib/python3')
                           or (p.startswith(sys.base_prefix + '/')
                               and p.endswith('-packages'))
                           for p in sys.path),
        'venv_site': [os.path.realpath(p) for p in sys.path
                      if p.endswith('site-packages')],
    }
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(info).encode()]
EOF

# a Flask app: imports flask at the top

$t->write_file('flask_app.py', <<'EOF');
from flask import Flask

app = Flask(__name__)

@app.route('/flask/')
def index():
    return 'flask says hi'
EOF

sub conf {
	my ($home, $check) = @_;
	my $h = $home ? "wsgi_python_home  $venv;" : '';
	return <<"EOF";

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    $h
    wsgi_import_check  $check;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location /info {
            wsgi_pass  %%TESTDIR%%/info.py;
        }

        location /flask/ {
            wsgi_pass  %%TESTDIR%%/flask_app.py:app;
        }
    }
}

EOF
}

# "nginx -t" of a configuration: its own error log, so that the expected
# [emerg] of a refused configuration does not land in error.log

sub nginx_t {
	my ($t, $name, $home) = @_;
	my $h = $home ? "wsgi_python_home  " . ($home =~ m!^/! ? $home : $venv)
		. ";" : '';
	my $globals = $ENV{TEST_NGINX_GLOBALS} // '';
	$t->write_file($name, <<"EOF");
pid        $d/$name.pid;
error_log  $d/$name.log;
$globals

events {
}

http {
    access_log  off;

    $h
    wsgi_import_check  on;

    server {
        listen       127.0.0.1:8080;
        location /flask/ {
            wsgi_pass  $d/flask_app.py:app;
        }
    }
}
EOF
	my $out = `$Test::Nginx::NGINX -p $d/ -c $name -e $name.log -t 2>&1`;
	return ($? >> 8, $out);
}

###############################################################################

# wsgi_import_check runs the venv's python: the check passes with the
# venv and fails without it

my ($rc, $out) = nginx_t($t, 'check-venv.conf', 1);
is($rc, 0, 'nginx -t with the venv: exit status');
like($out, qr/test is successful/, 'nginx -t with the venv: successful');

SKIP: {
skip 'flask is installed in the system python', 3 if $sys_has_flask;

($rc, $out) = nginx_t($t, 'check-novenv.conf', 0);
isnt($rc, 0, 'nginx -t without the venv: fails');
like($out, qr/\[emerg\].*flask_app\.py:app/,
	'nginx -t without the venv: names the app');
like($out, qr/ModuleNotFoundError: No module named 'flask'/,
	'nginx -t without the venv: the import error');

}

# a wsgi_python_home that is neither a venv nor a Python prefix: the
# workers could not start Python; refused with the reason

mkdir "$d/not-a-venv";
($rc, $out) = nginx_t($t, 'check-bad-home.conf', "$d/not-a-venv");
isnt($rc, 0, 'nginx -t with a bad home: fails');
like($out, qr/\[emerg\] "wsgi_python_home" "\Q$d\E\/not-a-venv" is neither a virtualenv \(no pyvenv\.cfg\) nor a Python 3\.\d+ prefix/,
	'nginx -t with a bad home: says why');

# with the venv

$t->write_file_expand('nginx.conf', conf(1, 'on'))->run();

my $info = http_get('/info');
like($info, qr/^HTTP\/1\.1 200 /, 'venv: info');
like($info, qr/"prefix": "\Q$venv\E"/, 'venv: sys.prefix is the venv');
like($info, qr/"base_prefix": "\Q$base_prefix\E"/, 'venv: sys.base_prefix');
like($info, qr/"executable": "[^"]*\/bin\/python3?"/,
	'venv: sys.executable is bin/python');
like($info, qr/"executable": "\Q$ENV{TEST_WSGI_VENV}\E|"executable": "\Q$venv\E/,
	'venv: sys.executable is in the venv');
like($info, qr/"flask_file": "\Q$venv\E\/lib\/python3\.\d+t?\/site-packages\/flask\//,
	'venv: flask imported from the venv site-packages');
like($info, qr/"flask_version": "\d+\.\d+/, 'venv: flask metadata');
like($info, qr/"system_site": false/, 'venv: no system site-packages');
like($info, qr/"venv_site": \["\Q$venv\E\/lib\/python3\.\d+t?\/site-packages"\]/,
	'venv: its site-packages on sys.path');

like(http_get('/flask/'), qr/^HTTP\/1\.1 200 .*\x0d\x0a\x0d\x0aflask says hi\z/s,
	'venv: flask app');

# without the venv, import check off: the flask app's location fails,
# the rest of the server works

$t->stop();
$t->write_file_expand('nginx.conf', conf(0, 'off'))->run();

$info = http_get('/info');
like($info, qr/^HTTP\/1\.1 200 /, 'no venv: info');
like($info, qr/"prefix": "\Q${\ realpath($base_prefix)}\E"/, 'no venv: sys.prefix');
unlike($info, qr/"prefix": "\Q$venv\E"/, 'no venv: prefix not the venv');
unlike($info, qr/"venv_site": \[[^\]]*\Q$venv\E/,
	'no venv: venv site-packages not on sys.path');

SKIP: {
skip 'flask is installed in the system python', 5 if $sys_has_flask;

like($info, qr/"flask_file": null/, 'no venv: flask not importable');
like($info, qr/"flask_version": "ModuleNotFoundError/,
	'no venv: ModuleNotFoundError');

like(http_get('/flask/'), qr/^HTTP\/1\.1 500 /, 'no venv: flask app 500');

my $log = $t->read_file('error.log');
like($log, qr/\[error\].*wsgi: cannot load application "\Q$d\E\/flask_app\.py:app": ModuleNotFoundError: No module named 'flask'/,
	'no venv: import error logged');
like($log, qr/\[error\].*wsgi: application "\Q$d\E\/flask_app\.py:app" failed to load/,
	'no venv: request error logged');

}

###############################################################################

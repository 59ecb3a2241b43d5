#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: a package index (pypiserver from the test
# venv) driven by its real clients.  twine uploads two versions of a wheel
# (with the index's htpasswd credentials; a wrong password is refused),
# through wsgi_request_buffering on and off; pip then lists the versions,
# downloads 1.0 byte for byte and installs the newest, which imports and
# says its version.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::SHA qw/ sha256_hex /;

use Test::Nginx qw/ :DEFAULT /;
use Test::WSGI qw/ slurp /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $venv = $ENV{TEST_WSGI_VENV};
plan(skip_all => 'TEST_WSGI_VENV not set (a venv with pypiserver and twine '
	. 'from t/requirements.txt, made by scripts/test)')
	unless defined $venv && length $venv;

my $py = "$venv/bin/python";
my $versions = `$py -c 'import pypiserver, twine, pip; print(pypiserver.__version__, twine.__version__, pip.__version__)' 2>/dev/null`;
my ($pypiserver, $twine, $pip) = split ' ', $versions // '';
plan(skip_all => "no pypiserver, twine and pip in $venv (t/requirements.txt)")
	unless $pip;

my $t = Test::Nginx->new()->has(qw/http/)->plan(14)
	->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_python_home  $venv;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        client_max_body_size  16m;

        location / {
            wsgi_pass  %%TESTDIR%%/pypi_app.py;
        }

        location /unbuffered/ {
            wsgi_pass               %%TESTDIR%%/pypi_app.py;
            wsgi_script_name        /unbuffered;
            wsgi_request_buffering  off;
        }
    }
}

EOF

# uploads need the htpasswd credentials; downloads and listings do not
$t->write_file('pypi_app.py', <<'EOF');
import os, pathlib

import pypiserver

HERE = pathlib.Path(__file__).resolve().parent

application = pypiserver.app(
    roots=[HERE / 'packages'],
    password_file=str(HERE / 'htpasswd'),
    authenticate=['update'],
)
EOF

# a wheel: a module saying its version and 3 MiB of incompressible data
$t->write_file('mkwheel.py', <<'EOF');
import base64, hashlib, os, sys, zipfile

version, out = sys.argv[1], sys.argv[2]
name = 'wsgi_test_pkg'
info = '%s-%s.dist-info' % (name, version)
files = {
    name + '/__init__.py': ('VERSION = %r\n' % version).encode(),
    name + '/data.bin': os.urandom(3 * 1024 * 1024),
    info + '/METADATA': ('Metadata-Version: 2.1\nName: wsgi-test-pkg\n'
                         'Version: %s\nSummary: served by pypiserver under '
                         'ngx_http_wsgi_module\n' % version).encode(),
    info + '/WHEEL': (b'Wheel-Version: 1.0\nGenerator: wsgi_app_pypi.t\n'
                      b'Root-Is-Purelib: true\nTag: py3-none-any\n'),
}
record = ''
for path, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
    record += '%s,sha256=%s,%d\n' % (path, digest.rstrip(b'=').decode(), len(data))
files[info + '/RECORD'] = (record + info + '/RECORD,,\n').encode()
path = os.path.join(out, '%s-%s-py3-none-any.whl' % (name, version))
with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
    for p, data in files.items():
        z.writestr(p, data)
print(path)
EOF

my $d = $t->testdir();

mkdir "$d/packages";
chmod 0777, "$d/packages";
mkdir "$d/dist";

my $hash = `openssl passwd -apr1 s3cret`;
chomp $hash;
$t->write_file('htpasswd', "uploader:$hash\n");

my ($whl1, $whl2) = map {
	my $p = `$py $d/mkwheel.py $_ $d/dist`;
	chomp $p;
	$p or die "mkwheel.py $_ failed\n";
} qw/ 1.0 1.1 /;

$t->run();

diag("pypiserver $pypiserver, twine $twine, pip $pip");

###############################################################################

my $url = 'http://127.0.0.1:' . port(8080);

# the clients' own configuration and caches kept out
$ENV{HOME} = $d;
$ENV{PIP_CONFIG_FILE} = '/dev/null';
$ENV{PYTHON_KEYRING_BACKEND} = 'keyring.backends.null.Keyring';
delete @ENV{grep { /^(TWINE|PIP)_/ && $_ ne 'PIP_CONFIG_FILE' } keys %ENV};

my @twine = ("$venv/bin/twine", 'upload', '--non-interactive',
	'--disable-progress-bar', '-u', 'uploader');

# a wrong password is refused, and nothing is stored

my ($rc, $out) = run(@twine, '-p', 'wrong', '--repository-url', "$url/", $whl1);
isnt($rc, 0, 'twine upload, wrong password: fails');
like($out, qr/40[13]/, 'twine upload, wrong password: refused (401/403)');

# upload 1.0 (buffered) and 1.1 (body streamed to the app)

($rc, $out) = run(@twine, '-p', 's3cret', '--repository-url', "$url/", $whl1);
is($rc, 0, 'twine upload 1.0') or diag($out);
($rc, $out) = run(@twine, '-p', 's3cret', '--repository-url', "$url/unbuffered/",
	$whl2);
is($rc, 0, 'twine upload 1.1, unbuffered') or diag($out);

is(sha256_hex(slurp("$d/packages/wsgi_test_pkg-1.0-py3-none-any.whl")),
	sha256_hex(slurp($whl1)), 'the index stored 1.0 byte for byte');
is(sha256_hex(slurp("$d/packages/wsgi_test_pkg-1.1-py3-none-any.whl")),
	sha256_hex(slurp($whl2)), 'the index stored 1.1 byte for byte');

# pip: list, download, install

my @pip = ($py, '-m', 'pip', '--disable-pip-version-check', '--no-cache-dir',
	'--no-input');

($rc, $out) = run(@pip, 'index', 'versions', 'wsgi-test-pkg',
	'--index-url', "$url/simple/");
like($out, qr/^wsgi-test-pkg \(1\.1\)$/m, 'pip index versions: newest 1.1');
like($out, qr/Available versions: 1\.1, 1\.0$/m, 'pip index versions: both');

($rc, $out) = run(@pip, 'download', '--no-deps', '--only-binary', ':all:',
	'--index-url', "$url/simple/", '-d', "$d/download", 'wsgi-test-pkg==1.0');
is($rc, 0, 'pip download 1.0') or diag($out);
is(sha256_hex(slurp("$d/download/wsgi_test_pkg-1.0-py3-none-any.whl")),
	sha256_hex(slurp($whl1)), 'pip download 1.0: byte for byte');

($rc, $out) = run(@pip, 'install', '--no-deps', '--only-binary', ':all:',
	'--index-url', "$url/unbuffered/simple/", '--target', "$d/site",
	'wsgi-test-pkg');
is($rc, 0, 'pip install') or diag($out);
like($out, qr/Successfully installed wsgi-test-pkg-1\.1/,
	'pip install: the newest version');

$ENV{PYTHONPATH} = "$d/site";
($rc, $out) = run($py, '-c', 'import wsgi_test_pkg, os; '
	. 'print(wsgi_test_pkg.VERSION, os.path.getsize(os.path.join('
	. 'os.path.dirname(wsgi_test_pkg.__file__), "data.bin")))');
delete $ENV{PYTHONPATH};
is($out, "1.1 3145728\n", 'the installed package imports');

# the index's page for the package, through the unbuffered location too

($rc, $out) = run(@pip, 'download', '--no-deps', '--only-binary', ':all:',
	'--index-url', "$url/unbuffered/simple/", '-d', "$d/download2",
	'wsgi-test-pkg==1.1');
is(sha256_hex(slurp("$d/download2/wsgi_test_pkg-1.1-py3-none-any.whl")),
	sha256_hex(slurp($whl2)), 'pip download 1.1, unbuffered: byte for byte');

###############################################################################

# runs a command (bounded in time); (exit status, output with stderr)
sub run {
	my (@cmd) = @_;
	my $out = `timeout 120 @{[ map { quotemeta } @cmd ]} 2>&1`;
	return ($? >> 8, $out);
}

###############################################################################

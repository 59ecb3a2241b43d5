#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: configuration checks.  With
# wsgi_import_check on, "nginx -t" fails on an app that does not import
# (with the Python error and the target named); with it off, only the
# broken app's location fails; a reload onto a broken app is refused and
# the old workers keep serving.  Bad directive values are refused naming
# the directive and file:line.

###############################################################################

use warnings;
use strict;

use Test::More;
use POSIX ();
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_content /;
use Test::WSGI qw/ slurp poll /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(136);

my $d = $t->testdir();

$t->write_file('good.py', <<'EOF');
import os

VALUE = 1

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'good']
EOF

$t->write_file('syntax.py', <<'EOF');
def application(environ, start_response):
    start_response('200 OK', [])
    return [b'never' +]
EOF

$t->write_file('imports_missing.py', <<'EOF');
import no_such_module_xyz

def application(environ, start_response):
    start_response('200 OK', [])
    return [b'never']
EOF

# "nginx -t" on a configuration built from main-level and location-level
# directives; returns the exit status, the output (stdout and stderr), and
# the file checked
sub nginx_t {
	my ($t, %c) = @_;
	my $top = $c{top} // '';
	my $main = $c{main} // '';
	my $loc = $c{loc} // "wsgi_pass  $d/good.py;";
	$t->write_file_expand('check.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

$top

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    $main

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            $loc
        }
    }
}

EOF
	my @cmd = ($Test::Nginx::NGINX, '-t', '-p', "$d/", '-c', 'check.conf',
		'-e', 'stderr');
	my $pid = open(my $fh, '-|') // die "Can't fork: $!";
	if ($pid == 0) {
		open STDERR, '>&', \*STDOUT;
		exec(@cmd) or POSIX::_exit(127);
	}
	local $/;
	my $out = <$fh> // '';
	close $fh;
	my $rc = $? >> 8;
	# "nginx -t" leaves an empty pid file (the test's, from %%TEST_GLOBALS%%),
	# and upstream's run() takes any pid file for a started nginx
	unlink "$d/nginx.pid";
	return ($rc, $out, "$d/check.conf");
}

# the line of the check.conf file that holds $text
sub line_of {
	my ($t, $text) = @_;
	my @lines = split /\n/, $t->read_file('check.conf');
	for my $i (0 .. $#lines) {
		return $i + 1 if index($lines[$i], $text) >= 0;
	}
	return 0;
}

###############################################################################

# the import check in "nginx -t"

my ($rc, $out, $file) = nginx_t($t);
is($rc, 0, 'good app: -t passes');
like($out, qr/test is successful/, 'good app: -t says so');

# -t names the workers' Python and says whether it runs with the GIL (as
# that Python says of itself after importing the apps)
my $gil = '(?:enabled|disabled)';
if (my $py = $ENV{TEST_WSGI_PYTHON}) {
	my $said = `$py -c "import sys; print(getattr(sys, '_is_gil_enabled', lambda: True)())" 2>/dev/null`;
	$gil = $said =~ /^False$/m ? 'disabled' : 'enabled' if $said =~ /^(True|False)$/m;
}
like($out, qr/^nginx: wsgi: Python \d+\.\d+\.\d+\S*( free-threaded)?, GIL $gil: a worker's pool threads run Python (one at a time|in parallel)$/m,
	'good app: -t names the Python and its GIL');

($rc, $out) = nginx_t($t, loc => "wsgi_pass  $d/syntax.py;");
isnt($rc, 0, 'syntax error: -t fails');
like($out, qr/\[emerg\] .*wsgi: cannot load application "\Q$d\E\/syntax\.py:application"/,
	'syntax error: target named');
like($out, qr/syntax\.py", line 3/, 'syntax error: file and line');
like($out, qr/SyntaxError: invalid syntax/, 'syntax error: Python error');
like($out, qr/import check failed/, 'syntax error: says the check failed');
like($out, qr/test failed/, 'syntax error: test failed');

($rc, $out) = nginx_t($t, loc => "wsgi_pass  $d/imports_missing.py;");
isnt($rc, 0, 'missing module: -t fails');
like($out, qr/cannot load application "\Q$d\E\/imports_missing\.py:application"/,
	'missing module: target named');
like($out, qr/ModuleNotFoundError: No module named 'no_such_module_xyz'/,
	'missing module: Python error');

($rc, $out) = nginx_t($t, loc => "wsgi_pass  no_such_package_xyz.app:application;");
isnt($rc, 0, 'missing app module: -t fails');
like($out, qr/cannot load application "no_such_package_xyz\.app:application"/,
	'missing app module: target named');
like($out, qr/ModuleNotFoundError: No module named 'no_such_package_xyz'/,
	'missing app module: Python error');

($rc, $out) = nginx_t($t, loc => "wsgi_pass  $d/good.py:nothere;");
isnt($rc, 0, 'missing callable: -t fails');
like($out, qr/cannot load application "\Q$d\E\/good\.py:nothere"/,
	'missing callable: target named');
# the same message as a worker's (one loader for both: load_app.py)
like($out, qr/AttributeError: module has no attribute "nothere" \(wsgi_pass names "nothere"\)/,
	'missing callable: Python error');

($rc, $out) = nginx_t($t, loc => "wsgi_pass  $d/good.py:VALUE;");
isnt($rc, 0, 'not callable: -t fails');
like($out, qr/cannot load application "\Q$d\E\/good\.py:VALUE"/,
	'not callable: target named');
like($out, qr/TypeError: "VALUE" is not callable/, 'not callable: Python error');

($rc, $out) = nginx_t($t, main => 'wsgi_import_check off;',
	loc => "wsgi_pass  $d/syntax.py;");
is($rc, 0, 'import check off: -t passes with a broken app');
unlike($out, qr/SyntaxError/, 'import check off: app not imported');
like($out, qr/^nginx: wsgi: Python .*, GIL $gil: /m,
	'import check off: -t still names the Python and its GIL');

# the check imports the apps in the environment the workers get: what
# nginx's "env" directives name, not everything nginx itself was started with

$t->write_file('envapp.py', <<'EOF');
import os

SETTING = os.environ['WSGI_CHECK_SETTING']

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [SETTING.encode()]
EOF

($rc, $out) = nginx_t($t, top => 'env WSGI_CHECK_SETTING=from-conf;',
	loc => "wsgi_pass  $d/envapp.py;");
is($rc, 0, 'env NAME=value: -t passes');

{
	local $ENV{WSGI_CHECK_SETTING} = 'from-shell';
	($rc, $out) = nginx_t($t, loc => "wsgi_pass  $d/envapp.py;");
	isnt($rc, 0, 'variable only in nginx\'s environment: -t fails');
	like($out, qr/KeyError: 'WSGI_CHECK_SETTING'/,
		'variable only in nginx\'s environment: the error');

	($rc, $out) = nginx_t($t, top => 'env WSGI_CHECK_SETTING;',
		loc => "wsgi_pass  $d/envapp.py;");
	is($rc, 0, 'env NAME keeps it: -t passes');
}

# bad directive values: refused, naming the directive and file:line

# a virtualenv of a Python other than the one the module embeds
mkdir "$d/venv-3.99";
$t->write_file('venv-3.99/pyvenv.cfg', "home = /usr/bin\nversion = 3.99.0\n");

my @bad = (
	[ main => 'wsgi_threads 0;', 'wsgi_threads', qr/invalid value "0"/ ],
	[ main => 'wsgi_threads -1;', 'wsgi_threads', qr/invalid value "-1"/ ],
	[ main => 'wsgi_threads abc;', 'wsgi_threads', qr/invalid value "abc"/ ],
	[ main => 'wsgi_threads 4; wsgi_threads 8;', 'wsgi_threads',
		qr/is duplicate/ ],
	[ main => 'wsgi_queue_size 0;', 'wsgi_queue_size', qr/invalid value "0"/ ],
	[ main => 'wsgi_queue_size lots;', 'wsgi_queue_size',
		qr/invalid value "lots"/ ],
	[ main => 'wsgi_queue_timeout abc;', 'wsgi_queue_timeout',
		qr/invalid time "abc"/ ],
	[ main => 'wsgi_import_check maybe;', 'wsgi_import_check',
		qr/invalid value "maybe"/ ],
	[ main => 'wsgi_python_home relative/venv;', 'wsgi_python_home',
		qr/must be an absolute path/ ],
	[ main => "wsgi_python_home $d/no-such-venv;", 'wsgi_python_home',
		qr/"\Q$d\E\/no-such-venv" is not a directory/ ],
	[ main => "wsgi_python_home $d/venv-3.99;", 'wsgi_python_home',
		qr/is a virtualenv of Python 3\.99\.0, but this module embeds Python 3\.\d+/ ],
	[ loc => 'wsgi_read_timeout 5x;', 'wsgi_read_timeout',
		qr/invalid time "5x"/ ],
	[ loc => 'wsgi_buffer_size 12q;', 'wsgi_buffer_size',
		qr/invalid size "12q"/ ],
	[ loc => 'wsgi_buffer_size 100;', 'wsgi_buffer_size',
		qr/invalid size "100".*1k or more/ ],
	[ loc => 'wsgi_pass "bad module:app";', 'wsgi_pass',
		qr/invalid "wsgi_pass" target: invalid module name "bad module"/ ],
	[ loc => 'wsgi_pass mod:;', 'wsgi_pass',
		qr/invalid callable name ""/ ],
	[ loc => "wsgi_pass $d/x.py:1bad;", 'wsgi_pass',
		qr/invalid callable name "1bad"/ ],
	[ loc => 'wsgi_pass good.txt:app:x;', 'wsgi_pass',
		qr/invalid callable name "app:x"/ ],
	[ loc => 'wsgi_param "" x;', 'wsgi_param', qr/empty name/ ],
	[ loc => 'wsgi_param A b maybe;', 'wsgi_param',
		qr/invalid parameter "maybe"/ ],
	[ loc => 'wsgi_script_name app;', 'wsgi_script_name',
		qr/must be empty or start with "\/"/ ],
	[ main => 'wsgi_max_requests many;', 'wsgi_max_requests',
		qr/invalid value "many"/ ],
	[ main => 'wsgi_max_requests 100 spread=5;', 'wsgi_max_requests',
		qr/invalid parameter "spread=5".*jitter=number/ ],
	[ main => 'wsgi_max_requests 100 jitter=x;', 'wsgi_max_requests',
		qr/invalid parameter "jitter=x"/ ],
	[ loc => 'wsgi_intercept_errors yes;', 'wsgi_intercept_errors',
		qr/invalid value "yes"/ ],
	[ main => 'wsgi_thread_priority high;', 'wsgi_thread_priority',
		qr/invalid value "high".*"normal", "low" or "idle"/ ],
	[ main => 'wsgi_nginx_first first;', 'wsgi_nginx_first',
		qr/invalid value "first".*"on" or "off"/ ],
	[ main => 'wsgi_nginx_first on; wsgi_nginx_first off;', 'wsgi_nginx_first',
		qr/is duplicate/ ],
	[ main => 'wsgi_sandbox maybe;', 'wsgi_sandbox',
		qr/invalid value "maybe"/ ],
	[ main => 'wsgi_sandbox_read relative/dir;', 'wsgi_sandbox_read',
		qr/takes absolute paths, not "relative\/dir"/ ],
	[ main => 'wsgi_sandbox_write "";', 'wsgi_sandbox_write',
		qr/takes absolute paths, not ""/ ],
);

($rc, $out) = nginx_t($t, main => 'wsgi_thread_priority low;');
is($rc, 0, 'wsgi_thread_priority low: -t passes') or diag($out);

for my $case (@bad) {
	my ($where, $directive, $name, $why) = @$case;
	($rc, $out, $file) = nginx_t($t, $where => $directive);
	my $line = line_of($t, $directive);
	isnt($rc, 0, "$directive refused");
	like($out, qr/\[emerg\] [^\n]*\Q$name\E[^\n]* in \Q$file\E:$line\n/,
		"$directive: directive and file:line named");
	like($out, $why, "$directive: says why");
}

###############################################################################

# wsgi_import_check off: only the broken app's location fails

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_import_check  off;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/good.py;
        }

        location /broken/ {
            wsgi_pass  %%TESTDIR%%/syntax.py;
        }
    }
}

EOF

$t->run();

like(http_get('/'), qr/^HTTP\/1\.1 200 .*good\z/s, 'good app serves');
like(http_get('/broken/'), qr/^HTTP\/1\.1 500 /, 'broken app: 500');
like(http_get('/'), qr/^HTTP\/1\.1 200 .*good\z/s, 'good app still serves');

$t->stop();

my $log = $t->read_file('error.log');
like($log, qr/\[error\] .*wsgi: cannot load application "\Q$d\E\/syntax\.py:application": SyntaxError/,
	'broken app: import error logged at worker start');
like($log, qr/\[error\] .*wsgi: application "\Q$d\E\/syntax\.py:application" failed to load .*request: "GET \/broken\/ /,
	'broken app: request error names the app');

###############################################################################

# a reload onto a broken app is refused; the old worker keeps the old app.
# This instance logs to its own file: the refused reload is an [emerg] by
# design, asserted below, and must not count as an alert of the suite.

my $rdir = "$d/r";
mkdir $rdir;
chmod 0755, $rdir;

my $rapp_mtime = time - 100;

sub rapp {
	my ($t, $body) = @_;
	$t->write_file('r/app.py', $body);
	# Python's bytecode cache (written when the workers may write here, as
	# root does) takes the source for unchanged if its size and mtime in
	# whole seconds are: each version is a second newer
	$rapp_mtime++;
	utime $rapp_mtime, $rapp_mtime, $t->testdir() . '/r/app.py';
}

my $v1 = <<'EOF';
import os

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'v1 %d' % os.getpid()]
EOF

rapp($t, $v1);
$t->write_file_expand('reload.conf', <<"EOF");

pid         $d/r.pid;
error_log   $d/r.log notice;
$ENV{TEST_NGINX_GLOBALS}

worker_processes 1;

events {
}

http {
    access_log            off;
    client_body_temp_path $d/r/client_body_temp;

    server {
        listen       127.0.0.1:8081;
        server_name  localhost;

        location / {
            wsgi_pass  $d/r/app.py;
        }
    }
}

EOF

system($Test::Nginx::NGINX, '-p', "$d/", '-c', 'reload.conf', '-e', 'r.log');
my $rmaster;
poll(sub { ($rmaster) = slurp("$d/r.pid") =~ /(\d+)/ });
ok($rmaster, 'second nginx started');

sub rget { http_get('/', PeerAddr => '127.0.0.1:' . port(8081)) // '' }

my $r = rget();
like($r, qr/^HTTP\/1\.1 200 .*v1 \d+\z/s, 'old app serves');
my ($wpid) = $r =~ /v1 (\d+)\z/;

rapp($t, <<'EOF');
def application(environ, start_response)
    pass
EOF
kill 'HUP', $rmaster;
ok(poll(sub { slurp("$d/r.log") =~ /configuration rejected/ }),
	'reload onto a broken app refused');

my $rlog = slurp("$d/r.log");
like($rlog, qr/\[emerg\] .*wsgi: cannot load application "\Q$d\E\/r\/app\.py:application"/,
	'refused reload: target named');
like($rlog, qr/SyntaxError/, 'refused reload: Python error');

$r = rget();
like($r, qr/^HTTP\/1\.1 200 .*v1 $wpid\z/s, 'old worker keeps serving the old app');

# fixed: the next reload goes through

# (another size: workers that may write __pycache__, as root, would find
# a .pyc of the same size and second and keep serving v1)
rapp($t, ($v1 =~ s/v1/v2/r) . "# v2\n");
kill 'HUP', $rmaster;
ok(poll(sub { rget() =~ /v2 \d+\z/ }), 'reload after the fix serves the new app');

kill 'QUIT', $rmaster;
ok(poll(sub { !kill 0, $rmaster }), 'second nginx stopped');
unlike(slurp("$d/r.log"), qr/\[(alert|crit)\]/, 'second nginx: no alerts');

###############################################################################

END { kill 'TERM', $rmaster if $rmaster && kill 0, $rmaster; }

###############################################################################

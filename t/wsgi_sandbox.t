#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: wsgi_sandbox.  With "wsgi_sandbox on"
# every thread that runs Python (and every thread and process it starts)
# is bound by Landlock rules: it reads only Python's own paths, the app's,
# the system's libraries and data and wsgi_sandbox_read, and writes only
# under wsgi_sandbox_write.  nginx's own thread is untouched: the same
# worker serves static files from anywhere and writes its logs.  A denied
# path is named in the error log.  A kernel without Landlock (played by the
# panic-inject build's WSGI_TEST_NO_LANDLOCK) makes "nginx -t" fail, and a
# worker that meets one refuses to start: never an unsandboxed app.

###############################################################################

use warnings;
use strict;

use Test::More;
use Config;

use Test::Nginx;
use Test::WSGI qw/ slurp wait_log /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

# landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
my $abi = $Config{archname} =~ /^x86_64/ ? syscall(444, 0, 0, 1) : -1;
plan(skip_all => "this kernel has no Landlock (landlock_create_ruleset: $!)")
	unless $abi > 0;

my $t = Test::Nginx->new()->has(qw/http/)->plan(26)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_sandbox        on;
    wsgi_sandbox_read   %%TESTDIR%%/data;
    wsgi_sandbox_write  %%TESTDIR%%/out;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/app/app.py;
        }

        location /site/ {
            root  %%TESTDIR%%;
        }
    }
}

EOF

my $d = $t->testdir();
for my $dir (qw/ app data out site /) {
	mkdir("$d/$dir");
	chmod(0755, "$d/$dir");
}
chmod(0777, "$d/out");	# the workers' user writes there
$t->write_file('data/allowed.txt', "readable data\n");
$t->write_file('site/page.html', "static outside the sandbox\n");
$t->write_file('secret.txt', "not for the app\n");

$t->write_file('app/app.py', <<'EOF');
import os
import subprocess
import sys
import threading
from urllib.parse import parse_qs

def attempt(fn):
    try:
        return 'ok: %s' % (fn(),)
    except PermissionError as e:
        return 'denied: %s' % e.strerror
    except OSError as e:
        return 'error: %s' % e

def read(path):
    with open(path) as f:
        return f.read().strip()

def write(path):
    with open(path, 'w') as f:
        f.write('written\n')
    return 'written'

def in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(attempt(fn)))
    t.start()
    t.join()
    return out[0]

def child(*argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    return 'exit %d: %s%s' % (p.returncode, p.stdout.strip(), p.stderr.strip())

def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ['QUERY_STRING']).items()}
    op, path = q.get('op'), q.get('path', '')
    if op == 'read':
        body = attempt(lambda: read(path))
    elif op == 'write':
        body = attempt(lambda: write(path))
    elif op == 'thread-read':
        body = in_thread(lambda: read(path))
    elif op == 'cat':
        body = child('cat', path)
    elif op == 'raise':
        read(path)  # uncaught: a 500, and the log says why
        body = 'unreachable'
    elif op == 'raise-write':
        write(path)
        body = 'unreachable'
    elif op == 'log':
        sys.stderr.write('sandboxed app logs through nginx\n')
        environ['wsgi.errors'].write('wsgi.errors line from the sandbox\n')
        body = 'logged'
    elif op == 'import':
        import json, ssl, sqlite3, decimal
        body = 'imported %s' % json.dumps([ssl.OPENSSL_VERSION[:7], sqlite3.sqlite_version[:1],
                                          str(decimal.Decimal('1.5') * 2)])
    else:
        body = 'hello from the sandbox'
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode() + b'\n']
EOF

$t->run();

###############################################################################

sub get {
	my ($uri) = @_;
	my $r = http_get($uri);
	return $r =~ /\r\n\r\n(.*)/s ? $1 : $r;
}

like(http_get('/'), qr/200 OK.*hello from the sandbox/s, 'app served with the sandbox on');
like(slurp("$d/error.log"), qr/\[notice\].*wsgi: sandbox on \(this kernel offers Landlock ABI \d+\): the app's threads may read .*\Q$d\E\/data.* and write .*\Q$d\E\/out/,
	'worker start-up says the sandbox is on, with its paths');

# files: the app reads only what it needs and what is allowed
like(get("/?op=read&path=$d/data/allowed.txt"), qr/^ok: readable data/, 'wsgi_sandbox_read path: readable');
like(get("/?op=read&path=/etc/passwd"), qr/^denied: Permission denied/, '/etc/passwd: denied');
like(get("/?op=read&path=$d/secret.txt"), qr/^denied:/, 'a file beside the allowed ones: denied');
like(get("/?op=read&path=$d/site/page.html"), qr/^denied:/, 'the static site is out of the app\'s reach');
like(get('/?op=import'), qr/^imported \["OpenSSL", "3", "3.0"\]/,
	'C extensions (ssl, sqlite3, decimal) import inside the sandbox');

# writes: only under wsgi_sandbox_write
like(get("/?op=write&path=$d/out/new.txt"), qr/^ok: written/, 'wsgi_sandbox_write path: writable');
is(slurp("$d/out/new.txt"), "written\n", 'the file was written');
like(get("/?op=write&path=$d/data/new.txt"), qr/^denied:/, 'wsgi_sandbox_read path: not writable');
like(get("/?op=write&path=$d/app/app.py"), qr/^denied:/, 'the app cannot rewrite its own code');
like(get("/?op=write&path=/tmp/ngx-wsgi-sandbox-$$"), qr/^denied:/, '/tmp: not writable unless allowed');
ok(!-e "/tmp/ngx-wsgi-sandbox-$$", 'nothing written in /tmp');

# what the app starts is bound too
like(get("/?op=thread-read&path=/etc/passwd"), qr/^denied:/, 'a thread the app starts: bound');
like(get("/?op=cat&path=/etc/passwd"), qr/^exit 1: .*Permission denied/, 'a child process (cat /etc/passwd): bound');
like(get("/?op=cat&path=$d/data/allowed.txt"), qr/^exit 0: readable data/, 'a child process reads allowed paths');

# the log names a denied path
like(http_get("/?op=raise&path=/etc/passwd"), qr/^HTTP\/1\.1 500/, 'an uncaught PermissionError: 500');
ok(wait_log("$d/error.log", qr/PermissionError.*\n(?:.*\n)*?.*wsgi_sandbox denies "\/etc\/passwd": it is under no "wsgi_sandbox_read" or "wsgi_sandbox_write" path/),
	'the error log says wsgi_sandbox denies the path');
http_get("/?op=raise-write&path=$d/data/x");
ok(wait_log("$d/error.log", qr/wsgi_sandbox allows "\Q$d\E\/data\/x" read-only: for writes, add it to "wsgi_sandbox_write"/),
	'a write under a read path: the log says it is read-only');

# nginx's own thread: static files from anywhere, its logs
like(http_get('/site/page.html'), qr/200 OK.*static outside the sandbox/s, 'nginx still serves static files outside the sandbox');
like(get('/?op=log'), qr/^logged/, 'the app logs');
ok(wait_log("$d/error.log", qr/wsgi\.errors line from the sandbox/), 'its log lines reach nginx\'s error log');
like(slurp("$d/access.log"), qr/GET \/site\/page\.html/, 'nginx writes its access log');

###############################################################################

# a kernel without Landlock: the panic-inject build plays one
# (WSGI_TEST_NO_LANDLOCK); "nginx -t" says so and fails, and a worker that
# meets one (the variable set for workers only, by "env") does not start

SKIP: {
my $module = $ENV{TEST_WSGI_PANIC_MODULE};
skip 'TEST_WSGI_PANIC_MODULE not set (a --features panic-inject build)', 3
	unless $module && -f $module;

my $globals = ($ENV{TEST_NGINX_GLOBALS} // '')
	=~ s/load_module\s+[^;]*ngx_http_wsgi_module[^;]*;//r;
mkdir("$d/nl");
mkdir("$d/nl/logs");
sub nl_conf {
	my ($extra) = @_;
	open my $fh, '>', "$d/nl/nginx.conf" or die "$!";
	print $fh <<"EOF";
$globals
load_module $module;
$extra
pid $d/nl/nginx.pid;
error_log $d/nl/error.log notice;
worker_processes 1;
events {}
http {
    access_log off;
    client_body_temp_path $d/nl;
    wsgi_sandbox on;
    server {
        listen 127.0.0.1:8081;
        location / { wsgi_pass $d/app/app.py; }
    }
}
EOF
	close $fh;
}

nl_conf('');
my $out = `WSGI_TEST_NO_LANDLOCK=1 $Test::Nginx::NGINX -t -p $d/nl/ -c nginx.conf -e stderr 2>&1`;
isnt($? >> 8, 0, 'no Landlock: nginx -t fails');
like($out, qr/\[emerg\].*wsgi: "wsgi_sandbox on" needs Landlock, but this kernel has no Landlock/,
	'no Landlock: nginx -t says why');
unlink "$d/nl/nginx.pid";

# the master has Landlock (its check passes); the worker does not
nl_conf('env WSGI_TEST_NO_LANDLOCK=1;');
system($Test::Nginx::NGINX, '-p', "$d/nl/", '-c', 'nginx.conf', '-e', "$d/nl/error.log");
my $refused = wait_log("$d/nl/error.log",
	qr/\[emerg\].*wsgi: "wsgi_sandbox on" needs Landlock, but this kernel has no Landlock.*refusing to start the worker process/);
my ($master) = slurp("$d/nl/nginx.pid") =~ /(\d+)/;
if ($master) {
	kill 'QUIT', $master;
	# the master removes its pid file as it exits
	Test::WSGI::poll(sub { !-e "$d/nl/nginx.pid" }, 15);
}
ok($refused, 'no Landlock in a worker: it refuses to start');
}

###############################################################################

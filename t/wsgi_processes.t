#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: processes an app starts.  Pool threads
# block signals (nginx's thread takes them) and nginx reaps children on
# SIGCHLD; neither may leak into the app's children: a subprocess gets its
# own exit status and can be stopped with SIGTERM, a forked child
# (multiprocessing) gets default signal handling, and sys.executable runs
# this Python for multiprocessing's "spawn".  nginx is started from a
# directory its workers may not enter: they use "/" instead, and say so.

###############################################################################

use warnings;
use strict;

use Test::More;
use Cwd ();

use Test::Nginx;
use Test::WSGI qw/ slurp poll worker_pid /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(11)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_threads      2;
    wsgi_python_path  %%TESTDIR%%/lib;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }
    }
}

EOF

# what "spawn" children run must be importable by them: a module on
# wsgi_python_path (the app file itself is loaded under a private name)
mkdir($t->testdir() . '/lib');
$t->write_file('lib/helpers.py', <<'EOF');
def square(x):
    return x * x
EOF

# Every check runs with a deadline of its own, so that a child that cannot
# be stopped fails its test instead of hanging the suite.
$t->write_file('app.py', <<'EOF');
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

from helpers import square

def blocked_mask(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('SigBlk:'):
                return line.split()[1]

def with_deadline(f, seconds=6):
    out = []
    th = threading.Thread(target=lambda: out.append(f()), daemon=True)
    th.start()
    th.join(seconds)
    return out[0] if out else 'HUNG'

def exit_codes():
    return ','.join(str(subprocess.run(['sh', '-c', 'exit 3']).returncode)
                    for _ in range(40))

def terminate():
    p = subprocess.Popen(['sleep', '60'])
    mask = blocked_mask(p.pid)
    p.terminate()
    try:
        return '%s %s' % (mask, p.wait(timeout=5))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return '%s stuck' % mask

def fork_term():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, b'x')
        time.sleep(60)
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return 'signal %d' % os.WTERMSIG(status) \
                if os.WIFSIGNALED(status) else 'exit %d' % status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return 'still running'

def pool(method):
    def run():
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(2) as p:
            return ','.join(map(str, p.map(square, [1, 2, 3])))
    return run

CHECKS = {
    '/cwd': os.getcwd,
    '/prefix': lambda: sys.prefix,
    '/exit-codes': exit_codes,
    '/terminate': terminate,
    '/fork-term': fork_term,
    '/pool-fork': pool('fork'),
    '/pool-spawn': pool('spawn'),
}

def application(environ, start_response):
    body = str(with_deadline(CHECKS[environ['PATH_INFO']])).encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
EOF

# started from a directory of root's that the workers' user (nobody, when
# the tests run as root) cannot enter
my $d = $t->testdir();
my $closed = "$d/closed";
mkdir $closed, 0700 or die "mkdir $closed: $!";
my $back = Cwd::getcwd();
{
	# a binary named relative to where the tests run
	local $Test::Nginx::NGINX = Cwd::abs_path($Test::Nginx::NGINX);
	chdir $closed or die "chdir $closed: $!";
	eval { $t->run() };
	chdir $back or die "chdir $back: $!";
	die $@ if $@;
}

###############################################################################

# the workers' user: this one (when not root), or nobody, or root with
# "user root;" in TEST_NGINX_GLOBALS (as upstream's library needs)
my $worker;
poll(sub { $worker = worker_pid($t) });
my ($uid) = slurp('/proc/' . ($worker // 0) . '/status') =~ /^Uid:\s+(\d+)/m;
$uid //= -1;

SKIP: {
skip 'the workers run as this user: the directory is theirs', 3 if $uid == $>;
skip 'the workers run as root: they enter any directory', 3 if $uid == 0;

like(http_get('/cwd'), qr/\x0d\x0a\x0d\x0a\/\z/, 'an inaccessible directory: "/"');
like($t->read_file('error.log'),
	qr/\[warn\] .*wsgi: the worker process cannot use its current directory "\Q$closed\E" \(Permission denied.*\), using "\/"; set "working_directory"/,
	'an inaccessible directory: said so');

# Python finds its prefix from the interpreter's path, not from "/" (where
# it found /lib/python3.X through the /lib symlink and took "/")
like(http_get('/prefix'), qr/\x0d\x0a\x0d\x0a\/[^\/]\S*\z/,
	'sys.prefix from the interpreter, not the directory');

}

like(http_get('/exit-codes'), qr/\x0d\x0a\x0d\x0a(3,){39}3\z/,
	'subprocess exit status is never taken by nginx');
like(http_get('/terminate'), qr/\x0d\x0a\x0d\x0a0{16} -15\z/,
	'subprocess starts with no signal blocked, stops on SIGTERM');
like(http_get('/fork-term'), qr/\x0d\x0a\x0d\x0asignal 15\z/,
	'forked child killed by SIGTERM');
like(http_get('/pool-fork'), qr/\x0d\x0a\x0d\x0a1,4,9\z/,
	'multiprocessing fork pool works and closes');
like(http_get('/pool-spawn'), qr/\x0d\x0a\x0d\x0a1,4,9\z/,
	'multiprocessing spawn pool works and closes');

# the worker goes on serving after all that
like(http_get('/exit-codes'), qr/\x0d\x0a\x0d\x0a(3,){39}3\z/,
	'subprocesses again');
like(http_get('/fork-term'), qr/\x0d\x0a\x0d\x0asignal 15\z/,
	'fork again');

$t->stop();

my $log = $t->read_file('error.log');
unlike($log, qr/unknown process/, 'nginx reaped no child of the app');

###############################################################################

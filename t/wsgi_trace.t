#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: the debug trace of a request's hand-off
# (nginx built --with-debug, error_log ... debug): one line per step, each
# with the request's context, like nginx's thread pool logs its tasks.
#
# scripts/test builds such an nginx and the module against it (scripts/build
# --debug) and names them in TEST_WSGI_DEBUG_NGINX / TEST_WSGI_DEBUG_MODULE;
# against any nginx built --with-debug the file runs as it is.

###############################################################################

use warnings;
use strict;

BEGIN {
	if (my $nginx = $ENV{TEST_WSGI_DEBUG_NGINX}) {
		$ENV{TEST_NGINX_BINARY} = $nginx;
		my $module = $ENV{TEST_WSGI_DEBUG_MODULE};
		$ENV{TEST_NGINX_GLOBALS} = ($ENV{TEST_NGINX_GLOBALS} // '')
			=~ s/load_module\s+[^;]*ngx_http_wsgi_module[^;]*;/load_module $module;/r
			if $module;
	}
}

use Test::More;

use Test::Nginx qw/ :DEFAULT http_end /;
use Test::WSGI qw/ slurp state_dir wait_file wait_log /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http debug/)->plan(16)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_threads      2;
    wsgi_buffer_size  16k;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }
    }
}

EOF

my $state = state_dir($t);

$t->write_file('app.py', <<'EOF');
import io, os, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

class SlowClose(io.FileIO):
    def close(self):
        if not self.closed:
            time.sleep(0.3)
        super().close()

def application(environ, start_response):
    path = environ['PATH_INFO']
    start_response('200 OK', [('Content-Type', 'text/plain')])
    if path == '/file':
        return environ['wsgi.file_wrapper'](SlowClose(__file__))
    if path == '/stream':
        return (b'x' * 65536 for _ in range(256))
    if path == '/slow':
        open(os.path.join(STATE, 'slow'), 'w').close()
        time.sleep(3)
    return [b'hello']
EOF

$t->run();

###############################################################################

my $log = $t->testdir() . '/error.log';

like(http_get('/hello'), qr/hello\z/, 'hello');

# the steps of one request, in order, each naming the request (nginx adds
# no client/request context to debug lines, only the connection's *N)
my $req = qr/, request: "GET \/hello HTTP\/1\.0"/;
ok(wait_log($log, qr/wsgi: job #\d+ finalized with rc 0$req/m), 'finalized');
my ($id) = slurp($log) =~ /\*\d+ wsgi: job #(\d+) queued for the app \(\d+ waiting, \d+ of 2 threads busy\)$req/m;
ok($id, 'queued, with the queue and the threads');
my $text = slurp($log);
sub at {
	my ($re) = @_;
	return $text =~ $re ? $-[0] : undef;
}
my %at = (
	queued => at(qr/job #$id queued for the app/),
	started => at(qr/job #$id started on thread \d after \d+ us in the queue$req/),
	head => at(qr/job #$id status and headers back from thread \d: 200$req/),
	closed => at(qr/job #$id iterable closed$req/),
	finalized => at(qr/job #$id finalized with rc 0$req/),
);
ok(defined $at{started} && $at{started} > $at{queued}, 'started on a thread, after queued');
ok(defined $at{head} && $at{head} > $at{started}, 'status and headers back, after started');
# the pool thread's lines reach the log when nginx drains them: the
# iterable may be closed before nginx has sent the header
ok(defined $at{closed} && $at{closed} > $at{started}, 'iterable closed, after started');
ok(defined $at{finalized} && $at{finalized} > $at{head} && $at{finalized} > $at{closed},
	'finalized last');
like($text, qr/wsgi: job #$id took \d+ replies$req/, 'replies taken');
like($text, qr/wsgi: wake-up: \d+ completions drained/, 'wake-ups drained');

# a complete response (a list, a file) is handed to nginx in one message
# after the iterable's close(): a slow close() keeps the trace in order, and
# its line names the request (it came after "finalized", without the
# request, when the message went out before close())

like(http_get('/file'), qr/import io, os, time/, 'file');
$req = qr/, request: "GET \/file HTTP\/1\.0"/;
ok(wait_log($log, qr/wsgi: job #\d+ finalized with rc 0$req/m), 'file: finalized');
$text = slurp($log);
($id) = $text =~ /wsgi: job #(\d+) queued for the app.*$req/m;
my ($closed, $finalized) = (at(qr/job #$id iterable closed$req/),
	at(qr/job #$id finalized with rc 0$req/));
ok(defined $closed && $closed < $finalized, 'file: iterable closed, before finalized');

# backpressure: a client that does not read pauses the response, then it
# resumes when the client reads

my $s = http_get('/stream', start => 1);
ok(wait_log($log, qr/wsgi: job #\d+ paused for backpressure \(\d+ bytes not yet sent\).*request: "GET \/stream /),
	'paused for backpressure');
like(http_end($s), qr/x{60000}\z/, 'stream complete');
like(slurp($log), qr/wsgi: job #\d+ resumed: the client took what was sent.*request: "GET \/stream /,
	'resumed');

# a client that goes away while the app runs

$s = http_get('/slow', start => 1);
wait_file("$state/slow");
close $s;
ok(wait_log($log, qr/wsgi: job #\d+ client gone.*request: "GET \/slow /), 'client gone');

###############################################################################

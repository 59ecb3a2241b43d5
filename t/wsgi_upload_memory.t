#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: memory of a worker across large uploads
# with wsgi_request_buffering off and a large client_body_buffer_size, so
# that nginx's reads come in every size up to 1 MiB. The body crosses to
# the app thread in 64 KiB chunks; the worker may keep a bounded amount
# for reuse (see src/worker.rs, message::BodyStream::push), not a share of
# every upload: earlier builds kept about 16 MiB more per pool thread that
# had served an upload (glibc arenas), and more from pieces of every size.

###############################################################################

use warnings;
use strict;

use Test::More;

use IO::Socket::INET;

use Test::Nginx qw/ :DEFAULT port /;
use Test::WSGI qw/ worker_pid rss_kb /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(8)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    client_max_body_size     1g;
    client_body_buffer_size  1m;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass               %%TESTDIR%%/count.py;
            wsgi_request_buffering  off;
        }

        location /whole {
            wsgi_pass               %%TESTDIR%%/whole.py;
            wsgi_request_buffering  off;
        }
    }
}

EOF

$t->write_file('count.py', <<'EOF');
def application(environ, start_response):
    inp = environ['wsgi.input']
    n = 0
    while True:
        data = inp.read(65536)
        if not data:
            break
        n += len(data)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'got %d' % n]
EOF

# the whole body in one read(n) call, then dropped
$t->write_file('whole.py', <<'EOF');
def application(environ, start_response):
    data = environ['wsgi.input'].read(int(environ['CONTENT_LENGTH']))
    n = len(data)
    del data
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'got %d' % n]
EOF

$t->run();

###############################################################################

my $size = 128 << 20;

like(upload(1000), qr/got 1000\z/, 'small upload');
my $pid = worker_pid($t);
my $before = rss_kb($pid);

my @after;
for my $i (1 .. 4) {
	like(upload($size), qr/got $size\z/, "upload $i of 128 MiB");
	push @after, rss_kb($pid);
}
note("worker RSS kB: before $before, after each upload @after");

# measured with this build: +5 to +7 MiB; builds that made a 64 KiB Vec
# per read() on the app thread (copied into the bytes object, then freed)
# kept +42 to +69 MiB in the allocator's per-thread caches, and earlier
# ones up to +89 MiB
cmp_ok($after[-1] - $before, '<=', 24 * 1024, 'RSS after 512 MiB uploaded');

# one read() of a 96 MiB streamed body: the 96 MiB the reader gathered it
# in go back to the system once the request is done (the previous build
# kept them: +100 MiB or more)

my $whole = 96 << 20;
$before = rss_kb($pid);
like(upload($whole, '/whole'), qr/got $whole\z/, 'one read() of 96 MiB');
my $grew = rss_kb($pid) - $before;
note("worker RSS grew $grew kB");
cmp_ok($grew, '<=', 24 * 1024, 'RSS after one read() of 96 MiB');

###############################################################################

# POST $len bytes in 64 KiB writes, Content-Length known; the response
sub upload {
	my ($len, $uri) = @_;
	$uri //= '/up';
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080))
		or die "connect: $!";
	print $s "POST $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
		. "Content-Length: $len\r\n\r\n";
	my $piece = 'x' x 65536;
	for (my $left = $len; $left > 0; $left -= 65536) {
		print $s $left >= 65536 ? $piece : substr($piece, 0, $left);
	}
	local $/;
	return <$s>;
}

###############################################################################

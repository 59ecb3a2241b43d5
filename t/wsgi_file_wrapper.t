#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: wsgi.file_wrapper.  A real file is sent
# by nginx from the file (the app's read() is never called), byte-exact,
# from the file's current offset and cut at a shorter Content-Length, with
# sendfile on and off; a file-like object without fileno() is iterated;
# close() is called on every path, client abort included, and no
# descriptor stays open; a file's close() runs before nginx has the end of
# the response, so what it logs names the request.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::MD5 qw/ md5_hex /;
use IO::Select;
use Time::HiRes qw/ time sleep /;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ wait_file wait_log read_until state_dir worker_pid fd_count /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(38)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            sendfile   on;
            wsgi_pass  %%TESTDIR%%/files.py;
        }

        location /limited/ {
            limit_rate  1m;
            wsgi_pass   %%TESTDIR%%/files.py;
        }

        location /nosendfile/ {
            sendfile        off;
            output_buffers  2 32k;
            wsgi_pass       %%TESTDIR%%/files.py;
        }
    }
}

EOF

# every file object is kept in OBJECTS so that it is never garbage
# collected: a close() recorded is a close() the server called
$t->write_file('files.py', <<'EOF');
import io, json, os, time

HERE = os.path.dirname(os.path.abspath(__file__))
STATE = os.path.join(HERE, 'state')
OBJECTS = []
reads = {}

def touch(name):
    open(os.path.join(STATE, name), 'w').close()

class Tracked(io.FileIO):
    def __init__(self, path, tag, fail=False):
        super().__init__(path, 'rb')
        self.tag = tag
        self.fail = fail
        reads[tag] = 0
    def read(self, *args):
        reads[self.tag] += 1
        return super().read(*args)
    def close(self):
        if self.closed:
            return
        if self.fail:
            # a slow clean-up: the response must still wait for it
            time.sleep(0.5)
        touch('closed-' + self.tag)
        super().close()
        if self.fail:
            raise RuntimeError('file clean-up failed')

class TrackedBytes(io.BytesIO):
    def __init__(self, data, tag):
        super().__init__(data)
        self.tag = tag
        reads[tag] = 0
    def read(self, *args):
        reads[self.tag] += 1
        return super().read(*args)
    def close(self):
        if not self.closed:
            touch('closed-' + self.tag)
        super().close()

def application(environ, start_response):
    what = environ['PATH_INFO'].rsplit('/', 1)[-1]
    tag = environ['QUERY_STRING']
    wrap = environ['wsgi.file_wrapper']
    headers = [('Content-Type', 'application/octet-stream')]

    if what == 'reads':
        start_response('200 OK', [('Content-Type', 'application/json')])
        return [json.dumps(reads).encode()]

    if what == 'buffered':
        # a buffered reader reads ahead: its offset is tell(), not the fd's
        f = open(os.path.join(HERE, 'data.bin'), 'rb')
        OBJECTS.append(f)
        first = f.read(100)
        start_response('200 OK', headers + [('X-First', first[:4].hex())])
        return wrap(f, 32768)

    if what.startswith('bytes'):
        with open(os.path.join(HERE, 'data.bin'), 'rb') as f:
            data = f.read()
        if what == 'bytes-big':
            data = data * 8
        f = TrackedBytes(data, tag)
    else:
        name = 'big.bin' if what == 'big' else 'data.bin'
        f = Tracked(os.path.join(HERE, name), tag, fail=what == 'close-raises')
    OBJECTS.append(f)

    if what in ('seek', 'seek-cl'):
        f.seek(12345)
    if what == 'half':
        f.seek(0, 2)
        f.seek(f.tell() // 2)
    if what == 'seek-cl':
        f.seek(100000)
    if what in ('cl', 'seek-cl'):
        headers.append(('Content-Length', '5000'))

    start_response('200 OK', headers)
    return wrap(f, 32768)
EOF

# 3 MiB + a bit of pseudo-random data, and 24 MiB for the abort
my $data = join '', map { pack('N', int(rand(2**32))) } 1 .. (3 * 262144 + 333);
$t->write_file('data.bin', $data);
$t->write_file('big.bin', $data x 8);

my $state = state_dir($t);

$t->run();

###############################################################################

my $len = length $data;

# whole file, from nginx's file buffers (sendfile on and off)

for my $loc ('', '/nosendfile') {
	my $tag = $loc ? 'whole-nosendfile' : 'whole';
	my $r = http_get("$loc/file?$tag");
	my $body = http_content($r) // '';
	like($r, qr/^Content-Length: $len\x0d?$/mi, "$tag: Content-Length");
	is(length($body), $len, "$tag: length");
	is(md5_hex($body), md5_hex($data), "$tag: md5");
	ok(wait_file("$state/closed-$tag"), "$tag: close() called");
}

# a shorter Content-Length from the app

my $r = http_get('/cl?cl');
like($r, qr/^Content-Length: 5000\x0d?$/mi, 'shorter Content-Length: header');
is(http_content($r), substr($data, 0, 5000), 'shorter Content-Length: body');
ok(wait_file("$state/closed-cl"), 'shorter Content-Length: close() called');

# the file's current offset

$r = http_get('/seek?seek');
my $rest = $len - 12345;
like($r, qr/^Content-Length: $rest\x0d?$/mi, 'offset: Content-Length');
is(md5_hex(http_content($r) // ''), md5_hex(substr($data, 12345)),
	'offset: body from the offset');
ok(wait_file("$state/closed-seek"), 'offset: close() called');

# under limit_rate (nginx delays the writes): still whole

$r = http_get('/limited/half?limited');
my $half = int($len / 2);
is(md5_hex(http_content($r) // ''), md5_hex(substr($data, $half)),
	'limit_rate: file range whole');

# a buffered reader that has read ahead of its tell()

$r = http_get('/buffered?buffered');
is(md5_hex(http_content($r) // ''), md5_hex(substr($data, 100)),
	'buffered reader: body from tell()');

# both, without sendfile

$r = http_get('/nosendfile/seek-cl?seek-cl');
like($r, qr/^Content-Length: 5000\x0d?$/mi, 'offset and length: header');
is(http_content($r), substr($data, 100000, 5000), 'offset and length: body');
ok(wait_file("$state/closed-seek-cl"), 'offset and length: close() called');

# HEAD: headers only, file closed

$r = http_head('/file?head');
like($r, qr/^Content-Length: $len\x0d?$/mi, 'HEAD: Content-Length');
is(http_content($r), '', 'HEAD: no body');
ok(wait_file("$state/closed-head"), 'HEAD: close() called');

# close() raises: the response is whole, close() ran before its end
# reached the client, and the error names the request

$r = http_get('/close-raises?close-raises');
is(md5_hex(http_content($r) // ''), md5_hex($data), 'close() raises: body whole');
ok(-e "$state/closed-close-raises", 'close() raises: called before the response ended');
my $log = $t->testdir() . '/error.log';
wait_log($log, qr/file clean-up failed while closing/);
# the entry: its first line, the traceback, then nginx's context
my ($entry) = $t->read_file('error.log')
	=~ /(\[error\][^\n]*wsgi: app raised RuntimeError: file clean-up failed while closing the response iterable.*?)(?=\n\d{4}\/\d\d\/\d\d |\z)/s;
like($entry, qr/request: "GET \/close-raises\?close-raises HTTP\/1\.0"/,
	'close() raises: logged with the request');

# none of those read the file in Python

my $reads = http_content(http_get('/reads'));
like($reads, qr/"whole": 0,/, 'file sent by nginx, not read by the app');
unlike($reads, qr/: [1-9]/, 'no file was read by the app');

# a file-like object without fileno(): iterated in blksize reads

$r = http_get('/bytes?bytes');
is(md5_hex(http_content($r) // ''), md5_hex($data), 'BytesIO: md5');
ok(wait_file("$state/closed-bytes"), 'BytesIO: close() called');
like(http_content(http_get('/reads')), qr/"bytes": (\d+)/, 'BytesIO: read');
my ($n) = http_content(http_get('/reads')) =~ /"bytes": (\d+)/;
cmp_ok($n, '>=', int($len / 32768), 'BytesIO: read in blksize pieces');

# client gone: the file is closed and no descriptor stays open

my $worker = worker_pid($t);
my $fd0 = fd_count($worker);

my $s = http_get('/big?abort-file', start => 1);
like(read_until($s, qr/\x0d\x0a\x0d\x0a/), qr/^HTTP\/1\.1 200/,
	'file abort: response started');
close $s;
ok(wait_file("$state/closed-abort-file"), 'file abort: close() called');
ok(wait_fds($worker, $fd0), 'file abort: no descriptor left open');

$s = http_get('/bytes-big?abort-bytes', start => 1);
like(read_until($s, qr/\x0d\x0a\x0d\x0a/), qr/^HTTP\/1\.1 200/,
	'BytesIO abort: response started');
close $s;
ok(wait_file("$state/closed-abort-bytes"), 'BytesIO abort: close() called');
my ($aborted) = http_content(http_get('/reads')) =~ /"abort-bytes": (\d+)/;
cmp_ok($aborted, '<', 8 * $len / 32768, 'BytesIO abort: stopped reading');
is(fd_count($worker), $fd0, 'same descriptors after the aborts');

###############################################################################

sub wait_fds {
	my ($pid, $want) = @_;
	my $end = time + 10;
	while (time < $end) {
		return 1 if fd_count($pid) == $want;
		sleep 0.01;
	}
	return 0;
}

###############################################################################

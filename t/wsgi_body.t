#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: request bodies as the app sees them in
# wsgi.input (memory and temp-file bodies, chunked bodies, the read
# methods), and client_max_body_size.

###############################################################################

use warnings;
use strict;

use Test::More;
use Digest::SHA qw/ sha256_hex /;

use Test::Nginx;
use Test::WSGI qw/ state_dir http_post http_post_chunked pattern_body /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(25)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # bodies over 16k go to a temp file first
    client_body_buffer_size  16k;
    client_max_body_size     64m;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/body.py;
        }

        location /small/ {
            client_max_body_size  1k;
            wsgi_pass  %%TESTDIR%%/body.py;
        }
    }
}

EOF

# The last path segment says how the app reads wsgi.input; it answers
# with what it read: "len=N sha=SHA256 [how many reads/lines] cl=..."
$t->write_file('body.py', <<'EOF');
import hashlib, os

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

def read_all(inp, mode):
    if mode == 'read':
        return inp.read(), ''
    if mode == 'readn':
        parts = []
        while True:
            chunk = inp.read(10007)
            if not chunk:
                break
            if len(chunk) > 10007:
                raise AssertionError('read(10007) returned %d' % len(chunk))
            parts.append(chunk)
        return b''.join(parts), ' reads=%d' % len(parts)
    if mode == 'readline':
        lines = []
        while True:
            line = inp.readline()
            if not line:
                break
            lines.append(line)
        return b''.join(lines), ' lines=%d' % len(lines)
    if mode == 'readlines':
        lines = inp.readlines()
        return b''.join(lines), ' lines=%d' % len(lines)
    if mode == 'iter':
        lines = [line for line in inp]
        return b''.join(lines), ' lines=%d' % len(lines)
    raise ValueError('unknown mode %r' % mode)

def application(environ, start_response):
    inp = environ['wsgi.input']
    mode = environ['PATH_INFO'].rsplit('/', 1)[-1]

    if mode == 'parts':
        # sized reads and lines at the edges, then EOF behaviour
        got = [inp.read(0), inp.read(3), inp.readline(4), inp.readline(),
               inp.read(), inp.read(), inp.readline(), inp.read(5)]
        body = repr(got).encode()

    elif mode == 'mark':
        # proves the app ran
        with open(os.path.join(STATE, 'small-called'), 'a') as f:
            f.write('called\n')
        body = b'small ' + inp.read()

    else:
        data, extra = read_all(inp, mode)
        body = ('len=%d sha=%s%s cl=%s' % (
            len(data), hashlib.sha256(data).hexdigest(), extra,
            environ.get('CONTENT_LENGTH', '-'))).encode()

    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
EOF

state_dir($t);

$t->run();

###############################################################################

# bodies read whole with read(), and with a read(n) loop

like(http_post('/read', ''), summary(''), 'empty body');
like(http_post('/read', 'x'), summary('x'), 'one byte body');

my $mib = pattern_body(1 << 20);
like(http_post('/read', $mib), summary($mib), '1 MiB body');
like(http_post('/readn', $mib), summary($mib, ' reads=105'), '1 MiB body, read(n)');

my $big = pattern_body(20 << 20);
like(http_post('/read', $big), summary($big), '20 MiB body');
like(http_post('/readn', $big), summary($big, ' reads=2096'),
	'20 MiB body, read(n)');
like($t->read_file('error.log'),
	qr/a client request body is buffered to a temporary file/,
	'large body went through a temp file');
undef $big;

# chunked request bodies: CONTENT_LENGTH is the decoded length

like(http_post_chunked('/read', 'hello', ', ', 'world'), summary('hello, world'),
	'chunked body');

my @pieces = (pattern_body(70000), pattern_body(1), pattern_body(150000));
like(http_post_chunked('/read', @pieces), summary(join '', @pieces),
	'chunked body through a temp file');

# line-oriented reading, in memory and across temp-file reads

my $text = "first line\nsecond\n\nno newline at end";
like(http_post('/readline', $text), summary($text, ' lines=4'), 'readline()');
like(http_post('/readlines', $text), summary($text, ' lines=4'), 'readlines()');
like(http_post('/iter', $text), summary($text, ' lines=4'), 'iteration');

my $lines = join '', map { "line $_ " . ('.' x ($_ % 97)) . "\n" } 1 .. 20000;
like(http_post('/readline', $lines), summary($lines, ' lines=20000'),
	'readline() from a temp file');
like(http_post('/readlines', $lines), summary($lines, ' lines=20000'),
	'readlines() from a temp file');
like(http_post('/iter', $lines), summary($lines, ' lines=20000'),
	'iteration from a temp file');

# sized reads and EOF: read(0), read(3), readline(4), readline(), read(),
# then every call at EOF returns b''

like(http_post('/parts', "abcdefgh\nrest\nend"),
	qr/\Q[b'', b'abc', b'defg', b'h\n', b'rest\nend', b'', b'', b'']\E/,
	'sized reads and EOF');
like(http_post_chunked('/parts', "abcde", "fgh\nrest\nend"),
	qr/\Q[b'', b'abc', b'defg', b'h\n', b'rest\nend', b'', b'', b'']\E/,
	'sized reads and EOF, chunked');

# client_max_body_size: nginx answers 413 before the app runs

my $state = $t->testdir() . '/state';

like(http_post('/small/mark', 'x' x 2048), qr/^HTTP\/1\.1 413 /, '413 with length');
like(http_post_chunked('/small/mark', 'x' x 1500, 'y' x 600), qr/^HTTP\/1\.1 413 /,
	'413 chunked');
ok(!-e "$state/small-called", 'app not called for 413');

my $r = http_post('/small/mark', 'fits');
like($r, qr/^HTTP\/1\.1 200 /, 'small body under the limit');
like($r, qr/small fits\z/, 'small body under the limit, content');
is(-e "$state/small-called" && $t->read_file('state/small-called'),
	"called\n", 'app called once');

# the worker still takes bodies after all this

like(http_post('/read', $mib), summary($mib), '1 MiB body again');
like(http_post('/readline', $text), summary($text, ' lines=4'), 'readline() again');

###############################################################################

sub summary {
	my ($data, $extra) = @_;
	$extra //= '';
	my $len = length $data;
	my $sha = sha256_hex($data);
	return qr/\x0d\x0a\x0d\x0alen=$len sha=$sha\Q$extra\E cl=$len\z/;
}

###############################################################################

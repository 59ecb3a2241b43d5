#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: large request bodies kept in memory
# (client_body_buffer_size above the body size). The module hands nginx's
# body buffer to the app without copying it; the bytes must stay right and
# alive for as long as either side uses them: the app (even after the
# request ended), and nginx itself (the access log's $request_body, an
# error_page that proxies the same body elsewhere).

###############################################################################

use warnings;
use strict;

use Test::More;
use Digest::SHA qw/ sha256_hex /;

use Test::Nginx;
use Test::WSGI qw/ http_post http_post_chunked pattern_body wait_log /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(14)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    client_body_buffer_size  1m;
    client_max_body_size     2m;

    log_format  body  'BODY $uri $request_body END';

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/mem.py;
        }

        location /logged {
            access_log  %%TESTDIR%%/body.log body;
            wsgi_pass   %%TESTDIR%%/mem.py;
        }

        location /fail {
            error_page  500 = @again;
            wsgi_pass   %%TESTDIR%%/mem.py;
        }

        location @again {
            proxy_pass  http://127.0.0.1:8081;
        }
    }

    server {
        listen       127.0.0.1:8081;
        server_name  localhost;

        # whatever came here, read and summarise its body
        location / {
            rewrite    ^ /read break;
            wsgi_pass  %%TESTDIR%%/mem.py;
        }
    }
}

EOF

$t->write_file('mem.py', <<'EOF');
import hashlib

STASH = []

def summary(data, extra=''):
    return ('len=%d sha=%s%s' % (len(data), hashlib.sha256(data).hexdigest(),
                                 extra)).encode()

def application(environ, start_response):
    inp = environ['wsgi.input']
    what = environ['PATH_INFO']
    if what == '/read' or what == '/logged':
        body = summary(inp.read())
    elif what == '/readn':
        parts = []
        while True:
            chunk = inp.read(65536)
            if not chunk:
                break
            parts.append(chunk)
        body = summary(b''.join(parts), ' reads=%d' % len(parts))
    elif what == '/lines':
        body = summary(b''.join(inp.readlines()))
    elif what == '/stash':
        # keep wsgi.input past the end of this request, unread
        STASH.append(inp)
        body = b'stashed'
    elif what == '/unstash':
        body = summary(STASH.pop().read())
    elif what == '/fail':
        inp.read(1000)
        raise RuntimeError('failing on purpose, after reading some body')
    else:
        body = b'unknown'
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
EOF

$t->run();

###############################################################################

my $b256 = pattern_body(256 * 1024);
like(http_post('/read', $b256), summary($b256), '256 KiB body, read()');
like(http_post('/readn', $b256), summary($b256, ' reads=4'),
	'256 KiB body, read(65536)');

my $text = join '', map { "line $_ " . ('.' x ($_ % 89)) . "\n" } 1 .. 4000;
like(http_post('/lines', $text), summary($text), 'readlines() of a large body');

# many reads by nginx into one buffer, each its own piece of the chain

my @pieces = map { pattern_body(7000 + $_ * 1000) } 1 .. 20;
like(http_post_chunked('/read', @pieces), summary(join '', @pieces),
	'chunked body in memory, 20 chunks');
like(trickled('/read', $b256), summary($b256),
	'body arriving in many small writes');

# the app keeps wsgi.input after its request ended: the bytes stay valid

my $b128 = pattern_body(128 * 1024 + 5);
like(http_post('/stash', $b128), qr/\x0d\x0a\x0d\x0astashed\z/, 'input stashed');
like(http_post('/read', $b256), summary($b256), 'another body meanwhile');
like(http_get('/unstash'), summary($b128), 'stashed input read after its request');

# nginx still uses the body after the app has it

my $marked = 'START' . ('b' x 40000) . 'FINISH';
like(http_post('/logged', $marked), summary($marked), 'logged body answered');
ok(wait_log($t->testdir() . '/body.log', qr/^BODY \/logged STARTb{40000}FINISH END$/m),
	'$request_body in the access log after the app ran');

my $r = http_post('/fail', $b256);
like($r, qr/^HTTP\/1\.1 200 /, 'error_page after an app error');
like($r, summary($b256), 'error_page proxied the same body');

# and the worker goes on

like(http_post('/read', $b256), summary($b256), 'worker still reads bodies');
like($t->read_file('error.log'), qr/failing on purpose/, 'app error logged');

###############################################################################

sub summary {
	my ($data, $extra) = @_;
	$extra //= '';
	my $len = length $data;
	my $sha = sha256_hex($data);
	return qr/\x0d\x0a\x0d\x0alen=$len sha=$sha\Q$extra\E\z/;
}

# the body in 4 KiB writes, each after nginx has had a chance to read the
# last one (it answers only when the whole body is in)
sub trickled {
	my ($uri, $data) = @_;
	my $s = http(<<EOF, start => 1);
POST $uri HTTP/1.1
Host: localhost
Connection: close
Content-Length: @{[ length $data ]}

EOF
	for (my $off = 0; $off < length $data; $off += 4096) {
		$s->syswrite(substr($data, $off, 4096));
		select undef, undef, undef, 0.001;
	}
	local $/;
	return <$s>;
}

###############################################################################

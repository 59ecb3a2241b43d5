#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: responses (framing, HEAD, bodiless
# statuses, write(), close()) and what happens when the app fails or
# breaks PEP 3333.

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Select;

use Test::Nginx qw/ :DEFAULT http_end http_content /;
use Test::WSGI qw/ read_until state_dir /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(89)
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
            wsgi_pass  %%TESTDIR%%/resp.py;
        }
    }
}

EOF

$t->write_file('resp.py', <<'EOF');
import os, sys, time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')
KEPT = {}

def record(line):
    with open(os.path.join(STATE, 'close.log'), 'a') as f:
        f.write(line + '\n')

def wait_for(name):
    path = os.path.join(STATE, name)
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)

class Closing:
    """An iterable that records its close() calls."""
    def __init__(self, tag, chunks, fail_at=None, close_fails=False):
        self.tag, self.chunks, self.fail_at = tag, chunks, fail_at
        self.close_fails = close_fails
    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError('iteration failed')
            yield chunk
    def close(self):
        record('close ' + self.tag)
        if self.close_fails:
            raise RuntimeError('clean-up failed')

def gen(*chunks):
    for c in chunks:
        yield c

def application(environ, start_response):
    path = environ['PATH_INFO']
    text = [('Content-Type', 'text/plain')]

    if path == '/pid':
        start_response('200 OK', text)
        return [str(os.getpid()).encode()]

    # framing

    if path == '/gen':
        start_response('200 OK', text + [('X-Gen', 'yes')])
        return gen(b'one', b'two', b'three')
    if path == '/cl':
        start_response('200 OK', text + [('Content-Length', '11')])
        return gen(b'one', b'two', b'three')
    if path == '/list':
        start_response('200 OK', text + [('X-List', 'yes')])
        return [b'ab', b'cd']
    if path in ('/short_list', '/short_gen'):
        # fewer bytes than the app's own Content-Length
        start_response('200 OK', text + [('Content-Length', '100')])
        return [b'only ', b'ten b'] if path == '/short_list' \
            else gen(b'only ', b'ten b')
    if path == '/tuple':
        start_response('200 OK', text)
        return (b'tu', bytearray(b'p'), b'le')
    if path == '/204':
        start_response('204 No Content', [('X-Status', '204')])
        return []
    if path == '/304':
        start_response('304 Not Modified', [('X-Status', '304')])
        return [b'']
    if path == '/204_cl':
        start_response('204 No Content', [('Content-Length', '0')])
        return [b'']
    if path in ('/204_body', '/304_body'):
        status = '204 No Content' if path == '/204_body' else '304 Not Modified'
        start_response(status, [('X-Status', status[:3])])
        return [b'must not be sent']
    if path == '/custom':
        start_response('299 Custom Reason', text)
        return [b'custom']
    if path in ('/bare', '/bare_custom', '/bare_space'):
        status = {'/bare': '200', '/bare_custom': '299',
                  '/bare_space': '404 '}[path]
        start_response(status, text)
        return [b'bare']
    if path == '/write':
        write = start_response('200 OK', text)
        write(b'written ')
        write(b'twice ')
        return [b'returned']
    if path == '/keep':
        KEPT['start_response'] = start_response
        KEPT['write'] = start_response('200 OK', text)
        return [b'kept']
    if path == '/stale':
        out = []
        for name, call in (('start_response', lambda: KEPT['start_response']('200 OK', [])),
                           ('write', lambda: KEPT['write'](b'stale'))):
            try:
                call()
                out.append(name + ' worked')
            except Exception as e:
                out.append('%s %s: %s' % (name, type(e).__name__, e))
        out.append('fresh' if start_response is not KEPT['start_response'] else 'same')
        start_response('200 OK', text)
        return ['\n'.join(out).encode()]

    # close() of the iterable

    if path == '/close/normal':
        start_response('200 OK', text)
        return Closing('normal', [b'a', b'b'])
    if path == '/close/raise':
        start_response('200 OK', text)
        return Closing('raise', [b'a', b'b'], fail_at=1)
    if path == '/close/head':
        start_response('200 OK', text)
        return Closing('head', [b'a', b'b'])
    if path == '/close/fails':
        start_response('200 OK', text)
        return Closing('fails', [b'hello ', b'world'], close_fails=True)
    if path == '/close/fails_cl':
        start_response('200 OK', text + [('Content-Length', '11')])
        return Closing('fails_cl', [b'hello ', b'world'], close_fails=True)

    # failures

    if path == '/raise':
        raise KeyError('early-failure')
    if path == '/late_raise':
        start_response('200 OK', text)
        def late():
            yield b'first chunk\n'
            wait_for('raise-now')
            raise ValueError('late failure')
        return late()

    # broken output

    if path == '/bad/crlf':
        start_response('200 OK', [('X-Bad', 'a\r\nX-Injected: 1')])
        return [b'x']
    if path == '/bad/nonlatin':
        start_response('200 OK', [('X-Bad', 'euro \u20ac')])
        return [b'x']
    if path == '/bad/status':
        start_response('OK', text)
        return [b'x']
    if path == '/bad/str':
        start_response('200 OK', text)
        return ['a str chunk']
    if path in ('/bad/whole_bytes', '/bad/whole_str', '/bad/none',
                '/bad/int'):
        # the body itself, or nothing, instead of an iterable of bytes
        start_response('200 OK', text)
        return {'/bad/whole_bytes': b'body', '/bad/whole_str': 'body',
                '/bad/none': None, '/bad/int': 5}[path]
    if path == '/bad/nostart':
        return [b'x']
    if path == '/bad/twice':
        start_response('200 OK', text)
        start_response('404 Not Found', text)
        return [b'x']

    # exc_info

    if path == '/excinfo':
        start_response('200 OK', text + [('X-First', 'yes')])
        try:
            raise RuntimeError('caught by the app')
        except RuntimeError:
            start_response('500 Internal Server Error',
                           text + [('X-Second', 'yes')], sys.exc_info())
        return [b'app error page']
    if path == '/excinfo_late':
        start_response('200 OK', text)
        def late():
            yield b'sent'
            try:
                raise RuntimeError('too late for exc_info')
            except RuntimeError:
                start_response('500 Internal Server Error', text,
                               sys.exc_info())
            yield b'not reached'
        return late()

    start_response('404 Not Found', text)
    return [b'no such test']
EOF

state_dir($t);

$t->run();

###############################################################################

my $pid = http_content(http_get('/pid'));
my $r;

# a generator: chunked for HTTP/1.1, close-delimited for HTTP/1.0

$r = http_11('/gen');
like($r, qr/^HTTP\/1\.1 200 OK/, 'generator');
like($r, qr/^Transfer-Encoding: chunked\x0d?$/mi, 'generator chunked');
is(http_content($r), 'onetwothree', 'generator chunked content');
like($r, qr/\x0d\x0a0\x0d\x0a\x0d\x0a\z/, 'generator last chunk');

$r = http_get('/gen');
like($r, qr/^X-Gen: yes\x0d?$/mi, 'generator http 1.0');
unlike($r, qr/^(Transfer-Encoding|Content-Length):/mi,
	'generator http 1.0 not chunked, no length');
like($r, qr/\x0d\x0a\x0d\x0aonetwothree\z/, 'generator http 1.0 body');

# Content-Length from the app is kept: no chunked encoding

$r = http_11('/cl');
like($r, qr/^Content-Length: 11\x0d?$/mi, 'app Content-Length');
unlike($r, qr/^Transfer-Encoding:/mi, 'app Content-Length not chunked');
like($r, qr/\x0d\x0a\x0d\x0aonetwothree\z/, 'app Content-Length body');

# fewer bytes than the app's Content-Length: a list, complete before
# anything goes out, gets a 500; a generator's bytes go out, then the
# connection is closed (a keepalive client must neither wait for the rest
# nor take the next response for part of this one); logged once

$r = http(<<EOF);
GET /short_list HTTP/1.1
Host: localhost

EOF
like($r, qr/^HTTP\/1\.1 500 /, 'short list: 500');
like($t->read_file('error.log'),
	qr/\[error\] .*wsgi: app sent 10 bytes, less than its Content-Length \(100\), answering 500 while sending response to client, client: .*request: "GET \/short_list HTTP\/1\.1"/,
	'short list: the error names the problem');

$r = http(<<EOF);
GET /short_gen HTTP/1.1
Host: localhost

EOF
like($r, qr/^HTTP\/1\.1 200 OK\x0d\x0a(?:[^\x0d]+\x0d\x0a)*Content-Length: 100\x0d\x0a(?:[^\x0d]+\x0d\x0a)*\x0d\x0aonly ten b\z/,
	'short generator: its bytes, then the connection closes');
like($t->read_file('error.log'),
	qr/\[error\] .*wsgi: app sent 10 bytes, less than its Content-Length \(100\), closing connection while sending response to client, client: .*request: "GET \/short_gen HTTP\/1\.1"/,
	'short generator: the error names the problem');

for my $uri ('/short_list', '/short_gen') {
	my @lines = $t->read_file('error.log')
		=~ /^.*less than its Content-Length \(100\).*GET \Q$uri\E.*$/mg;
	is(scalar @lines, 1, "$uri: logged once");
}

# a list gets a Content-Length

$r = http_11('/list');
like($r, qr/^Content-Length: 4\x0d?$/mi, 'list Content-Length');
unlike($r, qr/^Transfer-Encoding:/mi, 'list not chunked');
like($r, qr/\x0d\x0a\x0d\x0aabcd\z/, 'list body');

$r = http_11('/tuple');
like($r, qr/^Content-Length: 5\x0d?$/mi, 'tuple Content-Length');
like($r, qr/\x0d\x0a\x0d\x0atuple\z/, 'tuple body, a bytearray among bytes');

# HEAD: the headers, no body

$r = http_head('/list');
like($r, qr/^HTTP\/1\.1 200 OK/, 'head list');
like($r, qr/^X-List: yes\x0d?$/mi, 'head list header');
like($r, qr/^Content-Length: 4\x0d?$/mi, 'head list Content-Length');
like($r, qr/\x0d\x0a\x0d\x0a\z/, 'head list no body');

$r = http(<<EOF);
HEAD /gen HTTP/1.1
Host: localhost
Connection: close

EOF
like($r, qr/^X-Gen: yes\x0d?$/mi, 'head generator header');
like($r, qr/\x0d\x0a\x0d\x0a\z/, 'head generator no body');

# 204 and 304: no body

$r = http_11('/204');
like($r, qr/^HTTP\/1\.1 204 No Content.*^X-Status: 204\x0d?$/msi,
	'status 204');
like($r, qr/\x0d\x0a\x0d\x0a\z/, 'status 204 no body');
unlike($r, qr/^(Content-Length|Transfer-Encoding):/mi, 'status 204 no framing');
unlike(http_11('/204_cl'), qr/^(Content-Length|Transfer-Encoding):/mi,
	'status 204 with the app\'s Content-Length: no framing');

$r = http_11('/304');
like($r, qr/^HTTP\/1\.1 304 Not Modified.*^X-Status: 304\x0d?$/msi,
	'status 304');
like($r, qr/\x0d\x0a\x0d\x0a\z/, 'status 304 no body');

# ... even if the app returns one: it would be read as the start of the
# next response on a keepalive connection

like(http_11('/204_body'), qr/\x0d\x0a\x0d\x0a\z/, 'status 204 body dropped');
like(http_11('/304_body'), qr/\x0d\x0a\x0d\x0a\z/, 'status 304 body dropped');
like(http(<<EOF), qr/^HTTP\/1\.1 204 No Content\x0d\x0a(?:[^\x0d]+\x0d\x0a)*\x0d\x0aHTTP\/1\.1 299 Custom Reason\x0d\x0a.*custom\z/s,
GET /204_body HTTP/1.1
Host: localhost

GET /custom HTTP/1.1
Host: localhost
Connection: close

EOF
	'keepalive after a 204 with a body: next response intact');

# the app's own status reason

like(http_get('/custom'), qr/^HTTP\/1\.1 299 Custom Reason\x0d\x0a/,
	'custom status line');

# a status with no reason phrase still makes a valid status line

like(http_get('/bare'), qr/^HTTP\/1\.1 200 OK\x0d\x0a.*bare\z/s,
	'status without reason: nginx reason');
like(http_get('/bare_custom'), qr/^HTTP\/1\.1 299 \x0d\x0a.*bare\z/s,
	'unknown status without reason: code and space');
like(http_get('/bare_space'), qr/^HTTP\/1\.1 404 Not Found\x0d\x0a/,
	'status with an empty reason');

# the write() callable, then the returned iterable

is(http_content(http_11('/write')), 'written twice returned', 'write()');

# start_response and write kept by the app past their request refuse to
# work in a later one, and the later request gets its own start_response

is(http_content(http_11('/keep')), 'kept', 'start_response kept by the app');
is(http_content(http_11('/stale')),
	"start_response AssertionError: start_response() and write() work only "
	. "during their request\nwrite AssertionError: start_response() and "
	. "write() work only during their request\nfresh",
	'kept start_response and write refused after their request');

# close() of the iterable is called whatever happens

like(http_get('/close/normal'), qr/\x0d\x0a\x0d\x0aab\z/, 'close normal');
is(closes($t), "close normal\n", 'close() after a normal response');

http_get('/close/raise');
is(closes($t), "close normal\nclose raise\n",
	'close() after an exception in iteration');

like(http_head('/close/head'), qr/^HTTP\/1\.1 200 OK/, 'close head');
is(closes($t), "close normal\nclose raise\nclose head\n", 'close() after HEAD');

# a close() that raises: the body is complete and the connection stays
# usable (the failure is the app's clean-up, not its response)

my $pipelined = <<EOF;
GET /close/fails HTTP/1.1
Host: localhost

GET /list HTTP/1.1
Host: localhost
Connection: close

EOF
my $r2 = http($pipelined);
my ($first) = $r2 =~ /^(.*?)HTTP\/1\.1 200 OK(?!.*HTTP\/1\.1)/s;
is(http_content($first), 'hello world', 'close() raises: chunked body complete');
like($r2, qr/\x0d\x0a\x0d\x0aabcd\z/, 'close() raises: next request served');

$pipelined =~ s!/close/fails!/close/fails_cl!;
like(http($pipelined),
	qr/Content-Length: 11\x0d\x0a.*\x0d\x0a\x0d\x0ahello worldHTTP\/1\.1 200 .*abcd\z/s,
	'close() raises: Content-Length body, keepalive kept');
like($t->read_file('error.log'),
	qr/\[error\].*wsgi: app raised RuntimeError: clean-up failed while closing the response iterable[^\n]*\nTraceback/,
	'close() raises: logged with traceback');

like($t->read_file('error.log'),
	qr/wsgi: app raised RuntimeError: iteration failed/,
	'exception in iteration logged');

# an exception before start_response(): 500, logged with the traceback

$r = http_get('/raise');
like($r, qr/^HTTP\/1\.1 500 /, 'exception: 500');
my $tb = qr/Traceback \(most recent call last\):\n +File ".*\/resp\.py"/;
my $err = qr/\[error\].*wsgi: app raised KeyError: 'early-failure'/;
like($t->read_file('error.log'),
	qr/$err while handling request\n$tb, line \d+, in application\n/,
	'exception: error log with traceback');

# an exception after the headers and a first chunk went out: the
# connection is closed without the last chunk, so the client can tell

my $s = http(<<EOF, start => 1);
GET /late_raise HTTP/1.1
Host: localhost
Connection: close

EOF
my $head = read_until($s, qr/first chunk\n/);
like($head, qr/^HTTP\/1\.1 200 OK.*^Transfer-Encoding: chunked/msi,
	'late exception: headers sent');
$t->write_file('state/raise-now', '');
$r = $head . (http_end($s) // '');
is(http_content($r), "first chunk\n[no-last-chunk]",
	'late exception: no last chunk');
unlike($r, qr/\x0d\x0a0\x0d\x0a\x0d\x0a\z/, 'late exception: no terminator');
$err = qr/\[error\].*wsgi: app raised ValueError: late failure/;
like($t->read_file('error.log'),
	qr/$err while sending response to client\n$tb, line \d+, in late\n/,
	'late exception: error log');

# broken app output: 500 and an error-log line each

bad($t, '/bad/crlf', qr/ValueError: value of header "X-Bad" contains CR, LF/,
	'header value with CRLF');
bad($t, '/bad/nonlatin', qr/ValueError: header value "euro .+" is not latin-1/,
	'non-latin-1 header value');
bad($t, '/bad/status', qr/ValueError: status "OK" does not start with a three/,
	'malformed status');
bad($t, '/bad/str', qr/app returned a response body chunk of type str/,
	'str body chunk');
like($t->read_file('error.log'),
	qr/\[error\].*wsgi: app returned a response body chunk of type str, not bytes .* while handling request, client: /,
	'str body chunk: logged in nginx\'s form');
bad($t, '/bad/whole_bytes', qr/app returned a bytes object instead of an iterable of bytes \(return \[body\]/,
	'the body returned as bytes');
bad($t, '/bad/whole_str', qr/app returned a str object instead of an iterable/,
	'the body returned as str');
bad($t, '/bad/none', qr/app returned None, not an iterable of bytes/,
	'None returned');
bad($t, '/bad/int', qr/app returned an object of type int, not an iterable/,
	'an int returned');
bad($t, '/bad/nostart', qr/app returned without calling start_response\(\)/,
	'start_response() never called');
bad($t, '/bad/twice', qr/AssertionError: start_response\(\) called a second time/,
	'start_response() twice without exc_info');

unlike(http_get('/bad/crlf'), qr/^X-Injected/mi, 'no header injection');

# exc_info before any output replaces the response

$r = http_get('/excinfo');
like($r, qr/^HTTP\/1\.1 500 Internal Server Error\x0d\x0a/, 'exc_info status');
like($r, qr/^X-Second: yes\x0d?$/mi, 'exc_info new headers');
unlike($r, qr/^X-First:/mi, 'exc_info old headers dropped');
like($r, qr/\x0d\x0a\x0d\x0aapp error page\z/, 'exc_info app body');

# exc_info after output re-raises the app's exception (PEP 3333)

$r = http_11('/excinfo_late');
unlike($r // '', qr/not reached|\x0d\x0a0\x0d\x0a\x0d\x0a\z/,
	'late exc_info: response cut');
like($t->read_file('error.log'),
	qr/wsgi: app raised RuntimeError: too late for exc_info/,
	'late exc_info: original exception raised');

# the same worker process still serves

like(http_get('/list'), qr/\x0d\x0a\x0d\x0aabcd\z/, 'still serving');
is(http_content(http_get('/pid')), $pid, 'same worker process');

###############################################################################

sub http_11 {
	my ($uri) = @_;
	return http(<<EOF);
GET $uri HTTP/1.1
Host: localhost
Connection: close

EOF
}

sub closes {
	my ($t) = @_;
	return -e $t->testdir() . '/state/close.log'
		? $t->read_file('state/close.log') : '';
}

# a bad response: 500 from nginx, and the reason in the error log
sub bad {
	my ($t, $uri, $log, $name) = @_;
	like(http_get($uri), qr/^HTTP\/1\.1 500 Internal Server Error/,
		"$name: 500");
	like($t->read_file('error.log'), qr/\[error\].*wsgi: .*$log/,
		"$name: error log");
}

###############################################################################

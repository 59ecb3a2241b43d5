#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: what the app writes to wsgi.errors,
# sys.stdout, sys.stderr and Python logging reaches nginx's error log,
# prefixed "wsgi:", at the matching nginx level, with the request context.
# Python warnings (at import and per request) and logging records without
# a handler are at warn, not at error as sys.stderr; tracebacks at error.

###############################################################################

use warnings;
use strict;

use Test::More;
use Time::HiRes qw/ time sleep /;

use Test::Nginx;
use Test::WSGI qw/ poll /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(30)
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
            wsgi_pass  %%TESTDIR%%/app.py;
        }
    }
}

EOF

$t->write_file('app.py', <<'EOF');
import logging, sys, warnings

print('imported at worker start')

# before the app configures logging: logging's last resort handler
logging.getLogger('early').warning('logged at import, no handler yet')
logging.getLogger('early').info('info at import, below the last resort')

warnings.warn('a warning at import')
warnings.simplefilter('default', DeprecationWarning)
warnings.warn('old_api() is deprecated', DeprecationWarning)

log = logging.getLogger('myapp')
log.setLevel(logging.INFO)

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/errors':
        errors = environ['wsgi.errors']
        errors.write('errors line one\n')
        errors.write('errors in ')
        errors.write('two writes\n')
        errors.writelines(['from writelines\n'])
        errors.write('no newline at the end')
    elif path.startswith('/errors/'):
        environ['wsgi.errors'].write('errors of %s\n' % path)
    elif path == '/print':
        print('printed to stdout')
        print('printed to stderr', file=sys.stderr)
    elif path == '/logging':
        log.info('logged info')
        log.warning('logged warning')
        log.error('logged error')
        log.debug('logged debug, below the logger level')
    elif path == '/warning':
        warnings.warn('a warning per request', RuntimeWarning)
    elif path == '/warning-to-file':
        warnings.showwarning('shown to a file', UserWarning, __file__, 1,
                             file=sys.stderr)
    elif path == '/raise':
        raise ValueError('unhandled in the app')
    elif path == '/exception':
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception('caught it')
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
EOF

$t->run();

sub log_text { $_[0]->read_file('error.log') }

# one error-log entry at $level from the request for $uri
sub entry {
	my ($level, $text, $uri) = @_;
	return qr/\[$level\] \d+#\d+: \*\d+ wsgi: \Q$text\E, client: 127\.0\.0\.1, server: localhost, request: "GET \Q$uri\E HTTP\/1\.0", host: "localhost"$/m;
}

###############################################################################

like(http_get('/errors'), qr/200 OK/, 'wsgi.errors request');
http_get('/errors/second');
http_get('/errors/third');
like(http_get('/print'), qr/200 OK/, 'print request');
like(http_get('/logging'), qr/200 OK/, 'logging request');
like(http_get('/exception'), qr/200 OK/, 'logging.exception request');
like(http_get('/warning'), qr/200 OK/, 'warning request');
like(http_get('/warning-to-file'), qr/200 OK/, 'warning to a file request');
like(http_get('/raise'), qr/500/, 'unhandled exception: 500');

# the last partial line of wsgi.errors is written when the request's
# stream goes away
ok(poll(sub { log_text($t) =~ /no newline at the end/ }),
	'wsgi.errors: partial last line kept');

my $log = log_text($t);

like($log, qr/\[info\] \d+#\d+: wsgi: imported at worker start$/m,
	'print at import: info, no request');

like($log, entry('error', 'errors line one', '/errors'), 'wsgi.errors: error level');
like($log, entry('error', 'errors in two writes', '/errors'),
	'wsgi.errors: a line from two writes');
like($log, entry('error', 'from writelines', '/errors'), 'wsgi.errors: writelines');
like($log, qr/\[error\] .*wsgi: no newline at the end/,
	'wsgi.errors: partial line at error level');

# each request's wsgi.errors lines carry that request (a pool thread's
# wsgi.errors object is reused from request to request)
like($log, entry('error', 'errors of /errors/second', '/errors/second'),
	'wsgi.errors: a later request');
like($log, entry('error', 'errors of /errors/third', '/errors/third'),
	'wsgi.errors: and the one after');

like($log, entry('info', 'printed to stdout', '/print'), 'stdout: info level');
like($log, entry('error', 'printed to stderr', '/print'), 'stderr: error level');

like($log, entry('info', 'myapp: logged info', '/logging'), 'logging.info: info');
like($log, entry('warn', 'myapp: logged warning', '/logging'),
	'logging.warning: warn');
like($log, entry('error', 'myapp: logged error', '/logging'),
	'logging.error: error');
unlike($log, qr/below the logger level/, 'logger level respected');

like($log, qr/\[error\] \d+#\d+: \*\d+ wsgi: myapp: caught it\nTraceback \(most recent call last\):\n.*\nZeroDivisionError: division by zero, client: 127\.0\.0\.1, server: localhost, request: "GET \/exception /s,
	'logging.exception: traceback in one entry with the request');

# warnings: at warn, formatted as Python shows them, with the request when
# there is one

like($log, qr/\[warn\] \d+#\d+: wsgi: \S+app\.py:\d+: UserWarning: a warning at import$/m,
	'warning at import: warn');
like($log, qr/\[warn\] \d+#\d+: wsgi: \S+app\.py:\d+: DeprecationWarning: old_api\(\) is deprecated$/m,
	'DeprecationWarning at import: warn');
like($log, qr/\[warn\] \d+#\d+: \*\d+ wsgi: \S+app\.py:\d+: RuntimeWarning: a warning per request\n  warnings\.warn\('a warning per request', RuntimeWarning\), client: 127\.0\.0\.1, server: localhost, request: "GET \/warning HTTP\/1\.0"/,
	'warning per request: warn, source line, request context');
unlike($log, qr/\[error\][^\n]*Warning: (?!shown to a file)/, 'no warning at error');
like($log, qr/\[error\] \d+#\d+: \*\d+ wsgi: \S+app\.py:1: UserWarning: shown to a file, client/,
	'warning shown to an explicit file (sys.stderr): there, at error');

# a logging record that found no handler: warn, as logged; nothing below
# the last resort's WARNING

like($log, qr/\[warn\] \d+#\d+: wsgi: early: logged at import, no handler yet$/m,
	'logging without a handler at import: warn');
unlike($log, qr/info at import/, 'logging without a handler: below WARNING dropped');

# an unhandled exception: its traceback at error

like($log, qr/\[error\] \d+#\d+: \*\d+ wsgi: app raised ValueError: unhandled in the app[^\n]*\nTraceback \(most recent call last\):\n.*raise ValueError/s,
	'unhandled exception: traceback at error');

###############################################################################

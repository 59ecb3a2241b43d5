#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: "if" and "limit_except" blocks inside a
# wsgi_pass location are part of that location; the requests they match
# still go to the app, never to the static file handler under "root".

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http rewrite access/)->plan(10)
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

        # the app's own source lies under root: it must never be served
        root  %%TESTDIR%%;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;

            if ($arg_mark) {
                add_header  X-If  marked;
            }

            limit_except GET {
                allow  127.0.0.1;
                deny   all;
            }
        }

        location /mnt/ {
            wsgi_pass         %%TESTDIR%%/app.py;
            wsgi_script_name  /mnt;

            if ($arg_mark) {
                add_header  X-If  marked;
            }
        }

        location /closed/ {
            wsgi_pass  %%TESTDIR%%/app.py;

            limit_except GET {
                deny  all;
            }
        }
    }
}

EOF

$t->write_file('app.py', <<'EOF');
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('app %s %s|%s' % (environ['REQUEST_METHOD'], environ['SCRIPT_NAME'],
                               environ['PATH_INFO'])).encode()]
EOF

$t->run();

###############################################################################

like(http_get('/app.py'), qr/\x0d\x0a\x0d\x0aapp GET \|\/app\.py\z/, 'plain request');

my $r = http_get('/app.py?mark=1');
like($r, qr/\x0d\x0a\x0d\x0aapp GET \|\/app\.py\z/, 'if: the app answers');
like($r, qr/^X-If: marked/m, 'if: its directives apply');
unlike($r, qr/def application/, 'if: the source file is not served');

like(http_get('/missing?mark=1'), qr/^HTTP\/1\.1 200 .*app GET \|\/missing\z/s,
	'if: no 404 from the file system');

$r = http_get('/mnt/x?mark=1');
like($r, qr/\x0d\x0a\x0d\x0aapp GET \/mnt\|\/x\z/, 'if: wsgi_script_name kept');

like(http(<<EOF), qr/\x0d\x0a\x0d\x0aapp POST \|\/app\.py\z/, 'limit_except: allowed POST');
POST /app.py HTTP/1.0
Host: localhost
Content-Length: 2

ab
EOF

like(http(<<EOF), qr/^HTTP\/1\.1 403 /, 'limit_except: denied POST');
POST /closed/x HTTP/1.0
Host: localhost
Content-Length: 2

ab
EOF

like(http_get('/closed/x'), qr/\x0d\x0a\x0d\x0aapp GET \|\/closed\/x\z/, 'limit_except: GET');

like(http_head('/app.py?mark=1'), qr/^HTTP\/1\.1 200 .*X-If: marked/s, 'if: HEAD');

###############################################################################

#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: Kinto (a JSON storage service: Pyramid,
# loaded from its .ini as pyramid.paster does, which also configures its
# logging) driven by its client library, kinto-http.  Kinto's own log
# handler writes to sys.stderr (as its configuration template does): its
# request summaries are in nginx's log at error, sys.stderr's level, with
# their request.  A bucket and a collection are made, 250 records created
# in batches of 25 and read back through 7 pages; a change with a stale
# ETag is refused (412), 50 records are deleted, and another user is kept
# out (403); the counts and sums are checked from a second session.

###############################################################################

use warnings;
use strict;

use Test::More;

use JSON::PP;

use Test::Nginx qw/ :DEFAULT /;
use Test::WSGI qw/ slurp /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $venv = $ENV{TEST_WSGI_VENV};
plan(skip_all => 'TEST_WSGI_VENV not set (a venv with Kinto and kinto-http '
	. 'from t/requirements.txt, made by scripts/test)')
	unless defined $venv && length $venv;

my $py = "$venv/bin/python";
my ($kinto, $client) = split ' ',
	`$py -c 'import kinto; from importlib.metadata import version; print(kinto.__version__, version("kinto-http"))' 2>/dev/null` // '';
plan(skip_all => "no Kinto and kinto-http in $venv (t/requirements.txt installs "
	. 'them on Python 3.10 and later: Kinto 26 needs 3.10)') unless $client;

my $t = Test::Nginx->new()->has(qw/http/)->plan(14)
	->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_python_home  $venv;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/kinto_app.py;
        }
    }
}

EOF

# Kinto's configuration template, with the in-memory backends (one worker
# process), basic auth, and its JSON log format
$t->write_file('kinto.ini', <<'EOF');
[app:main]
use = egg:kinto
kinto.storage_backend = kinto.core.storage.memory
kinto.storage_url =
kinto.cache_backend = kinto.core.cache.memory
kinto.cache_url =
kinto.permission_backend = kinto.core.permission.memory
kinto.permission_url =
kinto.userid_hmac_secret = 8d1f3c5e7a9b2d4f6a8c0e1f3b5d7f9a
multiauth.policies = basicauth
kinto.bucket_create_principals = system.Authenticated
kinto.paginate_by = 40
kinto.batch_max_requests = 25

[loggers]
keys = root, kinto

[handlers]
keys = console

[formatters]
keys = json

[logger_root]
level = INFO
handlers = console

[logger_kinto]
level = INFO
handlers = console
qualname = kinto
propagate = 0

[handler_console]
class = kinto.core.StreamHandlerWithRequestID
args = (sys.stderr,)
level = NOTSET
formatter = json

[formatter_json]
class = kinto.core.JsonLogFormatter
EOF

$t->write_file('kinto_app.py', <<'EOF');
import os

from pyramid.paster import get_app, setup_logging

ini = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kinto.ini')
setup_logging(ini)
application = get_app(ini, 'main')
EOF

# the client side: its findings as JSON
$t->write_file('client.py', <<'EOF');
import json, sys

from kinto_http import Client, KintoException

url = sys.argv[1]
out = {}
c = Client(server_url=url, auth=('alice', 'wonderland'), bucket='shop',
           collection='items')
out['version'] = c.server_info()['project_version']
c.create_bucket()
c.create_collection()
with c.batch() as batch:
    for i in range(250):
        batch.create_record(data={'n': i})

records = c.get_records()
out['records'] = len(records)
out['sum'] = sum(r['n'] for r in records)
out['pages'] = len(list(c.get_paginated_records()))

first = min(records, key=lambda r: r['n'])
updated = c.update_record(id=first['id'], data={'n': 1000},
                          if_match=first['last_modified'])
try:
    c.update_record(id=first['id'], data={'n': 2000},
                    if_match=first['last_modified'])
    out['stale ETag'] = 'accepted'
except KintoException as e:
    out['stale ETag'] = 'refused %s' % e.response.status_code

with c.batch() as batch:
    for r in sorted(records, key=lambda r: r['n'])[1:51]:
        batch.delete_record(id=r['id'])

try:
    Client(server_url=url, auth=('bob', 'builder')).get_records(
        bucket='shop', collection='items')
    out['other user'] = 'let in'
except KintoException as e:
    out['other user'] = 'refused %s' % e.response.status_code

s = Client(server_url=url, auth=('alice', 'wonderland'), bucket='shop',
           collection='items')
after = s.get_records()
out['after'] = len(after)
out['sum after'] = sum(r['n'] for r in after)
print(json.dumps(out))
EOF

$t->run();

diag("Kinto $kinto, kinto-http $client");

###############################################################################

my $url = 'http://127.0.0.1:' . port(8080) . '/v1';
my $d = $t->testdir();
$ENV{HOME} = $d;

my $out = `timeout 300 $py $d/client.py $url 2>/dev/null`;
my $r = eval { decode_json($out) } or diag($out);
$r ||= {};

is($r->{version}, $kinto, 'server info');
is($r->{records}, 250, '250 records created in batches');
is($r->{sum}, 250 * 249 / 2, 'their content');
is($r->{pages}, 7, 'read back through 7 pages of 40');
is($r->{'stale ETag'}, 'refused 412', 'a change with a stale ETag: 412');
is($r->{'other user'}, 'refused 403', 'another user: 403');
is($r->{after}, 200, 'a second session: 200 records after 50 deleted');
is($r->{'sum after'}, 250 * 249 / 2 - 1275 - 0 + 1000, 'their content, one changed');

# Kinto's log lines: its handler on sys.stderr, JSON, one per request and
# one per batched request, at error (sys.stderr's level) with the request

my $log = slurp("$d/error.log");
my @batched = $log =~ /^.*\[error\] \d+#\d+: \*\d+ wsgi: \{.*"Type": "subrequest\.summary".*, request: "POST \/v1\/batch HTTP\/1\.1".*$/mg;
my @created = grep { /"path": "\/v1\/buckets\/shop\/collections\/items\/records\/[-\w]+", "method": "PUT"/ } @batched;
my @deleted = grep { /"method": "DELETE"/ } @batched;
is(scalar @created, 250, 'log: 250 records created, each logged');
is(scalar @deleted, 50, 'log: 50 deleted');
like($log, qr/\[error\] \d+#\d+: \*\d+ wsgi: \{.*"Type": "request\.summary".*"code": 412.*, request: "PUT \/v1\/buckets\/shop\/collections\/items\/records\/[-\w]+ HTTP\/1\.1"/,
	'log: the refused change');
like($log, qr/\[error\] \d+#\d+: \*\d+ wsgi: \{.*"Type": "request\.summary".*"code": 403.*, request: "GET \/v1\/buckets\/shop\/collections\/items\/records/,
	'log: the user kept out');

# a Python warning at import (Kinto's "HTTPS is not enabled") at warn;
# nothing else from the app at error but its handler's lines

like($log, qr/\[warn\] \d+#\d+: wsgi: \S+: UserWarning: HTTPS is not enabled/,
	'log: Kinto\'s warning at import at warn');
unlike($log, qr/wsgi: (app raised|cannot load)|Traceback/, 'log: no exceptions');

###############################################################################

#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: a WebDAV server (WsgiDAV from the test
# venv, sharing a directory) driven by the webdav4 client library, and by
# curl for locks.  WsgiDAV logs through a handler of its own on
# sys.stdout: its lines are in nginx's log at info, with their request.
# With basic-auth credentials (a wrong password is refused) the client
# makes collections, uploads 100 small files and a 20 MiB one (and a
# 10 MiB one with wsgi_request_buffering off), lists them, downloads the big
# ones, copies, moves and deletes; a second session sees the result, and so
# does the shared directory on disk.  A LOCK keeps another client's PUT
# out until UNLOCK.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::SHA qw/ sha256_hex /;
use JSON::PP;

use Test::Nginx qw/ :DEFAULT /;
use Test::WSGI qw/ slurp pattern_body /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $venv = $ENV{TEST_WSGI_VENV};
plan(skip_all => 'TEST_WSGI_VENV not set (a venv with WsgiDAV and webdav4 '
	. 'from t/requirements.txt, made by scripts/test)')
	unless defined $venv && length $venv;

my $py = "$venv/bin/python";
my ($wsgidav, $webdav4) = split ' ',
	`$py -c 'import wsgidav, webdav4; print(wsgidav.__version__, webdav4.__version__)' 2>/dev/null` // '';
plan(skip_all => "no WsgiDAV and webdav4 in $venv (t/requirements.txt)")
	unless $webdav4;

my $t = Test::Nginx->new()->has(qw/http/)->plan(25)
	->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_python_home  $venv;

    client_max_body_size  64m;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/dav_app.py;
        }

        # the same share, its uploads streamed to the app
        location /streamed/ {
            wsgi_pass               %%TESTDIR%%/dav_app.py;
            wsgi_request_buffering  off;
        }
    }
}

EOF

$t->write_file('dav_app.py', <<'EOF');
import os

from wsgidav.wsgidav_app import WsgiDAVApp

here = os.path.dirname(os.path.abspath(__file__))

application = WsgiDAVApp({
    'provider_mapping': {'/': os.path.join(here, 'share')},
    'http_authenticator': {
        'accept_basic': True,
        'accept_digest': False,
        'default_to_digest': False,
    },
    'simple_dc': {'user_mapping': {'*': {'alice': {'password': 'wonderland'}}}},
    'lock_storage': True,
    'verbose': 3,
    'logging': {'enable': True},
})
EOF

# the client side: its findings as JSON
$t->write_file('client.py', <<'EOF');
import hashlib, io, json, struct, sys

from webdav4.client import Client, HTTPError

url, big, top = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}

def pattern(n):
    # as Test::WSGI's pattern_body: big-endian 32-bit counters from 0
    words = (n + 3) // 4
    return struct.pack('>%dI' % words, *range(words))[:n]

try:
    Client(url, auth=('alice', 'wrong')).ls('/')
    out['wrong password'] = 'accepted'
except HTTPError as e:
    out['wrong password'] = 'refused %d' % e.response.status_code

c = Client(url, auth=('alice', 'wonderland'), timeout=120)
c.mkdir(top)
c.mkdir(top + '/sub')
for i in range(100):
    c.upload_fileobj(io.BytesIO(b'file %d\n' % i * (i + 1)), '%s/file-%d.txt' % (top, i))
c.upload_fileobj(io.BytesIO(pattern(big)), top + '/big.bin')

files = c.ls(top, detail=True)
out['files'] = sum(1 for f in files if f['type'] == 'file')
out['directories'] = [f['name'] for f in files if f['type'] == 'directory']
out['bytes listed'] = sum(f['content_length'] or 0 for f in files if f['type'] == 'file')

got = io.BytesIO()
c.download_fileobj(top + '/big.bin', got)
out['big sha256'] = hashlib.sha256(got.getvalue()).hexdigest()

c.copy(top + '/file-1.txt', top + '/sub/copy.txt')
c.move(top + '/file-2.txt', top + '/sub/moved.txt')
c.remove(top + '/file-3.txt')

s = Client(url, auth=('alice', 'wonderland'))
out['sub'] = sorted(f['name'] for f in s.ls(top + '/sub', detail=True))
out['after'] = sum(1 for f in s.ls(top, detail=True) if f['type'] == 'file')
out['deleted exists'] = s.exists(top + '/file-3.txt')
moved = io.BytesIO()
s.download_fileobj(top + '/sub/moved.txt', moved)
out['moved content'] = moved.getvalue().decode()

print(json.dumps(out))
EOF

my $d = $t->testdir();
mkdir "$d/share";
chmod 0777, "$d/share";

$t->run();

diag("WsgiDAV $wsgidav, webdav4 $webdav4");

###############################################################################

my $url = 'http://127.0.0.1:' . port(8080);
$ENV{HOME} = $d;

my %big = (docs => 20 * 1024 * 1024, streamed => 10 * 1024 * 1024 + 3);
my $bytes = 0;
$bytes += length("file $_\n") * ($_ + 1) for 0 .. 99;

for my $top (qw/ docs streamed /) {
	my $name = $top eq 'docs' ? 'buffered' : 'unbuffered';

	my $out = `timeout 300 $py $d/client.py $url/ $big{$top} $top 2>&1`;
	my $r = eval { decode_json($out) } or diag($out);
	$r ||= {};

	my $sum = sha256_hex(pattern_body($big{$top}));

	is($r->{'wrong password'}, 'refused 401', "$name: wrong password refused");
	is($r->{files}, 101, "$name: 101 files listed");
	is($r->{'bytes listed'}, $bytes + $big{$top}, "$name: their sizes");
	is($r->{'big sha256'}, $sum, "$name: the big file downloaded byte for byte");
	is_deeply($r->{sub}, ["$top/sub/copy.txt", "$top/sub/moved.txt"],
		"$name: copied and moved");
	ok(defined $r->{after} && $r->{after} == 99 && defined $r->{'deleted exists'}
		&& !$r->{'deleted exists'},
		"$name: moved and deleted files gone");
	is($r->{'moved content'}, "file 2\n" x 3, "$name: moved file's content");

	# the shared directory
	is(sha256_hex(slurp("$d/share/$top/big.bin")), $sum, "$name: the big file on disk");
	my @files = glob("$d/share/$top/*.txt");
	is(scalar @files, 98, "$name: 98 small files on disk");
}

# a LOCK (curl) keeps another writer out until UNLOCK

my $lockinfo = '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>';
my $out = `curl -sS -i -u alice:wonderland -X LOCK -H 'Content-Type: application/xml' --data '$lockinfo' $url/docs/file-0.txt 2>&1`;
my ($token) = $out =~ /^Lock-Token: <([^>]+)>/mi;
like($out, qr/^HTTP\/1\.1 200/, 'LOCK: 200');
ok($token, 'LOCK: a lock token');

$out = `curl -sS -o /dev/null -w '%{http_code}' -u alice:wonderland -T $d/dav_app.py $url/docs/file-0.txt 2>&1`;
is($out, '423', 'PUT without the token: 423 Locked');

$out = `curl -sS -o /dev/null -w '%{http_code}' -u alice:wonderland -X UNLOCK -H 'Lock-Token: <$token>' $url/docs/file-0.txt 2>&1`;
is($out, '204', 'UNLOCK: 204');

$out = `curl -sS -o /dev/null -w '%{http_code}' -u alice:wonderland -T $d/dav_app.py $url/docs/file-0.txt 2>&1`;
is($out, '204', 'PUT after UNLOCK: 204');

# WsgiDAV's own log lines (its handler on sys.stdout): info, with the
# request; a refused login is its warning, at info too (sys.stdout)

my $log = slurp("$d/error.log");
like($log, qr/\[info\] \d+#\d+: \*\d+ wsgi: [\d:.]+ - INFO +: 127\.0\.0\.1 - alice - \[[^]]+\] "PUT \/docs\/big\.bin" length=20971520,.* -> 201 Created, client: 127\.0\.0\.1, server: localhost, request: "PUT \/docs\/big\.bin HTTP\/1\.1"/,
	'log: WsgiDAV\'s request line at info, with the request');
unlike($log, qr/\[(error|crit|alert)\].*wsgi:/, 'log: no errors from the app');

###############################################################################

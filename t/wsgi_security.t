#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: what an app inside nginx can and cannot
# reach (README "Security model"), checked from inside by a probe app, in
# an nginx that also serves a TLS site from another server block.
#
# Cannot: act as root (its uid and groups are the workers' user; setuid(0)
# fails), open the TLS key file, see environment variables that "env" and
# wsgi_param did not give, hold a descriptor of any file but the logs.
# Can (an in-process module's honest price): see every server block's
# listening sockets, the TLS one included; read nginx's shared memory zones
# and the TLS private key in the process's own memory; read nginx.conf
# where its mode lets the workers' user.

###############################################################################

use warnings;
use strict;

use Test::More;

use Test::Nginx;
use Test::WSGI qw/ slurp /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my ($openssl) = grep { -x } map { "$_/openssl" } split /:/, $ENV{PATH} // '';
plan(skip_all => 'no openssl to make a certificate (scripts/test installs it)')
	unless $openssl;

my $t = Test::Nginx->new()->has(qw/http http_ssl/)->plan(15)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

env PROBE_GIVEN=by-env;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    limit_req_zone  $binary_remote_addr  zone=probe:1m  rate=1000r/s;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            limit_req  zone=probe burst=100;
            wsgi_param  PRIME1  %%PRIME1%%;
            wsgi_param  KEY_FILE  %%TESTDIR%%/site.key;
            wsgi_param  CONF_FILE  %%TESTDIR%%/nginx.conf;
            wsgi_pass  %%TESTDIR%%/probe.py;
        }
    }

    server {
        listen       127.0.0.1:8443 ssl;
        server_name  tls.localhost;

        ssl_certificate      %%TESTDIR%%/site.crt;
        ssl_certificate_key  %%TESTDIR%%/site.key;

        location / {
            return 200 "tls site\n";
        }
    }
}

EOF

my $d = $t->testdir();
system("$openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
	. "-keyout $d/site.key -out $d/site.crt >/dev/null 2>&1") == 0
	or die "openssl req failed\n";
chmod(0600, "$d/site.key");	# root's, as ssl_certificate_key files are
my ($prime1) = `$openssl rsa -in $d/site.key -noout -text 2>/dev/null`
	=~ /^prime1:\n((?:\s+[0-9a-f:]+\n)+)/m;
$prime1 =~ s/[\s:]//g;
$prime1 =~ s/^00//;

# %%PRIME1%% is ours, not the library's
my $conf = $t->read_file('nginx.conf') =~ s/%%PRIME1%%/$prime1/r;
$t->write_file('nginx.conf', $conf);

$t->write_file('probe.py', <<'EOF');
import json
import os
import re


def listening_ports():
    """inode -> port of every listening TCP socket on this machine."""
    out = {}
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == '0A':  # LISTEN
                        out[fields[9]] = int(fields[1].rsplit(':', 1)[1], 16)
        except OSError:
            pass
    return out


def descriptors():
    listening = listening_ports()
    fds = []
    for fd in sorted(os.listdir('/proc/self/fd'), key=int):
        try:
            target = os.readlink('/proc/self/fd/' + fd)
        except OSError:
            continue
        m = re.match(r'socket:\[(\d+)\]', target)
        if m and m.group(1) in listening:
            target = 'listening:%d' % listening[m.group(1)]
        fds.append(target)
    return fds


def in_memory(needle):
    """Whether this process's writable memory holds the bytes."""
    with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith('rw'):
                continue
            start, end = (int(x, 16) for x in fields[0].split('-'))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, OverflowError, ValueError):
                continue
    return False


def attempt(fn):
    try:
        fn()
        return 'allowed'
    except PermissionError:
        return 'denied'
    except OSError as e:
        return 'error: %s' % e


def application(environ, start_response):
    with open('/proc/self/maps') as f:
        maps = f.read()
    prime = bytes.fromhex(environ['PRIME1'])
    report = {
        'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(),
        'groups': sorted(os.getgroups()),
        'key_file': attempt(lambda: open(environ['KEY_FILE']).read()),
        'conf_file': attempt(lambda: open(environ['CONF_FILE']).read()),
        'setuid0': attempt(lambda: os.setuid(0)),
        'environ': sorted(os.environ),
        'fds': descriptors(),
        # nginx's shared memory zones: anonymous shared mappings
        'shared_zones': len(re.findall(r'rw-s .* /dev/zero \(deleted\)', maps)),
        # OpenSSL keeps a BIGNUM's words least significant first
        'key_in_memory': in_memory(prime[::-1]),
    }
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(report).encode()]
EOF

$t->run();

###############################################################################

my $r = http_get('/');
my ($json) = $r =~ /\r\n\r\n(.*)/s;
my $p = eval { JSON::PP::decode_json($json) } if eval { require JSON::PP; 1 };
ok($p, 'the probe answers') or diag($r);
$p ||= {};

# who the app is: nginx's "user" (root when the test runs the workers as
# root, for a Python that nobody cannot read)
my $globals = $ENV{TEST_NGINX_GLOBALS} // '';
my ($user) = $globals =~ /\buser\s+(\S+?)\s*;/;
$user //= 'nobody';
my ($uid, $gid) = (getpwnam($user))[2, 3];
my $root_workers = $uid == 0;

is($p->{uid}, $uid, "the app runs as the workers' user ($user)");
is($p->{euid}, $uid, 'effective uid too');

SKIP: {
skip 'the workers run as root here (user root in TEST_NGINX_GLOBALS)', 4
	if $root_workers;

ok(!grep({ $_ == 0 } @{$p->{groups} || []}) && $p->{gid} != 0, 'no root group');
is($p->{setuid0}, 'denied', 'os.setuid(0) fails');
is($p->{key_file}, 'denied', 'the TLS key file cannot be opened');
is($p->{conf_file}, 'allowed', 'nginx.conf can be read where its mode lets the workers\' user (0644 here)');
}

# environment: only what "env" gives, what nginx keeps or sets itself (TZ;
# NGINX and NGINX_BPF_MAPS, its own for binary upgrades and QUIC), and
# Python's own (LC_CTYPE, PEP 538)
my %env_allowed = map { $_ => 1 } qw/ TZ NGINX NGINX_BPF_MAPS PROBE_GIVEN LC_CTYPE /;
$env_allowed{$1} = 1 while $globals =~ /\benv\s+([A-Za-z_][A-Za-z0-9_]*)/g;
my @extra = grep { !$env_allowed{$_} } @{$p->{environ} || []};
is("@extra", '', 'no environment beyond "env" directives') or diag("@{$p->{environ} || []}");
ok(grep({ $_ eq 'PROBE_GIVEN' } @{$p->{environ} || []}), 'what "env" gives is there');

# descriptors: what the document lists, nothing else
my @fds = @{$p->{fds} || []};
my @listening = sort { $a <=> $b } map { /^listening:(\d+)$/ ? $1 : () } @fds;
my @ours = sort { $a <=> $b } map { Test::Nginx::port($_) } 8080, 8443;
is("@listening", "@ours", 'the app sees the listening sockets of every server block, the TLS one included');
ok(!grep({ /site\.(key|crt)/ } @fds), 'no descriptor of the key or certificate file');
my @files = grep { m{^/} && !m{^/dev/null$} } @fds;
my @unexpected = grep { !m{^\Q$d\E/(error|access)\.log$} } @files;
is("@unexpected", '', 'the only files open are nginx\'s logs') or diag("@fds");
ok(!grep({ !m{^(/|socket:|listening:|anon_inode:|pipe:)} } @fds), 'every descriptor is of a documented kind')
	or diag("@fds");

# memory: the in-process price
ok($p->{shared_zones} >= 1, 'nginx\'s shared memory zone (limit_req_zone) is mapped into the app\'s process');
ok($p->{key_in_memory}, 'the TLS private key is in the app\'s process memory (nginx loaded it before the fork)');

###############################################################################

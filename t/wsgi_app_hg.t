#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: Mercurial's hgweb (from the test venv,
# loaded as its contrib/hgweb.wsgi does, demandimport on) driven by the real hg
# client.  Importing Mercurial takes sys.stdout.buffer and sys.stderr.buffer
# (mercurial/utils/procutil.py): the app could not load before they were
# there.  A repository of 200 changesets is cloned; a changeset with a
# 12 MiB file is pushed, through wsgi_request_buffering on and off; a clone
# made before pulls it; fresh clones have the file byte for byte, every
# repository passes hg verify, and hgweb's own raw-file view serves the
# same bytes.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::SHA qw/ sha256_hex /;

use Test::Nginx qw/ :DEFAULT /;
use Test::WSGI qw/ slurp pattern_body /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $venv = $ENV{TEST_WSGI_VENV};
plan(skip_all => 'TEST_WSGI_VENV not set (a venv with mercurial from '
	. 't/requirements.txt, made by scripts/test)')
	unless defined $venv && length $venv;

my $hg = "$venv/bin/hg";
my $version = `$venv/bin/python -c 'from mercurial import util; print(util.version().decode())' 2>/dev/null`;
chomp $version;
plan(skip_all => "no mercurial in $venv (t/requirements.txt installs it "
	. 'on Python 3.9 to 3.14: no wheel for later ones yet)') unless $version;

my $t = Test::Nginx->new()->has(qw/http/)->plan(19)
	->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

# the server's Mercurial configuration: the repository's own .hg/hgrc
# belongs to whoever runs the tests, not to the workers' user
env HGRCPATH=%%TESTDIR%%/server.hgrc;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_python_home  $venv;

    log_format  hg  '\$request_method \$uri \$status \$request_length';

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        access_log  %%TESTDIR%%/hg.log  hg;

        client_max_body_size  64m;

        location /buffered/ {
            wsgi_pass         %%TESTDIR%%/hgweb.wsgi;
            wsgi_script_name  /buffered;
        }

        location /unbuffered/ {
            wsgi_pass               %%TESTDIR%%/hgweb.wsgi;
            wsgi_script_name        /unbuffered;
            wsgi_request_buffering  off;
        }
    }
}

EOF

# Mercurial's contrib/hgweb.wsgi, as its users deploy it: a .wsgi script
$t->write_file('hgweb.wsgi', <<'EOF');
import os

config = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'repo').encode()

from mercurial import demandimport; demandimport.enable()
from mercurial.hgweb import hgweb
application = hgweb(config)
EOF

my $d = $t->testdir();

# the client's hg: no user or system configuration, plain output
$ENV{HOME} = $d;
$ENV{HGRCPATH} = '';
$ENV{HGPLAIN} = 1;
$ENV{HGUSER} = 'Test <test@example.com>';
$ENV{HGENCODING} = 'utf-8';

# the served repository: 200 changesets, each adding a file; pushes over
# plain HTTP allowed; writable by the workers (nobody when run as root)
hg('init', "$d/repo") or die "hg init failed\n";
hg('-R', "$d/repo", 'debugbuilddag', '--new-file', '+200') or die "hg debugbuilddag failed\n";
$t->write_file('repo/.hg/hgrc', "[web]\nallow-push = *\npush_ssl = false\n");
$t->write_file('server.hgrc', "[trusted]\nusers = *\ngroups = *\n");
system('chmod', '-R', 'a+rwX', "$d/repo") == 0 or die "chmod failed\n";

$t->run();

diag("Mercurial $version (hgweb)");

###############################################################################

my $url = 'http://127.0.0.1:' . port(8080);
my $repo = "$d/repo";
my $tip = hg_out('-R', $repo, 'log', '-r', 'tip', '-T', '{node}');

# clone

ok(hg('clone', '-q', '-U', "$url/buffered/", "$d/early"), 'clone');
is(count("$d/early"), 200, 'clone: 200 changesets');
is(hg_out('-R', "$d/early", 'log', '-r', 'tip', '-T', '{node}'), $tip,
	'clone: same tip as the server');
ok(hg('-R', "$d/early", 'verify', '-q'), 'clone: hg verify');

# push a changeset with a 12 MiB file, once per location

my %size = (buffered => 12 * 1024 * 1024, unbuffered => 10 * 1024 * 1024 + 17);
my %sum;

for my $loc (qw/ buffered unbuffered /) {
	my $work = "$d/work-$loc";
	ok(hg('clone', '-q', "$url/$loc/", $work), "$loc: clone with a working copy");
	my $data = pattern_body($size{$loc}) . $loc;
	$sum{$loc} = sha256_hex($data);
	$t->write_file("work-$loc/big-$loc.bin", $data);
	hg('-R', $work, 'add', '-q', "$work/big-$loc.bin");
	hg('-R', $work, 'commit', '-q', '-m', "a big file through $loc");
	ok(hg('-R', $work, 'push', '-q', "$url/$loc/"), "$loc: push");
	is(hg_out('-R', $repo, 'log', '-r', 'tip', '-T', '{desc}'), "a big file through $loc",
		"$loc: the server has the changeset");
}

like(slurp("$d/hg.log"), qr/^POST \/unbuffered\/ 200 (\d{8,})$/m,
	'a push carried the bundle in its request body');

is(count($repo), 202, 'server: 202 changesets');
ok(hg('-R', $repo, 'verify', '-q'), 'server: hg verify');

# the clone made before pulls both

ok(hg('-R', "$d/early", 'pull', '-q', "$url/unbuffered/"), 'pull');
is(count("$d/early"), 202, 'pull: 202 changesets');

# a fresh clone has the files byte for byte

ok(hg('clone', '-q', "$url/buffered/", "$d/fresh"), 'fresh clone');
is(join(' ', map { sha256_hex(slurp("$d/fresh/big-$_.bin")) eq $sum{$_} ? 'same' : 'differs' }
	qw/ buffered unbuffered /), 'same same', 'fresh clone: both files byte for byte');

# hgweb's web view of the same file

my $r = http_get('/buffered/raw-file/tip/big-unbuffered.bin');
my ($body) = $r =~ /\x0d\x0a\x0d\x0a(.*)\z/s;
is(sha256_hex($body // ''), $sum{unbuffered}, 'hgweb raw-file: the same bytes');

# nothing from the app at error level: Mercurial loaded and served

unlike(slurp("$d/error.log"), qr/\[(error|crit|alert)\].*wsgi:/, 'log: no errors from the app');

###############################################################################

sub hg {
	my @args = @_;
	my $out = `'$hg' @{[ map { "'$_'" } @args ]} 2>&1`;
	diag("hg @args: $out") if $?;
	return $? == 0;
}

sub hg_out {
	my @args = @_;
	my $out = `'$hg' @{[ map { "'$_'" } @args ]} 2>/dev/null`;
	return $out;
}

sub count {
	my ($r) = @_;
	my @nodes = split /\n/, hg_out('-R', $r, 'log', '-T', '{node}\n');
	return scalar @nodes;
}

###############################################################################

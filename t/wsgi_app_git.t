#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: a git smart-HTTP server (dulwich.web from
# the test venv) driven by the real git client.  A repository of 300
# commits is cloned, fetched after 20 more, and pushed to with a commit
# carrying a 12 MiB file and a small http.postBuffer, so that the pack goes
# up chunked (the access log shows it); a fresh clone then has the file,
# byte for byte.  Pushed through wsgi_request_buffering on and off.

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::SHA qw/ sha256_hex /;

use Test::Nginx qw/ :DEFAULT /;
use Test::WSGI qw/ slurp /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $venv = $ENV{TEST_WSGI_VENV};
plan(skip_all => 'TEST_WSGI_VENV not set (a venv with dulwich from '
	. 't/requirements.txt, made by scripts/test)')
	unless defined $venv && length $venv;

my $dulwich = `$venv/bin/python -c 'import dulwich; print(".".join(map(str, dulwich.__version__)))' 2>/dev/null`;
chomp $dulwich;
plan(skip_all => "no dulwich in $venv (t/requirements.txt)") unless $dulwich;

my $git = `git --version 2>/dev/null` // '';
plan(skip_all => 'git not found (scripts/test installs it)')
	unless $git =~ /^git version (\S+)/;
$git = $1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(21)
	->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_python_home  $venv;

    log_format  git  '\$request_method \$uri \$status te=\$http_transfer_encoding';

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        access_log  %%TESTDIR%%/git.log  git;

        client_max_body_size  64m;

        location /buffered/ {
            wsgi_pass         %%TESTDIR%%/git_app.py;
            wsgi_script_name  /buffered;
        }

        location /unbuffered/ {
            wsgi_pass               %%TESTDIR%%/git_app.py;
            wsgi_script_name        /unbuffered;
            wsgi_request_buffering  off;
        }
    }
}

EOF

# the repository at /repo.git, as "dulwich web" serves one
$t->write_file('git_app.py', <<'EOF');
import os

from dulwich.repo import Repo
from dulwich.server import DictBackend
from dulwich.web import make_wsgi_chain

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'repo.git')

application = make_wsgi_chain(DictBackend({'/repo.git': Repo(REPO)}))
EOF

my $d = $t->testdir();

# the client's git: no user or system configuration, never a prompt
$ENV{HOME} = $d;
$ENV{GIT_CONFIG_NOSYSTEM} = 1;
$ENV{GIT_TERMINAL_PROMPT} = 0;
$ENV{GIT_AUTHOR_NAME} = $ENV{GIT_COMMITTER_NAME} = 'Test';
$ENV{GIT_AUTHOR_EMAIL} = $ENV{GIT_COMMITTER_EMAIL} = 'test@example.com';

# the served repository: 300 commits made by git fast-import, writable by
# the workers (nobody when the tests run as root)
git('init', '-q', '--bare', "$d/repo.git") or die "git init failed\n";
git('--git-dir', "$d/repo.git", 'symbolic-ref', 'HEAD', 'refs/heads/main');
fast_import(1, 300) or die "git fast-import failed\n";

$t->run();

diag("dulwich $dulwich (dulwich.web), git $git");

###############################################################################

my $url = 'http://127.0.0.1:' . port(8080);
my $repo = "$d/repo.git";

# clone

ok(git('clone', '-q', "$url/buffered/repo.git", "$d/a"), 'clone');
is(git_out("$d/a", 'rev-list', '--count', 'HEAD'), 300, 'clone: 300 commits');
is(git_out("$d/a", 'rev-parse', 'HEAD'), rev($repo, 'main'),
	'clone: the served tip');
is(slurp("$d/a/counter.txt"), "300\n", 'clone: work tree');

# fetch after the served repository moved on

fast_import(301, 320) or die "git fast-import failed\n";
ok(git('-C', "$d/a", 'fetch', '-q', 'origin'), 'fetch');
is(git_out("$d/a", 'rev-list', '--count', 'origin/main'), 320,
	'fetch: 320 commits');
is(git_out("$d/a", 'rev-parse', 'origin/main'), rev($repo, 'main'),
	'fetch: the served tip');
ok(git('-C', "$d/a", 'merge', '-q', '--ff-only', 'origin/main'), 'fast-forward');

# push a 12 MiB file, incompressible, with a 64 KiB http.postBuffer: git
# sends the pack chunked

my $big1 = random_bytes(12 * 1024 * 1024);
$t->write_file('a/big1.bin', $big1);
git('-C', "$d/a", 'add', 'big1.bin');
git('-C', "$d/a", 'commit', '-q', '-m', 'a 12 MiB file');

my $off = -s "$d/git.log";
ok(git('-C', "$d/a", '-c', 'http.postBuffer=65536', 'push', '-q', 'origin',
	'main'), 'push 12 MiB: git succeeds');
is(rev($repo, 'main'), git_out("$d/a", 'rev-parse', 'HEAD'),
	'push 12 MiB: the served branch moved');
like(substr(slurp("$d/git.log"), $off),
	qr!^POST /buffered/repo\.git/git-receive-pack 200 te=chunked$!m,
	'push 12 MiB: the pack went up chunked');

# a fresh clone has the file, byte for byte

ok(git('clone', '-q', "$url/buffered/repo.git", "$d/b"), 'clone again');
is(git_out("$d/b", 'rev-list', '--count', 'HEAD'), 321, 'clone again: 321 commits');
is(sha256_hex(slurp("$d/b/big1.bin")), sha256_hex($big1),
	'clone again: the 12 MiB file');

# the same with the body streamed to the app (wsgi_request_buffering off)

my $big2 = random_bytes(10 * 1024 * 1024 + 12345);
$t->write_file('b/big2.bin', $big2);
git('-C', "$d/b", 'add', 'big2.bin');
git('-C', "$d/b", 'commit', '-q', '-m', 'a 10 MiB file');
git('-C', "$d/b", 'remote', 'set-url', 'origin', "$url/unbuffered/repo.git");

$off = -s "$d/git.log";
ok(git('-C', "$d/b", '-c', 'http.postBuffer=65536', 'push', '-q', 'origin',
	'main'), 'unbuffered push 10 MiB: git succeeds');
is(rev($repo, 'main'), git_out("$d/b", 'rev-parse', 'HEAD'),
	'unbuffered push 10 MiB: the served branch moved');
like(substr(slurp("$d/git.log"), $off),
	qr!^POST /unbuffered/repo\.git/git-receive-pack 200 te=chunked$!m,
	'unbuffered push 10 MiB: the pack went up chunked');

ok(git('clone', '-q', "$url/unbuffered/repo.git", "$d/c"),
	'unbuffered clone');
is(sha256_hex(slurp("$d/c/big2.bin")), sha256_hex($big2),
	'unbuffered clone: the 10 MiB file');
is(sha256_hex(slurp("$d/c/big1.bin")), sha256_hex($big1),
	'unbuffered clone: the 12 MiB file');
ok(git('-C', "$d/c", 'fsck', '--strict', '--no-progress'),
	'unbuffered clone: git fsck');

###############################################################################

# runs git (bounded in time); true if it exited 0, its output in diag if not
sub git {
	my (@args) = @_;
	my $out = `timeout 120 git @{[ map { quotemeta } @args ]} 2>&1`;
	return 1 if $? == 0;
	diag("git @args: exit " . ($? >> 8) . "\n$out");
	return 0;
}

# the output of git -C $dir @args, without the final newline
sub git_out {
	my ($dir, @args) = @_;
	my $out = `timeout 60 git -C \Q$dir\E @{[ map { quotemeta } @args ]} 2>/dev/null`;
	chomp $out;
	return $out;
}

sub rev {
	my ($repo, $ref) = @_;
	return git_out($repo, 'rev-parse', $ref);
}

# commits $from .. $to onto the served main, each writing counter.txt and
# one file in every tenth; then makes the repository the workers' too
sub fast_import {
	my ($from, $to) = @_;
	my $s = '';
	for my $i ($from .. $to) {
		my $msg = "commit $i\n";
		$s .= "commit refs/heads/main\ncommitter Test <test\@example.com> "
			. (1700000000 + $i * 60) . " +0000\n"
			. 'data ' . length($msg) . "\n$msg";
		$s .= "from refs/heads/main^0\n" if $i == $from && $from > 1;
		$s .= "M 644 inline counter.txt\ndata " . length("$i\n") . "\n$i\n";
		$s .= "M 644 inline files/$i.txt\ndata " . length("file $i\n")
			. "\nfile $i\n" if $i % 10 == 0;
		$s .= "\n";
	}
	open my $fh, '|-', 'git', '--git-dir', "$d/repo.git", 'fast-import',
		'--quiet' or return 0;
	print $fh $s;
	close $fh or return 0;
	system('chmod', '-R', 'a+rwX', "$d/repo.git") == 0 or return 0;
	return 1;
}

sub random_bytes {
	my ($len) = @_;
	open my $fh, '<', '/dev/urandom' or die "Can't open /dev/urandom: $!\n";
	binmode $fh;
	read($fh, my $buf, $len) == $len or die "short read from /dev/urandom\n";
	return $buf;
}

###############################################################################

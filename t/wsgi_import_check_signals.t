#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: wsgi_import_check and "nginx -s".  The
# signalling process parses the configuration too (to find the pid file):
# with an app on disk that does not import (a deploy not yet reloaded, or
# one whose reload was refused), "nginx -s reload" is refused, but
# "nginx -s reopen", "-s quit" and "-s stop" still reach the master: the
# check must not keep an operator from rotating the logs or stopping nginx.
# Found by scripts/soak (its final "nginx -s quit" never reached the master).

###############################################################################

use warnings;
use strict;

use Test::More;
use POSIX ();

use Test::Nginx qw/ :DEFAULT http_content /;
use Test::WSGI qw/ slurp poll /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/)->plan(11)
	->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_import_check  on;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  %%TESTDIR%%/app.py;
        }
    }
}

EOF

my $good = <<'EOF';
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'good']
EOF
$t->write_file('app.py', $good);

$t->run();

# (copied: a named sub that used $t would keep it alive past the plan)
my $d = $t->testdir();

# nginx -s SIGNAL with the same prefix and configuration as the running
# instance; returns the exit status and the output.  The configuration
# names the pid file itself (%%TEST_GLOBALS%%), so no -g is needed.
sub signal {
	my ($sig) = @_;
	my @cmd = ($Test::Nginx::NGINX, '-p', "$d/", '-c', 'nginx.conf',
		'-e', 'signal.log', '-s', $sig);
	my $pid = open(my $fh, '-|') // die "Can't fork: $!";
	if ($pid == 0) {
		open STDERR, '>&', \*STDOUT;
		exec(@cmd) or POSIX::_exit(127);
	}
	local $/;
	my $out = <$fh> // '';
	close $fh;
	return ($? >> 8, $out);
}

sub master { slurp("$d/nginx.pid") =~ /(\d+)/ ? $1 : undef }

###############################################################################

like(http_get('/'), qr/good\z/, 'serves');
my $master = master();

# a broken deploy lands on disk
$t->write_file('app.py', <<'EOF');
def application(environ, start_response)
    pass
EOF

my ($rc, $out) = signal('reload');
isnt($rc, 0, 'reload onto the broken app: refused');
like($out, qr/import check failed/, 'reload onto the broken app: says why');
like(http_get('/'), qr/good\z/, 'the old app keeps serving');

my $off = length slurp("$d/error.log");
($rc, $out) = signal('reopen');
is($rc, 0, 'reopen with a broken app on disk: signal sent') or diag($out);
ok(poll(sub { substr(slurp("$d/error.log"), $off) =~ /reopening logs/ }, 5),
	'reopen: the master reopened the logs');
unlike($out, qr/import check/, 'reopen: no import check');

($rc, $out) = signal('quit');
is($rc, 0, 'quit with a broken app on disk: signal sent') or diag($out);
ok(poll(sub { !kill 0, $master }, 15), 'quit: nginx stopped');
unlike($out, qr/import check/, 'quit: no import check');

# the app fixed, nginx starts again (and the end of the test has an nginx
# to stop: upstream's Test::Nginx reads the pid file, which quit removed)

$t->write_file('app.py', $good);
$t->run();
like(http_get('/'), qr/good\z/, 'started again with the app fixed');

###############################################################################

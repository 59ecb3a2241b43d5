#!/usr/bin/perl

# Tests for the example configurations in nginx-conf/: each one, with its
# paths moved into the test directory (the module's path, /etc, /srv,
# /var, /run) and stub apps where it expects them, passes "nginx -t"
# (which, with wsgi_import_check on, also imports the apps); then each is
# started, listening on local test ports, and answers as its comments say.

###############################################################################

use warnings;
use strict;

use Test::More;

use File::Basename qw/ dirname /;
use File::Path qw/ mkpath /;
use POSIX qw/ WNOHANG /;
use Time::HiRes qw/ sleep time /;

use Test::Nginx;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $examples = dirname(__FILE__) . '/../nginx-conf';
my @names = qw/ minimal flask django tls-http2 multi-app status
	scale-out scale-out-node /;

my $venv = $ENV{TEST_WSGI_VENV};
$venv = undef unless defined $venv && -x "$venv/bin/python";

my ($openssl) = grep { -x } map { "$_/openssl" } split /:/, $ENV{PATH} // '';

my $t = Test::Nginx->new()->has(qw/http http_ssl http_v2 realip/)->plan(66);
my $d = $t->testdir();

# the examples run their workers as www-data (or this user): they must reach
# the files below, and upstream's Test::Nginx makes its directory 0700
chmod 0755, $d;

my ($module) = ($ENV{TEST_NGINX_GLOBALS} // '')
	=~ /load_module\s+(\S*ngx_http_wsgi_module\.so)\s*;/;

# scripts/test runs the workers as root when nobody cannot read the Python
# (a pyenv one under /root): so do the examples, which nginx -t would
# otherwise refuse for that reason
my $root_workers = ($ENV{TEST_NGINX_GLOBALS} // '') =~ /\buser\s+root\s*;/;
my $user = $root_workers ? 'root'
	: getpwnam('www-data') ? 'www-data' : (getpwuid($>))[0];

###############################################################################

# stub apps and files, under each example's own root

sub wf {
	my ($path, $content) = @_;
	mkpath(dirname($path), 0, 0755);
	open my $fh, '>', $path or die "Can't create $path: $!";
	print $fh $content;
	close $fh;
	chmod 0644, $path;
}

# a WSGI app answering "<name> script=... path=... scheme=... addr=..."
sub stub {
	my ($name, $callable) = @_;
	$callable //= 'application';
	return <<"EOF";
def $callable(environ, start_response):
    body = '$name script=%s path=%s scheme=%s addr=%s\\n' % (
        environ['SCRIPT_NAME'], environ['PATH_INFO'],
        environ['wsgi.url_scheme'], environ['REMOTE_ADDR'])
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
EOF
}

# a virtualenv: the test venv if there is one (so flask imports), else an
# empty one made here (the stubs then need nothing from it)
my $any_venv = $venv;

sub venv {
	my ($path) = @_;
	mkpath(dirname($path), 0, 0755);
	unless ($any_venv) {
		$any_venv = "$d/empty-venv";
		system("/usr/bin/python3 -m venv --without-pip $any_venv") == 0
			or die "Can't make a venv with /usr/bin/python3\n";
	}
	symlink($any_venv, $path) or die "Can't symlink $path: $!";
}

my %stubs = (
	minimal => sub {
		wf("$_[0]/srv/hello/app.py", stub('minimal'));
	},
	flask => sub {
		my ($r) = @_;
		venv("$r/srv/flaskapp/venv");
		wf("$r/srv/flaskapp/myapp/__init__.py", $venv ? <<'EOF' : stub('flask', 'app'));
from flask import Flask, request, url_for

app = Flask(__name__, static_folder=None)

@app.route('/')
def index():
    return f'flask script={request.script_root} path={request.path} ' \
           f'url_for={url_for("index")}\n'
EOF
		wf("$r/srv/flaskapp/myapp/static/hello.txt", "flask static\n");
	},
	django => sub {
		my ($r) = @_;
		venv("$r/srv/mysite/venv");
		wf("$r/srv/mysite/mysite/__init__.py", '');
		wf("$r/srv/mysite/mysite/wsgi.py", stub('django'));
		wf("$r/srv/mysite/staticfiles/css/site.css", "django static\n");
		wf("$r/srv/mysite/media/upload.txt", "django media\n");
	},
	'tls-http2' => sub {
		my ($r) = @_;
		wf("$r/srv/app/app.py", stub('tls'));
		my $ssl = "$r/etc/ssl/app.example.com";
		mkpath($ssl, 0, 0755);
		system("$openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
			. "-subj /CN=app.example.com -keyout $ssl/privkey.pem "
			. "-out $ssl/fullchain.pem >/dev/null 2>&1") == 0
			or die "openssl req failed\n";
		chmod 0644, "$ssl/privkey.pem";
	},
	'multi-app' => sub {
		my ($r) = @_;
		venv("$r/srv/apps/venv");
		wf("$r/srv/apps/api/__init__.py", '');
		wf("$r/srv/apps/api/app.py", stub('api', 'app'));
		wf("$r/srv/apps/blogproject/blog/__init__.py", '');
		wf("$r/srv/apps/blogproject/blog/wsgi.py", stub('blog'));
		wf("$r/srv/apps/site/main.py", stub('site'));
		wf("$r/srv/apps/static/logo.txt", "multi static\n");
	},
	status => sub {
		wf("$_[0]/srv/app/app.py", stub('status-app'));
	},
	'scale-out' => sub {
		wf("$_[0]/srv/mysite/staticfiles/edge.txt", "edge static\n");
	},
	'scale-out-node' => sub {
		my ($r) = @_;
		venv("$r/srv/mysite/venv");
		wf("$r/srv/mysite/mysite/__init__.py", '');
		wf("$r/srv/mysite/mysite/wsgi.py", stub('node'));
	},
);

# the example with its paths in $root; listen ports taken from %$ports
# (example port => test port), upstream servers pointed at $upstream

sub rewrite {
	my ($t, $conf, $root, $ports, $upstream) = @_;

	if ($module) {
		$conf =~ s!^load_module\s+\S+ngx_http_wsgi_module\.so;!load_module $module;!m;
	} else {
		$conf =~ s!^load_module\s+\S+ngx_http_wsgi_module\.so;!!m;
	}
	$conf =~ s!(?<=\s)/(etc|srv|var|run)/!$root/$1/!g;
	$conf =~ s!^(\s*user\s+)www-data;!$1$user;!m;
	$conf = "user root;\n$conf" if $root_workers && $conf !~ /^\s*user\s/m;
	$conf =~ s{^(\s*listen\s+)(\d+)\b}{
		$1 . '127.0.0.1:' . ($ports->{$2} // die "no test port for $2\n")
	}gme;
	$conf =~ s!(?<=server  )10\.0\.0\.1\d:8080!$upstream!g if $upstream;
	# "http2 on" is nginx 1.25.1+; older nginx says "listen ... ssl http2"
	$conf =~ s!^(\s*listen\s+\S+\s+ssl);\n\s*http2\s+on;\n!$1 http2;\n!gm
		unless $t->has_version('1.25.1');

	return $conf;
}

my $next_port = 8081;
my (%root, %ports);

for my $name (@names) {
	my $root = $root{$name} = "$d/$name";
	mkpath("$root/$_", 0, 0755) for qw{ conf logs run var/log/nginx etc/nginx };
	wf("$root/etc/nginx/mime.types", <<'EOF');
types {
    text/html  html;
    text/css   css;
    text/plain txt;
}
EOF

	open my $fh, '<', "$examples/$name.conf"
		or die "Can't open $examples/$name.conf: $!";
	my $conf = do { local $/; <$fh> };

	my %p;
	$p{$_} //= port($next_port++) for $conf =~ /^\s*listen\s+(\d+)/gm;
	$ports{$name} = \%p;

	$stubs{$name}->($root) unless $name eq 'tls-http2' && !$openssl;
	$root{"$name.conf"} = $conf;
}

# the edge's upstream servers all point at the one test node

for my $name (@names) {
	my $node = $name eq 'scale-out'
		? '127.0.0.1:' . $ports{'scale-out-node'}{8080} : undef;
	wf("$root{$name}/conf/nginx.conf",
		rewrite($t, delete $root{"$name.conf"}, $root{$name}, $ports{$name},
			$node));
}

###############################################################################

# nginx -t: each example parses, and its apps import

for my $name (@names) {
	SKIP: {
	skip "no openssl to make a certificate", 3
		if $name eq 'tls-http2' && !$openssl;

	my $root = $root{$name};
	my $out = `$Test::Nginx::NGINX -p $root/ -c conf/nginx.conf -t 2>&1`;
	is($? >> 8, 0, "$name.conf: nginx -t exit status") or diag($out);
	like($out, qr/syntax is ok/, "$name.conf: syntax is ok");
	like($out, qr/test is successful/, "$name.conf: test is successful");

	}
}

###############################################################################

# and they serve

my %running;

sub start {
	my ($name) = @_;
	my $root = $root{$name};
	system($Test::Nginx::NGINX, '-p', "$root/", '-c', 'conf/nginx.conf') == 0
		or return 0;
	my $end = time + 10;
	until (-s "$root/run/nginx.pid") {
		return 0 if time > $end;
		sleep 0.02;
	}
	open my $fh, '<', "$root/run/nginx.pid" or return 0;
	my ($pid) = <$fh> =~ /(\d+)/;
	$running{$name} = $pid;
	return 1;
}

sub stop {
	my ($name) = @_;
	my $pid = delete $running{$name} or return;
	kill 'QUIT', $pid;
	my $end = time + 15;
	while (alive($pid)) {
		last if time > $end;
		sleep 0.02;
	}
	kill 'KILL', $pid if alive($pid);
}

# the daemonized master is not our child: once it has exited it may stay
# a zombie until init reaps it
sub alive {
	my ($pid) = @_;
	return 0 unless kill 0, $pid;
	open my $fh, '<', "/proc/$pid/stat" or return 1;
	my ($state) = (<$fh> // '') =~ /^\d+ \(.*\) (\S)/s;
	return !(defined $state && $state eq 'Z');
}

END { stop($_) for keys %running }

sub get {
	my ($name, $port, $uri, %extra) = @_;
	my $host = delete $extra{host} // 'localhost';
	return http("GET $uri HTTP/1.0\nHost: $host\n"
		. ($extra{headers} // '') . "\n",
		PeerAddr => "127.0.0.1:" . $ports{$name}{$port}, %extra);
}

sub log_clean {
	my ($name) = @_;
	open my $fh, '<', "$root{$name}/var/log/nginx/error.log" or return 1;
	my @bad = grep { /\[(alert|crit|emerg)\]/ } <$fh>;
	diag(@bad) if @bad;
	return !@bad;
}

my $ok_body = qr/^HTTP\/1\.1 200 .*\x0d\x0a\x0d\x0a/s;

# minimal

ok(start('minimal'), 'minimal: started');
like(get('minimal', 8080, '/x?y=1'),
	qr/${ok_body}minimal script= path=\/x scheme=http addr=127\.0\.0\.1\n\z/,
	'minimal: app');
stop('minimal');
ok(log_clean('minimal'), 'minimal: error log');

# flask

ok(start('flask'), 'flask: started');
like(get('flask', 80, '/'), $venv
	? qr/${ok_body}flask script= path=\/ url_for=\/\n\z/
	: qr/${ok_body}flask script= path=\//,
	'flask: app');
like(get('flask', 80, '/static/hello.txt'),
	qr/${ok_body}flask static\n\z/, 'flask: static from nginx');
like(get('flask', 80, '/static/hello.txt'), qr/^Expires: /m,
	'flask: static expires');
stop('flask');
ok(log_clean('flask'), 'flask: error log');

# django

ok(start('django'), 'django: started');
like(get('django', 80, '/blog/1/'), qr/${ok_body}django script= path=\/blog\/1\//,
	'django: app');
like(get('django', 80, '/static/css/site.css'),
	qr/^Content-Type: text\/css\x0d\x0a.*\x0d\x0a\x0d\x0adjango static\n\z/ms,
	'django: static');
like(get('django', 80, '/media/upload.txt'), qr/${ok_body}django media\n\z/,
	'django: media');
like(get('django', 80, '/static/nothing.css'), qr/^HTTP\/1\.1 404 /,
	'django: static 404 from nginx');
stop('django');
ok(log_clean('django'), 'django: error log');

# tls-http2

SKIP: {
skip 'no openssl', 6 unless $openssl;

ok(start('tls-http2'), 'tls-http2: started');
like(get('tls-http2', 80, '/path?q=1', host => 'app.example.com'),
	qr/^HTTP\/1\.1 301 .*^Location: https:\/\/app\.example\.com\/path\?q=1\x0d$/ms,
	'tls-http2: http redirects to https');

my $p = $ports{'tls-http2'}{443};
my $s_client = "$openssl s_client -connect 127.0.0.1:$p "
	. "-servername app.example.com";

my $alpn = `$s_client -alpn h2,http/1.1 </dev/null 2>&1`;
like($alpn, qr/^ALPN protocol: h2$/m, 'tls-http2: http2 negotiated');

my $https = `printf 'GET /secure HTTP/1.0\\r\\nHost: app.example.com\\r\\n\\r\\n' | $s_client -alpn http/1.1 -quiet 2>/dev/null`;
like($https, qr/^HTTP\/1\.1 200 .*tls script= path=\/secure scheme=https /ms,
	'tls-http2: app over https sees the scheme');
like($https, qr/^Strict-Transport-Security: max-age=31536000\x0d$/m,
	'tls-http2: hsts');

stop('tls-http2');
ok(log_clean('tls-http2'), 'tls-http2: error log');

}

# multi-app

ok(start('multi-app'), 'multi-app: started');
like(get('multi-app', 80, '/api/users/7'),
	qr/${ok_body}api script=\/api path=\/users\/7 /, 'multi-app: api');
like(get('multi-app', 80, '/blog/2024/post/'),
	qr/${ok_body}blog script=\/blog path=\/2024\/post\/ /, 'multi-app: blog');
like(get('multi-app', 80, '/about'),
	qr/${ok_body}site script= path=\/about /, 'multi-app: site');
like(get('multi-app', 80, '/api'),
	qr/^HTTP\/1\.1 301 .*^Location: http:\/\/localhost(:\d+)?\/api\/\x0d$/ms,
	'multi-app: /api redirect');
like(get('multi-app', 80, '/static/logo.txt'),
	qr/${ok_body}multi static\n\z/, 'multi-app: static');
stop('multi-app');
ok(log_clean('multi-app'), 'multi-app: error log');

# status: allowed from 127.0.0.1, denied from another address

ok(start('status'), 'status: started');
like(get('status', 80, '/'), qr/${ok_body}status-app /, 'status: app');
like(get('status', 80, '/wsgi-status'),
	qr/${ok_body}\{"pid":\d+,.*"requests":\d+,/s, 'status: json');
like(get('status', 80, '/wsgi-status', LocalAddr => '127.0.0.2'),
	qr/^HTTP\/1\.1 403 /, 'status: denied to others');
like(get('status', 9113, '/metrics'),
	qr/^Content-Type: text\/plain; version=0\.0\.4\x0d\x0a.*^# TYPE wsgi_requests_total counter$/ms,
	'status: prometheus on its own port');
like(get('status', 9113, '/'), qr/^HTTP\/1\.1 404 /, 'status: port has only /metrics');
stop('status');
ok(log_clean('status'), 'status: error log');

# scale-out: the edge in front of one node (all upstream servers point
# at it); the node trusts X-Forwarded-Proto

ok(start('scale-out-node'), 'scale-out-node: started');
ok(start('scale-out'), 'scale-out: started');

like(get('scale-out', 80, '/orders/5'),
	qr/${ok_body}node script= path=\/orders\/5 scheme=http addr=127\.0\.0\.1\n\z/,
	'scale-out: edge to node');
like(get('scale-out', 80, '/static/edge.txt'),
	qr/${ok_body}edge static\n\z/, 'scale-out: static on the edge');
like(get('scale-out-node', 8080, '/direct',
		headers => "X-Forwarded-Proto: https\n"),
	qr/${ok_body}node script= path=\/direct scheme=https /,
	'scale-out-node: X-Forwarded-Proto to wsgi.url_scheme');
like(get('scale-out-node', 8080, '/direct', LocalAddr => '127.0.0.2'),
	qr/^HTTP\/1\.1 403 /, 'scale-out-node: only the edge');

stop('scale-out');
stop('scale-out-node');
ok(log_clean('scale-out'), 'scale-out: error log');
ok(log_clean('scale-out-node'), 'scale-out-node: error log');

# the library's own end-of-test check reads error.log in the test
# directory (upstream's dies without one): the examples' logs, together

$t->write_file('error.log', join '', map {
	open my $fh, '<', $_ or die "Can't open $_: $!";
	local $/;
	scalar <$fh>;
} sort glob("$d/*/var/log/nginx/error.log"));

###############################################################################

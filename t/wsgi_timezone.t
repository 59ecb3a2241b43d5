#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: an app that sets the process's time zone
# (as Django does at import: TZ from TIME_ZONE, then time.tzset()) moves
# the worker's log times, not the master's.  The module says so, once per
# zone and worker, at warn, naming the zone and the remedy; the app keeps
# its zone.  The remedy, TZ in nginx's own environment, makes the master's
# and the worker's lines agree; "env TZ=...;" alone does not (nginx gives
# it to the workers only).  Times are compared on the log lines
# themselves: a worker's line against its master's.  nginx formats its log
# times once a second: a change shows in lines of the next second on.

###############################################################################

use warnings;
use strict;

use Test::More;

use POSIX ();
use Time::HiRes qw/ time sleep /;
use Time::Local qw/ timegm /;

use Test::Nginx;
use Test::WSGI qw/ slurp wait_log /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

plan(skip_all => 'no time zone data (/usr/share/zoneinfo/America/Chicago)')
	unless -e '/usr/share/zoneinfo/America/Chicago'
	&& -e '/usr/share/zoneinfo/Europe/Berlin';

my $t = Test::Nginx->new()->has(qw/http/)->plan(26);

sub conf {
	my ($t, $globals) = @_;
	$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;
worker_processes 1;
$globals

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
}

conf($t, '');

$t->write_file('app.py', <<'EOF');
import datetime, json, os, time

# what Django does at import with TIME_ZONE = "America/Chicago"
os.environ['TZ'] = 'America/Chicago'
time.tzset()

def application(environ, start_response):
    zone = environ['QUERY_STRING']
    if zone:
        os.environ['TZ'] = zone
        time.tzset()
    print('app line')
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps({
        'tzname': list(time.tzname),
        'gmtoff': time.localtime().tm_gmtoff,
        'datetime': datetime.datetime.now().astimezone().strftime('%z'),
    }).encode()]
EOF

# the master's zone: UTC, whatever the machine's is
{
	local $ENV{TZ} = 'UTC';
	$t->run();
}

###############################################################################

my $log = $t->testdir() . '/error.log';
my ($chicago, $berlin) = map { offset($_) } qw(America/Chicago Europe/Berlin);
my $cst = qr/(?:CST \(UTC-06:00\) \/ CDT \(UTC-05:00\)|CDT \(UTC-05:00\) \/ CST \(UTC-06:00\))/;

# Python keeps the app's zone

tick();
my $r = http_get('/');
like($r, qr/"tzname": \["CST", "CDT"\]/, 'app: time.tzname is the app\'s');
like($r, qr/"gmtoff": $chicago,/, 'app: time.localtime() in the app\'s zone');
like($r, qr/"datetime": "\Q${\ hhmm($chicago)}\E"/, 'app: datetime in the app\'s zone');
http_get('/');

# the worker's lines moved, the master's did not, and the worker said so

ok(wait_log($log, qr/wsgi: app line.*\n(?s:.*)wsgi: app line/), 'app lines logged');
my $run = run_log($t, 0);
is(quarter($run->{master_time} - time()), 0, 'master lines in UTC');
is($run->{shift}, $chicago, 'worker lines in the app\'s zone, the master\'s in UTC');
my @warn = grep { /\[warn\].*changed the time zone/ } @{$run->{lines}};
is(scalar @warn, 1, 'one warning for two requests');
like($warn[0] // '', qr/\[warn\] $run->{worker}#\d+: wsgi: app "[^"]*\/app\.py:application" changed the time zone to "America\/Chicago", $cst, and this worker's log times with it; the master process logs in UTC \(UTC\+00:00\): start nginx with TZ=America\/Chicago in its environment so that they agree$/,
	'warning: the app, its zone, the master\'s, the remedy');
like($t->read_file('access.log'), qr/\[\d\d\/\w{3}\/\d{4}:[\d:]{8} \Q${\ hhmm($chicago)}\E\] "GET \//,
	'access log in the app\'s zone');

# a request that moves the zone again: reported after the next request
# (once nginx has taken the new zone into its log times), once

like(http_get('/?Europe/Berlin'), qr/"gmtoff": $berlin,/, 'app: moved to Berlin');
tick();
http_get('/');
ok(wait_log($log, qr/wsgi: a request changed the time zone to "Europe\/Berlin", [^\n]*UTC\+0[12]:00[^\n]*the master process logs in UTC \(UTC\+00:00\): start nginx with TZ=Europe\/Berlin in its environment so that they agree/),
	'warning after a request moved the zone');
like(http_get('/?America/Chicago'), qr/"gmtoff": $chicago,/, 'app: back to Chicago');
tick();
http_get('/');
like(http_get('/?UTC'), qr/"gmtoff": 0,/, 'app: back to the master\'s zone');
tick();
my $off = length slurp($log);
http_get('/');
ok(wait_log($log, qr/wsgi: app line/, $off), 'request after the zone changes');
my @all = grep { /changed the time zone/ } split /\n/, slurp($log);
is(scalar @all, 2, 'each zone reported once, the master\'s never');

$t->stop();

# "env TZ=America/Chicago;" alone: the workers get TZ, the master does not

conf($t, 'env TZ=America/Chicago;');
$off = length slurp($log);
{
	local $ENV{TZ} = 'UTC';
	$t->run();
}
tick();
like(http_get('/'), qr/"gmtoff": $chicago,/, 'env directive: app in its zone');
ok(wait_log($log, qr/wsgi: app line/, $off), 'env directive: app line logged');
$run = run_log($t, $off);
is($run->{shift}, $chicago, 'env directive: worker and master still apart');
like(join("\n", @{$run->{lines}}), qr/changed the time zone to "America\/Chicago", $cst, and this worker's log times with it; the master process logs in UTC \(UTC\+00:00\) \(nginx's "env" directive sets TZ for the workers only\): start nginx with TZ=America\/Chicago in its environment/,
	'env directive: the warning says it reaches the workers only');

$t->stop();

# the remedy: TZ in nginx's own environment, the app's zone everywhere

conf($t, '');
$off = length slurp($log);
my $aoff = length slurp($t->testdir() . '/access.log');
{
	local $ENV{TZ} = 'America/Chicago';
	$t->run();
}
tick();
$r = http_get('/');
like($r, qr/"gmtoff": $chicago,/, 'remedy: app in its zone');
like($r, qr/"tzname": \["CST", "CDT"\]/, 'remedy: time.tzname');
ok(wait_log($log, qr/wsgi: app line/, $off), 'remedy: app line logged');
$run = run_log($t, $off);
is($run->{shift}, 0, 'remedy: worker and master lines agree');
is(quarter($run->{master_time} - time()), $chicago, 'remedy: the master logs in the app\'s zone');
is(scalar(grep { /changed the time zone/ } @{$run->{lines}}), 0, 'remedy: no warning');
like(substr(slurp($t->testdir() . '/access.log'), $aoff),
	qr/:[\d:]{8} \Q${\ hhmm($chicago)}\E\] "GET \//, 'remedy: access log in the app\'s zone');

$t->stop();

###############################################################################

# waits for the clock's next second: nginx's next event then formats its
# log times afresh, in the process's zone as it is then
sub tick {
	my $now = time();
	sleep(int($now) + 1 - $now + 0.01);
}

# the UTC offset of $zone now, in seconds
sub offset {
	my ($zone) = @_;
	my $now = int(time());
	local $ENV{TZ} = $zone;
	POSIX::tzset();
	my $o = timegm(localtime($now)) - $now;
	return $o;
}

# +HHMM / -HHMM of an offset in seconds
sub hhmm {
	my ($o) = @_;
	my $m = abs($o) / 60;
	return sprintf('%s%02d%02d', $o < 0 ? '-' : '+', $m / 60, $m % 60);
}

# seconds rounded to the quarter hour, of which every UTC offset in use is
# a multiple: a zone's offset from the difference of two lines' times
sub quarter {
	my ($d) = @_;
	return 900 * POSIX::floor($d / 900 + 0.5);
}

# one run's error log from byte $off: its master and worker, the times of
# the master's "start worker process" line and of the worker's first app
# line (as written, read as UTC), and how far apart their zones are
sub run_log {
	my ($t, $off) = @_;
	my @lines = split /\n/, substr($t->read_file('error.log'), $off);
	my %run = (lines => \@lines);
	for (@lines) {
		my ($y, $mo, $d, $h, $mi, $s, $pid, $text) =
			m!^(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) \[\w+\] (\d+)#\d+: (.*)!
			or next;
		my $when = timegm($s, $mi, $h, $d, $mo - 1, $y);
		if (!defined $run{master} && $text =~ /^start worker process (\d+)/) {
			@run{qw/ master worker master_time /} = ($pid, $1, $when);
		}
		if (defined $run{worker} && $pid == $run{worker}
			&& !defined $run{worker_time} && $text =~ /wsgi: app line/)
		{
			$run{worker_time} = $when;
		}
	}
	if (defined $run{master_time} && defined $run{worker_time}) {
		$run{shift} = quarter($run{worker_time} - $run{master_time});
	}
	return \%run;
}

###############################################################################

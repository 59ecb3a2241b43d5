#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: a CalDAV server (Radicale from the test
# venv, configured through wsgi_param RADICALE_CONFIG) driven by the caldav
# client library.  With htpasswd credentials (a wrong password is refused)
# the client makes a calendar, saves events (one with a 300 KB
# description) and a todo, searches a date range, changes an event and
# deletes one; a second client session sees the result, and so does
# Radicale's storage on disk.  Once with the request bodies buffered, once
# streamed to the app under a prefix (wsgi_script_name).

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
plan(skip_all => 'TEST_WSGI_VENV not set (a venv with Radicale and caldav '
	. 'from t/requirements.txt, made by scripts/test)')
	unless defined $venv && length $venv;

my $py = "$venv/bin/python";
my $versions = `$py -c 'import radicale, caldav; print(radicale.VERSION, caldav.__version__)' 2>/dev/null`;
my ($radicale, $caldav) = split ' ', $versions // '';
plan(skip_all => "no Radicale and caldav in $venv (t/requirements.txt)")
	unless $caldav;

my $t = Test::Nginx->new()->has(qw/http/)->plan(26)
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

        wsgi_param  RADICALE_CONFIG  %%TESTDIR%%/radicale.conf;

        location / {
            wsgi_pass  radicale:application;
        }

        location /unbuffered/ {
            wsgi_pass               radicale:application;
            wsgi_script_name        /unbuffered;
            wsgi_request_buffering  off;
        }
    }
}

EOF

$t->write_file_expand('radicale.conf', <<'EOF');
[auth]
type = htpasswd
htpasswd_filename = %%TESTDIR%%/users
htpasswd_encryption = plain
delay = 0

[rights]
type = owner_only

[storage]
filesystem_folder = %%TESTDIR%%/collections

[web]
type = none

[logging]
level = warning
EOF

$t->write_file('users', "alice:wonderland\n");

# the client side: one session per run, its findings as JSON
$t->write_file('client.py', <<'EOF');
import datetime, json, sys

import caldav
from caldav.lib.error import AuthorizationError

url, cal_id = sys.argv[1], sys.argv[2]
out = {}

def event(uid, summary, start, description=''):
    return '\r\n'.join([
        'BEGIN:VCALENDAR', 'VERSION:2.0', 'PRODID:-//ngx-wsgi//test//EN',
        'BEGIN:VEVENT', 'UID:' + uid, 'DTSTAMP:20260101T000000Z',
        'DTSTART:' + start, 'DURATION:PT1H', 'SUMMARY:' + summary,
        'DESCRIPTION:' + description,
        'END:VEVENT', 'END:VCALENDAR', ''])

try:
    with caldav.DAVClient(url=url, username='alice', password='wrong') as c:
        c.principal()
    out['wrong password'] = 'accepted'
except AuthorizationError:
    out['wrong password'] = 'refused'

with caldav.DAVClient(url=url, username='alice', password='wonderland') as c:
    principal = c.principal()
    cal = principal.make_calendar(name='Calendar ' + cal_id, cal_id=cal_id)
    long = 'x' * 300000
    cal.save_event(event('standup-' + cal_id, 'Standup', '20260110T090000Z'))
    cal.save_event(event('review-' + cal_id, 'Review', '20260120T140000Z', long))
    cal.save_event(event('retro-' + cal_id, 'Retro', '20260130T150000Z'))
    cal.save_todo('\r\n'.join([
        'BEGIN:VCALENDAR', 'VERSION:2.0', 'PRODID:-//ngx-wsgi//test//EN',
        'BEGIN:VTODO', 'UID:todo-' + cal_id, 'DTSTAMP:20260101T000000Z',
        'SUMMARY:Write minutes', 'END:VTODO', 'END:VCALENDAR', '']))

    found = cal.search(event=True, start=datetime.datetime(2026, 1, 1),
                       end=datetime.datetime(2026, 1, 15))
    out['january 1-15'] = [str(e.icalendar_component['summary']) for e in found]

    review = cal.event_by_uid('review-' + cal_id)
    review.icalendar_component['summary'] = 'Review (moved)'
    review.save()
    cal.event_by_uid('retro-' + cal_id).delete()

with caldav.DAVClient(url=url, username='alice', password='wonderland') as c:
    cal = [k for k in c.principal().calendars()
           if str(k.url).rstrip('/').endswith('/' + cal_id)][0]
    out['name'] = cal.get_display_name()
    out['events'] = sorted(str(e.icalendar_component['summary'])
                           for e in cal.events())
    out['todos'] = [str(x.icalendar_component['summary']) for x in cal.todos()]
    review = cal.event_by_uid('review-' + cal_id)
    out['description length'] = len(str(
        review.icalendar_component['description']))

print(json.dumps(out))
EOF

my $d = $t->testdir();
mkdir "$d/collections";
chmod 0777, "$d/collections";

$t->run();

diag("Radicale $radicale, caldav $caldav");

###############################################################################

my $url = 'http://127.0.0.1:' . port(8080);
$ENV{HOME} = $d;

for my $run (['', 'work'], ['/unbuffered', 'home']) {
	my ($prefix, $cal) = @$run;
	my $name = $prefix ? "unbuffered, under $prefix" : 'buffered';

	# its stdout is the JSON; what it says on stderr (a warning, such as
	# a free-threaded Python's about lxml enabling the GIL) is shown apart
	my $out = `timeout 120 $py $d/client.py $url$prefix/ $cal 2>$d/client.err`;
	my $err = slurp("$d/client.err");
	diag("client stderr: $err") if $err =~ /\S/;
	my $r = eval { decode_json($out) } or diag($out);
	$r ||= {};

	is($r->{'wrong password'}, 'refused', "$name: wrong password refused");
	is($r->{name}, "Calendar $cal", "$name: calendar made");
	is_deeply($r->{'january 1-15'}, ['Standup'], "$name: date-range search");
	is_deeply($r->{events}, ['Review (moved)', 'Standup'],
		"$name: events changed and deleted");
	is_deeply($r->{todos}, ['Write minutes'], "$name: todo");
	is($r->{'description length'}, 300000, "$name: 300 KB description");

	# Radicale's storage: one .ics per item, the change in it

	my $dir = "$d/collections/collection-root/alice/$cal";
	my @ics = sort glob("$dir/*.ics");
	is(scalar @ics, 3, "$name: 3 items on disk");
	like(slurp("$dir/review-$cal.ics"), qr/^SUMMARY:Review \(moved\)\r?$/m,
		"$name: the change on disk");
	ok(!-e "$dir/retro-$cal.ics", "$name: the deleted event is gone");
	like(slurp("$dir/.Radicale.props"), qr/"D:displayname": "Calendar $cal"/,
		"$name: calendar properties on disk");
}

# the other user's collection is not reachable

my $r = http(<<EOF);
PROPFIND /alice/ HTTP/1.0
Host: localhost
Depth: 0
Authorization: Basic ${\ encode_base64('bob:builder') }

EOF
like($r, qr/^HTTP\/1\.1 401/, 'unknown user: 401');

# what curl, as a plain WebDAV client, sees of the calendar

my $out = `curl -sS -u alice:wonderland -X PROPFIND -H 'Depth: 1' $url/alice/work/ 2>&1`;
like($out, qr/standup-work\.ics/, 'PROPFIND Depth 1: lists the events');
like($out, qr/<[^>]*multistatus/, 'PROPFIND: a multistatus answer');

$out = `curl -sS -u alice:wonderland $url/alice/work/standup-work.ics 2>&1`;
like($out, qr/^SUMMARY:Standup\r?$/m, 'GET of an event');

# Radicale's log lines (its logging, through the module's handler) at
# their levels: refused logins are warnings, and nothing is an error

my $log = slurp("$d/error.log");
like($log, qr/\[warn\].*wsgi: radicale: Failed login attempt .*'bob'/,
	'log: a refused login at warn');
unlike($log, qr/\[(error|crit|alert)\].*wsgi:/, 'log: no errors from the app');

###############################################################################

sub encode_base64 {
	require MIME::Base64;
	return MIME::Base64::encode_base64($_[0], '');
}

###############################################################################

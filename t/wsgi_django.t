#!/usr/bin/perl

# Tests for ngx_http_wsgi_module: a real Django project (from the test
# venv, wsgi_python_home), laid out as django-admin makes it: settings
# with DEBUG off and ALLOWED_HOSTS, a template directory, a wsgi.py
# setting DJANGO_SETTINGS_MODULE; views rendering templates, CSRF (a
# protected and an exempt POST, cookies), reverse(), APPEND_SLASH
# redirects, custom 404/500 templates, uploads; static files collected
# with collectstatic and served by nginx, not Django; the project mounted
# under /app with wsgi_script_name, where reverse() builds /app/... URLs.
# Django's default TIME_ZONE (America/Chicago) becomes the worker's zone at
# import: reported against the master's (UTC here).

###############################################################################

use warnings;
use strict;

use Test::More;

use Digest::MD5 qw/ md5_hex /;

use Test::Nginx;
use Test::WSGI qw/ http_post wait_log /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $venv = $ENV{TEST_WSGI_VENV};
plan(skip_all => 'TEST_WSGI_VENV not set (a venv with Django from '
	. 't/requirements.txt, made by scripts/test)')
	unless defined $venv && length $venv;
my $python = $ENV{TEST_WSGI_PYTHON} || "$venv/bin/python";

my $t = Test::Nginx->new()->has(qw/http/)->plan(64)
	->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    wsgi_python_home  $venv;
    wsgi_python_path  %%TESTDIR%%/site;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            wsgi_pass  mysite.wsgi:application;
        }

        location /app/ {
            wsgi_pass         mysite.wsgi:application;
            wsgi_script_name  /app;
        }

        # what "manage.py collectstatic" gathered into STATIC_ROOT
        location /static/ {
            alias  %%TESTDIR%%/static_root/;
            types  { text/css  css; }
        }

        location = /wsgi-status {
            wsgi_status;
        }
    }
}

EOF

my $d = $t->testdir();

# upstream's write_file makes no directories
mkdir($t->testdir() . "/$_")
	for qw{ site site/mysite site/mysite/static site/mysite/static/css
		site/templates };
$t->write_file('site/manage.py', <<'EOF');
#!/usr/bin/env python
import os
import sys

if __name__ == '__main__':
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
EOF

$t->write_file('site/mysite/__init__.py', '');

# as "django-admin startproject" writes it
$t->write_file('site/mysite/wsgi.py', <<'EOF');
"""
WSGI config for mysite project.

It exposes the WSGI callable as a module-level variable named
``application``.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')

application = get_wsgi_application()
EOF

$t->write_file('site/mysite/settings.py', <<'EOF');
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = 'test-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz'
DEBUG = False
ALLOWED_HOSTS = ['localhost', '127.0.0.1']

INSTALLED_APPS = [
    'django.contrib.staticfiles',
    'mysite',
]

MIDDLEWARE = [
    'django.middleware.security.SecurityMiddleware',
    'django.middleware.common.CommonMiddleware',
    'django.middleware.csrf.CsrfViewMiddleware',
    'mysite.middleware.served_by',
]

ROOT_URLCONF = 'mysite.urls'
WSGI_APPLICATION = 'mysite.wsgi.application'

TEMPLATES = [{
    'BACKEND': 'django.template.backends.django.DjangoTemplates',
    'DIRS': [BASE_DIR / 'templates'],
    'APP_DIRS': False,
    'OPTIONS': {
        'context_processors': [
            'django.template.context_processors.request',
        ],
    },
}]

DATABASES = {}

USE_TZ = True

STATIC_URL = '/static/'
STATIC_ROOT = BASE_DIR.parent / 'static_root'
EOF

$t->write_file('site/mysite/middleware.py', <<'EOF');
def served_by(get_response):
    def middleware(request):
        response = get_response(request)
        response['X-Served-By'] = 'django'
        return response
    return middleware
EOF

$t->write_file('site/mysite/urls.py', <<'EOF');
from django.urls import path

from . import views

urlpatterns = [
    path('', views.page, name='page'),
    path('items/<int:item_id>/', views.item, name='item'),
    path('submit/', views.submit, name='submit'),
    path('protected/', views.protected, name='protected'),
    path('upload/', views.upload, name='upload'),
    path('where/', views.where, name='where'),
    path('boom/', views.boom, name='boom'),
]
EOF

$t->write_file('site/mysite/views.py', <<'EOF');
import hashlib

from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


def page(request):
    return render(request, 'page.html', {
        'title': 'Django on nginx',
        'items': ['one', 'two', '<three>'],
    })


def item(request, item_id):
    return JsonResponse({'id': item_id, 'self': reverse('item', args=[item_id])})


@csrf_exempt
@require_POST
def submit(request):
    return JsonResponse({
        'name': request.POST['name'],
        'tags': request.POST.getlist('tag'),
        'redirect_to': reverse('item', kwargs={'item_id': 5}),
    })


@require_POST
def protected(request):
    return HttpResponse('protected ok: ' + request.POST['msg'],
                        content_type='text/plain')


@csrf_exempt
def upload(request):
    f = request.FILES['file']
    data = f.read()
    return JsonResponse({'name': f.name, 'size': len(data),
                         'md5': hashlib.md5(data).hexdigest()})


def where(request):
    return JsonResponse({
        'path': request.path,
        'path_info': request.path_info,
        'script_name': request.META['SCRIPT_NAME'],
        'reverse': reverse('item', args=[7]),
        'absolute': request.build_absolute_uri(reverse('page')),
        'static': static('css/site.css'),
    })


def boom(request):
    raise ValueError('django view failed')
EOF

$t->write_file('site/templates/page.html', <<'EOF');
{% load static %}<!doctype html>
<title>{{ title }}</title>
<link rel="stylesheet" href="{% static 'css/site.css' %}">
<p>path={{ request.path }}</p>
<a id="item" href="{% url 'item' 42 %}">item 42</a>
<form method="post" action="{% url 'protected' %}">{% csrf_token %}</form>
<ul>{% for i in items %}<li>{{ i }}</li>{% endfor %}</ul>
EOF

$t->write_file('site/templates/404.html',
	"custom django 404 for {{ request_path }}\n");
$t->write_file('site/templates/500.html', "custom django 500\n");

my $css = "body { color: #123456; }\n";
$t->write_file('site/mysite/static/css/site.css', $css);

# collectstatic, as a deploy would, into STATIC_ROOT

my $collect = `cd $d/site && $python manage.py collectstatic --noinput 2>&1`;
is($?, 0, 'collectstatic') or diag($collect);

{
	local $ENV{TZ} = 'UTC';
	$t->run();
}

###############################################################################

# Django's default TIME_ZONE, set at import

ok(wait_log($t->testdir() . '/error.log',
	qr/\[warn\] .*wsgi: app "mysite\.wsgi:application" changed the time zone to "America\/Chicago", .*; the master process logs in UTC \(UTC\+00:00\): start nginx with TZ=America\/Chicago in its environment/),
	'TIME_ZONE: the worker\'s new zone reported');

# a view rendering a template

my $r = http_get('/');
like($r, qr/^HTTP\/1\.1 200 /, 'template: status');
like($r, qr/^Content-Type: text\/html; charset=utf-8\x0d$/m, 'template: type');
like($r, qr/^X-Served-By: django\x0d$/m, 'template: middleware');
like($r, qr/^X-Content-Type-Options: nosniff\x0d$/m,
	'template: security middleware');
like($r, qr/<title>Django on nginx<\/title>/, 'template: context');
like($r, qr/<li>one<\/li><li>two<\/li><li>&lt;three&gt;<\/li>/,
	'template: loop, autoescape');
like($r, qr/<p>path=\/<\/p>/, 'template: request.path');
like($r, qr/href="\/items\/42\/"/, 'template: url tag');
like($r, qr/href="\/static\/css\/site\.css"/, 'template: static tag');

# CSRF: the page set the cookie and the form token

my ($cookie) = $r =~ /^Set-Cookie: (csrftoken=[^;\x0d]+)/m;
my ($token) = $r =~ /name="csrfmiddlewaretoken" value="([^"]+)"/;
ok($cookie, 'csrf: cookie set');
ok($token, 'csrf: form token');

like(post('/protected/', "msg=hi&csrfmiddlewaretoken=$token", $cookie),
	qr/^HTTP\/1\.1 200 .*\x0d\x0a\x0d\x0aprotected ok: hi\z/s,
	'csrf: protected post with token');
like(post('/protected/', 'msg=hi'), qr/^HTTP\/1\.1 403 /,
	'csrf: protected post without token');
like(post('/protected/', 'msg=hi&csrfmiddlewaretoken=wrong', $cookie),
	qr/^HTTP\/1\.1 403 /, 'csrf: protected post with a bad token');

# a CSRF-exempt POST

$r = post('/submit/', 'name=Zo%C3%AB&tag=x&tag=y');
like($r, qr/^HTTP\/1\.1 200 /, 'exempt post: status');
like($r, qr/^Content-Type: application\/json\x0d$/m, 'exempt post: json');
like($r, qr/"name": "Zo\\u00eb"/, 'exempt post: decoded field');
like($r, qr/"tags": \["x", "y"\]/, 'exempt post: list field');
like($r, qr/"redirect_to": "\/items\/5\/"/, 'exempt post: reverse');
like(http_get('/submit/'), qr/^HTTP\/1\.1 405 /, 'exempt post: GET refused');

# URL parameters, reverse(), APPEND_SLASH

$r = http_get('/items/31/');
like($r, qr/\{"id": 31, "self": "\/items\/31\/"\}/, 'item: reverse');
like(http_get('/items/31'),
	qr/^HTTP\/1\.1 301 .*^Location: (http:\/\/localhost(:\d+)?)?\/items\/31\/\x0d$/ms,
	'append slash: redirect');

$r = http_get('/where/');
like($r, qr/"path": "\/where\/"/, 'root: request.path');
like($r, qr/"script_name": ""/, 'root: SCRIPT_NAME');
like($r, qr/"reverse": "\/items\/7\/"/, 'root: reverse');
like($r, qr/"absolute": "http:\/\/localhost\/"/, 'root: absolute uri');

# uploads

srand(5150);
my $data = join '', map { chr(int(rand(256))) } 1 .. 200_000;

for my $prefix ('', '/app') {
	$r = upload("$prefix/upload/", 'blob.bin', $data);
	like($r, qr/"size": ${\ length $data }\b/, "upload $prefix: size");
	like($r, qr/"md5": "${\ md5_hex($data) }"/, "upload $prefix: md5");
}

# errors: custom templates with DEBUG off; ALLOWED_HOSTS

$r = http_get('/no/such/');
like($r, qr/^HTTP\/1\.1 404 /, '404: status');
like($r, qr/custom django 404 for \/no\/such\//, '404: template');

$r = http_get('/boom/');
like($r, qr/^HTTP\/1\.1 500 /, '500: status');
like($r, qr/\x0d\x0a\x0d\x0acustom django 500\n\z/, '500: template');
unlike($r, qr/django view failed/, '500: no details with DEBUG off');

like(http(<<EOF), qr/^HTTP\/1\.1 400 /, 'disallowed host');
GET / HTTP/1.0
Host: evil.example

EOF

# static files: from nginx, the app not called

my $requests = status_requests();
$r = http_get('/static/css/site.css');
like($r, qr/^HTTP\/1\.1 200 /, 'static: status');
like($r, qr/\x0d\x0a\x0d\x0a\Q$css\E\z/, 'static: collected file');
like($r, qr/^ETag: "[0-9a-f]+-[0-9a-f]+"\x0d$/m, 'static: nginx etag');
like($r, qr/^Content-Type: text\/css\x0d$/m, 'static: type');
unlike($r, qr/X-Served-By/, 'static: not from django');
like(http_get('/static/css/missing.css'), qr/^HTTP\/1\.1 404 (?!.*custom)/s,
	'static: nginx 404');
is(status_requests(), $requests, 'static: no app requests');
isnt(status_requests(), undef, 'status: requests counter');

# mounted under /app: Django takes SCRIPT_NAME as the script prefix

$r = http_get('/app/where/');
like($r, qr/"path": "\/app\/where\/"/, 'prefix: request.path');
like($r, qr/"path_info": "\/where\/"/, 'prefix: request.path_info');
like($r, qr/"script_name": "\/app"/, 'prefix: SCRIPT_NAME');
like($r, qr/"reverse": "\/app\/items\/7\/"/, 'prefix: reverse');
like($r, qr/"absolute": "http:\/\/localhost\/app\/"/, 'prefix: absolute uri');
like($r, qr/"static": "\/static\/css\/site\.css"/,
	'prefix: absolute STATIC_URL kept');

$r = http_get('/app/');
like($r, qr/<p>path=\/app\/<\/p>/, 'prefix: template request.path');
like($r, qr/href="\/app\/items\/42\/"/, 'prefix: url tag');
like($r, qr/action="\/app\/protected\/"/, 'prefix: form action');
like($r, qr/href="\/static\/css\/site\.css"/, 'prefix: static tag');

like(http_get('/app/items/8/'), qr/"self": "\/app\/items\/8\/"/,
	'prefix: item reverse');
like(http_get('/app/items/8'),
	qr/^HTTP\/1\.1 301 .*^Location: (http:\/\/localhost(:\d+)?)?\/app\/items\/8\/\x0d$/ms,
	'prefix: append slash redirect');
like(post('/app/submit/', 'name=a'), qr/"redirect_to": "\/app\/items\/5\/"/,
	'prefix: reverse in a post');
like(http_get('/app/nope/'), qr/custom django 404 for \/app\/nope\//,
	'prefix: 404');

# the prefix does not leak into requests at the root (per-request prefix)

like(http_get('/where/'), qr/"reverse": "\/items\/7\/"/,
	'root after prefix: reverse');

# Django logged the exception and the bad host through nginx's error log

my $log = $t->read_file('error.log');
like($log, qr/\[error\].*Internal Server Error: \/boom\//, '500 logged');
like($log, qr/ValueError: django view failed/, '500 logged: traceback');
like($log, qr/Invalid HTTP_HOST header: 'evil\.example'/,
	'disallowed host logged');

###############################################################################

sub post {
	my ($uri, $body, $cookie) = @_;
	return http_post($uri, $body, ($cookie ? "Cookie: $cookie" : ()),
		'Content-Type: application/x-www-form-urlencoded');
}

sub upload {
	my ($uri, $name, $content) = @_;
	my $b = '----djangoBoundaryQ2hgKjUx';
	my $body = "--$b\r\n"
		. "Content-Disposition: form-data; name=\"file\"; "
		. "filename=\"$name\"\r\n"
		. "Content-Type: application/octet-stream\r\n\r\n"
		. $content . "\r\n"
		. "--$b--\r\n";
	return http_post($uri, $body,
		"Content-Type: multipart/form-data; boundary=$b");
}

# the worker's "requests" counter (one worker process)
sub status_requests {
	my ($n) = http_get('/wsgi-status') =~ /"requests":(\d+)/;
	return $n;
}

###############################################################################

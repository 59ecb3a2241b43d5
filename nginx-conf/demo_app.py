"""The example app served by scripts/demo: hello, a form POST echo, a streamed
response. Plain WSGI, no framework."""

import html
import time
from urllib.parse import parse_qs

FORM = """<!doctype html>
<title>ngx-wsgi demo</title>
<h1>Hello from Python inside nginx</h1>
<ul>
  <li><a href="/stream">/stream</a>: a response streamed in 10 chunks, 0.2 s apart</li>
  <li><a href="/status">/status</a>: the module's status (JSON)</li>
</ul>
<form method="post" action="/echo">
  <input name="message" value="hello">
  <button>POST it</button>
</form>
"""


def hello(environ, start_response):
    body = FORM.encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def echo(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST":
        start_response("405 Method Not Allowed", [("Allow", "POST"),
                                                  ("Content-Type", "text/plain")])
        return [b"POST a form here\n"]
    size = int(environ.get("CONTENT_LENGTH") or 0)
    form = parse_qs(environ["wsgi.input"].read(size).decode("utf-8", "replace"))
    rows = "".join(f"<li>{html.escape(k)} = {html.escape(', '.join(v))}</li>"
                   for k, v in form.items())
    body = f"<!doctype html><h1>You posted</h1><ul>{rows}</ul>".encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [body]


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    for i in range(1, 11):
        yield f"chunk {i} of 10 at {time.strftime('%H:%M:%S')}\n".encode()
        time.sleep(0.2)


ROUTES = {"/": hello, "/echo": echo, "/stream": stream}


def application(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    return handler(environ, start_response)

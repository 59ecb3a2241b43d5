"""The WSGI app of scripts/soak: every route's output is derived from its URL
(PATH_INFO + "?" + QUERY_STRING), so the load generator can check every byte
it gets. The same file runs under ngx_http_wsgi_module, uWSGI and gunicorn.

Routes (N, C, K, MS are numbers):
  /small/N            N bytes, Content-Length
  /stream/N/C         N bytes from a generator in C-byte chunks (no Content-Length)
  /file/N             files/N through wsgi.file_wrapper (the driver writes it)
  /upload/full        reads the whole body; answers its length and SHA-256
  /upload/part/K      reads K bytes (or up to the end); answers as above
  /upload/none        reads nothing
  /slow/MS            answers after MS ms (in steps; under wsgi_read_timeout)
  /slowstream/N/MS    N chunks, MS ms apart
  /spin               pure Python busy loop longer than wsgi_read_timeout
  /stuck              libc sleep() (C, not interruptible) longer than the timeout
  /raise/before       raises before start_response: 500
  /raise/after        raises after some body went out: a truncated body and a close
  /bad/...            broken app output (see BAD below)
  /leak               keeps 256 KiB per call for the life of the process
Every route may be under /unbuf/ too (nginx: wsgi_request_buffering off).
"""

import ctypes
import hashlib
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = os.path.join(HERE, "files")
BLOCK = 4096
# Longer than the server's read timeout (scripts/soak sets 2 s).
OVER_TIMEOUT_S = 3
LEAK = []


def block(key, i):
    """The i-th 4 KiB block of the pattern named key (bytes)."""
    return hashlib.sha256(b"%s:%d" % (key, i)).digest() * (BLOCK // 32)


def pattern_chunks(key, size, chunk):
    """The first size bytes of key's pattern, as chunks of chunk bytes."""
    buf, i, left = b"", 0, size
    while left > 0:
        while len(buf) < min(chunk, left):
            buf += block(key, i)
            i += 1
        n = min(chunk, left)
        yield buf[:n]
        buf, left = buf[n:], left - n


def pattern(key, size):
    return b"".join(pattern_chunks(key, size, max(size, 1)))


def read_upto(inp, limit):
    """Reads up to limit bytes (None: all) from wsgi.input; returns them."""
    got = []
    n = 0
    while limit is None or n < limit:
        want = 65536 if limit is None else min(65536, limit - n)
        data = inp.read(want)
        if not data:
            break
        got.append(data)
        n += len(data)
    return b"".join(got)


def digest_reply(data):
    return b"len=%d sha256=%s" % (len(data), hashlib.sha256(data).hexdigest().encode())


def headers(extra=()):
    return [("Content-Type", "application/octet-stream"), ("X-Pid", str(os.getpid()))] \
        + list(extra)


BAD = {
    # a str body chunk: 500
    "strchunk": lambda sr: (sr("200 OK", headers()), ["text"])[1],
    # a good chunk, then a str one: a truncated body and a close (or 500)
    "strlater": lambda sr: (sr("200 OK", headers()), iter([b"x" * 1000, "text"]))[1],
    # CR/LF in a header value: 500, never an injected header
    "crlf": lambda sr: (sr("200 OK", headers([("X-Bad", "a\r\nInjected: 1")])), [b"no"])[1],
    # a status line that is not one
    "status": lambda sr: (sr("abc", headers()), [b"no"])[1],
    # a header value that is not a str
    "headertype": lambda sr: (sr("200 OK", headers([("X-Bad", 12)])), [b"no"])[1],
    # not an iterable
    "none": lambda sr: (sr("200 OK", headers()), None)[1],
    # less body than Content-Length: 500, or a truncated body and a close
    "short_cl": lambda sr: (sr("200 OK", headers([("Content-Length", "1000")])),
                            iter([b"s" * 500]))[1],
    # more body than Content-Length: the first 100 bytes, the connection usable
    "long_cl": lambda sr: (sr("200 OK", headers([("Content-Length", "100")])),
                           iter([b"L" * 150, b"L" * 50]))[1],
}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    key = ("%s?%s" % (path, environ.get("QUERY_STRING", ""))).encode()
    if path.startswith("/unbuf/"):
        path = path[len("/unbuf"):]
    parts = path.strip("/").split("/")
    route, args = parts[0], parts[1:]

    if route == "small":
        body = pattern(key, int(args[0]))
        start_response("200 OK", headers([("Content-Length", str(len(body)))]))
        return [body]
    if route == "stream":
        start_response("200 OK", headers())
        return pattern_chunks(key, int(args[0]), int(args[1]))
    if route == "file":
        f = open(os.path.join(FILES, args[0]), "rb")
        start_response("200 OK", headers([("Content-Length", args[0])]))
        return environ["wsgi.file_wrapper"](f, 65536)
    if route == "upload":
        inp = environ["wsgi.input"]
        if args[0] == "full":
            body = digest_reply(read_upto(inp, None))
        elif args[0] == "part":
            body = digest_reply(read_upto(inp, int(args[1])))
        else:
            body = b"none"
        start_response("200 OK", headers([("Content-Length", str(len(body)))]))
        return [body]
    if route == "slow":
        end = time.monotonic() + int(args[0]) / 1000
        while time.monotonic() < end:
            time.sleep(0.05)
        start_response("200 OK", headers())
        return [pattern(key, 100)]
    if route == "slowstream":
        start_response("200 OK", headers())
        return slow_chunks(key, int(args[0]), int(args[1]) / 1000)
    if route == "spin":
        end = time.monotonic() + OVER_TIMEOUT_S
        while time.monotonic() < end:
            pass
        start_response("200 OK", headers())
        return [b"spun"]
    if route == "stuck":
        ctypes.CDLL(None).sleep(OVER_TIMEOUT_S)
        start_response("200 OK", headers())
        return [b"slept"]
    if route == "raise":
        if args[0] == "before":
            raise RuntimeError("soak: raise before start_response")
        start_response("200 OK", headers())
        return raise_after(key)
    if route == "bad":
        return BAD[args[0]](start_response)
    if route == "leak":
        LEAK.append(bytearray(256 * 1024))
        body = b"leaked %d" % len(LEAK)
        start_response("200 OK", headers([("Content-Length", str(len(body)))]))
        return [body]
    start_response("404 Not Found", headers([("Content-Length", "0")]))
    return []


def slow_chunks(key, n, gap):
    for i in range(n):
        if i:
            time.sleep(gap)
        yield block(key, i)


def raise_after(key):
    yield block(key, 0)
    yield block(key, 1)
    raise RuntimeError("soak: raise after the headers")

"""The one WSGI app every stack in scripts/bench serves.

Routes (PATH_INFO):
  /hello                 13 bytes, "Hello, World!"
  /bytes/N               N bytes as a single-item list
  /stream/TOTAL/CHUNKS   TOTAL bytes from a generator, in CHUNKS equal chunks
  /chunked/TOTAL         TOTAL bytes from a generator, in 64 KiB chunks
                         (generators declare no Content-Length, as a streaming
                         app does: HTTP/1.1 servers send them chunked)
  /upload, /stream-upload/
                         reads wsgi.input to the end (64 KiB reads), answers the count
  /sleep/MS              time.sleep(MS / 1000), then 2 bytes
  /cpu/MS                burns MS milliseconds of CPU in Python, then 2 bytes
  /work/K                K thousand iterations of a pure-Python loop (a fixed
                         amount of work, unlike /cpu: /work/75 is about 5 ms
                         on CPython 3.11 here), then 2 bytes
Only the standard library: it must import the same in every server.
"""
import time

_CACHE = {}
_BLOCK = 64 * 1024


def _bytes(n):
    b = _CACHE.get(n)
    if b is None:
        b = _CACHE[n] = b"x" * n
    return b


def _stream(total, chunks):
    size, rest = divmod(total, chunks)
    piece = _bytes(size)
    for _ in range(chunks):
        yield piece
    if rest:
        yield _bytes(rest)


def _blocks(total):
    full, rest = divmod(total, _BLOCK)
    piece = _bytes(_BLOCK)
    for _ in range(full):
        yield piece
    if rest:
        yield _bytes(rest)


def _ok(start_response, body, length=None):
    headers = [("Content-Type", "application/octet-stream")]
    if length is not None:
        headers.append(("Content-Length", str(length)))
    start_response("200 OK", headers)
    return body


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    parts = path.strip("/").split("/")
    name = parts[0]
    try:
        if name == "hello":
            body = b"Hello, World!"
            start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", "13")])
            return [body]
        if name == "bytes":
            n = int(parts[1])
            return _ok(start_response, [_bytes(n)], n)
        if name == "stream":
            total, chunks = int(parts[1]), int(parts[2])
            return _ok(start_response, _stream(total, chunks))
        if name == "chunked":
            total = int(parts[1])
            return _ok(start_response, _blocks(total))
        if name in ("upload", "stream-upload"):
            inp = environ["wsgi.input"]
            length = environ.get("CONTENT_LENGTH") or ""
            left = int(length) if length.isdigit() else -1
            got = 0
            while left != 0:
                want = _BLOCK if left < 0 else min(_BLOCK, left)
                data = inp.read(want)
                if not data:
                    break
                got += len(data)
                if left > 0:
                    left -= len(data)
            body = str(got).encode()
            return _ok(start_response, [body], len(body))
        if name == "sleep":
            time.sleep(int(parts[1]) / 1000.0)
            return _ok(start_response, [b"ok"], 2)
        if name == "work":
            n = 0
            for i in range(int(parts[1]) * 1000):
                n += i * i % 7
            return _ok(start_response, [b"ok"], 2)
        if name == "cpu":
            end = time.thread_time() + int(parts[1]) / 1000.0
            n = 0
            while time.thread_time() < end:
                for _ in range(200):
                    n += 1
            return _ok(start_response, [b"ok"], 2)
    except (IndexError, ValueError):
        pass
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", "10")])
    return [b"not found\n"]

"""scripts/soak's driver (run it through scripts/soak, which builds nginx and
the module and makes the venv this runs in: h2 for HTTP/2 clients; uWSGI and
gunicorn for --stack uwsgi|gunicorn).

Starts one stack on 127.0.0.1 (plain HTTP and TLS + HTTP/2):
  ours      nginx + ngx_http_wsgi_module (wsgi_pass), 2 workers
  uwsgi     nginx -> uWSGI (uwsgi_pass), 2 processes
  gunicorn  nginx -> gunicorn gthread (proxy_pass), 2 workers
all on soak/app.py, then for --minutes runs a seeded mix of clients against it
while faults happen on a schedule (reloads, sometimes onto an app that does
not import; kill -9 of a worker), and at the end stops the stack gracefully.
Every response of the checking clients is compared byte for byte with what
its route must produce; every failure gets a cause, and a cause that is not
an expected one fails the run. Figures: build/soak/<stack>.json.
"""

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

import stacks

import h2.config
import h2.errors
import h2.connection
import h2.events
import h2.exceptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
OUT = os.path.join(BUILD, "soak")
NGINX = os.path.join(BUILD, "sbin", "nginx")
MODULE = os.path.join(BUILD, "modules", "ngx_http_wsgi_module.so")
APP_SRC = os.path.join(ROOT, "soak", "app.py")
sys.path.insert(0, os.path.join(ROOT, "soak"))
import app as soak_app  # noqa: E402  (the same pattern functions as the server side)

MiB = 1024 * 1024
THREADS = 3                 # wsgi_threads / --threads per worker
WORKERS = 2
READ_TIMEOUT_S = 2          # below the app's OVER_TIMEOUT_S (3 s)
MAX_REQUESTS, JITTER = 600, 300
FD_SLACK = 0                # idle workers' fds after the load: the start's + this
QUIT_BOUND_S = 10           # nginx -s quit once the load is over (the slowest route: 3 s)
CLIENT_TIMEOUT_S = 30       # a response not finished by then is a hang
FILE_SIZES = [0, 1, 4095, 65536, MiB + 7, 4 * MiB]
BROKEN_APP = "def application(environ, start_response)\n    pass\n"   # SyntaxError


def log(msg):
    sys.stderr.write("\033[1m==> %s\033[0m\n" % msg)
    sys.stderr.flush()


def now():
    return time.monotonic()


# ------------------------------------------------------------------ processes

children, cmdline, fd_count, LogTail = (stacks.children, stacks.cmdline, stacks.fd_count,
                                        stacks.LogTail)
rss_kib = stacks.pid_rss_kib
wait_for = stacks.await_for


# ------------------------------------------------------------------ stacks

class Stack:
    """The server side: started, reloaded, killed and stopped by the soak."""
    name = "?"

    def __init__(self, run, port, tls_port, user_root):
        self.run, self.port, self.tls_port = run, port, tls_port
        self.user = "user root;" if user_root else ""
        self.started = stacks.Started()
        self.procs = self.started.procs
        self.nginx_log = os.path.join(run, "logs", "error.log")
        self.app_dir = os.path.join(run, "app")

    def spawn(self, cmd, logname, **kw):
        out = open(os.path.join(self.run, "logs", logname), "w")
        return self.started.spawn(cmd, stdout=out, stderr=out, **kw)

    def nginx_conf(self, locations, http_extra=""):
        r = self.run
        conf = os.path.join(r, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""# written by scripts/soak
{module}
{user}
worker_processes {workers};
daemon off;
master_process on;
pid {r}/nginx.pid;
error_log {r}/logs/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {r}/tmp/client_body;
    proxy_temp_path {r}/tmp/proxy;
    uwsgi_temp_path {r}/tmp/uwsgi;
    fastcgi_temp_path {r}/tmp/fastcgi;
    scgi_temp_path {r}/tmp/scgi;
    client_max_body_size 16m;
    # bodies over 64 KiB go through a temp file
    client_body_buffer_size 64k;
    keepalive_requests 100;
{http_extra}
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        http2 on;
        ssl_certificate {r}/cert.pem;
        ssl_certificate_key {r}/key.pem;
{locations}
    }}
}}
""".format(module=self.load_module(), user=self.user, workers=WORKERS, r=r, port=self.port,
           tls_port=self.tls_port, http_extra=http_extra, locations=locations))
        return conf

    def load_module(self):
        return ""

    def start_nginx(self):
        stacks.nginx_temp_dirs(os.path.join(self.run, "tmp"))
        self.nginx = self.spawn([NGINX, "-p", self.run + "/", "-c", self.conf],
                                "nginx.stderr")

    async def await_respawn(self, pid):
        """The killed worker is gone and the stack has all its workers again
        (a worker killed while it was shutting down is not replaced)."""
        return await wait_for(lambda: not os.path.exists("/proc/%d" % pid)
                              and len(self.serving_workers()) >= WORKERS, 30)

    def nginx_master(self):
        return self.nginx.pid

    def nginx_workers(self):
        return [p for p in children(self.nginx_master()) if "worker process" in cmdline(p)]

    def alive(self):
        return stacks.first_exited(self.procs) is None

    def quit(self):
        """nginx -s quit (and the app server's own graceful stop); True if all exited."""
        subprocess.run([NGINX, "-p", self.run + "/", "-c", self.conf, "-s", "quit"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = True
        try:
            self.nginx.wait(60)
        except subprocess.TimeoutExpired:
            ok = False
        return self.stop_app() and ok

    def stop_app(self):
        return True

    def kill_everything(self):
        self.started.kill(grace=0)


class Ours(Stack):
    name = "ours"

    def load_module(self):
        return "load_module %s;" % MODULE

    def start(self):
        self.version = 0
        self.good = self.deploy(broken=False)     # the version that runs
        loc = "            include {r}/app.conf;\n".format(r=self.run)
        self.conf = self.nginx_conf(
            "        location / {\n" + loc + "        }\n"
            "        location /unbuf/ {\n" + loc +
            "            wsgi_request_buffering off;\n        }\n"
            "        location = /status { wsgi_status; }\n",
            http_extra="    wsgi_threads %d;\n    wsgi_max_requests %d jitter=%d;\n"
                       "    wsgi_read_timeout %ds;\n    wsgi_import_check on;\n"
                       % (THREADS, MAX_REQUESTS, JITTER, READ_TIMEOUT_S))
        self.start_nginx()

    def deploy(self, broken):
        """A new app version (a new file, as a deploy writes) and app.conf naming it."""
        self.version += 1
        path = os.path.join(self.app_dir, "app_v%d.py" % self.version)
        if broken:
            with open(path, "w") as f:
                f.write(BROKEN_APP)
        else:
            shutil.copy(APP_SRC, path)
        os.chmod(path, 0o644)
        self.write_app_conf(path)
        return path

    def write_app_conf(self, path):
        with open(os.path.join(self.run, "app.conf"), "w") as f:
            f.write("wsgi_pass %s;\n" % path)

    def app_workers(self):
        return self.nginx_workers()

    async def reload(self, rng, broken):
        """One deploy + reload; returns 'done', 'refused' or a failure reason."""
        tail = LogTail(self.nginx_log)
        tail.mark()
        path = self.deploy(broken)
        by_signal = rng.random() < 0.5
        if by_signal:            # what a process manager does: HUP to the master
            os.kill(self.nginx_master(), signal.SIGHUP)
            signaller_refused = False
        else:                    # nginx -s reload runs the import check itself first
            p = await asyncio.create_subprocess_exec(
                NGINX, "-p", self.run + "/", "-c", self.conf, "-s", "reload",
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out, _ = await p.communicate()
            signaller_refused = p.returncode != 0
            if signaller_refused and not broken:
                return "nginx -s reload failed: %s" % out.decode(errors="replace")[-300:]
            if signaller_refused:
                self.refused_output = out.decode(errors="replace")
        if broken:
            if not signaller_refused:
                ok = await wait_for(lambda: "configuration rejected" in tail.since_mark(), 60)
                if not ok:
                    return "a reload onto a broken app was not refused"
            self.write_app_conf(self.good)      # back to the version that runs
            return "refused"
        self.good = path
        ok = await wait_for(lambda: re.search(r"reconfiguring(.|\n)*start worker process",
                                              tail.since_mark()), 60)
        return "done" if ok else "the reload did not start new workers within 60 s"

    def kill_target(self, rng):
        live = self.serving_workers()
        return rng.choice(live) if live else None

    def serving_workers(self):
        return [p for p in self.nginx_workers() if "shutting down" not in cmdline(p)]


class AppServer(Stack):
    """nginx in front of an app server (uWSGI, gunicorn) whose master
    process stops gracefully on SIGTERM (uWSGI with --die-on-term; gunicorn
    within its graceful-timeout) and whose children are its app workers."""

    def app_workers(self):
        return children(self.master.pid)

    def kill_target(self, rng):
        live = self.app_workers()
        return rng.choice(live) if live else None

    def serving_workers(self):
        return self.app_workers()

    def stop_app(self):
        self.master.send_signal(signal.SIGTERM)
        try:
            self.master.wait(60)
            return True
        except subprocess.TimeoutExpired:
            return False


class Uwsgi(AppServer):
    name = "uwsgi"

    def start(self):
        self.sock = os.path.join(self.run, "uwsgi.sock")
        self.pidfile = os.path.join(self.run, "uwsgi.pid")
        self.app_log = os.path.join(self.run, "logs", "uwsgi.log")
        shutil.copy(APP_SRC, os.path.join(self.app_dir, "soak_app.py"))
        venv = os.path.dirname(os.path.dirname(sys.executable))
        self.master = self.spawn(stacks.uwsgi_cmd(
            venv, WORKERS, THREADS, self.sock, self.app_dir, "soak_app:application",
            ["--pidfile", self.pidfile, "--max-requests", str(MAX_REQUESTS),
             # uWSGI's jitter: worker_id * delta added to max-requests
             "--max-requests-delta", str(JITTER // WORKERS),
             "--reload-mercy", "30", "--worker-reload-mercy", "30"]), "uwsgi.log")
        params = os.path.join(ROOT, "bench", "uwsgi_params")
        loc = "            include %s;\n            uwsgi_pass unix:%s;\n" % (params, self.sock)
        self.conf = self.nginx_conf(
            "        location / {\n" + loc + "        }\n"
            "        location /unbuf/ {\n" + loc +
            "            uwsgi_request_buffering off;\n        }\n",
            http_extra="    uwsgi_read_timeout %ds;\n" % READ_TIMEOUT_S)
        self.start_nginx()

    async def reload(self, rng, broken):
        tail = LogTail(self.app_log)
        tail.mark()
        venv = os.path.dirname(os.path.dirname(sys.executable))
        # uWSGI's documented graceful reload (SIGHUP to the master)
        subprocess.run([os.path.join(venv, "bin", "uwsgi"), "--reload", self.pidfile],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = await wait_for(lambda: "WSGI app 0 (mountpoint='') ready" in tail.since_mark(), 60)
        return "done" if ok else "uwsgi did not reload within 60 s"



class Gunicorn(AppServer):
    name = "gunicorn"

    def start(self):
        self.sock = os.path.join(self.run, "gunicorn.sock")
        self.app_log = os.path.join(self.run, "logs", "gunicorn.log")
        shutil.copy(APP_SRC, os.path.join(self.app_dir, "soak_app.py"))
        venv = os.path.dirname(os.path.dirname(sys.executable))
        self.master = self.spawn(stacks.gunicorn_cmd(
            venv, WORKERS, THREADS, self.sock, self.app_dir, "soak_app:application",
            ["--max-requests", str(MAX_REQUESTS), "--max-requests-jitter", str(JITTER),
             "--graceful-timeout", "30", "--log-level", "info",
             "--error-logfile", self.app_log]), "gunicorn.stderr")
        self.conf = self.nginx_conf(
            "        location / { proxy_pass http://app; }\n"
            "        location /unbuf/ {\n            proxy_pass http://app;\n"
            "            proxy_request_buffering off;\n        }\n",
            http_extra="    upstream app { server unix:%s; keepalive 16; }\n"
                       "    proxy_http_version 1.1;\n"
                       "    proxy_set_header Connection \"\";\n"
                       "    proxy_read_timeout %ds;\n" % (self.sock, READ_TIMEOUT_S))
        self.start_nginx()

    async def reload(self, rng, broken):
        tail = LogTail(self.app_log)
        tail.mark()
        os.kill(self.master.pid, signal.SIGHUP)      # gunicorn's documented reload
        ok = await wait_for(lambda: len(re.findall("Booting worker", tail.since_mark()))
                            >= WORKERS, 60)
        return "done" if ok else "gunicorn did not boot new workers within 60 s"



STACKS = {"ours": Ours, "uwsgi": Uwsgi, "gunicorn": Gunicorn}


# ------------------------------------------------------------------ HTTP/1.x client

class Result:
    """What a client got for one request."""

    def __init__(self):
        self.status = None
        self.headers = {}
        self.body = b""
        self.got_any = False       # any response byte
        self.complete = False      # framing ended: Content-Length reached, last chunk, END_STREAM
        self.by_close = False      # the body was delimited by the close (no length, no chunks)
        self.closed = False        # the connection ended (EOF, reset, GOAWAY, RST_STREAM)
        self.timeout = False       # nothing ended it within CLIENT_TIMEOUT_S
        self.keep = False          # the connection may carry another request
        self.not_processed = False  # h2: above a GOAWAY's last_stream_id (retryable)
        self.not_sent = False      # h2: the connection ended before it could be sent
        self.done_at = None        # when the response ended (a body may still be going out)
        self.body_not_drained = False  # the server neither read the rest of the body nor closed
        self.error = None


async def read_h1(reader, res, head_only=False):
    line = await reader.readline()
    if not line:
        res.closed = True
        return
    res.got_any = True
    m = re.match(rb"HTTP/(1\.[01]) (\d{3})", line)
    if not m:
        res.error = "bad status line %r" % line[:80]
        res.closed = True
        return
    version, res.status = m.group(1), int(m.group(2))
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            res.closed = True
            return
        if line in (b"\r\n", b"\n"):
            break
        k, _, v = line.partition(b":")
        res.headers.setdefault(k.strip().lower().decode(), []).append(v.strip().decode("latin-1"))
    if res.status == 100:          # interim (Expect: 100-continue): the answer follows
        res.headers = {}
        res.interim = True
        return await read_h1(reader, res, head_only)
    conn = ",".join(res.headers.get("connection", [])).lower()
    res.keep = ("close" not in conn) if version == b"1.1" else ("keep-alive" in conn)
    te = ",".join(res.headers.get("transfer-encoding", [])).lower()
    cl = res.headers.get("content-length")
    body = bytearray()
    try:
        if head_only or res.status in (204, 304) or 100 <= res.status < 200:
            res.complete = True
        elif "chunked" in te:
            while True:
                size_line = await reader.readline()
                if not size_line.endswith(b"\n"):
                    raise asyncio.IncompleteReadError(b"", None)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    res.complete = True
                    break
                body += await reader.readexactly(size)
                if await reader.readexactly(2) != b"\r\n":
                    res.error = "bad chunk end"
                    break
        elif cl is not None:
            body += await reader.readexactly(int(cl[0]))
            res.complete = True
        else:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                body += data
            res.complete = res.by_close = res.closed = True
            res.keep = False
    except asyncio.IncompleteReadError as e:
        body += e.partial
        res.closed = True
    except (ConnectionError, ValueError) as e:
        res.closed = True
        res.error = res.error or repr(e)
    res.body = bytes(body)


def h1_request(method, path, body, version, keep, chunked, expect=False):
    head = "%s %s HTTP/%s\r\nHost: localhost\r\n" % (method, path, version)
    if expect:
        # the body goes out at once all the same (as curl does after its wait)
        head += "Expect: 100-continue\r\n"
    if version == "1.1" and not keep:
        head += "Connection: close\r\n"
    if version == "1.0" and keep:
        head += "Connection: keep-alive\r\n"
    if body is not None:
        head += "Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: %d\r\n" % len(body)
    return (head + "\r\n").encode()


def chunk_body(body, rng):
    out, i = [], 0
    while i < len(body):
        n = rng.choice([1, 100, 4096, 65536])
        out.append(b"%x\r\n%s\r\n" % (len(body[i:i + n]), body[i:i + n]))
        i += n
    out.append(b"0\r\n\r\n")
    return b"".join(out)


OPEN = set()       # client connections not closed yet, with the task that opened them


def opened(conn):
    conn.task = asyncio.current_task()
    OPEN.add(conn)


def close_left_open():
    """Closes what the current task opened and left open (it raised midway)."""
    for conn in [c for c in OPEN if c.task is asyncio.current_task()]:
        conn.close()


class H1Conn:
    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None
        self.used = 0

    async def open(self, rcvbuf=None):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", self.port))
        self.reader, self.writer = await asyncio.open_connection(
            sock=s, limit=rcvbuf or 2 ** 16)
        self.used = 0
        opened(self)

    def close(self, reset=False):
        OPEN.discard(self)
        if self.writer:
            if reset:
                sock = self.writer.get_extra_info("socket")
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            self.writer.close()
            self.writer = None

    async def send_body(self, data):
        try:
            for i in range(0, len(data), 65536):
                self.writer.write(data[i:i + 65536])
                await self.writer.drain()
        except (ConnectionError, AttributeError):
            pass           # the server answered and closed first: the response tells

    async def request(self, method, path, body=None, version="1.1", keep=True, chunked=False,
                      rng=None):
        res = Result()
        res.reused = self.used > 0
        self.used += 1
        expect = body is not None and version == "1.1" and rng.random() < 0.2
        wire = h1_request(method, path, body, version, keep, chunked, expect)
        if body is not None:
            wire_body = chunk_body(body, rng) if chunked else body
        try:
            self.writer.write(wire)
            sender = None
            if body is not None:
                sender = asyncio.ensure_future(self.send_body(wire_body))
            await asyncio.wait_for(read_h1(self.reader, res, method == "HEAD"), CLIENT_TIMEOUT_S)
            res.done_at = now()
            if sender:
                if res.closed or not res.complete:
                    sender.cancel()
                # an answer before the whole body: the server may read and drop the
                # rest (the connection stays usable) or close; give it a while
                done, _ = await asyncio.wait([sender], timeout=5)
                if not done:
                    sender.cancel()
                    res.keep = False
                    res.body_not_drained = True
        except asyncio.TimeoutError:
            res.timeout = True
        except (ConnectionError, OSError) as e:
            res.closed = True
            res.error = repr(e)
        if not res.keep or res.closed or res.timeout or not res.complete:
            self.close()
        return res


class SlowReader:
    """A StreamReader that takes its time: about 1 MiB/s."""

    def __init__(self, reader):
        self.reader = reader

    async def pace(self, data):
        await asyncio.sleep(len(data) / MiB)      # pacing, not synchronisation
        return data

    async def readline(self):
        return await self.pace(await self.reader.readline())

    async def readexactly(self, n):
        return await self.pace(await self.reader.readexactly(n))

    async def read(self, n):
        return await self.pace(await self.reader.read(min(n, 16384)))


# ------------------------------------------------------------------ HTTP/2 client

class H2Client(h2.connection.H2Connection):
    """h2 closes its state machine on GOAWAY and then refuses DATA even for the
    streams the server said it will finish (RFC 9113 6.8: those up to
    last_stream_id go on); keep it open (H2Conn starts no new stream after a
    GOAWAY)."""

    def _receive_goaway_frame(self, frame):
        state = self.state_machine.state
        frames, events = super()._receive_goaway_frame(frame)
        self.state_machine.state = state
        return frames, events


class H2Conn:
    """One TLS connection, one stream at a time (h2 does the framing)."""

    def __init__(self, port):
        self.port = port
        self.streams = {}
        self.closed = False
        self.goaway = None
        self.end_reason = None
        self.used = 0

    async def open(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=ctx, server_hostname="localhost")
        if self.writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
            raise RuntimeError("ALPN did not select h2")
        self.conn = H2Client(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.window = asyncio.Event()
        self.writer.write(self.conn.data_to_send())
        self.pump_task = asyncio.ensure_future(self.pump())
        opened(self)

    def end_all(self):
        self.closed = True
        for st in self.streams.values():
            st["res"].closed = True
            st["done"].set()
        self.window.set()

    async def pump(self):
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for ev in self.conn.receive_data(data):
                    st = self.streams.get(getattr(ev, "stream_id", None))
                    if isinstance(ev, h2.events.ResponseReceived) and st:
                        st["res"].got_any = True
                        for k, v in ev.headers:
                            if k == b":status":
                                st["res"].status = int(v)
                            else:
                                st["res"].headers.setdefault(k.decode(), []).append(
                                    v.decode("latin-1"))
                    elif isinstance(ev, h2.events.DataReceived):
                        if st:
                            st["body"] += ev.data
                        self.conn.acknowledge_received_data(ev.flow_controlled_length,
                                                            ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded) and st:
                        st["res"].complete = True
                        st["done"].set()
                    elif isinstance(ev, h2.events.StreamReset) and st:
                        st["res"].closed = True
                        st["res"].error = "RST_STREAM %s" % ev.error_code
                        st["done"].set()
                    elif isinstance(ev, h2.events.WindowUpdated):
                        self.window.set()
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        self.goaway = ev.last_stream_id or 0
                        for sid, s in self.streams.items():
                            s["res"].error = "GOAWAY %s last %s" % (ev.error_code,
                                                                   ev.last_stream_id)
                            if sid > self.goaway:
                                s["res"].not_processed = True
                                s["res"].closed = True
                                s["done"].set()

                self.writer.write(self.conn.data_to_send())
                await self.writer.drain()
        except (ConnectionError, OSError, ssl.SSLError) as e:
            self.end_reason = repr(e)
        except h2.exceptions.ProtocolError as e:
            self.end_reason = "client-side h2 error %r" % e
        finally:
            for st in self.streams.values():
                st["res"].error = st["res"].error or (
                    "GOAWAY seen, then the connection ended" if self.goaway is not None
                    else "connection ended") + (" (%s)" % self.end_reason
                                                if self.end_reason else "")
            self.end_all()

    async def send_body(self, sid, data, done):
        """Sends data as the flow-control window allows, until the stream is
        done (a server may answer before the whole body and reset the stream)."""
        i = 0
        while i < len(data) and not self.closed and not done.is_set():
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size, len(data) - i)
            if room <= 0:
                self.window.clear()
                waits = [asyncio.ensure_future(self.window.wait()),
                         asyncio.ensure_future(done.wait())]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
                continue
            self.conn.send_data(sid, data[i:i + room])
            i += room
            self.writer.write(self.conn.data_to_send())
            await self.writer.drain()
        if not self.closed and not done.is_set():
            self.conn.end_stream(sid)
            self.writer.write(self.conn.data_to_send())

    async def request(self, method, path, body=None):
        res = Result()
        res.reused = self.used > 0
        self.used += 1
        if self.closed or self.goaway is not None:
            res.not_sent = True        # no new stream on a connection that is ending
            return res
        sid = self.conn.get_next_available_stream_id()
        st = {"res": res, "body": bytearray(), "done": asyncio.Event()}
        self.streams[sid] = st
        hdrs = [(":method", method), (":path", path), (":scheme", "https"),
                (":authority", "localhost")]
        if body is not None:
            hdrs.append(("content-length", str(len(body))))
        sender = None
        try:
            self.conn.send_headers(sid, hdrs, end_stream=body is None)
            self.writer.write(self.conn.data_to_send())
            if body is not None:
                sender = asyncio.ensure_future(self.send_body(sid, body, st["done"]))
            await asyncio.wait_for(st["done"].wait(), CLIENT_TIMEOUT_S)
            res.done_at = now()
        except asyncio.TimeoutError:
            res.timeout = True
        except (ConnectionError, OSError, h2.exceptions.ProtocolError) as e:
            res.closed = True
            res.error = repr(e)
        if sender:
            if not sender.done():
                sender.cancel()
                try:           # our half of the stream is still open: end it
                    self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    self.writer.write(self.conn.data_to_send())
                except (h2.exceptions.ProtocolError, OSError, AttributeError):
                    pass
            results = await asyncio.gather(sender, return_exceptions=True)
            err = results[0]
            if isinstance(err, (ConnectionError, OSError, h2.exceptions.ProtocolError)) \
                    and not res.complete:
                res.closed = True
                res.error = res.error or repr(err)
        res.body = bytes(st["body"])
        del self.streams[sid]
        return res

    def close(self):
        OPEN.discard(self)
        self.closed = True
        self.pump_task.cancel()
        self.writer.close()


# ------------------------------------------------------------------ what a route must give

class Req:
    """A request and what its route must answer: kind is 'exact' (200 and
    these bytes), 'error' (one of these statuses, complete), 'truncate' (200
    then a close before the framing ends; or a complete 500), 'long_cl'."""

    def __init__(self, route, method, path, body=None, expect=None, kind="exact",
                 statuses=(200,), timed=True):
        self.route, self.method, self.path, self.body = route, method, path, body
        self.expect, self.kind, self.statuses, self.timed = expect, kind, statuses, timed


def expected_digest(data):
    return soak_app.digest_reply(data)


def make_request(rng, h2_ok=True):
    """A seeded choice of route and its expectation."""
    prefix = rng.choice(["", "/unbuf"])
    q = "?r=%d" % rng.randrange(10 ** 9)
    roll = rng.random() * 100
    if roll < 30:
        n = rng.choice([0, 1, 100, 4096, 20000, 100000])
        path = "%s/small/%d%s" % (prefix, n, q)
        return Req("small", "GET", path, expect=lambda p=path, n=n: soak_app.pattern(
            p.encode(), n))
    if roll < 42:
        n = rng.choice([1, 65536, MiB + 13, 4 * MiB])
        c = rng.choice([1000, 8192, 65536])
        path = "%s/stream/%d/%d%s" % (prefix, n, c, q)
        return Req("stream", "GET", path, expect=lambda p=path, n=n: soak_app.pattern(
            p.encode(), n))
    if roll < 52:
        n = rng.choice(FILE_SIZES)
        path = "%s/file/%d%s" % (prefix, n, q)
        return Req("file", "GET", path, expect=lambda n=n: file_content(n))
    if roll < 74:
        size = rng.choice([0, 10, 70000, MiB + 5, 3 * MiB])
        body = rng.randbytes(size)
        how = rng.choice(["full", "part", "none"])
        if how == "full":
            path, want = "%s/upload/full%s" % (prefix, q), expected_digest(body)
        elif how == "part":
            k = rng.choice([0, 1, 1000, 65536, MiB])
            path, want = "%s/upload/part/%d%s" % (prefix, k, q), expected_digest(body[:k])
        else:
            path, want = "%s/upload/none%s" % (prefix, q), b"none"
        return Req("upload-" + how, "POST", path, body=body, expect=lambda w=want: w)
    if roll < 78:
        ms = rng.randrange(100, int(READ_TIMEOUT_S * 1000 * 0.7))
        path = "%s/slow/%d%s" % (prefix, ms, q)
        return Req("slow", "GET", path, expect=lambda p=path: soak_app.pattern(p.encode(), 100),
                   timed=False)
    if roll < 81:
        n, ms = rng.randrange(2, 5), rng.randrange(100, int(READ_TIMEOUT_S * 1000 * 0.6))
        path = "%s/slowstream/%d/%d%s" % (prefix, n, ms, q)
        return Req("slowstream", "GET", path, timed=False, expect=lambda p=path, n=n: b"".join(
            soak_app.block(p.encode(), i) for i in range(n)))
    if roll < 82:
        return Req("spin", "GET", "%s/spin%s" % (prefix, q), kind="error", statuses=(504,))
    if roll < 83:
        return Req("stuck", "GET", "%s/stuck%s" % (prefix, q), kind="error", statuses=(504,))
    if roll < 84.5:
        return Req("raise-before", "GET", "%s/raise/before%s" % (prefix, q), kind="error",
                   statuses=(500,))
    if roll < 86:
        return Req("raise-after", "GET", "%s/raise/after%s" % (prefix, q), kind="truncate")
    if roll < 92:
        bad = rng.choice(sorted(soak_app.BAD))
        path = "%s/bad/%s%s" % (prefix, bad, q)
        if bad in ("strlater", "short_cl"):
            return Req("bad-" + bad, "GET", path, kind="truncate")
        if bad == "long_cl":
            return Req("bad-long_cl", "GET", path, expect=lambda: b"L" * 100)
        return Req("bad-" + bad, "GET", path, kind="error", statuses=(500,))
    if roll < 94:
        return Req("leak", "GET", "%s/leak%s" % (prefix, q), kind="leak")
    # the rest: small again (most traffic is ordinary)
    path = "%s/small/%d%s" % (prefix, 300, q)
    return Req("small", "GET", path, expect=lambda p=path: soak_app.pattern(p.encode(), 300))


FILE_CACHE = {}


def file_content(n):
    if n not in FILE_CACHE:
        FILE_CACHE[n] = soak_app.pattern(b"file/%d" % n, n)
    return FILE_CACHE[n]


# ------------------------------------------------------------------ the soak

class Soak:
    def __init__(self, args, stack):
        self.args, self.stack = args, stack
        self.rng = random.Random(args.seed)
        self.t0 = now()
        self.deadline = self.t0 + args.minutes * 60
        self.sent = 0
        self.correct = 0
        self.causes = {}           # expected failure cause -> count
        self.notes = {}            # things seen that are not failures
        self.violations = {}       # unexpected outcome -> count
        self.examples = []         # the first few violations, in full
        self.latency = []          # seconds, normal routes of checking clients
        self.kills = []            # (time, pid)
        self.kill_log = []
        self.respawn_failures = 0
        self.reloads = {"done": 0, "refused": 0, "failed": 0}
        self.reload_times = []
        self.timeline = []         # (time, what): the faults, for reading failures against
        self.reload_problems = []
        self.procs = {}            # pid -> {"first", "peak", "last", "fds0", "fds", "role"}
        self.by_proto = {}

    # -- bookkeeping
    def count(self, table, key, n=1):
        table[key] = table.get(key, 0) + n

    def violation(self, what, req, res, proto):
        self.count(self.violations, what)
        if sum(e["what"] == what for e in self.examples) < 3:       # a few of each kind
            self.examples.append({
                "what": what, "route": req.route, "path": req.path, "proto": proto,
                "status": res.status, "complete": res.complete, "closed": res.closed,
                "timeout": res.timeout, "got_bytes": len(res.body), "error": res.error,
                "t": round(now() - self.t0, 3)})

    def reload_during(self, start, end):
        return any(start - 0.5 <= t <= end + 0.5 for t in self.reload_times)

    def killed_during(self, start, end):
        return any(start - 0.5 <= t <= end + 0.5 for t, _ in self.kills)

    def judge(self, req, res, proto, start, end):
        """Counts one checking client's result by cause; returns True if correct."""
        self.count(self.by_proto, proto)
        end = res.done_at or end
        if res.body_not_drained:
            self.count(self.notes, "upload body neither read nor refused for 5 s after "
                       "a complete response (connection not reused)")
        if res.timeout:
            self.violation("truncated without close (client timeout)", req, res, proto)
            return False
        if "injected" in res.headers:
            self.violation("a header injected by CR/LF in the app's header", req, res, proto)
            return False
        # An HTTP/1.0 body without a length ends with the close: complete as far as the
        # client can tell, but a short one is a truncation with a close.
        framed = res.complete and not res.by_close
        if res.complete:
            if req.kind in ("exact", "leak") and res.status == 200:
                good = res.body == req.expect() if req.kind == "exact" \
                    else res.body.startswith(b"leaked ")
                if good:
                    self.correct += 1
                    if req.timed:
                        self.latency.append(end - start)
                    return True
                if framed:
                    self.violation("wrong bytes with complete framing", req, res, proto)
                    return False
                return self.closed_early(req, res, proto, start, end)
            if req.kind == "error" and res.status in req.statuses:
                self.count(self.causes, "broken route's defined error (%s %d)"
                           % (req.route, res.status))
                return True
            if req.kind == "truncate" and res.status == 500:
                self.count(self.causes, "broken route's defined error (%s 500)" % req.route)
                return True
            if req.kind == "truncate" and res.status == 200:
                if framed:
                    self.violation("truncated without close (complete framing)", req, res,
                                   proto)
                    return False
                self.count(self.causes, "broken route's defined error (%s: close)" % req.route)
                return True
            if res.status in (502, 503) and self.killed_during(start, end):
                self.count(self.causes, "in flight on a killed worker (%d)" % res.status)
                return False
            self.violation("unexpected status %s" % res.status, req, res, proto)
            return False
        # ended by a close (or a reset stream) before the framing said so
        if req.kind == "truncate" and res.status == 200:
            self.count(self.causes, "broken route's defined error (%s: close)" % req.route)
            return True
        return self.closed_early(req, res, proto, start, end)

    def closed_early(self, req, res, proto, start, end):
        """A response cut by a close: attributed to its cause, or a violation."""
        if self.killed_during(start, end):
            self.count(self.causes, "in flight on a killed worker")
            return False
        if res.not_processed:
            # RFC 9113 8.7: the server did not process it (a graceful exit's
            # GOAWAY named a lower last stream); clients retry
            self.count(self.causes, "h2 stream above a graceful GOAWAY's last stream id "
                       "(not processed, retryable)")
            return False
        if not res.got_any and res.reused:
            # HTTP/1.1 keep-alive (RFC 9112 9.3.1): a server may close an idle connection
            # (reload, recycling) as the next request is sent; clients retry
            self.count(self.causes, "idle keep-alive connection closed by the server "
                       "(reload/recycle) before the request was read")
            return False
        self.violation("connection closed before the response ended", req, res, proto)
        return False

    # -- clients
    async def checking_client(self, cid):
        rng = random.Random(self.args.seed * 1000 + cid)
        while now() < self.deadline:
            proto = rng.choice(["h1.1-keepalive", "h1.1-keepalive", "h1.1-close", "h1.0", "h2"])
            try:
                if proto == "h2":
                    await self.h2_session(rng)
                else:
                    await self.h1_session(rng, proto)
            except (ConnectionError, OSError) as e:
                # the connect itself failed: only while a worker was being killed
                if self.killed_during(now() - 1, now()):
                    self.count(self.causes, "connect failed while a worker was killed")
                else:
                    self.count(self.violations, "connect failed: %r" % e)
            finally:
                close_left_open()

    async def h1_session(self, rng, proto):
        c = H1Conn(self.stack.port)
        await c.open()
        version = "1.0" if proto == "h1.0" else "1.1"
        keep = proto == "h1.1-keepalive"
        for _ in range(rng.randrange(1, 10) if keep else 1):
            if now() >= self.deadline:
                break
            req = make_request(rng)
            chunked = version == "1.1" and req.body is not None and rng.random() < 0.3
            self.sent += 1
            start = now()
            res = await c.request(req.method, req.path, req.body, version, keep, chunked, rng)
            self.judge(req, res, proto + ("-chunked" if chunked else ""), start, now())
            if c.writer is None:
                break
        c.close()

    async def h2_session(self, rng):
        c = H2Conn(self.stack.tls_port)
        await c.open()
        try:
            for _ in range(rng.randrange(1, 15)):
                if now() >= self.deadline or c.closed or c.goaway is not None:
                    break
                # one stream at a time, or a few at once on the connection
                reqs = [make_request(rng) for _ in range(rng.choice([1, 1, 2, 4]))]
                await asyncio.gather(*(self.h2_one(c, req, len(reqs)) for req in reqs))
        finally:
            c.close()

    async def h2_one(self, c, req, streams):
        start = now()
        res = await c.request(req.method, req.path, req.body)
        if res.not_sent:
            return
        self.sent += 1
        self.judge(req, res, "h2" if streams == 1 else "h2-multiplexed", start, now())

    async def rude_client(self, cid):
        """Leaves at random points, reads slowly, or sends malformed requests."""
        rng = random.Random(self.args.seed * 1000 + 500 + cid)
        while now() < self.deadline:
            what = rng.choice(["mid-headers", "mid-upload", "mid-body", "slow-read",
                               "slow-upload", "malformed", "h2-reset"])
            try:
                await getattr(self, "rude_" + what.replace("-", "_"))(rng)
            except asyncio.TimeoutError:
                # the server neither read nor answered nor closed (each wait is bounded)
                self.count(self.violations, "rude client stalled (%s)" % what)
            except (ConnectionError, OSError, asyncio.IncompleteReadError,
                    h2.exceptions.ProtocolError):
                self.count(self.causes, "client left (%s)" % what)
            finally:
                close_left_open()

    async def rude_mid_headers(self, rng):
        c = H1Conn(self.stack.port)
        await c.open()
        wire = h1_request("GET", "/small/100?r=%d" % rng.randrange(10 ** 9), None, "1.1",
                          True, False)
        c.writer.write(wire[:rng.randrange(1, len(wire) - 2)])
        await asyncio.wait_for(c.writer.drain(), CLIENT_TIMEOUT_S)
        self.sent += 1
        c.close(reset=rng.random() < 0.5)
        self.count(self.causes, "client left (mid-headers)")

    async def rude_mid_upload(self, rng):
        c = H1Conn(self.stack.port)
        await c.open()
        size = rng.choice([70000, MiB, 4 * MiB])
        path = rng.choice(["/upload/full", "/unbuf/upload/full", "/unbuf/upload/part/1000",
                           "/unbuf/upload/none"])
        c.writer.write(h1_request("POST", path, b"", "1.1", True, False)
                       .replace(b"Content-Length: 0", b"Content-Length: %d" % size))
        c.writer.write(b"u" * rng.randrange(0, size))
        await asyncio.wait_for(c.writer.drain(), CLIENT_TIMEOUT_S)
        self.sent += 1
        c.close(reset=rng.random() < 0.5)
        self.count(self.causes, "client left (mid-upload)")

    async def rude_h2_reset(self, rng):
        """h2: a stream reset (RST_STREAM CANCEL) mid-upload or mid-body, or the
        whole connection dropped, while other streams run."""
        c = H2Conn(self.stack.tls_port)
        await c.open()
        self.sent += 1
        upload = rng.random() < 0.5
        if upload:
            path = rng.choice(["/upload/full", "/unbuf/upload/full", "/unbuf/upload/none"])
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "POST"), (":path", path),
                                      (":scheme", "https"), (":authority", "localhost"),
                                      ("content-length", str(4 * MiB))])
            c.conn.send_data(sid, b"u" * min(rng.randrange(1, 65535),
                                             c.conn.local_flow_control_window(sid),
                                             c.conn.max_outbound_frame_size))
        else:
            path = rng.choice(["/stream/%d/65536" % (4 * MiB), "/file/%d" % (4 * MiB),
                               "/slowstream/4/500"])
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "GET"), (":path", path),
                                      (":scheme", "https"), (":authority", "localhost")],
                                end_stream=True)
        c.streams[sid] = {"res": Result(), "body": bytearray(), "done": asyncio.Event()}
        c.writer.write(c.conn.data_to_send())
        await asyncio.sleep(rng.uniform(0, 0.3))       # somewhere into the exchange
        what = "h2 connection dropped"
        if rng.random() < 0.5 and not c.closed:
            try:
                c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                c.writer.write(c.conn.data_to_send())
                await asyncio.wait_for(c.writer.drain(), CLIENT_TIMEOUT_S)
                what = "h2 stream reset"
            except h2.exceptions.StreamClosedError:
                pass          # it had ended already: the drop below is the leaving
        else:
            what = "h2 connection dropped"
        c.close()
        self.count(self.causes, "client left (%s, %s)" % (what, "mid-upload" if upload
                                                           else "mid-body"))

    async def rude_mid_body(self, rng):
        c = H1Conn(self.stack.port)
        await c.open()
        path, size = rng.choice([("/stream/%d/65536" % (4 * MiB), 4 * MiB),
                                 ("/file/%d" % (4 * MiB), 4 * MiB),
                                 ("/slowstream/4/500", 4 * 4096),
                                 ("/stream/%d/1000" % MiB, MiB)])
        c.writer.write(h1_request("GET", path, None, "1.1", True, False))
        self.sent += 1
        want = rng.randrange(0, size)       # leaves before the end of the body
        got = 0
        while got < want:
            try:
                data = await asyncio.wait_for(c.reader.read(65536), CLIENT_TIMEOUT_S)
            except asyncio.TimeoutError:
                self.count(self.violations, "truncated without close (rude client: %s "
                           "stalled at %d bytes)" % (path, got))
                break
            if not data:
                break
            got += len(data)
        c.close(reset=rng.random() < 0.5)
        self.count(self.causes, "client left (mid-body)")

    async def rude_slow_read(self, rng):
        """A checking client that reads ~1 MiB/s with a small receive buffer."""
        c = H1Conn(self.stack.port)
        await c.open(rcvbuf=16384)
        n = rng.choice([MiB, 2 * MiB])
        path = "/stream/%d/65536?r=%d" % (n, rng.randrange(10 ** 9))
        req = Req("slow-read", "GET", path, timed=False,
                  expect=lambda: soak_app.pattern(path.encode(), n))
        c.writer.write(h1_request("GET", path, None, "1.1", False, False))
        self.sent += 1
        start = now()
        res = Result()
        res.reused = False
        slow = SlowReader(c.reader)
        try:
            await asyncio.wait_for(read_h1(slow, res), CLIENT_TIMEOUT_S)
        except asyncio.TimeoutError:
            res.timeout = True
        self.judge(req, res, "h1.1-slow-read", start, now())
        c.close()

    async def rude_slow_upload(self, rng):
        """A checking client that sends its body in small pieces, slowly."""
        c = H1Conn(self.stack.port)
        await c.open()
        body = rng.randbytes(rng.choice([100000, 300000]))
        path = rng.choice(["/unbuf/upload/full", "/upload/full"]) + "?r=%d" % rng.randrange(
            10 ** 9)
        req = Req("slow-upload", "POST", path, body=body, timed=False,
                  expect=lambda: expected_digest(body))
        self.sent += 1
        start = now()
        c.writer.write(h1_request("POST", path, body, "1.1", False, False))
        res = Result()
        res.reused = False
        try:
            for i in range(0, len(body), 16384):
                c.writer.write(body[i:i + 16384])
                await asyncio.wait_for(c.writer.drain(), CLIENT_TIMEOUT_S)
                await asyncio.sleep(0.01)       # pacing, not synchronisation
            await asyncio.wait_for(read_h1(c.reader, res), CLIENT_TIMEOUT_S)
        except asyncio.TimeoutError:
            res.timeout = True
        except (ConnectionError, OSError) as e:
            res.closed, res.error = True, repr(e)
        self.judge(req, res, "h1.1-slow-upload", start, now())
        c.close()

    MALFORMED = [
        b"GARBAGE\r\n\r\n",
        b"GET /small/10 HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n",
        b"GET /small/10 HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET /small/10 HTTP/1.1\r\n\r\n",
        b"POST /upload/full HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        b"POST /upload/full HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /upload/full HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\nzz\r\n",
        b"POST /unbuf/upload/full HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\nzz\r\n",
        b"GET /small/10 HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
        b"GET /" + b"u" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,
        b"GET /small/10 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
    ]

    async def rude_malformed(self, rng):
        c = H1Conn(self.stack.port)
        await c.open()
        i = rng.randrange(len(self.MALFORMED))
        c.writer.write(self.MALFORMED[i])
        self.sent += 1
        res = Result()
        try:
            await asyncio.wait_for(read_h1(c.reader, res), CLIENT_TIMEOUT_S)
        except asyncio.TimeoutError:
            res.timeout = True
        c.close()
        if res.timeout:
            self.count(self.violations, "malformed request #%d: no answer, no close" % i)
        elif res.status is None or 400 <= res.status < 500 or res.status == 505:
            self.count(self.causes, "malformed request refused (%s)" % (res.status or "close"))
        else:
            self.count(self.violations, "malformed request #%d answered %s" % (i, res.status))

    # -- faults
    async def faults(self):
        rng = random.Random(self.args.seed * 1000 + 999)
        next_reload = now() + rng.uniform(3, 6)
        next_kill = now() + rng.uniform(10, 20)
        while now() < self.deadline - 5:
            await asyncio.sleep(max(0, min(next_reload, next_kill) - now()))   # the schedule
            if now() >= self.deadline - 5:
                break
            if now() >= next_reload:
                broken = self.stack.name == "ours" and rng.random() < 0.3
                self.timeline.append((round(now() - self.t0, 3), "reload%s" % (
                    " (broken app)" if broken else "")))
                self.reload_times.append(now())
                outcome = await self.stack.reload(rng, broken)
                self.timeline.append((round(now() - self.t0, 3), "reload " + outcome))
                if outcome in self.reloads:
                    self.reloads[outcome] += 1
                else:
                    self.reloads["failed"] += 1
                    self.reload_problems.append(outcome)
                next_reload = now() + rng.uniform(3, 6)
            if now() >= next_kill:
                pid = self.stack.kill_target(rng)
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    self.kills.append((now(), pid))
                    self.timeline.append((round(now() - self.t0, 3), "kill -9 %d" % pid))
                    if not await self.stack.await_respawn(pid):
                        self.respawn_failures += 1
                next_kill = now() + rng.uniform(10, 20)

    async def sampler(self):
        while now() < self.deadline:
            self.sample()
            await asyncio.sleep(1)

    def sample(self):
        roles = [("app worker", self.stack.app_workers())]
        if self.stack.name != "ours":
            roles.append(("nginx worker", self.stack.nginx_workers()))
        for role, pids in roles:
            for pid in pids:
                rss, fds = rss_kib(pid), fd_count(pid)
                if rss is None:
                    continue
                p = self.procs.setdefault(pid, {"role": role, "first": rss, "peak": rss,
                                                "fds0": fds, "fdpeak": fds, "t0": now()})
                p["peak"] = max(p["peak"], rss)
                p["last"], p["fds"] = rss, fds
                p["fdpeak"] = max(p["fdpeak"], fds or 0)

    async def main(self, checking, rude):
        tasks = [asyncio.ensure_future(self.checking_client(i)) for i in range(checking)]
        tasks += [asyncio.ensure_future(self.rude_client(i)) for i in range(rude)]
        tasks += [asyncio.ensure_future(self.faults()), asyncio.ensure_future(self.sampler())]
        await asyncio.gather(*tasks)


def fd_targets(pid):
    """What a process's fds point at, and its TCP sockets' states (ss)."""
    out = []
    try:
        for fd in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
            out.append("%s -> %s" % (fd, os.readlink("/proc/%d/fd/%s" % (pid, fd))))
    except OSError:
        pass
    ss = subprocess.run(["ss", "-tanpi"], capture_output=True, text=True).stdout
    out += [line for line in ss.splitlines() if "pid=%d," % pid in line]
    return out


def idle_fds(stack):
    """{pid: open fds} of the app workers (ours: the nginx workers)."""
    return {p: fd_count(p) for p in stack.app_workers()}


async def settle_fds(stack, baseline, tolerance, timeout=15):
    """Waits for the workers' fds to come back within tolerance of baseline."""
    def within():
        fds = [n for n in idle_fds(stack).values() if n is not None]
        return fds and max(fds) <= baseline + tolerance
    await wait_for(within, timeout, 0.2)
    return idle_fds(stack)


def scan_nginx_log(path, killed):
    """alert/crit/emerg lines, minus those the soak caused on purpose."""
    expected, unexpected, levels = [], [], {}
    killed = set(killed)
    with open(path, errors="replace") as f:
        for line in f:
            level = stacks.log_level(line)
            if not level:
                continue
            levels[level] = levels.get(level, 0) + 1
            if level not in ("alert", "crit", "emerg"):
                continue
            k = re.search(r"worker process (\d+) exited on signal 9", line)
            if k and int(k.group(1)) in killed:
                expected.append(line.strip())
            elif level == "emerg" and re.search(
                    r"wsgi: (cannot load application \"[^\"]*/app_v\d+\.py:application\""
                    r"|application import check failed \(wsgi_import_check\), "
                    r"configuration rejected)", line):
                expected.append(line.strip())       # the deliberately broken deploys
            else:
                unexpected.append(line.strip())
    return expected, unexpected, levels


def percentile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def make_cert(run):
    stacks.make_cert(os.path.join(run, "key.pem"), os.path.join(run, "cert.pem"), key="rsa",
                     cn="localhost")


free_port = stacks.free_port


def prepare(run):
    if os.path.isdir(run):
        shutil.rmtree(run)
    for d in ("logs", "tmp", "app/files"):
        os.makedirs(os.path.join(run, d))
    for n in FILE_SIZES:
        with open(os.path.join(run, "app", "files", str(n)), "wb") as f:
            f.write(file_content(n))
    make_cert(run)
    for base, dirs, names in os.walk(run):         # workers may run as nobody
        os.chmod(base, 0o755)
        for n in names:
            os.chmod(os.path.join(base, n), 0o644)


async def wait_ready(stack, timeout=60):
    """The first correct answer on both listeners."""
    end = now() + timeout
    last = None
    behind = getattr(stack, "sock", None)    # the app server's socket first: no 502s
    while now() < end:
        if not stack.alive():
            raise SystemExit("%s exited at start (see %s/logs)" % (stack.name, stack.run))
        try:
            if behind:
                if not stacks.unix_socket_ready(behind):
                    raise OSError("%s: not accepting yet" % behind)
                behind = None
            c = H1Conn(stack.port)
            await c.open()
            r1 = await c.request("GET", "/small/10")
            c.close()
            h = H2Conn(stack.tls_port)
            await h.open()
            r2 = await h.request("GET", "/small/10")
            h.close()
            want = soak_app.pattern(b"/small/10?", 10)
            if r1.body == want and r2.body == want:
                return
            last = (r1.status, r2.status)
        except (OSError, RuntimeError, ssl.SSLError) as e:
            last = repr(e)
        await asyncio.sleep(0.2)
    raise SystemExit("%s did not answer: %s" % (stack.name, last))


def main():
    ap = argparse.ArgumentParser(prog="scripts/soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stack", choices=sorted(STACKS), default="ours")
    ap.add_argument("--clients", type=int, default=10, help="checking clients (default 10)")
    ap.add_argument("--rude", type=int, default=3, help="rude clients (default 3)")
    args = ap.parse_args()

    run = os.path.join(OUT, "run-" + args.stack)
    prepare(run)
    stack = STACKS[args.stack](run, free_port(), free_port(), os.geteuid() == 0)
    log("soak: %s, %g min, seed %d, %d checking + %d rude clients" % (
        args.stack, args.minutes, args.seed, args.clients, args.rude))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        stack.start()
        figures, failures = asyncio.run(soak_run(args, stack))
    finally:
        stack.kill_everything()
    path = os.path.join(OUT, "%s.json" % args.stack)
    with open(path, "w") as f:
        json.dump(figures, f, indent=1)
    print_figures(figures)
    log("figures kept in %s" % os.path.relpath(path, ROOT))
    if failures:
        for x in failures:
            sys.stderr.write("soak FAILED: %s\n" % x)
        sys.exit(1)
    log("soak passed: every invariant held")


async def soak_run(args, stack):
    await wait_ready(stack)
    # baselines: idle workers once each has served HTTP/1.1 and h2 (new connections
    # spread over the workers)
    for _ in range(20):
        c = H1Conn(stack.port)
        await c.open()
        await c.request("GET", "/small/10", keep=False)
        c.close()
        h = H2Conn(stack.tls_port)
        await h.open()
        await h.request("GET", "/small/10")
        h.close()
    await settle_fds(stack, 0, 0, timeout=2)
    fds_start = idle_fds(stack)
    base_fds = max(v for v in fds_start.values() if v is not None)
    master = stack.nginx_master() if stack.name == "ours" else stack.master.pid
    master_fds0, master_rss0 = fd_count(master), rss_kib(master)
    soak = Soak(args, stack)
    soak.sample()
    base_rss = max(p["first"] for p in soak.procs.values() if p["role"] == "app worker")
    await soak.main(args.clients, args.rude)
    soak.sample()
    # load over: the workers' descriptors must come back to where they started
    fds_end = await settle_fds(stack, base_fds, FD_SLACK)
    master_fds1, master_rss1 = fd_count(master), rss_kib(master)
    fd_detail = {pid: fd_targets(pid) for pid, n in fds_end.items()
                 if n is not None and n > base_fds + FD_SLACK}
    if fd_detail and stack.name == "ours":
        c = H1Conn(stack.port)
        await c.open()
        for _ in range(4):      # each worker's counters (which one answers is nginx's choice)
            r = await c.request("GET", "/status", keep=False)
            fd_detail.setdefault("status", []).append(r.body.decode(errors="replace"))
            c.close()
            await c.open()
        c.close()
    if stack.name == "ours" and random.Random(args.seed).random() < 0.5:
        # a broken deploy left on disk, not reloaded: nginx -s quit must still work
        stack.deploy(broken=True)
    quit_t = now()
    quit_ok = stack.quit()
    quit_s = now() - quit_t

    killed = [pid for _, pid in soak.kills]
    expected_log, unexpected_log, levels = scan_nginx_log(stack.nginx_log, killed)
    workers = [dict(pid=pid, **p) for pid, p in sorted(soak.procs.items(), key=lambda x:
                                                         x[1]["t0"])]
    app_workers = [w for w in workers if w["role"] == "app worker"]
    peak = max(w["peak"] for w in app_workers)
    rss_bound = base_rss + 192 * 1024
    failures = []
    silent = sum(v for k, v in soak.violations.items() if k.startswith(("wrong bytes",
                                                                        "truncated without")))
    if silent:
        failures.append("%d responses with wrong bytes or truncated without a close" % silent)
    other = {k: v for k, v in soak.violations.items()
             if not k.startswith(("wrong bytes", "truncated without"))}
    if other:
        failures.append("failures without an expected cause: %s" % other)
    if unexpected_log:
        failures.append("%d unexpected alert/crit/emerg lines, the first: %s" % (
            len(unexpected_log), unexpected_log[0]))
    if soak.reloads["failed"]:
        failures.append("reloads that went wrong: %s" % soak.reload_problems[:3])
    if soak.respawn_failures:
        failures.append("%d killed workers not respawned within 30 s" % soak.respawn_failures)
    if peak > rss_bound:
        failures.append("a worker's RSS reached %d MiB (bound %d MiB)" % (peak // 1024,
                                                                            rss_bound // 1024))
    fds_after = [v for v in fds_end.values() if v is not None]
    if fds_after and max(fds_after) > base_fds + FD_SLACK:
        failures.append("workers' open fds %s after the load, %d at the start" % (
            fds_end, base_fds))
    if master_fds1 is not None and master_fds0 is not None and master_fds1 > master_fds0:
        failures.append("the master's open fds went from %d to %d" % (master_fds0,
                                                                      master_fds1))
    if not quit_ok:
        failures.append("the graceful stop (nginx -s quit) did not finish within 60 s")
    elif quit_s > QUIT_BOUND_S:
        failures.append("the graceful stop (nginx -s quit) took %.1f s with no load" % quit_s)
    if soak.correct == 0:
        failures.append("no request was answered correctly")

    figures = {
        "stack": stack.name, "minutes": args.minutes, "seed": args.seed,
        "clients": {"checking": args.clients, "rude": args.rude},
        "config": {"workers": WORKERS, "threads": THREADS, "read_timeout_s": READ_TIMEOUT_S,
                   "max_requests": MAX_REQUESTS, "jitter": JITTER},
        "requests_sent": soak.sent,
        "completed_correct": soak.correct,
        "failed_by_expected_cause": dict(sorted(soak.causes.items())),
        "unexpected": dict(sorted(soak.violations.items())),
        "notes": soak.notes,
        "wrong_bytes_or_silent_truncations": silent,
        "examples": soak.examples,
        "checked_by_protocol": dict(sorted(soak.by_proto.items())),
        "reloads": soak.reloads,
        "workers_killed": len(soak.kills),
        "killed_respawned": len(soak.kills) - soak.respawn_failures,
        "latency_ms": {"p50": ms(percentile(soak.latency, 0.5)),
                       "p99": ms(percentile(soak.latency, 0.99)), "n": len(soak.latency)},
        "rss_kib": {"start": base_rss, "peak": peak, "bound": rss_bound,
                    "final": {w["pid"]: w.get("last") for w in app_workers[-WORKERS:]},
                    "workers_seen": len(app_workers)},
        "fds": {"start": base_fds, "end": fds_end, "peak": max(w["fdpeak"] for w in
                                                               app_workers),
                "over_the_start": fd_detail},
        "master": {"fds_start": master_fds0, "fds_end": master_fds1,
                   "rss_kib_start": master_rss0, "rss_kib_end": master_rss1},
        "nginx_log": {"levels": levels, "expected_alert_emerg": len(expected_log),
                      "unexpected_alert_crit_emerg": unexpected_log[:20]},
        "quit_s": round(quit_s, 2),
        "workers": workers,
        "timeline": soak.timeline,
        "failures": failures,
    }
    return figures, failures


def ms(x):
    return None if x is None else round(x * 1000, 1)


def print_figures(f):
    print("soak %s: %g min, seed %d" % (f["stack"], f["minutes"], f["seed"]))
    print("  requests sent          %d" % f["requests_sent"])
    print("  completed correct      %d" % f["completed_correct"])
    print("  failed, expected cause:")
    for k, v in f["failed_by_expected_cause"].items():
        print("    %7d  %s" % (v, k))
    print("  unexpected:            %s" % (f["unexpected"] or "none"))
    print("  wrong bytes / truncated without close: %d" % f["wrong_bytes_or_silent_truncations"])
    print("  reloads                done %(done)d, refused %(refused)d, failed %(failed)d"
          % f["reloads"])
    print("  workers killed         %d (respawned %d)" % (f["workers_killed"],
                                                          f["killed_respawned"]))
    r = f["rss_kib"]
    print("  worker RSS             start %.1f MiB, peak %.1f MiB (bound %.1f), final %s MiB,"
          " %d workers seen" % (r["start"] / 1024, r["peak"] / 1024, r["bound"] / 1024,
                                [round(v / 1024, 1) for v in r["final"].values() if v],
                                r["workers_seen"]))
    print("  worker fds             start %d, after the load %s (peak %d)" % (
        f["fds"]["start"], list(f["fds"]["end"].values()), f["fds"]["peak"]))
    m = f["master"]
    print("  master                 fds %s -> %s, RSS %.1f -> %.1f MiB" % (
        m["fds_start"], m["fds_end"], (m["rss_kib_start"] or 0) / 1024,
        (m["rss_kib_end"] or 0) / 1024))
    print("  error log              %s; alert/crit/emerg not caused on purpose: %d" % (
        f["nginx_log"]["levels"], len(f["nginx_log"]["unexpected_alert_crit_emerg"])))
    print("  latency (checked, %d)  p50 %s ms, p99 %s ms" % (
        f["latency_ms"]["n"], f["latency_ms"]["p50"], f["latency_ms"]["p99"]))
    print("  graceful quit          %.2f s" % f["quit_s"])
    for k, v in f["notes"].items():
        print("  note: %d x %s" % (v, k))


if __name__ == "__main__":
    main()

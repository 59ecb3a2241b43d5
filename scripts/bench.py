#!/usr/bin/python3
"""scripts/bench's driver (run it through scripts/bench, which installs what
it needs first). Standard library only.

Starts every stack once, on 127.0.0.1, each on its own port:
  ours           nginx + ngx_http_wsgi_module (wsgi_pass)
  ours-64t       the same with wsgi_threads 64 (only in the sleep scenario)
  ours-low       wsgi_thread_priority low; ours-idle: idle; ours-nofirst:
                 wsgi_nginx_first off (hello, static-busy)
  uwsgi          nginx -> uWSGI (uwsgi_pass, unix socket)
  gunicorn       nginx -> gunicorn gthread (proxy_pass, unix socket, keepalive)
  granian        Granian WSGI, direct
  granian-nginx  nginx -> Granian WSGI (proxy_pass, unix socket, keepalive)
  floor          ours built with --features transport-floor: pool threads answer
                 without calling Python (hello only: the hand-off's own cost)
  ceiling        nginx alone: return 200 / the same bytes as static files
  cpu-WwTt       ours with W worker processes x T threads (only in the cpu
                 scenario: 1x1, 1x2, 1xN and Nx1 for N CPUs), not pinned
When a TLS scenario runs, every stack in it gets a second server on a second
port: a second nginx from the same template with "listen ... ssl" and
bench/tls.conf.in (TLS 1.3, HTTP/2 or HTTP/1.1 by ALPN) in front of the same
app server, or for Granian direct a second Granian with its own TLS (--http
auto); the plain servers never touch TLS. The TLS scenarios (h2-hello, h2-64k: h2load, 16 connections x 8 concurrent streams;
tls-hello, tls-64k: wrk over https, HTTP/1.1) compare ours, Granian direct,
nginx -> uWSGI and nginx -> gunicorn with TLS and HTTP/2 at nginx, and nginx
alone (plus the floor for the hello ones).
Then, scenario by scenario, runs the load generator (wrk, or h2load for the
h2-* scenarios) against each stack in turn, repetition after repetition
(A B C A B C), and measures for each run: requests/s, latency percentiles
(h2load's from its --log-file), CPU time of the stack's processes
(/proc/PID/stat), the peak of their summed VmRSS, and the CPU time other
processes took meanwhile (/proc/stat minus everything the bench started); a
run disturbed by others is repeated. --full-runs N repeats the whole thing
N times (stacks restarted) and decides every target by the median of the N
runs' values. --workers 1,2 runs everything once per worker count (stacks
restarted with it) and ends with a table per count (scenario rows, stack
columns: req/s, server and load generator CPU per request, the spread over
the full runs); --unpinned lets servers and load generator share every CPU.
--openssl-build DIR adds ours and nginx alone built with another OpenSSL
(scripts/build --openssl) to the TLS scenarios of the first worker count.
Results: build/bench/results.md and build/bench/results.json.
"""

import argparse
import datetime
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time

import stacks
from stacks import (all_ticks, children_map, cpu_ticks, free_port, others, rss_kib,
                    system_ticks, tree)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
OUT = os.path.join(BUILD, "bench")
RUN = os.path.join(OUT, "run")
BENCH = os.path.join(ROOT, "bench")
VENV = os.path.join(BUILD, "bench-venv")
NGINX = os.path.join(BUILD, "sbin", "nginx")
MODULE = os.path.join(BUILD, "modules", "ngx_http_wsgi_module.so")
FLOOR_TARGET = os.path.join(BUILD, "floor-target")
FLOOR_MODULE = os.path.join(OUT, "floor", "ngx_http_wsgi_module.so")
WRK = shutil.which("wrk") or "/usr/bin/wrk"
H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
# What the load generators offer (bench/openssl-client.cnf for wrk, flags for h2load).
TLS13_CIPHER = "TLS_AES_128_GCM_SHA256"
TLS_GROUP = "X25519"
TICK = stacks.TICK
KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024

# The cpu scenario: ours with 1 worker x 1, 2 and N threads, and N workers x
# 1 thread, N = the CPUs here (what threads buy with and without the GIL,
# against processes).
CPUS = sorted(os.sched_getaffinity(0))     # what the bench may use (restored per pass)
NCPU = len(CPUS)
CPU_STACKS = list(dict.fromkeys(
    ["cpu-1w1t", "cpu-1w2t", "cpu-1w%dt" % NCPU, "cpu-%dw1t" % NCPU]))
# ours-low, ours-idle: wsgi_thread_priority low / idle; ours-nofirst:
# wsgi_nginx_first off, nginx's thread with the kernel's default time slice
# (hello, static-busy).
PRIORITY_STACKS = ["ours-low", "ours-idle", "ours-nofirst"]
PRIORITY_CONF = {"ours-low": "wsgi_thread_priority low;", "ours-idle": "wsgi_thread_priority idle;",
                 "ours-nofirst": "wsgi_nginx_first off;"}
ALL_STACKS = ["ours", "ours-64t", *PRIORITY_STACKS, "uwsgi", "gunicorn", "granian", "granian-nginx", "floor",
              "ceiling", "dedicated"] + CPU_STACKS
# Stacks that run only in the scenarios that name them, or with --stacks.
# "dedicated": ours in an nginx of its own on a unix socket, behind the
# front nginx (README "Security model": the hop that recipe costs).
NAMED_ONLY = ("ours-64t", *PRIORITY_STACKS, "floor", "dedicated", *CPU_STACKS)
NGINX_FRONTED = ["ours", "uwsgi", "gunicorn", "granian-nginx"]
APP_STACKS = ["ours", "uwsgi", "gunicorn", "granian", "granian-nginx"]
# The TLS scenarios' stacks: TLS (and HTTP/2) at nginx, or Granian's own.
TLS_STACKS = ["ours", "uwsgi", "gunicorn", "granian", "ceiling"]
# --openssl-build DIR (scripts/build --openssl VERSION): ours and nginx alone
# from that build directory's nginx, in the TLS scenarios only.
OSSL_STACKS = ["ours-ossl", "ceiling-ossl"]
ALL_STACKS += OSSL_STACKS
NAMED_ONLY += tuple(OSSL_STACKS)
OSSL = dict(dir=None, nginx=None, module=None, version=None)
# The stacks of --unpinned unless --stacks says otherwise (README's columns).
UNPINNED_STACKS = ["ours", "uwsgi", "gunicorn", "granian", "ceiling", "floor"] + OSSL_STACKS
# What the summary tables call each stack.
LABELS = {"ours": "ours", "ours-low": "ours (priority low)", "ours-idle": "ours (priority idle)",
          "ours-nofirst": "ours (wsgi_nginx_first off)", "uwsgi": "nginx → uWSGI", "gunicorn": "nginx → gunicorn",
          "granian": "Granian direct", "granian-nginx": "nginx → Granian", "floor": "floor",
          "ceiling": "nginx alone", "ours-ossl": "ours (other OpenSSL)",
          "ceiling-ossl": "nginx alone (other OpenSSL)"}

# name: what, path, method/body, connections, expected body length, stacks
SCENARIOS = [
    dict(name="hello", what="GET, 13 bytes (floor: our module without Python)", path="/hello",
         conns=16, expect=13,
         stacks=[x for x in ALL_STACKS if x != "ours-64t" and x not in OSSL_STACKS]),
    dict(name="10k", what="GET, 10 KiB body (one bytes object)", path="/bytes/10240",
         conns=16, expect=10240),
    dict(name="64k", what="GET, 64 KiB body (one bytes object)", path="/bytes/65536",
         conns=16, expect=65536),
    dict(name="1m-stream", what="GET, 1 MiB from a generator in 16 chunks "
         "(ceiling: a 1 MiB static file, sendfile)", path="/stream/1048576/16",
         conns=8, expect=MiB),
    dict(name="post-256k", what="POST 256 KiB, read fully by the app "
         "(ceiling: nginx reads and discards it)", path="/upload", body=256 * KiB,
         conns=8, expect_body=str(256 * KiB)),
    dict(name="h2-hello", what="TLS 1.3 + HTTP/2, GET 13 bytes; h2load, 16 connections × 8 "
         "concurrent streams (floor: our module without Python)", path="/hello",
         client="h2load", tls=True, conns=16, streams=8, expect=13,
         stacks=TLS_STACKS[:-1] + ["floor", "ceiling"]),
    dict(name="h2-64k", what="TLS 1.3 + HTTP/2, GET 64 KiB (one bytes object); h2load, 16 "
         "connections × 8 concurrent streams (ceiling: a static file)", path="/bytes/65536",
         client="h2load", tls=True, conns=16, streams=8, expect=65536, stacks=TLS_STACKS),
    dict(name="tls-hello", what="TLS 1.3, HTTP/1.1, GET 13 bytes; wrk, 16 connections "
         "(floor: our module without Python)", path="/hello", tls=True, conns=16, expect=13,
         stacks=TLS_STACKS[:-1] + ["floor", "ceiling"]),
    dict(name="tls-64k", what="TLS 1.3, HTTP/1.1, GET 64 KiB (one bytes object); wrk, 16 "
         "connections (ceiling: a static file)", path="/bytes/65536", tls=True, conns=16,
         expect=65536, stacks=TLS_STACKS),
    dict(name="sleep", what="GET, the app sleeps 20 ms; 64 connections "
         "(ours-64t: wsgi_threads 64)", path="/sleep/20", conns=64, expect=2,
         stacks=APP_STACKS + ["ours-64t"]),
    dict(name="static-busy", what="a 4 KiB static file from the same nginx "
         "(wrk, 1 connection), idle and while 32 connections keep the app busy "
         "(/cpu/1: 1 ms of Python CPU per request)", special="static_busy",
         path="/static/4k.bin", load_path="/cpu/1", conns=1, load_conns=32,
         expect=4096, stacks=NGINX_FRONTED + PRIORITY_STACKS),
    dict(name="64m-stream", what="GET, 64 MiB from a generator in 64 KiB chunks "
         "(ceiling: a static file)", path="/chunked/67108864", conns=2, expect=64 * MiB),
    dict(name="upload-1m", what="POST 1 MiB, read fully", path="/upload", body=MiB,
         conns=4, expect_body=str(MiB), stacks=APP_STACKS),
    dict(name="upload-64m", what="POST 64 MiB, read fully (nginx in front spools it to a "
         "temp file first)", path="/upload", body=64 * MiB, conns=2,
         expect_body=str(64 * MiB), stacks=APP_STACKS),
    dict(name="cpu", what="GET, about 5 ms of pure Python per request (a fixed loop, "
         "/work/75: 75,000 iterations); 16 connections; ours as W workers x T threads: %s; "
         "servers not pinned (they may use every CPU), wrk pinned as usual"
         % ", ".join(x[4:].replace("w", " x ").replace("t", "") for x in CPU_STACKS),
         path="/work/75", conns=16, expect=2, stacks=CPU_STACKS),
    dict(name="memory", what="peak RSS: a slow client (~10 MiB/s) streaming a "
         "large generator response, then a large upload from a generator client",
         special="memory", stacks=APP_STACKS),
]
SCENARIO_NAMES = [s["name"] for s in SCENARIOS]

# ------------------------------------------------------------------ process bookkeeping

STARTED = stacks.Started()   # every Popen the bench made (stacks, wrk), killed on exit
spawn = STARTED.spawn
STOPPING = False


def log(msg):
    sys.stderr.write("\033[1m==> %s\033[0m\n" % msg)
    sys.stderr.flush()


def note(msg):
    sys.stderr.write("    %s\n" % msg)
    sys.stderr.flush()


def kill_all():
    """SIGTERM every process group the bench started, then SIGKILL what is left."""
    STARTED.kill()


def on_signal(signum, frame):
    global STOPPING
    if STOPPING:
        return
    STOPPING = True
    raise KeyboardInterrupt("signal %d" % signum)


# ------------------------------------------------------------------ stacks

def fill(template, values, dest):
    stacks.fill(os.path.join(BENCH, template), values, dest)


class Stack:
    def __init__(self, name, port, tls_port, args):
        self.name = name
        self.port = port
        self.tls_port = tls_port  # nginx's TLS server, or Granian's own TLS process
        self.args = args
        self.procs = []           # Popen of nginx and/or the app server (plain HTTP)
        # What serves tls_port (when a TLS scenario runs): a second nginx
        # from the same template with "ssl" and tls.conf (plus the same app
        # server behind it), or Granian direct's second process with its own
        # TLS. The plain nginx never touches OpenSSL: its figures stay as
        # they were without the TLS scenarios.
        self.tls_procs = []
        self.sock = os.path.join(RUN, "%s.sock" % name)
        self.front = name in ("ours", "ours-64t", *PRIORITY_STACKS, "uwsgi", "gunicorn", "granian-nginx",
                              "floor", "ceiling", "dedicated", *OSSL_STACKS)
        self.nginx = OSSL["nginx"] if name in OSSL_STACKS else NGINX

    # -- configuration
    def nginx_conf(self, template, threads=None, module=None, tls=False, workers=None,
                   suffix="", priority="wsgi_thread_priority normal;"):
        module = module or (OSSL["module"] if self.name in OSSL_STACKS else MODULE)
        name = (self.name + "-tls" if tls else self.name) + suffix
        values = dict(
            RUN=RUN, NAME=name, PORT=self.tls_port if tls else self.port,
            SSL="ssl " if tls else "",
            TLS_CONF="include %s/tls.conf;  # TLS 1.3, HTTP/2 or HTTP/1.1 by ALPN" % RUN
            if tls else "# plain HTTP",
            WORKERS=workers or self.args.workers,
            DOCROOT=os.path.join(RUN, "docroot"), APPDIR=os.path.join(RUN, "app"),
            MODULE=module, THREADS=threads or self.args.threads, SOCK=self.sock,
            UWSGI_PARAMS=os.path.join(BENCH, "uwsgi_params"),
            BODY_BUFFER=self.args.body_buffer,
            USER="user root;" if os.geteuid() == 0 else "",
            PRIORITY=priority,
        )
        fill("common.conf.in", values, os.path.join(RUN, "common-%s.conf" % name))
        conf = os.path.join(RUN, "%s.nginx.conf" % name)
        fill(template, values, conf)
        return conf

    def start_nginx(self, template, tls_too=True, pin=True, **kw):
        """The plain nginx, and when a TLS scenario runs the TLS one (with
        the app server, if any, in tls_procs as well); pinned to the servers'
        CPUs unless pin is false."""
        app = list(self.procs)
        for tls in ((False, True) if tls_too and self.args.tls else (False,)):
            name = self.name + "-tls" if tls else self.name
            conf = self.nginx_conf(template, tls=tls, **kw)
            stacks.nginx_temp_dirs(os.path.join(RUN, "tmp"), "_" + name)
            err = open(os.path.join(RUN, "logs", "%s.nginx.stderr" % name), "w")
            p = spawn([self.nginx, "-p", RUN + "/", "-c", conf],
                      cpus=self.args.server_cpus if pin else None, stdout=err, stderr=err)
            if tls:
                self.tls_procs[:] = app + [p]
            else:
                self.procs.append(p)

    def start_app(self, cmd, log="app", into=None):
        out = open(os.path.join(RUN, "logs", "%s.%s.log" % (self.name, log)), "w")
        env = stacks.venv_env(VENV)
        (self.procs if into is None else into).append(
            spawn(cmd, cpus=self.args.server_cpus, stdout=out, stderr=out,
                  env=env, cwd=os.path.join(RUN, "app")))

    def all_procs(self):
        return self.procs + [p for p in self.tls_procs if p not in self.procs]

    def has_tls(self):
        return bool(self.tls_procs)

    def start(self):
        a, app_dir = self.args, os.path.join(RUN, "app")
        w, t = str(a.workers), str(a.threads)
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        if self.name in ("ours", "ours-ossl"):
            self.start_nginx("ours.conf.in")
        elif self.name in PRIORITY_STACKS:
            self.start_nginx("ours-priority.conf.in", priority=PRIORITY_CONF[self.name])
        elif self.name == "ours-64t":
            self.start_nginx("ours.conf.in", tls_too=False, threads=64)
        elif self.name == "floor":
            self.start_nginx("ours.conf.in", module=FLOOR_MODULE)
        elif self.name in CPU_STACKS:
            w, t = re.match(r"cpu-(\d+)w(\d+)t$", self.name).groups()
            self.start_nginx("ours.conf.in", tls_too=False, pin=False, threads=int(t),
                             workers=int(w))
        elif self.name in ("ceiling", "ceiling-ossl"):
            self.start_nginx("ceiling.conf.in")
        elif self.name == "dedicated":
            # the app's own nginx on the socket (counted with the stack),
            # then the front nginx proxying to it
            conf = self.nginx_conf("dedicated-app.conf.in", suffix="-app")
            stacks.nginx_temp_dirs(os.path.join(RUN, "tmp"), "_%s-app" % self.name)
            err = open(os.path.join(RUN, "logs", "%s-app.nginx.stderr" % self.name), "w")
            self.procs.append(spawn([NGINX, "-p", RUN + "/", "-c", conf],
                                    cpus=self.args.server_cpus, stdout=err, stderr=err))
            self.start_nginx("proxy.conf.in", tls_too=False)
        elif self.name == "uwsgi":
            self.start_app(stacks.uwsgi_cmd(VENV, w, t, self.sock, app_dir,
                                            "bench_app:application"))
            self.start_nginx("uwsgi.conf.in")
        elif self.name == "gunicorn":
            self.start_app(stacks.gunicorn_cmd(
                VENV, w, t, self.sock, app_dir, "bench_app:application",
                ["--keep-alive", "30", "--log-level", "warning", "--backlog", "1024"]))
            self.start_nginx("proxy.conf.in")
        elif self.name in ("granian", "granian-nginx"):
            cmd = stacks.granian_cmd(VENV, w, t, app_dir)
            if self.name == "granian":
                self.start_app(cmd + ["--host", "127.0.0.1", "--port", str(self.port),
                                      "bench_app:application"])
                # Its own TLS, HTTP/2 or HTTP/1.1 by ALPN (--http auto): a
                # second process on tls_port, only when a TLS scenario runs
                # (its CPU and RSS are counted apart from the plain one's).
                if self.args.tls:
                    tls_cmd = [("auto" if x == "1" and cmd[i - 1] == "--http" else x)
                               for i, x in enumerate(cmd)]
                    self.start_app(tls_cmd + [
                        "--host", "127.0.0.1", "--port", str(self.tls_port),
                        "--ssl-certificate", os.path.join(RUN, "tls", "cert.pem"),
                        "--ssl-keyfile", os.path.join(RUN, "tls", "key.pem"),
                        "--ssl-protocol-min", "tls1.3", "bench_app:application"],
                        log="tls", into=self.tls_procs)
            else:
                self.start_app(cmd + ["--uds", self.sock, "--uds-permissions", "0o666",
                                      "bench_app:application"])
                self.start_nginx("proxy.conf.in", tls_too=False)
        else:
            raise SystemExit("unknown stack " + self.name)

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        last = None
        behind = self.name in ("uwsgi", "gunicorn", "granian-nginx", "dedicated")
        tls = self.has_tls()
        while time.time() < deadline:
            p = stacks.first_exited(self.all_procs())
            if p:
                raise SystemExit("%s: %s exited with %s (see %s/logs/%s.*)" % (
                    self.name, p.args[-1], p.returncode, RUN, self.name))
            try:
                if behind:        # the app server's socket first: no 502s in the log
                    if not stacks.unix_socket_ready(self.sock):
                        raise OSError("%s: not accepting yet" % self.sock)
                    behind = False
                status, body = request(self.port, "GET", "/hello", timeout=5)
                if status == 200 and body == b"Hello, World!" and tls:
                    status, body = request(self.tls_port, "GET", "/hello", timeout=5, tls=True)
                if status == 200 and body == b"Hello, World!":
                    return
                last = "status %s, %r" % (status, body[:80])
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        raise SystemExit("%s did not answer GET /hello on port %d: %s" % (
            self.name, self.port, last))

    def pids(self, kids, tls=False):
        """The processes serving port (or tls_port), children included."""
        return tree([p.pid for p in (self.tls_procs if tls else self.procs)], kids)

    def all_pids(self, kids):
        return tree([p.pid for p in self.all_procs()], kids)


# ------------------------------------------------------------------ clients

def request(port, method, path, body=None, timeout=30, tls=False):
    if tls:
        ctx = ssl.create_default_context(cafile=os.path.join(RUN, "tls", "cert.pem"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def validate(stack, sc):
    body = b"x" * sc["body"] if sc.get("body") else None
    method = "POST" if body else "GET"
    tls = sc.get("tls", False)
    try:
        status, got = request(stack.tls_port if tls else stack.port, method, sc["path"],
                              body=body, timeout=60, tls=tls)
    except OSError as e:
        return "%s %s: %s" % (method, sc["path"], e)
    if status == 200 and sc.get("client") == "h2load":
        err = validate_h2(stack, sc)
        if err:
            return err
    if status != 200:
        return "%s %s: status %d, %r" % (method, sc["path"], status, got[:200])
    if stack.name == "ceiling" and "expect_body" in sc:
        return None
    if "expect_body" in sc and got != sc["expect_body"].encode():
        return "%s %s: body %r, expected %r" % (method, sc["path"], got[:80], sc["expect_body"])
    if "expect" in sc and len(got) != sc["expect"]:
        return "%s %s: %d bytes, expected %d" % (method, sc["path"], len(got), sc["expect"])
    return None


def h2load_cmd(port, path, conns, streams, duration=None, requests=None, log_file=None):
    cmd = [H2LOAD, "-t1", "-c%d" % conns, "-m%d" % streams,
           "--tls13-ciphers", TLS13_CIPHER, "--groups", TLS_GROUP]
    if duration:
        cmd += ["-D%d" % duration]
    if requests:
        cmd += ["-n%d" % requests]
    if log_file:
        cmd += ["--log-file", log_file]
    return cmd + ["https://127.0.0.1:%d%s" % (port, path)]


def client_env(body=0):
    return dict(os.environ, BENCH_METHOD="POST" if body else "GET", BENCH_BODY=str(body),
                OPENSSL_CONF=os.path.join(BENCH, "openssl-client.cnf"))


def validate_h2(stack, sc, n=16):
    """A few requests with h2load: HTTP/2 negotiated, all 200, all the bytes."""
    p = subprocess.run(h2load_cmd(stack.tls_port, sc["path"], 1, 8, requests=n),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=client_env(), timeout=60)
    try:
        r = parse_h2load(p.stdout)
    except RuntimeError as e:
        return "h2load %s: %s" % (sc["path"], e)
    if r["protocol"] != "h2":
        return "h2load %s: application protocol %r, not h2" % (sc["path"], r["protocol"])
    if r["cipher"] != TLS13_CIPHER:
        return "h2load %s: cipher %r, not %s" % (sc["path"], r["cipher"], TLS13_CIPHER)
    if r["succeeded"] != n or r["status"]["2xx"] != n:
        return "h2load %s: %d of %d succeeded, %d 2xx" % (
            sc["path"], r["succeeded"], n, r["status"]["2xx"])
    if "expect" in sc and r["data_bytes"] != n * sc["expect"]:
        return "h2load %s: %d body bytes for %d requests, expected %d each" % (
            sc["path"], r["data_bytes"], n, sc["expect"])
    return None


def run_load(args, load, duration, out_file):
    """Starts the load generator (wrk, or h2load for client="h2load") for one
    load: dict(port, path, conns, body, tag, tls, client, streams). Returns
    the Popen (stdout to a file read by load_result)."""
    body = load.get("body", 0)
    scheme = "https" if load.get("tls") else "http"
    if load.get("client") == "h2load":
        log_file = out_file + ".log" if load.get("log") else None
        if log_file and os.path.exists(log_file):
            os.unlink(log_file)           # h2load appends
        cmd = h2load_cmd(load["port"], load["path"], load["conns"], load["streams"],
                         duration=duration, log_file=log_file)
    else:
        log_file = None
        cmd = [WRK, "-t1", "-c%d" % load["conns"], "-d%ds" % duration, "--timeout", "10s",
               "--latency", "-s", os.path.join(BENCH, "wrk.lua"),
               "%s://127.0.0.1:%d%s" % (scheme, load["port"], load["path"])]
    f = open(out_file, "w+")
    p = spawn(cmd, cpus=args.wrk_cpus, stdout=f, stderr=subprocess.STDOUT, env=client_env(body))
    p.out = f
    p.client = load.get("client", "wrk")
    p.log_file = log_file
    p.duration = duration
    return p


def run_wrk(args, port, path, conns, duration, body=0, out_file=None):
    return run_load(args, dict(port=port, path=path, conns=conns, body=body), duration, out_file)


def _us(value, unit):
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def parse_h2load(text):
    """h2load's summary: counts, status classes, bytes, protocol, and its
    "time for request" min/max/mean/sd (it prints no percentiles)."""
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    if not m:
        raise RuntimeError("no h2load summary: %s" % text[-2000:])
    total, started, done, ok, failed, errored, timeout = map(int, m.groups())
    st = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    tr = re.search(r"^traffic: .*?\((\d+)\) total.*?\((\d+)\) data", text, re.M)
    tm = re.search(r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+"
                   r"([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text, re.M)
    proto = re.search(r"^Application protocol: (\S+)", text, re.M)
    cipher = re.search(r"^Cipher: (\S+)", text, re.M)
    return dict(
        total=total, started=started, done=done, succeeded=ok, failed=failed,
        errored=errored, timeout=timeout,
        status=dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, st.groups()))) if st else
        {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
        bytes=int(tr.group(1)) if tr else 0, data_bytes=int(tr.group(2)) if tr else 0,
        request_time_us=dict(min=_us(*tm.group(1, 2)), max=_us(*tm.group(3, 4)),
                             mean=_us(*tm.group(5, 6)), sd=_us(*tm.group(7, 8))) if tm else None,
        protocol=proto.group(1) if proto else None, cipher=cipher.group(1) if cipher else None)


def percentile(sorted_xs, q):
    if not sorted_xs:
        return 0
    k = max(0, min(len(sorted_xs) - 1, math.ceil(q / 100.0 * len(sorted_xs)) - 1))
    return sorted_xs[k]


def h2load_json(p, text):
    """h2load's results in the shape of wrk.lua's BENCH_JSON line. Latency
    percentiles come from --log-file (one line per request: start, status,
    microseconds to the end of the response); req/s is succeeded requests
    over the -D duration, as h2load counts them."""
    r = parse_h2load(text)
    lat = []
    if p.log_file and os.path.exists(p.log_file):
        with open(p.log_file) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1] != "-1":
                    lat.append(int(parts[2]))
        os.unlink(p.log_file)
    lat.sort()
    non2xx = r["status"]["3xx"] + r["status"]["4xx"] + r["status"]["5xx"]
    return dict(
        requests=r["succeeded"], bytes=r["bytes"], duration_us=p.duration * 1e6,
        errors=dict(failed=r["failed"], status=non2xx),
        latency_us=dict(min=lat[0] if lat else 0, max=lat[-1] if lat else 0,
                        mean=sum(lat) / len(lat) if lat else 0,
                        p50=percentile(lat, 50), p90=percentile(lat, 90),
                        p99=percentile(lat, 99), p999=percentile(lat, 99.9)),
        h2load=dict(request_time_us=r["request_time_us"], started=r["started"],
                    done=r["done"], protocol=r["protocol"], logged=len(lat)))


def load_result(p):
    """Reaps the load generator with wait4: its results (wrk.lua's JSON line,
    or h2load's summary in the same shape) and its own CPU seconds."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    p.out.seek(0)
    text = p.out.read()
    p.out.close()
    if p.client == "h2load":
        try:
            return h2load_json(p, text), ru.ru_utime + ru.ru_stime, text
        except RuntimeError:
            raise RuntimeError("h2load failed (exit %s): %s" % (p.returncode, text[-2000:]))
    m = re.search(r"^BENCH_JSON (.*)$", text, re.M)
    if not m:
        raise RuntimeError("wrk failed (exit %s): %s" % (p.returncode, text[-2000:]))
    return json.loads(m.group(1)), ru.ru_utime + ru.ru_stime, text



class Sampler(threading.Thread):
    """Samples the summed VmRSS of sets of pids every `every` seconds."""

    def __init__(self, groups, every=0.1):
        super().__init__(daemon=True)
        self.groups = groups                      # name -> [pid]
        self.peak = {k: 0 for k in groups}
        self.every = every
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            for k, pids in self.groups.items():
                self.peak[k] = max(self.peak[k], rss_kib(pids))
            self.halt.wait(self.every)

    def stop(self):
        self.halt.set()
        self.join()
        for k, pids in self.groups.items():
            self.peak[k] = max(self.peak[k], rss_kib(pids))
        return self.peak


# ------------------------------------------------------------------ measuring

class Bench:
    def __init__(self, args, stacks):
        self.args = args
        self.stacks = stacks               # name -> Stack
        self.runs = []                     # every attempt, kept or not
        self.results = {}                  # scenario -> stack -> summary
        self.memory = {}
        self.wrk_seq = 0
        self.disturbed_in_a_row = 0

    def all_pids(self, kids):
        out = set()
        for st in self.stacks.values():
            out.update(st.all_pids(kids))
        return out

    def measure(self, scenario, stack, duration, loads):
        """One measured run. loads: [dict(port, path, conns, body, tag, ...)]
        (see run_load), all at once; the first is the one reported, and
        whether it is over TLS says which of the stack's processes count
        (Granian direct's TLS one or its plain one). Returns a dict."""
        kids = children_map()
        server = stack.pids(kids, tls=loads[0].get("tls", False))
        mine = self.all_pids(kids)
        t_busy0, t_irq0, t_steal0 = system_ticks()
        c_server0 = cpu_ticks(server)
        c_mine0 = cpu_ticks(mine)
        everyone0 = all_ticks()
        self0 = os.times()
        sampler = Sampler({"server": server})
        sampler.start()
        t0 = time.time()
        procs = []
        for load in loads:
            self.wrk_seq += 1
            procs.append((load["tag"], run_load(
                self.args, dict(load, log=True), duration,
                os.path.join(RUN, "wrk-%d.out" % (self.wrk_seq % 20)))))
        outs = {}
        wrk_cpu = 0.0
        for tag, p in procs:
            res, cpu, text = load_result(p)
            outs[tag] = res
            wrk_cpu += cpu
        wall = time.time() - t0
        peak = sampler.stop()["server"]
        self1 = os.times()
        everyone1 = all_ticks()
        c_server1 = cpu_ticks(server)
        c_mine1 = cpu_ticks(mine)
        t_busy1, t_irq1, t_steal1 = system_ticks()
        server_cpu = (c_server1 - c_server0) / TICK
        mine_cpu = (c_mine1 - c_mine0) / TICK
        self_cpu = (self1.user + self1.system) - (self0.user + self0.system)
        total = (t_busy1 - t_busy0) / TICK
        other = max(0.0, total - mine_cpu - wrk_cpu - self_cpu)
        main = outs[loads[0]["tag"]]
        reqs = main["requests"]
        errs = sum(main["errors"].values())
        r = dict(
            scenario=scenario, stack=stack.name, wall_s=round(wall, 3),
            requests=reqs, rps=reqs / (main["duration_us"] / 1e6) if reqs else 0.0,
            p50_ms=main["latency_us"]["p50"] / 1000, p99_ms=main["latency_us"]["p99"] / 1000,
            p999_ms=main["latency_us"]["p999"] / 1000, max_ms=main["latency_us"]["max"] / 1000,
            errors=main["errors"], error_count=errs,
            bytes=main["bytes"],
            server_cpu_s=round(server_cpu, 3),
            cpu_s_per_10k=server_cpu / reqs * 1e4 if reqs else None,
            cpu_us_per_req=server_cpu / reqs * 1e6 if reqs else None,
            peak_rss_mib=round(peak / 1024, 1),
            wrk_cpu_s=round(wrk_cpu, 3), client_cores=round(wrk_cpu / wall, 3),
            client_us_per_req=wrk_cpu / reqs * 1e6 if reqs else None,
            driver_cpu_s=round(self_cpu, 3),
            other_cpu_s=round(other, 3), other_cores=round(other / wall, 3),
            irq_cores=round((t_irq1 - t_irq0) / TICK / wall, 3),
            steal_cores=round((t_steal1 - t_steal0) / TICK / wall, 3),
            pids=len(server),
        )
        if "h2load" in main:
            r["h2load"] = main["h2load"]
        r["other_procs_s"], r["others_top"] = others(
            everyone0, everyone1, mine | {p.pid for _, p in procs})
        # other_cores (/proc/stat's user+nice+system minus the bench) decides;
        # the per-process view misses processes that exited meanwhile and
        # includes softirq time charged to whoever was interrupted (our own
        # loopback traffic): it only names the culprits.
        r["other_procs_cores"] = round(r["other_procs_s"] / wall, 3)
        if len(loads) > 1:
            r["loads"] = {tag: dict(requests=o["requests"],
                                    rps=o["requests"] / (o["duration_us"] / 1e6),
                                    p50_ms=o["latency_us"]["p50"] / 1000,
                                    p99_ms=o["latency_us"]["p99"] / 1000,
                                    errors=sum(o["errors"].values()))
                          for tag, o in outs.items()}
        return r

    def attempt(self, scenario, stack, duration, loads, label):
        """Runs, and repeats while others took more than the threshold. When
        the machine stays busy (8 disturbed runs in a row) repeating is
        pointless: it stops until a run is clean again."""
        best = None
        i = 0
        while True:
            r = self.measure(scenario, stack, duration, loads)
            r["attempt"] = i + 1
            r["label"] = label
            r["disturbed"] = r["other_cores"] > self.args.noise
            self.runs.append(r)
            if best is None or r["other_cores"] < best["other_cores"]:
                best = r
            if not r["disturbed"]:
                self.disturbed_in_a_row = 0
                break
            self.disturbed_in_a_row += 1
            busy = self.disturbed_in_a_row >= 8
            again = i < self.args.retries and not busy
            note("%s/%s: others used %.2f cores (%s), %s" % (
                scenario, stack.name, r["other_cores"],
                ", ".join("%s %.1fs" % (x[0], x[2]) for x in r["others_top"]) or "short-lived",
                "repeating" if again else
                "the machine stays busy, not repeating" if busy else
                "keeping the least disturbed"))
            if not again:
                break
            i += 1
        best["kept"] = True
        return best

    # -- scenarios

    def throughput(self, sc, names):
        a = self.args
        per = {n: [] for n in names}
        errors = {}
        for rep in range(a.reps):
            for n in names:
                st = self.stacks[n]
                if rep == 0:
                    err = validate(st, sc)
                    if err:
                        errors[n] = err
                        note("%s/%s: INVALID: %s" % (sc["name"], n, err))
                        continue
                    if a.warmup > 0:
                        p = run_load(a, load_of(sc, st, "main"), a.warmup,
                                     os.path.join(RUN, "wrk-warmup.out"))
                        load_result(p)
                if n in errors:
                    continue
                r = self.attempt(sc["name"], st, a.duration, [load_of(sc, st, "main")],
                                 "rep %d" % (rep + 1))
                per[n].append(r)
                note("%-10s %-14s rep %d: %9.1f req/s  p50 %7.2f ms  p99 %7.2f ms  "
                     "cpu %6.1f us/req  rss %6.1f MiB  other %.2f  client %.2f%s" % (
                         sc["name"], n, rep + 1, r["rps"], r["p50_ms"], r["p99_ms"],
                         r["cpu_us_per_req"] or 0, r["peak_rss_mib"], r["other_cores"],
                         r["client_cores"],
                         "  ERRORS %s" % r["errors"] if r["error_count"] else ""))
        out = {}
        for n in names:
            if n in errors:
                out[n] = dict(invalid=errors[n])
            elif per[n]:
                out[n] = summarize(per[n])
        self.results[sc["name"]] = out

    def static_busy(self, sc, names):
        a = self.args
        per = {n: {"idle": [], "busy": []} for n in names}
        errors = {}
        for rep in range(a.reps):
            for n in names:
                st = self.stacks[n]
                if rep == 0:
                    err = validate(st, sc) or validate(st, dict(path=sc["load_path"], expect=2))
                    if err:
                        errors[n] = err
                        note("%s/%s: INVALID: %s" % (sc["name"], n, err))
                        continue
                    if a.warmup > 0:
                        p = run_wrk(a, st.port, sc["load_path"], sc["load_conns"], a.warmup, 0,
                                    os.path.join(RUN, "wrk-warmup.out"))
                        load_result(p)
                if n in errors:
                    continue
                static = dict(port=st.port, path=sc["path"], conns=sc["conns"], tag="static")
                load = dict(port=st.port, path=sc["load_path"], conns=sc["load_conns"], tag="app")
                idle = self.attempt(sc["name"], st, a.duration, [static], "idle rep %d" % (rep + 1))
                busy = self.attempt(sc["name"], st, a.duration, [static, load],
                                    "busy rep %d" % (rep + 1))
                per[n]["idle"].append(idle)
                per[n]["busy"].append(busy)
                note("%-10s %-14s rep %d: static p50/p99 idle %.3f/%.3f ms, busy %.3f/%.3f ms; "
                     "app %.1f req/s  other %.2f/%.2f" % (
                         sc["name"], n, rep + 1, idle["p50_ms"], idle["p99_ms"],
                         busy["p50_ms"], busy["p99_ms"], busy["loads"]["app"]["rps"],
                         idle["other_cores"], busy["other_cores"]))
        out = {}
        for n in names:
            if n in errors:
                out[n] = dict(invalid=errors[n])
            elif per[n]["idle"]:
                out[n] = dict(idle=summarize(per[n]["idle"]), busy=summarize(per[n]["busy"]),
                              app_rps=med([r["loads"]["app"]["rps"] for r in per[n]["busy"]]),
                              app_errors=sum(r["loads"]["app"]["errors"] for r in per[n]["busy"]))
        self.results[sc["name"]] = out

    def memory_scenario(self, sc, names):
        a = self.args
        size = a.mem_size
        kids = children_map()
        groups = {n: self.stacks[n].pids(kids) for n in names}
        res = {n: {} for n in names}
        # 1. slow clients, all stacks at once (each reads ~rate bytes/s).
        log("memory: %d MiB generator response to a client reading %.0f MiB/s, "
            "all stacks at once (~%.0f s)" % (size // MiB, a.mem_rate / MiB, size / a.mem_rate))
        base = {n: rss_kib(p) for n, p in groups.items()}
        sampler = Sampler(groups, every=0.1)
        sampler.start()
        clients = {}
        for n in names:
            c = SlowReader(self.stacks[n].port, "/chunked/%d" % size, a.mem_rate)
            c.start()
            clients[n] = c
        for c in clients.values():
            c.join()
        peak = sampler.stop()
        for n in names:
            c = clients[n]
            res[n]["stream"] = dict(
                size=size, body_bytes=c.body_bytes, seconds=round(c.seconds, 1),
                complete=c.complete, error=c.error,
                base_rss_mib=round(base[n] / 1024, 1), peak_rss_mib=round(peak[n] / 1024, 1),
                growth_mib=round((peak[n] - base[n]) / 1024, 1))
            note("memory     %-14s slow stream: %s in %.1f s, RSS %.1f -> peak %.1f MiB%s" % (
                n, "complete" if c.complete else "INCOMPLETE (%s)" % c.error, c.seconds,
                base[n] / 1024, peak[n] / 1024, ""))
        # 2. uploads from a generator client, one stack after the other.
        log("memory: %d MiB upload from a generator client (request buffering off), "
            "one stack after the other" % (size // MiB))
        for n in names:
            base = rss_kib(groups[n])
            sampler = Sampler({n: groups[n]}, every=0.01)
            sampler.start()
            up = upload(self.stacks[n].port, "/stream-upload/", size)
            peak = sampler.stop()[n]
            up.update(base_rss_mib=round(base / 1024, 1), peak_rss_mib=round(peak / 1024, 1),
                      growth_mib=round((peak - base) / 1024, 1), size=size)
            res[n]["upload"] = up
            note("memory     %-14s upload: %s in %.2f s, RSS %.1f -> peak %.1f MiB" % (
                n, "ok" if up["ok"] else "FAILED (%s)" % up["error"], up["seconds"],
                base / 1024, peak / 1024))
        self.memory = res


def load_of(sc, st, tag):
    """The load of a throughput scenario against a stack (see run_load)."""
    tls = sc.get("tls", False)
    return dict(port=st.tls_port if tls else st.port, path=sc["path"], conns=sc["conns"],
                body=sc.get("body", 0), tag=tag, tls=tls, client=sc.get("client", "wrk"),
                streams=sc.get("streams", 1))


def med(xs):
    return statistics.median(xs) if xs else None


def summarize(rs):
    def col(k):
        return [r[k] for r in rs if r.get(k) is not None]
    rps = col("rps")
    h2 = [r["h2load"]["request_time_us"] for r in rs
          if r.get("h2load") and r["h2load"].get("request_time_us")]
    extra = dict(h2load_mean_ms=med([x["mean"] / 1000 for x in h2]),
                 h2load_sd_ms=med([x["sd"] / 1000 for x in h2])) if h2 else {}
    return dict(extra,
        reps=len(rs), rps=med(rps), rps_min=min(rps), rps_max=max(rps),
        p50_ms=med(col("p50_ms")), p99_ms=med(col("p99_ms")),
        p99_ms_max=max(col("p99_ms")),
        cpu_s_per_10k=med(col("cpu_s_per_10k")), cpu_us_per_req=med(col("cpu_us_per_req")),
        peak_rss_mib=max(col("peak_rss_mib")),
        other_cores=max(col("other_cores")), disturbed=any(r["disturbed"] for r in rs),
        client_cores=max(col("client_cores")) if col("client_cores") else None,
        client_us_per_req=med(col("client_us_per_req")),
        errors=sum(r["error_count"] for r in rs),
    )


class SlowReader(threading.Thread):
    """GET path, read the response at most `rate` bytes/s until EOF."""

    def __init__(self, port, path, rate):
        super().__init__(daemon=True)
        self.port, self.path, self.rate = port, path, rate
        self.body_bytes = 0
        self.complete = False
        self.error = None
        self.seconds = 0.0

    def run(self):
        t0 = time.time()
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * KiB)
            s.settimeout(60)
            s.connect(("127.0.0.1", self.port))
            s.sendall(("GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
                       % self.path).encode())
            head = b""
            while b"\r\n\r\n" not in head:
                d = s.recv(16 * KiB)
                if not d:
                    raise OSError("closed before the headers")
                head += d
            head, _, rest = head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise OSError(head.split(b"\r\n")[0].decode(errors="replace"))
            chunked = b"transfer-encoding: chunked" in head.lower()
            raw = len(rest)
            tail = rest[-16:]
            start = time.time()
            while True:
                d = s.recv(64 * KiB)
                if not d:
                    break
                raw += len(d)
                tail = (tail + d)[-16:]
                ahead = raw / self.rate - (time.time() - start)
                if ahead > 0:
                    time.sleep(ahead)
            s.close()
            # The body is `size` bytes; chunked framing adds a little.
            want = int(self.path.rsplit("/", 1)[1])
            self.body_bytes = raw
            self.complete = raw >= want and (not chunked or tail.endswith(b"0\r\n\r\n"))
            if not self.complete:
                self.error = "got %d bytes" % raw
        except OSError as e:
            self.error = str(e)
        self.seconds = time.time() - t0


def upload(port, path, size):
    """POST `size` bytes from a generator (64 KiB pieces) with Content-Length."""
    t0 = time.time()
    piece = b"x" * (64 * KiB)
    out = dict(ok=False, error=None)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=120)
        s.sendall(("POST %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
                   "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                   % (path, size)).encode())
        left = size
        while left > 0:
            n = min(left, len(piece))
            s.sendall(piece if n == len(piece) else piece[:n])
            left -= n
        resp = b""
        while True:
            d = s.recv(64 * KiB)
            if not d:
                break
            resp += d
        s.close()
        head, _, body = resp.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            out["error"] = head.split(b"\r\n")[0].decode(errors="replace")
        elif str(size).encode() not in body:
            out["error"] = "app read %r" % body[:40]
        else:
            out["ok"] = True
    except OSError as e:
        out["error"] = str(e)
    out["seconds"] = round(time.time() - t0, 3)
    out["mib_per_s"] = round(size / MiB / max(out["seconds"], 1e-6), 1)
    return out


# ------------------------------------------------------------------ report

def versions():
    def first(cmd, pat=None):
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=30)
            text = p.stdout.strip()
        except OSError as e:
            return "? (%s)" % e
        if pat:
            m = re.search(pat, text)
            return m.group(1) if m else text.splitlines()[0] if text else "?"
        return text.splitlines()[0] if text else "?"
    vb = os.path.join(VENV, "bin")
    return {
        "nginx": first([NGINX, "-v"], r"nginx/(\S+)"),
        "python": first(["/usr/bin/python3", "--version"], r"Python (\S+)"),
        "uwsgi": first([os.path.join(vb, "uwsgi"), "--version"]),
        "gunicorn": first([os.path.join(vb, "gunicorn"), "--version"], r"version ([\d.]+)"),
        "granian": first([os.path.join(vb, "granian"), "--version"], r"(\d[\w.]*)"),
        "wrk": first([WRK, "-v"], r"wrk (\S+)"),
        "h2load": first([H2LOAD, "--version"], r"nghttp2/(\S+)"),
    }


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return dict(nproc=os.cpu_count(), cpu=model, kernel=os.uname().release,
                affinity=sorted(os.sched_getaffinity(0)))


def fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float) and abs(x) >= 1000:
        return "{:,.0f}".format(x)
    return "{:,.{}f}".format(x, nd)


def ratio(a, b):
    return a / b if a and b else None


# Targets the issue decides by the median of three full runs (they straddled
# their lines in single runs): marked † in the table.
MEDIAN_OF_THREE = ("64k-static", "post-256k-granian")


# A load generator busier than this (cores) may be what limits the run.
CLIENT_BOUND = 0.95


def check(value, op, limit, unit):
    return dict(value=value, op=op, limit=limit, unit=unit)


def passes(c):
    if c["value"] is None:
        return None
    return c["value"] >= c["limit"] if c["op"] == ">=" else c["value"] <= c["limit"]


def show(c):
    v, u = c["value"], c["unit"]
    if v is None:
        return "–"
    if u == "×":
        return "%.2f×" % v
    if u == "+µs":
        return "%+.1f µs" % v
    return "%s %s" % (fmt(v, 1 if u != "ms" else 1), u)


def targets(results, workers=1):
    """[dict(key, target, measured, checks, ok)]: checks are the numbers a
    target is decided on (value op limit), so that --full-runs can take the
    median of each over the runs. The targets of issue 27 (and those of
    earlier issues it keeps); with more than one worker per stack, the two
    it sets for that case."""
    out = []

    def get(scn, stack, key="rps"):
        r = results.get(scn, {}).get(stack)
        return r.get(key) if r and "invalid" not in r else None

    def add(key, text, measured, *checks):
        oks = [passes(c) for c in checks]
        ok = None if None in oks else all(oks)
        out.append(dict(key=key, target=text, measured=measured, checks=list(checks), ok=ok,
                        median3=key in MEDIAN_OF_THREE))

    def vs(key, scn, text, other, limit, what="req/s"):
        o, g = get(scn, "ours"), get(scn, other)
        if o is not None or g is not None:
            x = ratio(o, g)
            add(key, text, "%s× (%s vs %s)" % (fmt(x, 2), fmt(o), fmt(g)),
                check(x, ">=", limit, "×"))

    def floor_lines(scn, label):
        o, f, n = (get(scn, x, "cpu_us_per_req") for x in ("ours", "floor", "ceiling"))
        if o is not None and f is not None:
            add(scn + "-floor", "%s: ours ≤ floor + 3.0 µs server CPU per request" % label,
                "%.1f µs vs floor (no Python) %.1f µs: %+.1f µs" % (o, f, o - f),
                check(o - f, "<=", 3.0, "+µs"))
        if f is not None and n is not None:
            add(scn + "-floor-nginx", "%s: floor ≤ nginx alone + 3.0 µs server CPU per "
                "request" % label, "floor %.1f µs vs nginx alone %.1f µs: %+.1f µs" % (
                    f, n, f - n), check(f - n, "<=", 3.0, "+µs"))

    if workers > 1:
        for scn in ("hello", "64k"):
            vs(scn + "-granian", scn, "%s, %d workers: ours ≥ 1.3× Granian direct (%d workers) "
               "req/s" % (scn, workers, workers), "granian", 1.3)
        return out
    vs("hello-granian", "hello", "hello: ours ≥ 1.4× Granian direct req/s", "granian", 1.4)
    floor_lines("hello", "hello")
    for scn in ("10k", "64k"):
        vs(scn + "-granian", scn, "%s: ours ≥ Granian direct req/s" % scn, "granian", 1.0)
    vs("64k-static", "64k", "64k: ours within 10% of nginx serving the bytes as a static file",
       "ceiling", 0.9)
    vs("1m-stream-static", "1m-stream", "1m-stream: ours ≥ 0.9× nginx sendfile of a 1 MiB "
       "static file", "ceiling", 0.9)
    vs("post-256k-granian", "post-256k", "post-256k: ours ≥ Granian direct req/s",
       "granian", 1.0)
    # TLS 1.3 + HTTP/2 (h2load), HTTP/1.1 over TLS (wrk)
    vs("h2-hello-granian", "h2-hello", "h2-hello (TLS + HTTP/2): ours ≥ 1.25× Granian direct "
       "req/s", "granian", 1.25)
    vs("h2-hello-uwsgi", "h2-hello", "h2-hello (TLS + HTTP/2): ours ≥ 3× nginx→uWSGI req/s",
       "uwsgi", 3.0)
    o, n = get("h2-hello", "ours", "cpu_us_per_req"), get("h2-hello", "ceiling", "cpu_us_per_req")
    if o is not None or n is not None:
        x = ratio(o, n)
        add("h2-hello-nginx-cpu", "h2-hello (TLS + HTTP/2): ours ≤ 1.6× nginx alone's server "
            "CPU per request", "%s× (%s vs %s µs)" % (fmt(x, 2), fmt(o), fmt(n)),
            check(x, "<=", 1.6, "×"))
    vs("h2-64k-granian", "h2-64k", "h2-64k (TLS + HTTP/2): ours ≥ Granian direct req/s",
       "granian", 1.0)
    vs("tls-hello-granian", "tls-hello", "tls-hello (HTTP/1.1 over TLS): ours ≥ 1.3× Granian "
       "direct req/s", "granian", 1.3)
    floor_lines("tls-hello", "tls-hello (HTTP/1.1 over TLS)")
    o, p = get("sleep", "ours"), get("sleep", "ours", "p99_ms")
    if o is not None:
        add("sleep", "sleep 20 ms, 64 conns, 4 threads: ours ≥ 185 req/s and p99 ≤ 400 ms",
            "%s req/s, p99 %s ms" % (fmt(o), fmt(p)),
            check(o, ">=", 185, "req/s"), check(p, "<=", 400, "ms"))
    o = get("sleep", "ours-64t")
    if o is not None:
        add("sleep-64t", "sleep 20 ms, 64 conns, wsgi_threads 64: ours ≥ 2,900 req/s",
            "%s req/s" % fmt(o), check(o, ">=", 2900, "req/s"))
    sb = results.get("static-busy", {}).get("ours")
    if sb and "busy" in sb:
        p = sb["busy"]["p99_ms"]
        add("static-busy", "static file while the app is saturated: p99 ≤ 1.0 ms",
            "%.3f ms (idle %.3f ms)" % (p, sb["idle"]["p99_ms"]), check(p, "<=", 1.0, "ms"))
    return out


def median_targets(per_run):
    """Every target of the runs decided by the median of its values over the
    runs (each check apart): [dict(target, runs=[measured], median, spread, ok)]."""
    order, by_key = [], {}
    for i, tg in enumerate(per_run):
        for t in tg:
            if t["key"] not in by_key:
                order.append(t["key"])
                by_key[t["key"]] = dict(target=t["target"], median3=t["median3"],
                                        runs=[None] * len(per_run))
            by_key[t["key"]]["runs"][i] = t
    out = []
    for key in order:
        e = by_key[key]
        have = [t for t in e["runs"] if t is not None]
        checks, spreads = [], []
        for j, c0 in enumerate(have[0]["checks"]):
            vals = [t["checks"][j]["value"] for t in have if t["checks"][j]["value"] is not None]
            m = med(vals)
            checks.append(check(m, c0["op"], c0["limit"], c0["unit"]))
            spreads.append("%s – %s" % (show(dict(c0, value=min(vals))),
                                        show(dict(c0, value=max(vals)))) if vals else "–")
        oks = [passes(c) for c in checks]
        out.append(dict(key=key, target=e["target"], median3=e["median3"],
                        runs=[t["measured"] if t else "–" for t in e["runs"]],
                        values=[", ".join(show(c) for c in t["checks"]) if t else "–"
                                for t in e["runs"]],
                        median=", ".join(show(c) for c in checks), checks=checks,
                        spread="; ".join(spreads), n=len(have),
                        ok=None if None in oks else all(oks)))
    return out


def markdown(meta, results, memory, tgts, title="# ngx-wsgi benchmark"):
    a = meta["settings"]
    L = []
    L.append(title)
    L.append("")
    L.append("- date: %s" % meta["date"])
    m = meta["machine"]
    L.append("- machine: %d CPUs, %s, Linux %s" % (m["nproc"], m["cpu"], m["kernel"]))
    v = meta["versions"]
    L.append("- versions: nginx %s, Python %s, uWSGI %s, gunicorn %s, Granian %s, wrk %s, "
             "h2load %s" % (v["nginx"], v["python"], v["uwsgi"], v["gunicorn"], v["granian"],
                            v["wrk"], v.get("h2load", "?")))
    L.append("- every stack: %d worker process(es) × %d threads, the same app (bench/app.py); "
             "nginx in front with %d worker(s)" % (a["workers"], a["threads"], a["workers"]))
    L.append("- runs: %d repetition(s) × %d s after a %d s warm-up, stacks interleaved; "
             "medians, req/s spread min–max" % (a["reps"], a["duration"], a["warmup"]))
    L.append("- pinning: %s%s" % (meta["pinning"], "; not the cpu scenario's servers"
                                  if "cpu" in results else ""))
    L.append("- disturbance: a run in which other processes used more than %.2f of a core "
             "is repeated (up to %d times); ⚠ marks rows where it stayed disturbed" % (
                 a["noise"], a["retries"]))
    L.append("- CPU = user+sys of all the stack's processes (nginx master+workers, app "
             "server) per 10k requests; RSS = peak of their summed VmRSS during the run")
    L.append("- nginx: client_body_buffer_size %s in every nginx; run time %s s" % (
        a["body_buffer"], meta.get("elapsed_s", "?")))
    if any(sc.get("tls") and sc["name"] in results for sc in SCENARIOS):
        L.append("- TLS (h2-*, tls-*): TLS 1.3 only, %s, %s key exchange, one self-signed "
                 "ECDSA P-256 certificate (openssl) for every stack; the clients offer nothing "
                 "else. TLS and HTTP/2 at nginx for ours, floor, uwsgi, gunicorn and nginx "
                 "alone (a second nginx per stack, the same template with listen ... ssl and "
                 "bench/tls.conf.in: ssl_session_cache off, ssl_session_tickets off; %s), "
                 "so the plain scenarios' nginx never loads TLS; Granian direct with its own TLS (--http auto: HTTP/2 or HTTP/1.1 by "
                 "ALPN). Each connection makes one full handshake and is kept for the whole "
                 "run" % (TLS13_CIPHER, TLS_GROUP, meta.get("tls_library", "OpenSSL")))
        L.append("- h2-*: h2load -t1, %s connections × %s concurrent streams; p50/p99 are "
                 "computed from h2load's --log-file (per-request time to the end of the "
                 "response), req/s = succeeded requests / the -D duration" % (
                     next((sc["conns"] for sc in SCENARIOS if sc.get("client") == "h2load"), "?"),
                     next((sc["streams"] for sc in SCENARIOS if sc.get("client") == "h2load"),
                          "?")))
    if a.get("pin") == "off" or meta["pinning"].startswith("off"):
        L.append("- client = CPU the load generator (wrk or h2load, one thread) used per second "
                 "of run, client µs/req = the same per request (its own user+sys, from wait4); "
                 "it is not pinned either: it shares the CPUs with the servers, so what it uses "
                 "is not available to them, and it is not counted in the server CPU column; "
                 "ⓒ marks rows where it was ≥ %.2f of a core" % CLIENT_BOUND)
    else:
        L.append("- client = CPU the load generator used per second of run (on its own CPU), "
                 "client µs/req = the same per request (user+sys, from wait4); "
                 "ⓒ marks rows where it was ≥ %.2f, i.e. the client, not the server, may have "
                 "been the limit" % CLIENT_BOUND)
    L.append("")
    if tgts:
        L.append("## Targets")
        L.append("")
        L.append("| target | measured | |")
        L.append("|---|---|---|")
        for t in tgts:
            mark = "✔" if t["ok"] else ("✘" if t["ok"] is False else "?")
            L.append("| %s%s | %s | %s |" % (t["target"], " †" if t.get("median3") else "",
                                            t["measured"], mark))
        L.append("")
        if any(t.get("median3") for t in tgts):
            L.append("† decided by the median of three full runs (scripts/bench --full-runs "
                     "3); one run's figure is not the verdict.")
            L.append("")
    for sc in SCENARIOS:
        name = sc["name"]
        if name == "memory" or name not in results:
            continue
        rows = results[name]
        L.append("## %s — %s" % (name, sc["what"]))
        L.append("")
        if name == "static-busy":
            L.append("| stack | static p50 idle ms | static p99 idle ms | static p50 busy ms "
                     "| static p99 busy ms | app req/s (busy) | CPU s/10k static (idle) | other |")
            L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            for n, r in rows.items():
                if "invalid" in r:
                    L.append("| %s | invalid: %s | | | | | | |" % (n, r["invalid"]))
                    continue
                i, b = r["idle"], r["busy"]
                L.append("| %s | %.3f | %.3f | %.3f | %.3f | %s | %s | %.2f%s |" % (
                    n, i["p50_ms"], i["p99_ms"], b["p50_ms"], b["p99_ms"], fmt(r["app_rps"]),
                    fmt(i["cpu_s_per_10k"], 3), max(i["other_cores"], b["other_cores"]),
                    " ⚠" if i["disturbed"] or b["disturbed"] else ""))
            L.append("")
            continue
        ours = rows.get("ours", {}).get("rps")
        base = "ours"
        if name == "cpu":
            base = CPU_STACKS[0]
            ours = rows.get(base, {}).get("rps")
        L.append("| stack | req/s | min–max | p50 ms | p99 ms | CPU s/10k req | peak RSS MiB "
                 "| vs %s | other | client | client µs/req |" % base)
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n, r in rows.items():
            if "invalid" in r:
                L.append("| %s | invalid: %s | | | | | | | | | |" % (n, r["invalid"]))
                continue
            vs = ratio(r["rps"], ours)
            cc = r.get("client_cores")
            flags = (" ⚠" if r["disturbed"] else "") + (
                " (%d errors)" % r["errors"] if r["errors"] else "")
            L.append("| %s | %s | %s–%s | %s | %s | %s | %s | %s | %.2f%s | %s%s | %s |" % (
                n, fmt(r["rps"]), fmt(r["rps_min"]), fmt(r["rps_max"]),
                fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2), fmt(r["cpu_s_per_10k"], 3),
                fmt(r["peak_rss_mib"]), "%.2f×" % vs if vs else "–",
                r["other_cores"], flags, fmt(cc, 2),
                " ⓒ" if cc is not None and cc >= CLIENT_BOUND else "",
                fmt(r.get("client_us_per_req"))))
        h2 = [(n, r) for n, r in rows.items() if r.get("h2load_mean_ms") is not None]
        if h2:
            L.append("")
            L.append("h2load's own request time, mean ± sd (medians of the repetitions): " +
                     ", ".join("%s %.2f ± %.2f ms" % (n, r["h2load_mean_ms"], r["h2load_sd_ms"])
                               for n, r in h2) + ".")
        ceil = rows.get("ceiling", {}).get("rps")
        if ours and ceil:
            L.append("")
            L.append("ours / ceiling: %.2f×" % (ours / ceil))
        L.append("")
    culprits = meta.get("others_seen")
    if culprits:
        L.append("Other processes that ran during the kept runs (CPU seconds, summed): " +
                 ", ".join("%s %.1f" % kv for kv in culprits) + ".")
        L.append("")
    if memory:
        size = next(iter(memory.values())).get("stream", {}).get("size", 0)
        L.append("## memory — peak RSS of the stack's processes (summed), %d MiB" % (size // MiB))
        L.append("")
        L.append("Slow client: GET /chunked/N (generator, 64 KiB chunks) read at %.0f MiB/s, "
                 "all stacks at once. Upload: POST N bytes with Content-Length from a generator "
                 "client, request buffering off in every nginx in front." % (
                     a["mem_rate"] / MiB))
        L.append("")
        L.append("| stack | idle RSS MiB | slow stream peak MiB | growth MiB | stream ok "
                 "| upload peak MiB | growth MiB | upload MiB/s | upload ok |")
        L.append("|---|---:|---:|---:|---|---:|---:|---:|---|")
        for n, r in memory.items():
            s, u = r.get("stream", {}), r.get("upload", {})
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                n, fmt(s.get("base_rss_mib")), fmt(s.get("peak_rss_mib")), fmt(s.get("growth_mib")),
                "✔" if s.get("complete") else "✘ %s" % s.get("error"),
                fmt(u.get("peak_rss_mib")), fmt(u.get("growth_mib")), fmt(u.get("mib_per_s")),
                "✔" if u.get("ok") else "✘ %s" % u.get("error")))
        L.append("")
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------ main

def prepare_run_dir():
    if os.path.isdir(RUN):
        shutil.rmtree(RUN)
    for d in ("logs", "tmp", "app", "docroot/static", "docroot/bytes", "docroot/stream/1048576",
              "docroot/chunked"):
        os.makedirs(os.path.join(RUN, d), exist_ok=True)
    shutil.copy(os.path.join(BENCH, "app.py"), os.path.join(RUN, "app", "bench_app.py"))
    files = {"static/4k.bin": 4096, "bytes/10240": 10240, "bytes/65536": 65536,
             "stream/1048576/16": MiB, "chunked/67108864": 64 * MiB}
    for rel, n in files.items():
        with open(os.path.join(RUN, "docroot", rel), "wb") as f:
            f.write(b"x" * n)
    # The TLS scenarios' certificate (self-signed, ECDSA P-256; the key in
    # PKCS#8, which Granian requires) and every nginx's TLS settings.
    os.makedirs(os.path.join(RUN, "tls"), exist_ok=True)
    stacks.make_cert(os.path.join(RUN, "tls", "key.pem"), os.path.join(RUN, "tls", "cert.pem"),
                     openssl=OPENSSL)
    fill("tls.conf.in", dict(RUN=RUN), os.path.join(RUN, "tls.conf"))
    # Workers may run as another user: everything readable.
    for base, dirs, names in os.walk(RUN):
        os.chmod(base, 0o755)
        for n in names:
            os.chmod(os.path.join(base, n), 0o644)


def parse_args():
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="ngx_http_wsgi_module side by side with uWSGI, gunicorn, Granian and "
        "nginx alone, on 127.0.0.1. Writes build/bench/results.md and results.json.")
    p.add_argument("--quick", action="store_true",
                   help="1 repetition of 2 s, 1 s warm-up, 128 MiB memory runs (~4 min)")
    p.add_argument("--workers", default="1",
                   help="worker processes of every stack (default 1); a list (1,2) runs the "
                   "scenarios once per count, the stacks restarted with it, and gives a "
                   "table per count")
    p.add_argument("--unpinned", action="store_true",
                   help="servers and the load generator not pinned (--pin off), every stack "
                   "free to use every CPU as in production; unless --stacks: ours, uWSGI, "
                   "gunicorn, Granian direct, nginx alone, floor (and the --openssl-build "
                   "ones)")
    p.add_argument("--openssl-build", metavar="DIR",
                   help="a build directory of scripts/build --openssl VERSION: ours and nginx "
                   "alone with its nginx as well, in the TLS scenarios (in the first "
                   "--workers count only)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    p.add_argument("--only", default="",
                   help="scenarios, comma-separated: " + ",".join(SCENARIO_NAMES))
    p.add_argument("--stacks", default="", help="stacks, comma-separated: " + ",".join(ALL_STACKS))
    p.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    p.add_argument("--duration", type=int, help="seconds per run (default 4, --quick 2)")
    p.add_argument("--warmup", type=int, help="warm-up seconds before the first "
                   "repetition of each stack, 0 for none (default 1)")
    p.add_argument("--noise", type=float, default=0.10,
                   help="repeat a run when other processes used more than this share of a "
                   "core (default 0.10)")
    p.add_argument("--retries", type=int, help="repeats of a disturbed run (default 2, "
                   "--quick 1)")
    p.add_argument("--pin", choices=["auto", "on", "off"], default="auto",
                   help="taskset the servers and wrk apart (auto: when there is a CPU "
                   "to spare for wrk beyond the workers)")
    p.add_argument("--mem-size", type=int, help="MiB for the memory runs (default 1024, "
                   "--quick 128)")
    p.add_argument("--mem-rate", type=float, default=10,
                   help="MiB/s the slow client reads (default 10)")
    p.add_argument("--body-buffer", default="1m",
                   help="client_body_buffer_size of every nginx (default 1m: bodies up to "
                   "1 MiB stay in memory; nginx's own default, 16k, spools larger ones to "
                   "a temp file before the app or upstream sees them)")
    p.add_argument("--port", type=int, default=18100, help="first port to try (default 18100)")
    p.add_argument("--full-runs", type=int, default=1,
                   help="run everything N times (the stacks restarted each time) and decide "
                   "every target by the median of the N runs' values, showing each run's "
                   "and the spread (the issue decides the targets that straddle their line, "
                   "64k vs the static file and post-256k vs Granian, by --full-runs 3)")
    a = p.parse_args()
    q = a.quick
    a.reps = a.reps or (1 if q else 3)
    a.duration = a.duration or (2 if q else 4)   # wrk takes whole seconds
    a.warmup = a.warmup if a.warmup is not None else 1
    a.retries = a.retries if a.retries is not None else (1 if q else 2)
    a.mem_size = (a.mem_size or (128 if q else 1024)) * MiB
    a.mem_rate = a.mem_rate * MiB
    a.only = [s for s in a.only.split(",") if s] or SCENARIO_NAMES
    for s in a.only:
        if s not in SCENARIO_NAMES:
            p.error("unknown scenario %r (known: %s)" % (s, ", ".join(SCENARIO_NAMES)))
    try:
        a.worker_counts = [int(x) for x in a.workers.split(",") if x]
    except ValueError:
        p.error("--workers: a count or a comma-separated list of counts")
    if not a.worker_counts:
        p.error("--workers: a count or a comma-separated list of counts")
    a.workers = a.worker_counts[0]
    if a.unpinned:
        if a.pin == "on":
            p.error("--unpinned and --pin on exclude each other")
        a.pin = "off"
    if a.openssl_build:
        d = os.path.abspath(a.openssl_build)
        OSSL.update(dir=d, nginx=os.path.join(d, "sbin", "nginx"),
                    module=os.path.join(d, "modules", "ngx_http_wsgi_module.so"))
        for f in (OSSL["nginx"], OSSL["module"]):
            if not os.path.exists(f):
                p.error("--openssl-build %s: no %s (scripts/build --openssl VERSION)" % (
                    a.openssl_build, f))
        OSSL["version"] = nginx_openssl(OSSL["nginx"])
    a.stacks = [s for s in a.stacks.split(",") if s] or (
        UNPINNED_STACKS if a.unpinned else ALL_STACKS)
    for s in a.stacks:
        if s not in ALL_STACKS:
            p.error("unknown stack %r (known: %s)" % (s, ", ".join(ALL_STACKS)))
    if min(a.worker_counts) < 1 or a.threads < 1:
        p.error("--workers and --threads must be at least 1")
    if a.full_runs < 1:
        p.error("--full-runs must be at least 1")
    return a


def pinning(a):
    cpus = CPUS
    os.sched_setaffinity(0, cpus)     # a pinned pass before this one set the driver's
    a.server_cpus = a.wrk_cpus = None
    if a.pin == "off":
        return "off (--pin off): servers and wrk share all %d CPUs" % len(cpus)
    if len(cpus) < 2:
        return "off: one CPU"
    server, wrk = cpus[:-1], cpus[-1:]
    if a.pin == "auto" and len(server) < a.workers:
        return ("off: %d worker(s) need the %d CPUs (--pin on forces servers on %s, wrk on %s)"
                % (a.workers, len(cpus), server, wrk))
    a.server_cpus, a.wrk_cpus = server, wrk
    os.sched_setaffinity(0, wrk)      # the driver's own sampling stays off the servers' CPUs
    return "servers (nginx, app servers) on CPU %s, wrk and this driver on CPU %s (taskset)" % (
        ",".join(map(str, server)), ",".join(map(str, wrk)))


def scenario_stacks(sc):
    names = sc.get("stacks", [x for x in ALL_STACKS if x not in NAMED_ONLY])
    if sc.get("tls") and OSSL["dir"]:
        names = names + [x for x in OSSL_STACKS if x[:-5] in names]
    return names


def build_floor():
    """The module with --features transport-floor, in its own target directory
    (the main build's artifacts stay as scripts/build left them)."""
    log("cargo build --release --features transport-floor (the floor stack)")
    # nginx-sys configured as for build/ (scripts/build --openssl: its
    # NGX_CONFIGURE_ARGS and NGX_LDFLAGS, in build-info)
    env = dict(os.environ)
    info = {}
    with open(os.path.join(BUILD, "build-info")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            info[k] = v
    for key, var in (("ngx_configure_args", "NGX_CONFIGURE_ARGS"), ("ngx_ldflags", "NGX_LDFLAGS")):
        if info.get(key):
            env[var] = info[key]
    subprocess.run(["cargo", "build", "--release", "--locked", "--features", "transport-floor",
                    "--target-dir", FLOOR_TARGET], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, env=env)
    os.makedirs(os.path.dirname(FLOOR_MODULE), exist_ok=True)
    shutil.copy(os.path.join(FLOOR_TARGET, "release", "libngx_http_wsgi_module.so"),
                FLOOR_MODULE)


def estimate(a, scen, names):
    """Seconds the run should take without repeats (overheads measured on 2 cores)."""
    total = 5.0
    for sc in scen:
        n = len([x for x in names if x in scenario_stacks(sc)])
        if sc.get("special") == "memory":
            total += a.mem_size / a.mem_rate + 5 + n * (a.mem_size / (300 * MiB) + 1)
        elif sc.get("special") == "static_busy":
            total += n * (a.reps * 2 * (a.duration + 0.3) + a.warmup + 0.5)
        else:
            total += n * (a.reps * (a.duration + 0.3) + a.warmup + 0.5)
    return total


def main():
    a = parse_args()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    scen = [s for s in SCENARIOS if s["name"] in a.only]
    a.tls = any(s.get("tls") for s in scen)
    need = [(NGINX, "scripts/build"), (MODULE, "scripts/build"),
            (os.path.join(VENV, "bin", "granian"), "scripts/bench"), (WRK, "apt wrk"),
            (OPENSSL, "apt openssl")]
    if any(s.get("client") == "h2load" for s in scen):
        need.append((H2LOAD, "apt nghttp2-client"))
    for f, what in need:
        if not os.path.exists(f):
            raise SystemExit("%s is missing: run %s" % (f, what))
    os.makedirs(OUT, exist_ok=True)
    needed = set()
    for s in scen:
        for n in scenario_stacks(s):
            if n in a.stacks:
                needed.add(n)
    names = [n for n in ALL_STACKS if n in needed]
    if OSSL["dir"]:
        LABELS["ours-ossl"] = "ours (OpenSSL %s)" % OSSL["version"]
        LABELS["ceiling-ossl"] = "nginx alone (OpenSSL %s)" % OSSL["version"]
        for n in ("ours", "ceiling"):
            LABELS[n] += " (OpenSSL %s)" % nginx_openssl(NGINX)
    # the --openssl-build stacks in the first worker count's pass only
    pass_names = {w: [n for n in names if i == 0 or n not in OSSL_STACKS]
                  for i, w in enumerate(a.worker_counts)}
    vers = versions()
    log(", ".join("%s %s" % kv for kv in vers.items()))
    minutes = sum(estimate(a, scen, pass_names[w]) for w in a.worker_counts) / 60
    log("%s; workers %s; about %.0f min%s without repeats of disturbed runs" % (
        ", ".join(s["name"] for s in scen), ",".join(map(str, a.worker_counts)),
        a.full_runs * minutes, " (%d full runs)" % a.full_runs if a.full_runs > 1 else ""))
    if "floor" in names:
        build_floor()
    docs = []
    try:
        for i in range(a.full_runs):
            for w in a.worker_counts:
                a.workers = w
                pin = pinning(a)
                log("%s%d worker(s); %s" % (
                    "full run %d of %d, " % (i + 1, a.full_runs) if a.full_runs > 1 else "",
                    w, pin))
                settings = dict(workers=w, threads=a.threads, reps=a.reps,
                                duration=a.duration, warmup=a.warmup, noise=a.noise,
                                retries=a.retries, quick=a.quick, mem_size=a.mem_size,
                                mem_rate=a.mem_rate, scenarios=a.only, stacks=pass_names[w],
                                pin=a.pin, unpinned=a.unpinned, body_buffer=a.body_buffer,
                                full_runs=a.full_runs, worker_counts=a.worker_counts,
                                openssl_build=OSSL["dir"], labels=dict(LABELS))
                meta = dict(date=datetime.datetime.now().astimezone().isoformat(
                                timespec="seconds"),
                            machine=machine(), versions=vers, pinning=pin, settings=settings,
                            tls_library=tls_library(), full_run=i + 1)
                run_once(a, scen, pass_names[w], meta, docs)
    finally:
        write_results(a, docs)


def run_once(a, scen, names, meta, docs):
    """One full run: starts the stacks, runs the scenarios, stops them, and
    appends its results to docs (also when interrupted: what it measured)."""
    prepare_run_dir()
    stacks = {}
    port = a.port
    bench = None
    try:
        for n in names:
            port = free_port(port)
            tls_port = free_port(port + 1)
            stacks[n] = Stack(n, port, tls_port, a)
            stacks[n].start()
            port = tls_port + 1
        for n in names:
            stacks[n].wait_ready()
        log("started: " + ", ".join("%s :%d/:%d" % (n, s.port, s.tls_port)
                                    for n, s in stacks.items()))
        bench = Bench(a, stacks)
        t0 = time.time()
        for sc in scen:
            run_on = [n for n in names if n in scenario_stacks(sc)]
            if not run_on:
                continue
            log("%s: %s (%s)" % (sc["name"], sc["what"], ", ".join(run_on)))
            if sc.get("special") == "static_busy":
                bench.static_busy(sc, run_on)
            elif sc.get("special") == "memory":
                bench.memory_scenario(sc, run_on)
            else:
                bench.throughput(sc, run_on)
            for n in names:
                for p in stacks[n].all_procs():
                    if p.poll() is not None:
                        raise SystemExit("%s: a process exited (%s) during %s; see %s/logs" % (
                            n, p.returncode, sc["name"], RUN))
        meta["elapsed_s"] = round(time.time() - t0, 1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        kill_all()
        if bench is not None:
            meta["log_alerts"] = scan_logs()
            seen = {}
            for r in bench.runs:
                if r.get("kept"):
                    for name, _, sec in r.get("others_top", ()):
                        seen[name] = seen.get(name, 0) + sec
            meta["others_seen"] = sorted(((k, round(v, 1)) for k, v in seen.items() if v >= 0.5),
                                         key=lambda kv: -kv[1])[:8]
            docs.append(dict(meta=meta, results=bench.results, memory=bench.memory,
                             targets=targets(bench.results, meta["settings"]["workers"]),
                             runs=bench.runs))
        signal.signal(signal.SIGINT, on_signal)


def run_markdown(doc, title):
    md = markdown(doc["meta"], doc["results"], doc["memory"], doc["targets"], title=title)
    if doc["meta"].get("log_alerts"):
        md += "\n## error log lines at [alert]/[crit]/[emerg] or Python tracebacks\n\n"
        md += "\n".join("    " + x for x in doc["meta"]["log_alerts"][:40]) + "\n"
    return md


def summary_table(docs, workers):
    """README's kind of table for one worker count: a row per scenario, a
    column per stack; req/s (server CPU / client CPU µs per request), the
    median over docs (full runs) with the req/s spread when there are
    several; and ours over Granian direct."""
    order, stacks_seen = [], []
    for sc in SCENARIOS:
        if sc["name"] in ("memory", "static-busy", "cpu"):
            continue
        if any(sc["name"] in d["results"] for d in docs):
            order.append(sc["name"])
            for d in docs:
                for n in d["results"].get(sc["name"], {}):
                    if n not in stacks_seen:
                        stacks_seen.append(n)
    cols = [n for n in ALL_STACKS if n in stacks_seen]
    if not order:
        return []
    labels = docs[0]["meta"]["settings"].get("labels", LABELS)
    set0 = docs[0]["meta"]["settings"]
    n = len(docs)
    L = ["## %d worker%s per stack%s: req/s%s" % (
        workers, "s" if workers > 1 else "", ", not pinned" if set0.get("unpinned") or
        set0.get("pin") == "off" else "", ", median of %d full runs" % n if n > 1 else ""), ""]
    unpinned = docs[0]["meta"]["pinning"].startswith("off")
    L.append("Every stack: %d worker process(es) × %d threads (nginx: %d worker(s); uWSGI "
             "%d process(es), gunicorn %d worker(s), Granian %d worker(s)). Cells: req/s "
             "(server CPU µs per request / load generator CPU µs per request)%s. Pinning: %s. "
             "The load generator's CPU is its own user+sys (wait4), not in the server "
             "figure%s." % (
                 workers, set0["threads"], workers, workers, workers, workers,
                 "; below, the lowest – highest req/s of the %d runs" % n if n > 1 else "",
                 docs[0]["meta"]["pinning"],
                 "; unpinned, it shares the same CPUs, so what it uses the servers do not get"
                 if unpinned else "; it has a CPU of its own"))
    L.append("")
    L.append("| scenario | " + " | ".join(labels.get(c, c) for c in cols) +
             " | ours / Granian direct |")
    L.append("|---|" + "---:|" * len(cols) + "---:|")
    for scn in order:
        cells, rps_of = [], {}
        for c in cols:
            rs = [d["results"].get(scn, {}).get(c) for d in docs]
            rs = [r for r in rs if r and "invalid" not in r and r.get("rps")]
            if not rs:
                cells.append("–")
                continue
            rps = [r["rps"] for r in rs]
            rps_of[c] = med(rps)
            cpu = med([r["cpu_us_per_req"] for r in rs if r.get("cpu_us_per_req")])
            cli = med([r["client_us_per_req"] for r in rs if r.get("client_us_per_req")])
            cell = "%s (%s / %s)" % (fmt(med(rps)), fmt(cpu), fmt(cli))
            if n > 1:
                cell += "<br>%s – %s" % (fmt(min(rps)), fmt(max(rps)))
            if any(r["disturbed"] for r in rs):
                cell += " ⚠"
            cells.append(cell)
        x = ratio(rps_of.get("ours"), rps_of.get("granian"))
        L.append("| %s | %s | %s |" % (scn, " | ".join(cells), "%.2f×" % x if x else "–"))
    L.append("")
    if any(c in cols for c in OSSL_STACKS):
        lines = []
        for scn in order:
            for base, other in (("ours", "ours-ossl"), ("ceiling", "ceiling-ossl")):
                b = [d["results"].get(scn, {}).get(base) for d in docs]
                o = [d["results"].get(scn, {}).get(other) for d in docs]
                b = [r for r in b if r and r.get("rps")]
                o = [r for r in o if r and r.get("rps")]
                if b and o:
                    lines.append("%s, %s: %.2f× the req/s, %.2f× the server CPU per "
                                 "request" % (
                                     scn, labels.get(other, other),
                                     med([r["rps"] for r in o]) / med([r["rps"] for r in b]),
                                     med([r["cpu_us_per_req"] for r in o]) /
                                     med([r["cpu_us_per_req"] for r in b])))
        if lines:
            L.append("Against the same stack with %s: " % (
                labels.get("ours", "ours").partition(" (")[2].rstrip(")") or "the default") +
                "; ".join(lines) + ".")
            L.append("")
    return L


def write_results(a, docs):
    if not docs:
        return
    counts = list(dict.fromkeys(d["meta"]["settings"]["workers"] for d in docs))
    tables = []
    for w in counts:
        tables += summary_table([d for d in docs if d["meta"]["settings"]["workers"] == w], w)
    if len(docs) == 1 and a.full_runs == 1:
        out = docs[0]
        md = run_markdown(docs[0], "# ngx-wsgi benchmark") + "\n" + "\n".join(tables)
    else:
        n = a.full_runs
        mts = {w: median_targets([d["targets"] for d in docs
                                  if d["meta"]["settings"]["workers"] == w]) for w in counts}
        out = dict(full_runs=docs, median_targets=mts[counts[0]],
                   median_targets_by_workers={str(w): mt for w, mt in mts.items()})
        done = len(set(d["meta"].get("full_run") for d in docs
                       if "elapsed_s" in d["meta"] and
                       d["meta"]["settings"]["workers"] == a.worker_counts[-1]))
        L = ["# ngx-wsgi benchmark: %d full run%s%s%s" % (
                 n, "s" if n > 1 else "",
                 ", workers %s" % ",".join(map(str, counts)) if len(counts) > 1 else "",
                 "" if done == a.full_runs else
                 " (%d of %d asked completed; interrupted)" % (done, a.full_runs)), ""]
        L += tables
        n = len([d for d in docs if d["meta"]["settings"]["workers"] == counts[0]])
        L.append("Every target decided by the median of its value over the %d runs (each "
                 "run: all the scenarios below, the stacks restarted; a run's figures are "
                 "medians of its repetitions). Spread: lowest – highest of the runs." % n)
        L.append("")
        for w, mt in mts.items():
            L.append("## Targets, %d worker(s) (median of %d runs)" % (w, n))
            L.append("")
            L.append("| target | " + " | ".join("run %d" % (i + 1) for i in range(n)) +
                     " | median | spread | |")
            L.append("|---|" + "---|" * n + "---|---|---|")
            for t in mt:
                mark = "✔" if t["ok"] else ("✘" if t["ok"] is False else "?")
                L.append("| %s%s | %s | %s | %s | %s |" % (
                    t["target"], " †" if t["median3"] else "", " | ".join(t["values"]),
                    t["median"], t["spread"], mark))
            L.append("")
        L.append("† the targets the issue decides by the median of three full runs.")
        L.append("")
        md = "\n".join(L) + "\n"
        for d in docs:
            md += "\n---\n\n" + run_markdown(d, "# Run %d of %d, %d worker(s) (%s)%s" % (
                d["meta"].get("full_run", 1), a.full_runs, d["meta"]["settings"]["workers"],
                d["meta"]["date"], "" if "elapsed_s" in d["meta"] else ", interrupted"))
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(md)
    sys.stdout.write(md)
    sys.stdout.write("\n(written to %s/results.md and results.json)\n" % OUT)


def nginx_openssl(nginx):
    """The OpenSSL version an nginx was built with (its -V), or "?"."""
    try:
        text = subprocess.run([nginx, "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=30).stdout
    except OSError:
        text = ""
    m = re.search(r"built with OpenSSL (\S+)", text)
    return m.group(1) if m else "?"


def tls_library():
    """nginx's OpenSSL (its -V) and Granian's TLS (rustls)."""
    other = ""
    if OSSL["dir"]:
        other = "; %s with OpenSSL %s, statically (--openssl-build %s)" % (
            " and ".join(LABELS[n].split(" (")[0] for n in OSSL_STACKS), OSSL["version"],
            os.path.relpath(OSSL["dir"], ROOT))
    return "nginx with OpenSSL %s, Granian with rustls%s" % (nginx_openssl(NGINX), other)


def scan_logs():
    return stacks.scan_logs(os.path.join(RUN, "logs"))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as e:
        sys.stderr.write("interrupted (%s): every process the bench started was stopped\n" % e)
        sys.exit(130)

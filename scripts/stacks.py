"""What scripts/bench.py, scripts/soak.py and scripts/process_table.py share
to start server stacks on 127.0.0.1 and account for them (standard library
only; scripts/test_stacks.py tests it):

  spawn, Started     Popen in a session of its own (a process group to
                     kill), pinned with taskset when asked; every process
                     recorded, and only those are ever signalled (by PID)
  fill, fill_text    @NAME@ templates (bench/*.conf.in), refusing one left unfilled
  free_port          a free TCP port on 127.0.0.1, from a start or the kernel's
  wait_for, await_for, wait_port, unix_socket_ready
                     polling until a server answers (or one of its processes exits)
  /proc              parse_stat, proc_stat, all_ticks, children_map, children,
                     tree, cpu_ticks, rss_kib, pid_rss_kib, fd_count, cmdline,
                     system_ticks, others: the CPU and RSS of a process tree,
                     and what the rest of the machine used meanwhile
  nginx_temp_dirs, venv_env, uwsgi_cmd, gunicorn_cmd, granian_cmd, make_cert
                     the parts of a stack both scripts start the same way
  LogTail, log_level, scan_logs
                     what an error log gained, and its alert/crit/emerg lines
"""

import asyncio
import os
import re
import signal
import socket
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")
PROC = "/proc"


# ------------------------------------------------------------------ starting

class Started:
    """The processes a script started: each in its own session (process
    group = its PID), signalled only through these PIDs and their groups."""

    def __init__(self):
        self.procs = []

    def spawn(self, cmd, cpus=None, **kw):
        """Popen in its own session; pinned to cpus (taskset) when given."""
        p = subprocess.Popen(pin_cmd(cmd, cpus), start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def kill(self, grace=5.0):
        """SIGTERM every group started, up to grace seconds to exit, then
        SIGKILL what is left in those groups (workers whose master died
        first) and the groups themselves."""
        kill_groups(self.procs, grace)
        del self.procs[:]


def pin_cmd(cmd, cpus=None):
    """cmd under taskset -c when cpus (a list of CPU numbers) is given."""
    if cpus:
        return ["taskset", "-c", ",".join(map(str, cpus))] + list(cmd)
    return list(cmd)


def kill_groups(procs, grace=5.0):
    live = [p for p in procs if p.returncode is None]
    for p in live:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.time() + grace
    for p in live:
        try:
            p.wait(max(0.05, deadline - time.time()))
        except (subprocess.TimeoutExpired, ChildProcessError):
            pass
    groups = {p.pid for p in procs}
    for pid in pids_in_groups(groups):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in live:
        if p.returncode is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(2)
            except (subprocess.TimeoutExpired, ChildProcessError):
                pass


def pids_in_groups(groups, proc=PROC):
    out = []
    for pid in proc_pids(proc):
        st = proc_stat(pid, proc)
        if st and st["pgid"] in groups:
            out.append(pid)
    return out


def fill_text(text, values, what="template"):
    """@NAME@ -> values[NAME]; SystemExit if an @NAME@ is left."""
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise SystemExit("%s: unfilled %s" % (what, sorted(set(left))))
    return text


def fill(template, values, dest):
    with open(template) as f:
        text = fill_text(f.read(), values, os.path.basename(template))
    with open(dest, "w") as f:
        f.write(text)


def port_is_free(port, host="127.0.0.1"):
    s = socket.socket()
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port(start=0, host="127.0.0.1", is_free=port_is_free):
    """The first free port from start upwards; with start 0 one the kernel
    picks."""
    if not start:
        s = socket.socket()
        try:
            s.bind((host, 0))
            return s.getsockname()[1]
        finally:
            s.close()
    port = start
    while port < 65536:
        if is_free(port, host):
            return port
        port += 1
    raise SystemExit("no free port from %d on %s" % (start, host))


def nginx_temp_dirs(base, suffix=""):
    """The *_temp_path directories an nginx config of ours names:
    base/client_body<suffix>, ... (created)."""
    for d in ("client_body", "proxy", "uwsgi", "fastcgi", "scgi"):
        os.makedirs(os.path.join(base, d + suffix), exist_ok=True)


def venv_env(venv, env=None):
    """An environment with venv's bin first on PATH (and no PYTHONPATH)."""
    base = os.environ if env is None else env
    out = dict(base, VIRTUAL_ENV=venv,
               PATH=os.path.join(venv, "bin") + ":" + base.get("PATH", ""))
    out.pop("PYTHONPATH", None)
    return out


def uwsgi_cmd(venv, processes, threads, sock, app_dir, module, extra=()):
    """uWSGI with a master, on a unix socket, stopping on SIGTERM."""
    return [os.path.join(venv, "bin", "uwsgi"), "--master", "--processes", str(processes),
            "--threads", str(threads), "--uwsgi-socket", sock, "--chmod-socket=666",
            "--chdir", app_dir, "--module", module, "--need-app", "--die-on-term",
            "--disable-logging", "--single-interpreter", "--buffer-size", "32768",
            "--listen", "1024"] + list(extra)


def gunicorn_cmd(venv, workers, threads, sock, app_dir, module, extra=()):
    """gunicorn gthread on a unix socket."""
    return [os.path.join(venv, "bin", "gunicorn"), "-k", "gthread", "-w", str(workers),
            "--threads", str(threads), "--bind", "unix:" + sock, "--chdir", app_dir] + \
        list(extra) + [module]


def granian_cmd(venv, workers, threads, app_dir, http="1", extra=()):
    """Granian's WSGI interface; the listener and the app follow in extra."""
    return [os.path.join(venv, "bin", "granian"), "--interface", "wsgi",
            "--workers", str(workers), "--blocking-threads", str(threads),
            "--runtime-threads", "1", "--http", http, "--no-ws", "--log-level", "warning",
            "--no-access-log", "--working-dir", app_dir] + list(extra)


def make_cert(key_out, cert_out, key="ec", cn="127.0.0.1", openssl="openssl"):
    """A self-signed certificate: key "ec" (P-256, PKCS#8 as Granian wants)
    or "rsa" (2048 bits)."""
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key == "ec" \
        else ["-newkey", "rsa:2048"]
    ext = ["-addext", "subjectAltName=IP:127.0.0.1"] if cn == "127.0.0.1" else []
    subprocess.run([openssl, "req", "-x509"] + newkey + ["-nodes", "-days", "30",
                    "-keyout", key_out, "-out", cert_out, "-subj", "/CN=" + cn] + ext,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ------------------------------------------------------------------ waiting

def first_exited(procs):
    """The first of procs that has exited, or None."""
    for p in procs:
        if p.poll() is not None:
            return p
    return None


def wait_for(cond, timeout, step=0.05):
    """Polls cond() until true or timeout seconds; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


async def await_for(cond, timeout, step=0.05):
    """wait_for in an asyncio task (a log or /proc look-up: no event to await)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(step)
    return bool(cond())


def unix_socket_ready(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(port, proc, secs=60, host="127.0.0.1"):
    """Until something accepts on port; SystemExit if proc exits first."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit("server exited with %s" % proc.returncode)
        try:
            socket.create_connection((host, port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not listen on %d in %d s" % (port, secs))


def stop(proc, sig, secs=60):
    """sig to one process we started, then SIGKILL after secs."""
    proc.send_signal(sig)
    try:
        proc.wait(secs)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ /proc

def parse_stat(text):
    """/proc/PID/stat -> dict(comm, ppid, pgid, ticks=utime+stime, start)
    (comm may hold spaces and parentheses: split after the last ')')."""
    rest = text[text.rfind(")") + 2:].split()
    return dict(comm=text[text.find("(") + 1:text.rfind(")")], ppid=int(rest[1]),
                pgid=int(rest[2]), ticks=int(rest[11]) + int(rest[12]), start=int(rest[19]))


def proc_pids(proc=PROC):
    return [int(d) for d in os.listdir(proc) if d.isdigit()]


def read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def proc_stat(pid, proc=PROC):
    text = read("%s/%d/stat" % (proc, pid))
    return parse_stat(text) if text else None


def all_ticks(proc=PROC):
    """pid -> (comm, utime+stime ticks) of every process."""
    out = {}
    for pid in proc_pids(proc):
        st = proc_stat(pid, proc)
        if st:
            out[pid] = (st["comm"], st["ticks"])
    return out


def children_map(proc=PROC):
    """ppid -> [pid]."""
    kids = {}
    for pid in proc_pids(proc):
        st = proc_stat(pid, proc)
        if st:
            kids.setdefault(st["ppid"], []).append(pid)
    return kids


def children(pid, proc=PROC):
    return children_map(proc).get(pid, [])


def tree(roots, kids):
    """roots and all their descendants (kids: children_map())."""
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def cpu_ticks(pids, proc=PROC):
    total = 0
    for pid in pids:
        st = proc_stat(pid, proc)
        if st:
            total += st["ticks"]
    return total


def status_field(text, field="VmRSS"):
    """A kB field of /proc/PID/status, or None."""
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def pid_rss_kib(pid, field="VmRSS", proc=PROC):
    text = read("%s/%d/status" % (proc, pid))
    return status_field(text, field) if text else None


def rss_kib(pids, field="VmRSS", proc=PROC):
    """Summed over pids (those gone count 0)."""
    return sum(pid_rss_kib(p, field, proc) or 0 for p in pids)


def fd_count(pid, proc=PROC):
    try:
        return len(os.listdir("%s/%d/fd" % (proc, pid)))
    except OSError:
        return None


def cmdline(pid, proc=PROC):
    raw = read("%s/%d/cmdline" % (proc, pid), "rb")
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() if raw else ""


def parse_system_ticks(text):
    """/proc/stat's cpu line -> (busy user+nice+system, irq+softirq, steal)."""
    v = [int(x) for x in text.splitlines()[0].split()[1:]]
    return v[0] + v[1] + v[2], v[5] + v[6], v[7] if len(v) > 7 else 0


def system_ticks(proc=PROC):
    return parse_system_ticks(read(proc + "/stat"))


def others(before, after, exclude, n=3, tick=TICK):
    """CPU seconds the processes not in exclude used between two all_ticks()
    snapshots, and the top n of them: (seconds, [(comm, pid, seconds)])."""
    used = []
    for pid, (name, t1) in after.items():
        if pid in exclude or pid == os.getpid():
            continue
        t0 = before[pid][1] if pid in before else 0
        if t1 - t0 > 0:
            used.append((name, pid, round((t1 - t0) / tick, 2)))
    used.sort(key=lambda x: -x[2])
    return sum(x[2] for x in used), used[:n]


# ------------------------------------------------------------------ logs

NGINX_LOG_LINE = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\]")


def log_level(line):
    """The level of an nginx error log line ("alert"), or None."""
    m = NGINX_LOG_LINE.match(line)
    return m.group(1) if m else None


BAD_LINE = re.compile(r"\[(alert|crit|emerg|error)\]|Traceback")


def scan_logs(logs, pattern=BAD_LINE, width=300):
    """["file: line"] of every file in the directory logs matching pattern."""
    found = []
    for n in sorted(os.listdir(logs)):
        with open(os.path.join(logs, n), errors="replace") as f:
            for line in f:
                if pattern.search(line):
                    found.append("%s: %s" % (n, line.rstrip()[:width]))
    return found


class LogTail:
    """Reads what a log file gained since the last mark()."""

    def __init__(self, path):
        self.path, self.off = path, 0

    def mark(self):
        self.off = os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def since_mark(self):
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self.off)
                return f.read()
        except OSError:
            return ""

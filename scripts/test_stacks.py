"""Unit tests of scripts/stacks.py (pure logic and fake /proc trees; no
server is started). scripts/test runs them:

    python3 -m unittest discover -s scripts -p 'test_*.py'
"""

import os
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stacks  # noqa: E402


def stat_line(pid, comm, ppid, pgid, utime, stime, start=100):
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice threads itreal starttime ...
    fields = ["S", ppid, pgid, pgid, 0, -1, 0, 0, 0, 0, 0, utime, stime, 0, 0, 20, 0, 1, 0,
              start, 1000, 10]
    return "%d (%s) %s\n" % (pid, comm, " ".join(map(str, fields)))


class FakeProc:
    """A directory laid out as /proc: PID/stat, PID/status, PID/fd/, stat."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        self.root = self.dir.name

    def add(self, pid, comm, ppid, pgid, utime, stime, rss=None, fds=0):
        d = os.path.join(self.root, str(pid))
        os.makedirs(os.path.join(d, "fd"))
        with open(os.path.join(d, "stat"), "w") as f:
            f.write(stat_line(pid, comm, ppid, pgid, utime, stime))
        with open(os.path.join(d, "status"), "w") as f:
            f.write("Name:\t%s\n" % comm)
            if rss is not None:
                f.write("VmHWM:\t%d kB\nVmRSS:\t%d kB\n" % (rss * 2, rss))
        for i in range(fds):
            open(os.path.join(d, "fd", str(i)), "w").close()
        with open(os.path.join(d, "cmdline"), "wb") as f:
            f.write(b"nginx: " + comm.encode() + b"\0")

    def close(self):
        self.dir.cleanup()


class Templates(unittest.TestCase):
    def test_fills_every_name(self):
        self.assertEqual(stacks.fill_text("listen @PORT@; # @NAME@ @PORT@",
                                          dict(PORT=8080, NAME="ours")),
                         "listen 8080; # ours 8080")

    def test_refuses_a_name_left_unfilled(self):
        with self.assertRaises(SystemExit) as e:
            stacks.fill_text("listen @PORT@ @SSL@;", dict(PORT=1), "x.conf.in")
        self.assertIn("@SSL@", str(e.exception))
        self.assertIn("x.conf.in", str(e.exception))

    def test_lower_case_at_signs_are_text(self):
        self.assertEqual(stacks.fill_text("user@host @A@", dict(A="b")), "user@host b")

    def test_fill_writes_the_file(self):
        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, "t.in"), os.path.join(d, "t")
            with open(src, "w") as f:
                f.write("worker_processes @WORKERS@;\n")
            stacks.fill(src, dict(WORKERS=2), dst)
            with open(dst) as f:
                self.assertEqual(f.read(), "worker_processes 2;\n")

    def test_every_bench_template_is_filled_by_its_names(self):
        # bench/*.conf.in use only the names bench.py fills
        names = {"RUN", "NAME", "PORT", "SSL", "TLS_CONF", "WORKERS", "DOCROOT", "APPDIR",
                 "MODULE", "THREADS", "SOCK", "UWSGI_PARAMS", "BODY_BUFFER", "USER", "PRIORITY"}
        bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "bench")
        for n in sorted(os.listdir(bench)):
            if n.endswith(".conf.in"):
                with open(os.path.join(bench, n)) as f:
                    stacks.fill_text(f.read(), {k: "x" for k in names}, n)


class Ports(unittest.TestCase):
    def test_skips_ports_taken(self):
        taken = {18100, 18101, 18103}
        got = stacks.free_port(18100, is_free=lambda p, h: p not in taken)
        self.assertEqual(got, 18102)

    def test_start_itself_when_free(self):
        self.assertEqual(stacks.free_port(18100, is_free=lambda p, h: True), 18100)

    def test_gives_up_past_the_last_port(self):
        with self.assertRaises(SystemExit):
            stacks.free_port(65530, is_free=lambda p, h: False)

    def test_a_bound_port_is_not_free(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        try:
            port = s.getsockname()[1]
            self.assertFalse(stacks.port_is_free(port))
            self.assertNotEqual(stacks.free_port(port), port)
        finally:
            s.close()

    def test_kernel_pick(self):
        port = stacks.free_port()
        self.assertTrue(1024 <= port < 65536)


class Pinning(unittest.TestCase):
    def test_taskset_when_cpus(self):
        self.assertEqual(stacks.pin_cmd(["nginx", "-c", "x"], [0, 1]),
                         ["taskset", "-c", "0,1", "nginx", "-c", "x"])

    def test_plain_when_not_pinned(self):
        self.assertEqual(stacks.pin_cmd(["wrk"], None), ["wrk"])
        self.assertEqual(stacks.pin_cmd(["wrk"], []), ["wrk"])


class ProcParsing(unittest.TestCase):
    def test_stat_with_spaces_and_parentheses_in_comm(self):
        st = stacks.parse_stat(stat_line(42, "nginx: worker) (x", 7, 40, 150, 50, start=999))
        self.assertEqual(st, dict(comm="nginx: worker) (x", ppid=7, pgid=40, ticks=200,
                                  start=999))

    def test_system_ticks(self):
        text = "cpu  100 5 20 1000 7 3 2 11 0 0\ncpu0 50 2 10 500 3 1 1 5 0 0\n"
        self.assertEqual(stacks.parse_system_ticks(text), (125, 5, 11))

    def test_system_ticks_without_steal(self):
        self.assertEqual(stacks.parse_system_ticks("cpu 1 2 3 4 5 6 7\n"), (6, 13, 0))

    def test_status_field(self):
        text = "Name:\tnginx\nVmHWM:\t  9000 kB\nVmRSS:\t  4321 kB\n"
        self.assertEqual(stacks.status_field(text), 4321)
        self.assertEqual(stacks.status_field(text, "VmHWM"), 9000)
        self.assertIsNone(stacks.status_field(text, "VmSwap"))


class ProcTree(unittest.TestCase):
    def setUp(self):
        self.p = FakeProc()
        # bench (1) -> nginx master (10) -> workers 11, 12; uwsgi (20) -> 21;
        # 30: someone else's process
        self.p.add(1, "python3", 0, 1, 5, 5)
        self.p.add(10, "nginx", 1, 10, 1, 1, rss=1000, fds=3)
        self.p.add(11, "nginx", 10, 10, 300, 100, rss=5000, fds=7)
        self.p.add(12, "nginx", 10, 10, 30, 10, rss=5000)
        self.p.add(20, "uwsgi", 1, 20, 50, 50, rss=20000)
        self.p.add(21, "uwsgi", 20, 20, 10, 0, rss=21000)
        self.p.add(30, "cc1", 0, 30, 900, 100, rss=99999)
        self.root = self.p.root

    def tearDown(self):
        self.p.close()

    def test_children_and_tree(self):
        kids = stacks.children_map(self.root)
        self.assertEqual(sorted(kids[10]), [11, 12])
        self.assertEqual(sorted(stacks.children(1, self.root)), [10, 20])
        self.assertEqual(sorted(stacks.tree([10], kids)), [10, 11, 12])
        self.assertEqual(sorted(stacks.tree([10, 20, 10], kids)), [10, 11, 12, 20, 21])

    def test_tree_survives_a_loop(self):
        self.assertEqual(sorted(stacks.tree([1], {1: [2], 2: [1, 3]})), [1, 2, 3])

    def test_cpu_and_rss_of_a_tree(self):
        pids = stacks.tree([10], stacks.children_map(self.root))
        self.assertEqual(stacks.cpu_ticks(pids, self.root), 2 + 400 + 40)
        self.assertEqual(stacks.rss_kib(pids, proc=self.root), 11000)
        self.assertEqual(stacks.rss_kib(pids, "VmHWM", self.root), 22000)
        # a process gone meanwhile counts nothing
        self.assertEqual(stacks.cpu_ticks(pids + [999], self.root), 442)
        self.assertIsNone(stacks.pid_rss_kib(999, proc=self.root))

    def test_fds_and_cmdline(self):
        self.assertEqual(stacks.fd_count(11, self.root), 7)
        self.assertIsNone(stacks.fd_count(999, self.root))
        self.assertEqual(stacks.cmdline(11, self.root), "nginx: nginx")

    def test_pids_in_groups(self):
        self.assertEqual(sorted(stacks.pids_in_groups({10}, self.root)), [10, 11, 12])

    def test_others(self):
        before = stacks.all_ticks(self.root)
        self.p.add(31, "rustc", 0, 31, 200, 0)        # started meanwhile
        with open(os.path.join(self.root, "30", "stat"), "w") as f:
            f.write(stat_line(30, "cc1", 0, 30, 1100, 100))
        with open(os.path.join(self.root, "11", "stat"), "w") as f:
            f.write(stat_line(11, "nginx", 10, 10, 900, 100))
        after = stacks.all_ticks(self.root)
        total, top = stacks.others(before, after, exclude={1, 10, 11, 12, 20, 21}, tick=100)
        self.assertAlmostEqual(total, 4.0)
        self.assertEqual(top, [("cc1", 30, 2.0), ("rustc", 31, 2.0)])


class Logs(unittest.TestCase):
    def test_level(self):
        self.assertEqual(stacks.log_level("2026/12/07 10:00:01 [alert] 12#12: x"), "alert")
        self.assertIsNone(stacks.log_level("Traceback (most recent call last):"))

    def test_scan_and_tail(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "ours.error.log")
            with open(log, "w") as f:
                f.write("2026/12/07 10:00:01 [notice] 1#1: start\n"
                        "2026/12/07 10:00:02 [crit] 1#1: bad\n")
            with open(os.path.join(d, "app.log"), "w") as f:
                f.write("Traceback (most recent call last):\nok\n")
            self.assertEqual(stacks.scan_logs(d), [
                "app.log: Traceback (most recent call last):",
                "ours.error.log: 2026/12/07 10:00:02 [crit] 1#1: bad"])
            t = stacks.LogTail(log)
            t.mark()
            self.assertEqual(t.since_mark(), "")
            with open(log, "a") as f:
                f.write("new line\n")
            self.assertEqual(t.since_mark(), "new line\n")


class Commands(unittest.TestCase):
    def test_app_servers_on_the_socket(self):
        u = stacks.uwsgi_cmd("/v", 2, 4, "/r/s.sock", "/r/app", "m:app", ["--pidfile", "p"])
        self.assertEqual(u[0], "/v/bin/uwsgi")
        for a, b in (("--processes", "2"), ("--threads", "4"), ("--uwsgi-socket", "/r/s.sock"),
                     ("--module", "m:app"), ("--pidfile", "p")):
            self.assertEqual(u[u.index(a) + 1], b)
        g = stacks.gunicorn_cmd("/v", 2, 4, "/r/s.sock", "/r/app", "m:app", ["--backlog", "9"])
        self.assertEqual(g[-1], "m:app")
        self.assertEqual(g[g.index("--bind") + 1], "unix:/r/s.sock")
        self.assertEqual(g[g.index("-w") + 1], "2")
        r = stacks.granian_cmd("/v", 2, 4, "/r/app", http="auto")
        self.assertEqual(r[r.index("--workers") + 1], "2")
        self.assertEqual(r[r.index("--http") + 1], "auto")

    def test_venv_env(self):
        env = stacks.venv_env("/v", dict(PATH="/usr/bin", PYTHONPATH="/x", HOME="/h"))
        self.assertEqual(env["PATH"], "/v/bin:/usr/bin")
        self.assertEqual(env["VIRTUAL_ENV"], "/v")
        self.assertNotIn("PYTHONPATH", env)
        self.assertEqual(env["HOME"], "/h")


class Started(unittest.TestCase):
    def test_kills_its_own_group_and_only_that(self):
        started = stacks.Started()
        # a shell that starts a child in its group and ignores SIGTERM
        p = started.spawn(["sh", "-c", "trap '' TERM; sleep 30 & wait"],
                          stdout=subprocess.DEVNULL)
        other = subprocess.Popen(["sleep", "30"])
        try:
            self.assertTrue(stacks.wait_for(
                lambda: stacks.pids_in_groups({p.pid}) and
                len(stacks.pids_in_groups({p.pid})) >= 2, 5))
            started.kill(grace=0.2)
            self.assertIsNotNone(p.returncode)
            self.assertEqual(stacks.wait_for(lambda: not stacks.pids_in_groups({p.pid}), 5),
                             True)
            self.assertIsNone(other.poll())
            self.assertEqual(started.procs, [])
        finally:
            other.kill()
            other.wait()


if __name__ == "__main__":
    unittest.main()

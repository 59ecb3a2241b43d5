"""Runs t/process_probe.py under ngx-wsgi, gunicorn and uWSGI and prints
README's table "What a WSGI app sees of its process" (scripts/process-table
runs this with its venv; see there).

Each server gets the same requests (/report, /partial, /close,
/after-close) on 127.0.0.1, then a graceful stop; the table comes from the
probe's JSON and from where its "probe: ..." lines turned up (the error log
and its level, the server's stdout or stderr) by the time the server
exited. The mod_wsgi column is what mod_wsgi's documentation says.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request

import stacks

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 't', 'process_probe.py')
REQUESTS = ['/report', '/partial', '/close', '/after-close']
# Every server starts with the same small environment, as from a service
# manager (no PYTHONUNBUFFERED or the like from the caller's shell).
ENV = {'PATH': '/usr/local/bin:/usr/bin:/bin', 'LANG': 'C.UTF-8'}


wait_port, stop = stacks.wait_port, stacks.stop


def get(port, path):
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=120) as r:
            return json.loads(r.read())
    except Exception as e:  # a server that fails a request: say so in the table
        return {'failed': '%s: %s' % (type(e).__name__, e)}


class Stack:
    """One server running the probe from its own directory."""

    def __init__(self, name, work):
        self.name = name
        self.dir = os.path.join(work, name)
        self.lib = os.path.join(self.dir, 'lib')
        os.makedirs(os.path.join(self.lib, 'state'))
        shutil.copy(PROBE, os.path.join(self.lib, 'process_probe.py'))
        os.chmod(os.path.join(self.lib, 'state'), 0o777)
        self.out = os.path.join(self.dir, 'stdout')
        self.err = os.path.join(self.dir, 'stderr')
        self.log = None  # a log file of the server's own, if any

    def run(self, cmd, port, stop_signal):
        with open(self.out, 'wb') as out, open(self.err, 'wb') as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    cwd=self.dir, env=ENV)
            try:
                wait_port(port, proc)
                self.replies = {path: get(port, path) for path in REQUESTS}
            finally:
                stop(proc, stop_signal)
        # the worker's (not a multiprocessing child's)
        pid = self.replies.get('/report', {}).get('request', {}).get('pid')
        self.atexit = os.path.exists(os.path.join(self.lib, 'state', 'atexit-%s' % pid))
        return self

    def outputs(self):
        """(where, text) of every output the server wrote."""
        out = []
        for where, path in (('log', self.log), ('stdout', self.out), ('stderr', self.err)):
            if path and os.path.exists(path):
                with open(path, encoding='utf-8', errors='replace') as f:
                    out.append((where, f.read()))
        return out


def run_nginx(work, nginx, module, port):
    s = Stack('ngx-wsgi', work)
    s.log = os.path.join(s.dir, 'error.log')
    os.makedirs(os.path.join(s.dir, 'logs'))
    conf = os.path.join(s.dir, 'nginx.conf')
    with open(conf, 'w') as f:
        f.write('''load_module %(module)s;
user root;
daemon off;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log info;
events {}
http {
    access_log off;
    wsgi_threads 1;
    wsgi_python_path %(lib)s;
    server {
        listen 127.0.0.1:%(port)d;
        location / { wsgi_pass process_probe:application; }
    }
}
''' % dict(module=module, dir=s.dir, lib=s.lib, port=port))
    return s.run([nginx, '-p', s.dir + '/', '-c', conf], port, signal.SIGQUIT)


def run_gunicorn(work, venv, port):
    s = Stack('gunicorn', work)
    cmd = [os.path.join(venv, 'bin', 'gunicorn'), '--bind', '127.0.0.1:%d' % port,
           '--workers', '1', '--chdir', s.lib, 'process_probe:application']
    # gunicorn's own log goes to stderr by default; TERM is its graceful stop
    return s.run(cmd, port, signal.SIGTERM)


def run_uwsgi(work, venv, port):
    s = Stack('uWSGI', work)
    cmd = [os.path.join(venv, 'bin', 'uwsgi'), '--http-socket', '127.0.0.1:%d' % port,
           '--master', '--processes', '1', '--chdir', s.lib,
           '--module', 'process_probe:application', '--need-app']
    # INT stops uWSGI (TERM reloads it in 2.0); its log is stderr by default
    return s.run(cmd, port, signal.SIGINT)


# --- the table ---------------------------------------------------------------

LEVEL = re.compile(r'\[(\w+)\] \d+#\d+: (\*\d+ )?wsgi: (.*)$')


def landing(stack, text):
    """Where the line `text` went, in words."""
    found = []
    for where, content in stack.outputs():
        for line in content.splitlines():
            if text not in line:
                continue
            m = LEVEL.search(line)
            if where == 'log' and m:
                found.append('error log, `%s`%s' % (
                    m.group(1), ', with the request' if ', request: ' in line else ''))
            elif where == 'log':
                found.append('error log, as written')
            else:
                found.append("the server's %s" % where)
            break
    return ' and '.join(found) or 'nowhere'


def value(v):
    if isinstance(v, bool):
        return 'yes' if v else 'no'
    if isinstance(v, str) and re.match(r'^\w+(Error|Exception|Operation): ', v):
        return 'raises `%s`' % v.split(':')[0]
    return '`%s`' % (v,)


def stream_type(s):
    t = s.get('type', '?')
    return '`io.TextIOWrapper`' if t == '_io.TextIOWrapper' else '`%s`' % t


def buffer_cell(s):
    if s.get('buffer') == 'missing':
        return 'missing'
    b = s.get('buffer', '?').replace('_io.', 'io.')
    r = s.get('raw', '?').replace('_io.', 'io.')
    return '`%s` / `%s`' % (b, r)


def reconfigure_cell(s):
    c = s.get('reconfigure')
    if not isinstance(c, dict):
        return value(c)
    acts = (c.get('errors=strict') == 'strict' and c.get('encoding=ascii') == 'ascii'
            and str(c.get('strict refuses a lone surrogate', '')).startswith('UnicodeEncodeError')
            and c.get('line_buffering=False') is False and c.get('restored'))
    return 'acts on `encoding`, `errors`, `line_buffering`, `write_through`' if acts else 'partly'


def signal_cell(f):
    v = f.get('signal.signal', '?')
    return {'not installed': 'ignored', 'installed': 'installed'}.get(v, value(v))


def spawn_cell(f):
    v = f.get('multiprocessing spawn', '?')
    return 'works' if v == 'child returned 49' else str(v)


def executable_cell(f):
    e = f.get('executable', {})
    name = os.path.basename(e.get('sys.executable') or '') or "''"
    runs = e.get('runs this Python')
    return '`%s`%s' % (name, ', runs this Python' if runs is True else ", not this Python")


def rows(stacks):
    """(label, [cell per stack]) for the table."""
    def each(f):
        return [f(s) for s in stacks]

    def rep(s, phase='request'):
        return s.replies.get('/report', {}).get(phase, {})

    def out(s, name, phase='request'):
        return rep(s, phase).get(name, {})

    def close_cell(s):
        c, a = s.replies.get('/close', {}), s.replies.get('/after-close', {})
        if 'failed' in c or 'failed' in a:
            return 'request failed'
        then = 'print() then raises' if str(c.get('print after close', '')).startswith('ValueError') \
            else 'print() still works'
        after = 'open again in the next request' if a.get('closed') is False \
            else 'stays closed: print() raises in later requests'
        return '%s; %s' % (then, after)

    return [
        ('`sys.stdout`, `sys.stderr`', each(lambda s: stream_type(out(s, 'stdout')))),
        ('`sys.__stdout__` is `sys.stdout`',
         each(lambda s: value(out(s, 'stdout').get('is sys.__stdout__')))),
        ('`.buffer` / `.buffer.raw`', each(lambda s: buffer_cell(out(s, 'stdout')))),
        ('`encoding`, `errors` of `sys.stdout`',
         each(lambda s: '`%s`, `%s`' % (out(s, 'stdout').get('encoding'), out(s, 'stdout').get('errors')))),
        ('`line_buffering`, `write_through` of `sys.stdout`',
         each(lambda s: '%s, %s' % (value(out(s, 'stdout').get('line_buffering')),
                                    value(out(s, 'stdout').get('write_through'))))),
        ('`reconfigure()`', each(lambda s: reconfigure_cell(out(s, 'stdout')))),
        ('`sys.stdout.fileno()`', each(lambda s: value(out(s, 'stdout').get('fileno')))),
        ('`sys.stderr.fileno()`', each(lambda s: value(out(s, 'stderr').get('fileno')))),
        ('`isatty()`', each(lambda s: value(out(s, 'stdout').get('isatty')))),
        ('`print()` at import', each(lambda s: landing(s, 'probe: print flush=True at import'))),
        ('`print()` in a request', each(lambda s: landing(s, 'probe: print flush=True at request'))),
        ('`print(file=sys.stderr)` in a request',
         each(lambda s: landing(s, 'probe: print to stderr at request'))),
        ('`sys.stdout.buffer.write()` in a request',
         each(lambda s: landing(s, 'probe: stdout.buffer bytes at request'))),
        ('bytes written to `sys.stderr.fileno()`',
         each(lambda s: landing(s, 'probe: stderr.fileno() bytes at request'))),
        ('a line without its newline, then `flush()`',
         each(lambda s: landing(s, 'probe: a partial line, flushed'))),
        ('`logging.warning()` with no handler configured',
         each(lambda s: landing(s, 'probe: logging warning at request'))),
        ('`sys.stdout.close()`', each(close_cell)),
        ('`faulthandler.enable()`', each(lambda s: value(rep(s).get('faulthandler.enable()')))),
        ('`sys.executable`', each(lambda s: executable_cell(rep(s)))),
        ('`multiprocessing` spawn in a request', each(lambda s: spawn_cell(rep(s)))),
        ('`signal.signal()` at import', each(lambda s: signal_cell(rep(s, 'import')))),
        ('`signal.signal()` in a request', each(lambda s: signal_cell(rep(s)))),
        ('`atexit` at worker exit', each(lambda s: 'runs' if s.atexit else 'does not run')),
        ('the app is imported', each(lambda s: 'in the worker' if rep(s, 'import').get('pid') == rep(s).get('pid')
                                     else 'in another process, before the worker forks')),
        ('requests run on the main thread', each(lambda s: value(rep(s).get('main thread')))),
    ]


# What mod_wsgi's documentation says (modwsgi.readthedocs.io: "Logging from
# Applications", WSGIRestrictStdout, WSGIRestrictSignal,
# WSGIDestroyInterpreter), for the rows it speaks of.
MOD_WSGI = {
    '`print()` at import': "Apache's error log",
    '`print()` in a request': "Apache's error log, with the request (`WSGIRestrictStdout Off`, the default since 3.0)",
    '`print(file=sys.stderr)` in a request': "Apache's error log, with the request",
    '`logging.warning()` with no handler configured': "Apache's error log (through `sys.stderr`)",
    '`signal.signal()` at import': 'ignored, with a warning (`WSGIRestrictSignal On`)',
    '`signal.signal()` in a request': 'ignored, with a warning (`WSGIRestrictSignal On`)',
    '`atexit` at worker exit': 'runs when the interpreter is destroyed (`WSGIDestroyInterpreter On`, the default)',
}


def table(stacks, versions):
    heads = [s.name for s in stacks] + ['mod_wsgi (its documentation)']
    lines = ['| | %s |' % ' | '.join('%s %s' % (h, versions.get(h, '')) if versions.get(h) else h
                                    for h in heads),
             '|---|' + '---|' * len(heads)]
    for label, cells in rows(stacks):
        cells = cells + [MOD_WSGI.get(label, 'not documented')]
        lines.append('| %s | %s |' % (label, ' | '.join(c.replace('|', '\\|') for c in cells)))
    return '\n'.join(lines) + '\n'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--nginx', required=True)
    ap.add_argument('--module', required=True)
    ap.add_argument('--venv', required=True, help='a venv with gunicorn and uWSGI')
    ap.add_argument('--work', required=True)
    ap.add_argument('--port', type=int, default=18480)
    ap.add_argument('--json', help='write what each server returned here')
    a = ap.parse_args()

    stacks = [run_nginx(a.work, a.nginx, os.path.abspath(a.module), a.port),
              run_gunicorn(a.work, a.venv, a.port + 1),
              run_uwsgi(a.work, a.venv, a.port + 2)]
    py = os.path.join(a.venv, 'bin', 'python')
    versions = {
        'gunicorn': subprocess.run([py, '-c', 'import gunicorn; print(gunicorn.__version__)'],
                                   capture_output=True, text=True).stdout.strip(),
        'uWSGI': subprocess.run([os.path.join(a.venv, 'bin', 'uwsgi'), '--version'],
                                capture_output=True, text=True).stdout.strip(),
    }
    if a.json:
        with open(a.json, 'w') as f:
            json.dump({s.name: {'replies': s.replies, 'atexit': s.atexit,
                                'outputs': s.outputs()} for s in stacks}, f, indent=1)
    sys.stdout.write(table(stacks, versions))


if __name__ == '__main__':
    main()

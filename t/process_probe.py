"""What a WSGI app sees of its process: stdio, sys.executable,
multiprocessing, signals, atexit, logging.

One app for t/wsgi_process.t (under the module) and scripts/process-table
(the same app under the module, gunicorn and uWSGI). The same checks run at
import and in a request; GET /report returns both as JSON. Lines the app
writes start with "probe:" and name what wrote them, so that whoever runs
it can find where each one went (error log, the server's stdout ...).

Other paths:
  /close        sys.stdout.close() and what the stream does then
  /after-close  the next request: is sys.stdout open again?
  /hold         reconfigure(line_buffering=False, write_through=False), then
                write a line: it waits in the wrapper
  /release      sys.stdout.flush(), and the configuration of import back
  /partial      a line without its newline, flushed
  /threads      1000 lines written at once by 5 threads, each in 3 pieces
  /mark?TEXT    one line to sys.stderr (a marker in the log)
Files go to state/ beside this module (it must be writable by the app).
"""
import atexit
import faulthandler
import io
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'state')

# in the request's and the import's own reports
log = logging.getLogger('probe')


def describe(e):
    return '%s: %s' % (type(e).__name__, e)


def type_name(obj):
    t = type(obj)
    return '%s.%s' % (t.__module__, t.__qualname__)


def attempt(f):
    """f()'s value, or the exception it raised as 'Type: message'."""
    try:
        return f()
    except Exception as e:
        return describe(e)


def stream_facts(name, phase):
    s = getattr(sys, name)
    out = {
        'type': type_name(s),
        'is TextIOWrapper': isinstance(s, io.TextIOWrapper),
        'is sys.__%s__' % name: s is getattr(sys, '__%s__' % name),
        'encoding': attempt(lambda: s.encoding),
        'errors': attempt(lambda: s.errors),
        'line_buffering': attempt(lambda: s.line_buffering),
        'write_through': attempt(lambda: s.write_through),
        'name': attempt(lambda: s.name),
        'mode': attempt(lambda: s.mode),
        'writable': attempt(lambda: s.writable()),
        'readable': attempt(lambda: s.readable()),
        'seekable': attempt(lambda: s.seekable()),
        'isatty': attempt(lambda: s.isatty()),
        'closed': attempt(lambda: s.closed),
        'fileno': attempt(lambda: s.fileno()),
        'os.write(fileno())': attempt(lambda: os.write(s.fileno(), (
            'probe: %s.fileno() bytes at %s\n' % (name, phase)).encode())),
        'flush': attempt(lambda: s.flush() or 'ok'),
    }
    # the binary layers, each written to (bytes that are not UTF-8 in the
    # buffer's line)
    layers = (('buffer', io.BufferedIOBase, ' \xe9 \xff'), ('raw', io.RawIOBase, ''))
    stream, label = s, name
    for attr, base, extra in layers:
        stream, label = getattr(stream, attr, None), '%s.%s' % (label, attr)
        if stream is None:
            out[attr] = 'missing'
            break
        out[attr] = type_name(stream)
        out['%s is %s' % (attr, base.__name__)] = isinstance(stream, base)
        line = 'probe: %s bytes at %s%s\n' % (label, phase, extra)
        out[attr + '.write'] = attempt(lambda: stream.write(line.encode('latin-1')))
        out[attr + '.fileno'] = attempt(lambda: stream.fileno())
    out['reconfigure'] = attempt(lambda: reconfigure_facts(s))
    return out


def reconfigure_facts(s):
    """reconfigure() takes what apps pass and acts on it; the stream's
    configuration is put back afterwards."""
    before = dict(encoding=s.encoding, errors=s.errors,
                  line_buffering=s.line_buffering,
                  write_through=s.write_through)
    out = {}
    try:
        s.reconfigure(errors='strict')
        out['errors=strict'] = s.errors
        out['strict refuses a lone surrogate'] = attempt(
            lambda: s.write('\udc80\n') and 'written')
        s.reconfigure(encoding='ascii', errors='replace')
        out['encoding=ascii'] = s.encoding
        s.reconfigure(line_buffering=False, write_through=False)
        out['line_buffering=False'] = s.line_buffering
        out['write_through=False'] = s.write_through
    finally:
        s.reconfigure(**before)
    out['restored'] = dict(encoding=s.encoding, errors=s.errors,
                           line_buffering=s.line_buffering,
                           write_through=s.write_through) == before
    return out


def handler(signum, frame):
    pass


def signal_facts():
    """signal.signal() from app code: what it returns, and whether the
    handler is then installed (the old one is put back)."""
    try:
        old = signal.signal(signal.SIGUSR2, handler)
    except Exception as e:
        return describe(e)
    installed = signal.getsignal(signal.SIGUSR2) is handler
    try:
        signal.signal(signal.SIGUSR2, old)
    except Exception:
        pass
    return 'installed' if installed else 'not installed'


def child(queue, x):
    queue.put(x * x)


def spawn_facts():
    """multiprocessing's spawn start method: the child runs sys.executable
    and imports this module by name; bounded (a child that is not this
    Python fails, it does not hang the probe)."""
    ctx = multiprocessing.get_context('spawn')
    queue = ctx.Queue()
    p = ctx.Process(target=child, args=(queue, 7))
    p.start()
    p.join(60)
    if p.exitcode is None:
        p.kill()
        p.join()
        return 'no exit in 60 s'
    if p.exitcode != 0:
        return 'child exited with %s' % p.exitcode
    return 'child returned %s' % queue.get(timeout=5)


def executable_facts():
    return {
        'sys.executable': sys.executable,
        'runs this Python': attempt(lambda: subprocess.run(
            [sys.executable, '-c', 'import sys; print("%d.%d" % sys.version_info[:2])'],
            capture_output=True, text=True, timeout=20).stdout.strip()
            == '%d.%d' % sys.version_info[:2]),
    }


def facts(phase):
    out = {
        'stdout': stream_facts('stdout', phase),
        'stderr': stream_facts('stderr', phase),
        'print flush=True': attempt(lambda: print(
            'probe: print flush=True at %s' % phase, flush=True) or 'ok'),
        'print to stderr': attempt(lambda: print(
            'probe: print to stderr at %s' % phase, file=sys.stderr) or 'ok'),
        'logging': attempt(lambda: log.warning(
            'probe: logging warning at %s', phase) or 'ok'),
        'root handlers': [type_name(h) for h in logging.getLogger().handlers],
        'signal.signal': signal_facts(),
        'executable': executable_facts(),
        'multiprocessing spawn': attempt(spawn_facts),
        'faulthandler.enable()': attempt(
            lambda: faulthandler.enable() or faulthandler.is_enabled()),
        'main thread': threading.current_thread() is threading.main_thread(),
        'pid': os.getpid(),
        'cwd': os.getcwd(),
        'argv': sys.argv,
        'stdin': attempt(lambda: type_name(sys.stdin) if sys.stdin is not None else None),
        'filesystem encoding': sys.getfilesystemencoding(),
    }
    faulthandler.disable()
    return out


def at_exit():
    os.makedirs(STATE, exist_ok=True)
    with open(os.path.join(STATE, 'atexit-%d' % os.getpid()), 'w') as f:
        f.write('ran\n')
    print('probe: atexit handler ran')


# multiprocessing's spawn children import this module too, while they
# unpickle what to run (the flag multiprocessing itself checks then): no
# checks there
if not getattr(multiprocessing.current_process(), '_inheriting', False):
    atexit.register(at_exit)
    IMPORT = facts('import')


def report():
    return {'import': IMPORT, 'request': facts('request')}


def close():
    sys.stdout.close()
    return {
        'closed': sys.stdout.closed,
        'print after close': attempt(lambda: print('probe: printed after close') or 'printed'),
    }


def after_close():
    return {
        'closed': sys.stdout.closed,
        'print': attempt(lambda: print('probe: printed in the next request') or 'printed'),
    }


def hold():
    sys.stdout.reconfigure(line_buffering=False, write_through=False)
    sys.stdout.write('probe: held back in the wrapper\n')
    return {'line_buffering': sys.stdout.line_buffering,
            'write_through': sys.stdout.write_through}


def release():
    sys.stdout.flush()
    s = IMPORT['stdout']
    sys.stdout.reconfigure(line_buffering=s['line_buffering'],
                           write_through=s['write_through'])
    return {'line_buffering': sys.stdout.line_buffering,
            'write_through': sys.stdout.write_through}


def partial():
    sys.stdout.write('probe: a partial line, flushed')
    sys.stdout.flush()
    return {'written': True}


def threads():
    """This request's thread and 4 threads of its own write 200 lines
    each, every line in 3 pieces (text, then bytes through .buffer), all at
    once: each line must come out whole."""
    def lines(who):
        for i in range(200):
            sys.stdout.write('probe: %s line %d' % (who, i))
            time.sleep(0)  # gives up the GIL: the others write in between
            sys.stdout.write(' of 200')
            time.sleep(0)
            sys.stdout.buffer.write(b' ends here\n')
    workers = [threading.Thread(target=lines, args=('thread %d' % n,)) for n in range(4)]
    for w in workers:
        w.start()
    lines('request')
    for w in workers:
        w.join()
    return {'threads': len(workers)}


def mark(text):
    print('probe: mark %s' % text, file=sys.stderr)
    return {'marked': text}


ROUTES = {
    '/report': report,
    '/close': close,
    '/after-close': after_close,
    '/hold': hold,
    '/release': release,
    '/partial': partial,
    '/threads': threads,
}


def application(environ, start_response):
    path = environ.get('PATH_INFO', '')
    if path == '/mark':
        out = mark(environ.get('QUERY_STRING', ''))
    elif path in ROUTES:
        out = ROUTES[path]()
    else:
        start_response('404 Not Found', [('Content-Type', 'text/plain')])
        return [b'not found\n']
    body = json.dumps(out, indent=1, sort_keys=True).encode()
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(body)))])
    return [body]

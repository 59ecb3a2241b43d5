"""Run once per interpreter, in each worker, before any app is imported
(src/python.rs). `_emit(levelno, message)` writes to nginx's error log."""
import logging

class NginxHandler(logging.Handler):
    """Sends log records to nginx's error log, levels mapped."""
    def emit(self, record):
        try:
            _emit(record.levelno, self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

def install_default_logging():
    root = logging.getLogger()
    if not root.handlers:
        h = NginxHandler()
        h.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(h)

def log_warnings(warnings, logging):
    """Python's warnings go to nginx's log at warn, as
    logging.captureWarnings sends them to the WARNING level, and not
    through sys.stderr, which is at error (a warning shown to an explicit
    file still goes there). Likewise a logging record that finds no handler
    (one logged while the app is imported, before it configures logging):
    logging's last resort handler writes it to sys.stderr, ours keeps its
    level."""
    original = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if file is not None:
            original(message, category, filename, lineno, file, line)
            return
        text = warnings.formatwarning(message, category, filename, lineno, line)
        _emit(logging.WARNING, text.rstrip("\n"))

    showwarning.__doc__ = original.__doc__
    warnings.showwarning = showwarning

    last_resort = NginxHandler(logging.WARNING)
    last_resort.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.lastResort = last_resort

def find_executable(sys, os):
    """Embedded, Python finds no interpreter of its own (sys.executable is
    ''), which breaks subprocess.run([sys.executable, ...]) and
    multiprocessing: name the installed interpreter of this same Python."""
    if sys.executable:
        return
    v = sys.version_info
    for d in (sys.prefix, sys.base_prefix):
        for n in ("python%d.%d%s" % (v[0], v[1], getattr(sys, "abiflags", "")),
                  "python%d.%d" % (v[0], v[1]), "python%d" % v[0], "python"):
            p = os.path.join(d, "bin", n)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                sys.executable = p
                if not getattr(sys, "_base_executable", None):
                    sys._base_executable = p
                return

def restrict_signals(signal, traceback):
    """nginx owns the worker's signals: a handler from app code would
    replace nginx's own (reload, quit), and off the main thread Python
    refuses it with ValueError, failing the import. As mod_wsgi does, the
    registration is logged and ignored instead; the app goes on."""
    def ignored_signal(signalnum, handler):
        current = signal.getsignal(signalnum)  # validates signalnum
        try:
            name = signal.Signals(signalnum).name
        except ValueError:
            name = str(signalnum)
        where = traceback.extract_stack(limit=2)[0]
        _emit(30, "signal.signal(%s, ...) at %s:%d ignored: nginx owns the "
              "worker's signals" % (name, where.filename, where.lineno))
        return current
    ignored_signal.__doc__ = signal.signal.__doc__
    real_signal = signal.signal
    signal.signal = ignored_signal
    return real_signal

# nginx's signals, handled by nginx in the worker; a forked child gets the
# defaults back (SIGINT: KeyboardInterrupt, as in any Python process).
NGINX_SIGNALS = ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTERM",
                 "SIGQUIT", "SIGALRM", "SIGIO", "SIGCHLD")

def clean_children(sys, os, signal, threading, real_signal):
    """Pool threads block signals so that nginx's thread takes them, and a
    child process inherits the mask of the thread that starts it: a
    subprocess could not be stopped with terminate() (SIGTERM blocked), and
    a forked child (multiprocessing) kept nginx's handlers on top. Children
    start with nothing blocked, and forked ones with default handlers."""
    saved = threading.local()

    def unblock():
        saved.mask = signal.pthread_sigmask(signal.SIG_SETMASK, ())

    def reblock():
        mask, saved.mask = getattr(saved, "mask", None), None
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def in_child():
        # A process of its own now, free to handle its signals.
        signal.signal = real_signal
        for name in NGINX_SIGNALS:
            if hasattr(signal, name):
                real_signal(getattr(signal, name), signal.SIG_DFL)
        real_signal(signal.SIGINT, signal.default_int_handler)

    # os.fork(), multiprocessing's "fork" start method
    os.register_at_fork(before=unblock, after_in_parent=reblock,
                        after_in_child=in_child)

    # subprocess, multiprocessing's "spawn" and "forkserver": the child
    # starts with the mask of the calling thread at this call
    import _posixsubprocess
    real_fork_exec = _posixsubprocess.fork_exec

    def fork_exec(*args, **kwargs):
        unblock()
        try:
            return real_fork_exec(*args, **kwargs)
        finally:
            reblock()

    _posixsubprocess.fork_exec = fork_exec
    sub = sys.modules.get("subprocess")
    if sub is not None and getattr(sub, "_fork_exec", None) is real_fork_exec:
        sub._fork_exec = fork_exec

    # os.posix_spawn[p] (subprocess uses it in some cases): the child's mask
    # is an argument
    def spawner(real):
        def spawn(path, argv, env, **kwargs):
            kwargs.setdefault("setsigmask", ())
            return real(path, argv, env, **kwargs)
        spawn.__doc__ = real.__doc__
        return spawn

    for name in ("posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            setattr(os, name, spawner(getattr(os, name)))

import sys as _sys, os as _os, signal as _signal, traceback as _traceback
import threading as _threading, warnings as _warnings
log_warnings(_warnings, logging)
find_executable(_sys, _os)
clean_children(_sys, _os, _signal, _threading,
               restrict_signals(_signal, _traceback))
del _sys, _os, _signal, _traceback, _threading, _warnings

# How the app a `wsgi_pass` names is loaded: by each worker (python.rs) and
# by `wsgi_import_check` in a child process at configuration time
# (check.rs), so the check loads it exactly as the workers will.
import importlib
import importlib.machinery
import importlib.util
import os
import sys


def load_app(kind, src, attr, name):
    """The callable at the dotted path `attr` of module `src` (kind
    "module"), or of the Python file `src` run as module `name` (kind
    "file", its directory added to sys.path as for a script)."""
    if kind == 'module':
        obj = importlib.import_module(src)
    else:
        if not os.path.isfile(src):
            raise FileNotFoundError('no such file: %s' % src)
        d = os.path.dirname(src)
        if d and d not in sys.path:
            sys.path.append(d)
        # A .wsgi script (mod_wsgi's and uWSGI's convention) is Python
        # source too, whatever its suffix says.
        loader = importlib.machinery.SourceFileLoader(name, src)
        spec = importlib.util.spec_from_file_location(name, src, loader=loader)
        if spec is None:
            raise ImportError('cannot load %r: not a Python file' % src)
        obj = importlib.util.module_from_spec(spec)
        sys.modules[name] = obj
        try:
            spec.loader.exec_module(obj)
        except BaseException:
            del sys.modules[name]
            raise
    for part in attr.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError('module has no attribute "%s" (wsgi_pass names "%s")'
                                 % (part, attr)) from None
    if not callable(obj):
        raise TypeError('"%s" is not callable' % attr)
    return obj


def load_app_watching_gil(kind, src, attr, name):
    """load_app, and the modules a free-threaded Python enabled the GIL
    for meanwhile (an extension module that does not declare it can run
    without it, Py_mod_gil): its RuntimeWarning names each. Other warnings
    are shown as usual."""
    import warnings
    gil_modules, caught = [], []
    try:
        with warnings.catch_warnings(record=True) as caught:
            return load_app(kind, src, attr, name), gil_modules
    finally:
        # shown once catch_warnings has put the usual showwarning back
        for w in caught:
            text = str(w.message)
            mark = "has been enabled to load module '"
            if issubclass(w.category, RuntimeWarning) and mark in text:
                gil_modules.append(text.split(mark, 1)[1].split("'", 1)[0])
            else:
                warnings.showwarning(w.message, w.category, w.filename,
                                     w.lineno, w.file, w.line)


def _loader_frame(tb):
    name = tb.tb_frame.f_code.co_filename
    return (name in ('load_app.py', '<string>')
            or name.startswith('<frozen ')
            or name.endswith(os.path.join('importlib', '__init__.py')))


def strip_loader_frames(exc):
    """Drops the traceback's leading frames of this loader and of the
    import machinery: what is left starts in the app's own code."""
    tb = exc.__traceback__
    while tb is not None and _loader_frame(tb):
        tb = tb.tb_next
    exc.__traceback__ = tb
    return exc

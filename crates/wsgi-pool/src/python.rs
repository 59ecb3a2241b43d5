//! Interpreter start-up per worker process (after fork, never in the
//! master), app import, and exit. Python installs no signal handlers, as
//! nginx owns signals; `signal.signal()` in app code is logged and ignored
//! (it would replace nginx's handlers), and the app's child processes get
//! a clean signal state (src/bootstrap.py). Apps are imported on a helper
//! thread, not the nginx thread.

use std::ffi::CString;
use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};

use crate::message::{Hub, LogLevel};
use crate::pool::spawn_with_signals_blocked;
use crate::target::{AppSource, AppTarget};
use crate::timezone::Seen;
use crate::wsgi::errors::{install_log_streams, LogStream};

pub struct Interpreter {
    pub python_path: Vec<String>,
    pub python_home: Option<String>,
    pub multiprocess: bool,
    /// `wsgi_sandbox on`: the paths configured; Python's own are added.
    pub sandbox: Option<crate::sandbox::SandboxSpec>,
}

/// Python run once per interpreter before apps are imported: the `logging`
/// handler that feeds nginx's error log (installed only if the app
/// configured none), `sys.executable`, and signal hygiene for the app and
/// the processes it starts.
const BOOTSTRAP: &str = include_str!("bootstrap.py");

/// How an app is loaded, for the workers and for `wsgi_import_check`'s
/// child process alike (`load_app(kind, src, attr, name)`).
pub const LOAD_APP: &str = include_str!("load_app.py");

fn status_error(status: &ffi::PyStatus, what: &str) -> String {
    let msg = if status.err_msg.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: err_msg is a static C string set by CPython.
        unsafe { std::ffi::CStr::from_ptr(status.err_msg) }
            .to_string_lossy()
            .into_owned()
    };
    format!("{what}: {msg}")
}

/// Starts the interpreter on the calling (nginx) thread and releases the
/// GIL, so pool threads can take it.
pub fn initialize(interp: &Interpreter, hub: &Arc<Hub>) -> Result<(), String> {
    // SAFETY: CPython's documented embedding sequence; the config is
    // cleared on every path and the GIL is released at the end.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Ok(());
        }
        let mut config: ffi::PyConfig = std::mem::zeroed();
        ffi::PyConfig_InitPythonConfig(&mut config);
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        // Where Python finds its prefix. A virtualenv is found from its
        // interpreter's path (pyvenv.cfg beside bin/), a plain prefix is
        // Python's "home". Without either, the interpreter the module was
        // built against: "nginx" is not on a worker's (empty) PATH, and
        // Python's search then falls back to the current directory (from
        // "/", sys.prefix came out as "/" through the /lib symlink).
        let cfg: *mut ffi::PyConfig = &mut config;
        let location = match &interp.python_home {
            Some(home) => {
                let home_path = std::path::Path::new(home);
                if !home_path.is_dir() {
                    ffi::PyConfig_Clear(cfg);
                    return Err(format!("wsgi_python_home \"{home}\" is not a directory"));
                }
                let (field, value) = if home_path.join("pyvenv.cfg").is_file() {
                    (&raw mut (*cfg).program_name, format!("{home}/bin/python3"))
                } else {
                    (&raw mut (*cfg).home, home.clone())
                };
                Some((field, value, "cannot use wsgi_python_home"))
            }
            None => installed_python().map(|p| {
                let field = &raw mut (*cfg).program_name;
                (field, p.to_string(), "cannot set the program name")
            }),
        };
        if let Some((field, value, what)) = location {
            let st = match CString::new(value) {
                Ok(value) => ffi::PyConfig_SetBytesString(cfg, field, value.as_ptr()),
                Err(_) => ffi::PyStatus_Error(c"NUL in the path".as_ptr()),
            };
            if ffi::PyStatus_Exception(st) != 0 {
                ffi::PyConfig_Clear(cfg);
                return Err(status_error(&st, what));
            }
        }
        let argv = [c"nginx".as_ptr() as *mut std::ffi::c_char];
        let st = ffi::PyConfig_SetBytesArgv(&mut config, 1, argv.as_ptr() as *mut _);
        if ffi::PyStatus_Exception(st) != 0 {
            ffi::PyConfig_Clear(&mut config);
            return Err(status_error(&st, "cannot set sys.argv"));
        }
        let st = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(st) != 0 {
            return Err(status_error(&st, "cannot initialize Python"));
        }
        // We hold the GIL on this thread now.
        let py = Python::assume_attached();
        let setup = setup_interpreter(py, interp, hub);
        let sandbox = interp
            .sandbox
            .as_ref()
            .map(|spec| python_paths(py).map(|own| (spec, own)));
        // Python's `time` applies the worker's TZ as it starts.
        hub.zone.check(py, hub, Seen::PythonStart);
        ffi::PyEval_SaveThread();
        setup.map_err(|e| format!("cannot set up Python: {e}"))?;
        match sandbox {
            None => Ok(()),
            Some(Err(e)) => Err(format!("cannot read Python's paths for wsgi_sandbox: {e}")),
            Some(Ok((spec, own))) => install_sandbox(spec, own, hub),
        }
    }
}

/// What Python itself reads: its prefixes (the standard library, a venv)
/// and every `sys.path` entry (`wsgi_python_path` among them).
fn python_paths(py: Python<'_>) -> PyResult<Vec<std::path::PathBuf>> {
    let sys = py.import("sys")?;
    let mut out = Vec::new();
    for attr in ["prefix", "exec_prefix", "base_prefix", "base_exec_prefix"] {
        out.push(sys.getattr(attr)?.extract::<std::path::PathBuf>()?);
    }
    for entry in sys.getattr("path")?.try_iter()? {
        if let Ok(p) = entry?.extract::<std::path::PathBuf>() {
            if p.is_absolute() {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// `wsgi_sandbox on`: the worker's ruleset, before any Python thread
/// starts; its paths go to the log at `notice`.
fn install_sandbox(
    spec: &crate::sandbox::SandboxSpec,
    own: Vec<std::path::PathBuf>,
    hub: &Arc<Hub>,
) -> Result<(), String> {
    let mut spec = spec.clone();
    // Python's own paths first: a missing one (a sys.path entry that does
    // not exist, as zip files of the standard library often do not) is not
    // the configuration's mistake.
    let configured = spec.read.clone();
    spec.read = own;
    spec.read.extend(configured.iter().cloned());
    let installed = crate::sandbox::install(&spec)
        .map_err(|e| format!("wsgi_sandbox is on, but {e}: refusing to run the app unsandboxed"))?;
    let list = |v: &[std::path::PathBuf]| {
        v.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    hub.log(
        None,
        LogLevel::Notice,
        format!(
            "wsgi: sandbox on (this kernel {}): the app's threads may read {} and write {}",
            installed.kernel,
            list(&installed.read),
            list(&installed.write)
        ),
    );
    let missing: Vec<_> = installed
        .missing
        .iter()
        .filter(|p| configured.contains(p) || spec.write.contains(p))
        .cloned()
        .collect();
    if !missing.is_empty() {
        hub.log(
            None,
            LogLevel::Warn,
            format!(
                "wsgi: wsgi_sandbox_read or wsgi_sandbox_write names what does not exist: {}",
                list(&missing)
            ),
        );
    }
    Ok(())
}

/// "3.11" for the libpython this module is linked with. Takes no GIL:
/// `Py_GetVersion` may be called before the interpreter starts (the
/// master's configuration checks call it).
pub fn embedded_version() -> String {
    // SAFETY: a static NUL-terminated string owned by libpython.
    let full = unsafe { std::ffi::CStr::from_ptr(ffi::Py_GetVersion()) };
    let full = full.to_string_lossy();
    full.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The interpreter the module was built against (`PYO3_PYTHON`), if it is
/// installed here and is not itself inside a virtualenv.
fn installed_python() -> Option<&'static str> {
    let python = option_env!("PYO3_PYTHON")?;
    let path = std::path::Path::new(python);
    let prefix = path.parent()?.parent()?;
    (path.is_absolute() && path.is_file() && !prefix.join("pyvenv.cfg").exists()).then_some(python)
}

fn setup_interpreter(py: Python<'_>, interp: &Interpreter, hub: &Arc<Hub>) -> PyResult<()> {
    // The initialising thread is Python's main thread; import threading
    // here so a pool thread does not become `threading.main_thread()`.
    py.import("threading")?;
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    for (i, dir) in interp.python_path.iter().enumerate() {
        path.insert(i, dir)?;
    }
    let module = PyModule::new(py, "ngx_wsgi")?;
    module.add_function(pyo3::wrap_pyfunction!(emit_log, &module)?)?;
    module.add("multiprocess", interp.multiprocess)?;
    module.add(
        "RequestTimeout",
        py.get_type::<crate::wsgi::RequestTimeout>(),
    )?;
    module.add_class::<crate::wsgi::file_wrapper::FileWrapper>()?;
    let globals = module.dict();
    globals.set_item("_emit", module.getattr("emit_log")?)?;
    py.run(
        &CString::new(BOOTSTRAP).expect("no NUL"),
        Some(&globals),
        None,
    )?;
    sys.getattr("modules")?.set_item("ngx_wsgi", &module)?;
    install_log_streams(py, hub.clone())?;
    Ok(())
}

/// The embedded Python for log lines: its version, and whether it is a
/// free-threaded build (`t` in `sys.abiflags`, 3.13+).
pub fn build(py: Python<'_>) -> (String, bool) {
    let sys = py.import("sys");
    let get =
        |name: &str| -> Option<String> { sys.as_ref().ok()?.getattr(name).ok()?.extract().ok() };
    let version = get("version")
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    (version, get("abiflags").is_some_and(|f| f.contains('t')))
}

/// Whether the GIL is enabled now: `sys._is_gil_enabled()` where it exists
/// (3.13+), else true. A free-threaded build starts without it and turns
/// it on for good when it imports an extension module that does not
/// declare it can run without it (`Py_mod_gil`), or with `PYTHON_GIL=1`.
pub fn gil_enabled(py: Python<'_>) -> bool {
    py.import("sys")
        .and_then(|sys| sys.getattr("_is_gil_enabled"))
        .and_then(|f| f.call0())
        .and_then(|v| v.extract::<bool>())
        .unwrap_or(true)
}

/// `ngx_wsgi.emit_log(levelno, message)`: Python logging to nginx's log.
#[pyfunction]
fn emit_log(levelno: i64, message: &str) {
    LogStream::emit_now(LogLevel::from_python(levelno), message);
}

/// Imports every target on a helper thread; logs failures with their
/// traceback. Returns the callables, `None` where the import failed.
pub fn import_apps(targets: &[AppTarget], hub: &Arc<Hub>) -> Vec<Option<Py<PyAny>>> {
    let targets = targets.to_vec();
    let count = targets.len();
    let hub2 = hub.clone();
    let handle = spawn_with_signals_blocked("wsgi-import", move || {
        if let Err(e) = crate::sandbox::enter() {
            hub2.log(
                None,
                LogLevel::Alert,
                format!("wsgi: cannot enter wsgi_sandbox ({e}) while importing applications"),
            );
            return (0..count).map(|_| None).collect();
        }
        Python::attach(|py| {
            let apps: Vec<Option<Py<PyAny>>> = targets
                .iter()
                .map(|t| {
                    let app = match import_watching_gil(py, t, &hub2) {
                        Ok(app) => Some(app),
                        Err(e) => {
                            hub2.log(
                                None,
                                LogLevel::Err,
                                format!(
                                    "wsgi: cannot load application \"{}\": {}",
                                    t,
                                    crate::wsgi::describe_error(py, &e)
                                ),
                            );
                            None
                        }
                    };
                    // Django sets TZ from TIME_ZONE as it is imported.
                    hub2.zone.check(py, &hub2, Seen::Import(&t.to_string()));
                    app
                })
                .collect();
            crate::wsgi::errors::end_of_request();
            if apps.iter().any(Option::is_some) {
                if let Err(e) = install_default_logging(py) {
                    hub2.log(
                        None,
                        LogLevel::Warn,
                        format!("wsgi: cannot install the logging handler: {e}"),
                    );
                }
            }
            apps
        })
    });
    match handle {
        Ok(h) => h
            .join()
            .unwrap_or_else(|_| (0..count).map(|_| None).collect()),
        Err(e) => {
            hub.log(
                None,
                LogLevel::Err,
                format!("wsgi: cannot start import thread: {e}"),
            );
            Vec::new()
        }
    }
}

fn install_default_logging(py: Python<'_>) -> PyResult<()> {
    py.import("ngx_wsgi")?
        .getattr("install_default_logging")?
        .call0()?;
    Ok(())
}

/// "No module named 'myproject'" for the app's own module (or a package
/// above it) is nearly always a search path problem: say where Python
/// looked. A module missing further down keeps its traceback as it is.
fn explain_missing_module(py: Python<'_>, err: PyErr, target: &str) -> PyErr {
    if !err.is_instance_of::<pyo3::exceptions::PyModuleNotFoundError>(py) {
        return err;
    }
    let missing: Option<String> = err.value(py).getattr("name").and_then(|n| n.extract()).ok();
    let Some(missing) = missing else {
        return err;
    };
    let ours = target == missing
        || target
            .strip_prefix(missing.as_str())
            .is_some_and(|rest| rest.starts_with('.'));
    if !ours {
        return err;
    }
    let path: Vec<String> = py
        .import("sys")
        .and_then(|sys| sys.getattr("path"))
        .and_then(|p| p.extract())
        .unwrap_or_default();
    let searched: Vec<String> = path.iter().map(|d| format!("{d:?}")).collect();
    pyo3::exceptions::PyModuleNotFoundError::new_err(format!(
        "No module named '{missing}' (sys.path: {}; see wsgi_python_path and wsgi_python_home)",
        searched.join(", ")
    ))
}

/// [`import_one`], saying so at `warn` if a free-threaded Python turned
/// the GIL on for it, with the modules that made it (its RuntimeWarning
/// names them; they are not declared to run without the GIL).
fn import_watching_gil(py: Python<'_>, target: &AppTarget, hub: &Hub) -> PyResult<Py<PyAny>> {
    let before = gil_enabled(py);
    let (app, modules) = import_one(py, target)?;
    if !before && gil_enabled(py) {
        let by = match modules.as_slice() {
            [] => "a module that does not declare it can run without it (Python's warning \
                   naming it was filtered out)"
                .to_string(),
            [one] => format!("module \"{one}\", which does not declare it can run without it"),
            many => format!(
                "modules \"{}\", which do not declare they can run without it",
                many.join("\", \"")
            ),
        };
        hub.log(
            None,
            LogLevel::Warn,
            format!(
                "wsgi: importing application \"{target}\" enabled the GIL for {by}: \
                 this worker's pool threads run Python one at a time (PYTHON_GIL=0 in \
                 nginx's \"env\" keeps it off, at the app's own risk) while starting worker process"
            ),
        );
    }
    Ok(app)
}

/// The app's callable, and the modules the GIL was enabled for meanwhile.
fn import_one(py: Python<'_>, target: &AppTarget) -> PyResult<(Py<PyAny>, Vec<String>)> {
    let code = CString::new(LOAD_APP).expect("no NUL");
    let loader = PyModule::from_code(py, &code, c"load_app.py", c"_ngx_wsgi_load_app")?;
    let [kind, src, attr] = target.load_args();
    let app = loader
        .getattr("load_app_watching_gil")?
        .call1((kind, src, attr, target.module_name()))
        .and_then(|r| r.extract::<(Py<PyAny>, Vec<String>)>());
    let err = match app {
        Ok(loaded) => return Ok(loaded),
        // The traceback starts where the app's code does.
        Err(e) => match loader.call_method1("strip_loader_frames", (e.value(py),)) {
            Ok(stripped) => PyErr::from_value(stripped),
            Err(_) => e,
        },
    };
    match &target.source {
        AppSource::Module(name) => Err(explain_missing_module(py, err, name)),
        AppSource::File(_) => Err(err),
    }
}

/// Runs the app's `atexit` handlers on a graceful worker exit. The
/// interpreter itself is not finalised: the process is about to end, and
/// finalising under threads stuck in C is what crashes at exit.
pub fn run_atexit(hub: &Arc<Hub>) {
    let hub = hub.clone();
    let handle = spawn_with_signals_blocked("wsgi-exit", move || {
        if let Err(e) = crate::sandbox::enter() {
            hub.log(
                None,
                LogLevel::Alert,
                format!("wsgi: cannot enter wsgi_sandbox ({e}): atexit handlers not run"),
            );
            return;
        }
        Python::attach(|py| {
            let r = py
                .import("atexit")
                .and_then(|m| m.getattr("_run_exitfuncs"))
                .and_then(|f| f.call0());
            if let Err(e) = r {
                hub.log(
                    None,
                    LogLevel::Err,
                    format!(
                        "wsgi: atexit handler failed: {}",
                        crate::wsgi::describe_error(py, &e)
                    ),
                );
            }
            crate::wsgi::errors::flush_log_streams(py);
        })
    });
    if let Ok(h) = handle {
        let _ = h.join();
    }
}

//! Configuration time (master, `nginx -t`, `nginx -s reload`): checks that
//! every `wsgi_pass` target imports and is callable, in a short-lived
//! Python child process — never in the master itself, where an interpreter
//! (and its threads) would not survive fork. A broken deploy then fails the
//! reload with the Python error, and the old workers keep serving. And
//! all the probing of the machine around it: who the workers will run as
//! and what they may read or write, their environment, the kernel's
//! Landlock support ([`postconfiguration`] runs them all).

use core::ffi::c_char;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nginx_sys::{ngx_conf_t, ngx_str_t, NGX_LOG_EMERG, NGX_LOG_WARN, NGX_OK};

use crate::conf::MainConf;
use crate::ffi::{core_conf, ngx_bytes};
use crate::python::LOAD_APP;
use crate::target::AppTarget;

/// How long an import may take before the check gives up.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Loads every app the way the workers do (`LOAD_APP`), reporting each
/// failure with its traceback.
const CHECK_DRIVER: &str = r#"
import sys, os, traceback
if sys.path and sys.path[0] in ('', os.getcwd()):
    del sys.path[0]
REPORT = '\x1fwsgi-python'
paths = [p for p in os.environ.get('NGX_WSGI_CHECK_PATH', '').split('\x1f') if p]
sys.path[0:0] = paths
gil = getattr(sys, '_is_gil_enabled', lambda: True)
gil_before, gil_modules = gil(), []
failed = 0
for arg in sys.argv[1:]:
    kind, src, attr, name, shown = arg.split('\x1f')
    try:
        gil_modules += load_app_watching_gil(kind, src, attr, name)[1]
    except BaseException as e:
        failed += 1
        sys.stderr.write('wsgi: cannot load application "%s":\n' % shown)
        strip_loader_frames(e)
        traceback.print_exception(type(e), e, e.__traceback__)
sys.stderr.write('\n%s\x1f%s\x1f%d\x1f%d\x1f%d\x1f%s\n' % (
    REPORT, sys.version.split()[0], 't' in getattr(sys, 'abiflags', ''),
    gil_before, gil(), ','.join(gil_modules)))
sys.stderr.flush()
os._exit(1 if failed else 0)
"#;

/// Starts the check's line about the Python (last on its stderr).
const REPORT: &str = "\x1fwsgi-python";

/// What the check's Python says of itself: for `nginx -t`'s notice.
#[derive(Debug, Default, PartialEq)]
pub struct PythonReport {
    pub version: String,
    pub free_threaded: bool,
    /// The GIL before the apps were imported, and after.
    pub gil_before: bool,
    pub gil_after: bool,
    /// Modules the GIL was enabled for (their RuntimeWarning named them).
    pub gil_modules: Vec<String>,
}

impl PythonReport {
    /// Takes the report line out of the child's stderr.
    fn split_from(output: &str) -> (Option<PythonReport>, String) {
        let Some((before, line)) = output.rsplit_once(REPORT) else {
            return (None, output.to_string());
        };
        let f: Vec<&str> = line.trim_end().split('\x1f').collect();
        let report = match f.as_slice() {
            ["", version, ft, before, after, modules] => Some(PythonReport {
                version: version.to_string(),
                free_threaded: *ft == "1",
                gil_before: *before == "1",
                gil_after: *after == "1",
                gil_modules: modules
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            }),
            _ => None,
        };
        (report, before.to_string())
    }

    /// `nginx -t`'s line: the level, and the text.
    pub fn notice(&self) -> (usize, String) {
        let python = format!(
            "wsgi: Python {}{}",
            self.version,
            if self.free_threaded {
                " free-threaded"
            } else {
                ""
            }
        );
        if self.gil_before || !self.gil_after {
            let gil = if self.gil_after {
                "GIL enabled: a worker's pool threads run Python one at a time"
            } else {
                "GIL disabled: a worker's pool threads run Python in parallel"
            };
            return (
                nginx_sys::NGX_LOG_NOTICE as usize,
                format!("{python}, {gil}"),
            );
        }
        let by = match self.gil_modules.as_slice() {
            [] => "a module that does not declare it can run without it".to_string(),
            m => format!("\"{}\" (not declared to run without it)", m.join("\", \"")),
        };
        (
            nginx_sys::NGX_LOG_WARN as usize,
            format!(
                "{python}, but importing the applications enabled the GIL for {by}: \
                 a worker's pool threads run Python one at a time"
            ),
        )
    }
}

/// The interpreter the check runs: the venv's, or the one we embed.
pub fn python_executable(mcf: &MainConf) -> String {
    if let Some(home) = &mcf.python_home {
        for name in ["bin/python3", "bin/python"] {
            let p = format!("{home}/{name}");
            if std::path::Path::new(&p).exists() {
                return p;
            }
        }
    }
    option_env!("PYO3_PYTHON")
        .unwrap_or("/usr/bin/python3")
        .to_string()
}

/// `wsgi_python_home` when it has no interpreter of its own, so the check
/// runs the embedded Python with it as home.
fn home_without_interpreter<'a>(mcf: &'a MainConf, python: &str) -> Option<&'a str> {
    let home = mcf.python_home.as_deref()?;
    let own = python
        .strip_prefix(home)
        .is_some_and(|rest| rest.starts_with('/'));
    (!own).then_some(home)
}

fn target_arg(t: &AppTarget) -> String {
    let [kind, src, attr] = t.load_args();
    // Unit separators: arguments and environment cannot hold NUL.
    format!("{kind}\x1f{src}\x1f{attr}\x1f{}\x1f{t}", t.module_name())
}

/// The environment nginx gives its workers: only what the main context's
/// `env` directives name (`NAME` kept from nginx's own environment,
/// `NAME=value` set), and `TZ`. The check imports the apps in the same.
pub fn worker_environment(env_directives: &[Vec<u8>]) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |name: OsString, value: OsString| {
        out.retain(|(n, _)| *n != name);
        out.push((name, value));
    };
    for d in env_directives {
        match d.iter().position(|&c| c == b'=') {
            Some(eq) => set(
                OsString::from_vec(d[..eq].to_vec()),
                OsString::from_vec(d[eq + 1..].to_vec()),
            ),
            None => {
                let name = OsString::from_vec(d.clone());
                if let Some(v) = std::env::var_os(&name) {
                    set(name, v);
                }
            }
        }
    }
    // nginx adds TZ (from its own environment) unless `env` names it.
    if !env_directives
        .iter()
        .any(|d| d == b"TZ" || d.starts_with(b"TZ="))
    {
        if let Some(v) = std::env::var_os("TZ") {
            out.push(("TZ".into(), v));
        }
    }
    out
}

/// The signal of `nginx -s SIGNAL` in nginx's command line, read as
/// nginx's own option parser does (`-s quit`, `-squit`, `-qs quit`; the
/// options `-c -e -g -p` take the next word when nothing follows them).
pub fn signal_option<'a>(args: &[&'a [u8]]) -> Option<&'a [u8]> {
    let mut i = 1;
    while i < args.len() {
        let arg = args[i];
        if arg.first() == Some(&b'-') {
            for (k, &opt) in arg.iter().enumerate().skip(1) {
                if matches!(opt, b'c' | b'e' | b'g' | b'p' | b's') {
                    let value = if k + 1 < arg.len() {
                        Some(&arg[k + 1..])
                    } else {
                        i += 1;
                        args.get(i).copied()
                    };
                    if opt == b's' {
                        return value;
                    }
                    break;
                }
            }
        }
        i += 1;
    }
    None
}

/// Runs the check; the error is the child's report (with tracebacks).
/// With `probe`, imports nothing: only the Python's report (`nginx -t`
/// with `wsgi_import_check off`).
pub fn check_imports(
    mcf: &MainConf,
    environment: &[(OsString, OsString)],
    probe: bool,
) -> Result<Option<PythonReport>, String> {
    if mcf.apps.is_empty() {
        return Ok(None);
    }
    let apps = if probe { &[][..] } else { &mcf.apps[..] };
    let python = python_executable(mcf);
    let mut cmd = Command::new(&python);
    cmd.env_clear()
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .arg("-c")
        .arg(format!("{LOAD_APP}\n{CHECK_DRIVER}"))
        .args(apps.iter().map(target_arg))
        .env("NGX_WSGI_CHECK_PATH", mcf.python_path.join("\x1f"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(home) = home_without_interpreter(mcf, &python) {
        // A plain prefix: the workers use it as Python's home; so does the
        // check, or it would pass while the workers cannot start Python.
        cmd.env("PYTHONHOME", home);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("wsgi: cannot run \"{python}\" for wsgi_import_check: {e}"))?;
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (report, output) = PythonReport::split_from(&reader.join().unwrap_or_default());
    match status {
        Some(st) if st.success() => Ok(report),
        Some(_) if !output.trim().is_empty() => Err(output.trim_end().to_string()),
        Some(st) => Err(format!(
            "wsgi: import check with \"{python}\" failed ({st})"
        )),
        None => Err(format!(
            "wsgi: importing the applications took over {} s (wsgi_import_check); \
             fix the import or set \"wsgi_import_check off\"\n{}",
            CHECK_TIMEOUT.as_secs(),
            output.trim_end()
        )),
    }
}

/// The user nginx's workers run as: `user` (or nginx's default when the
/// master runs as root), with its groups.
pub struct WorkerUser {
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
}

/// `nginx -t`: can the workers' user read the Python they will start? The
/// standard library of the embedded Python (`WSGI_PYTHON_STDLIB`, from
/// build.rs), or of a `wsgi_python_home` prefix, and a venv's `pyvenv.cfg`.
/// A Python under a private home (pyenv's `~/.pyenv` in a 0700 `/root`)
/// would otherwise fail in every worker, with Python's own "failed to get
/// the Python codec of the filesystem encoding". Mode bits only (no ACLs).
pub fn check_python_readable(mcf: &MainConf, user: &WorkerUser) -> Result<(), String> {
    let Some(mut stdlib) = option_env!("WSGI_PYTHON_STDLIB")
        .filter(|s| !s.is_empty())
        .map(std::path::PathBuf::from)
    else {
        return Ok(());
    };
    let mut paths = Vec::new();
    if let Some(home) = &mcf.python_home {
        let home = std::path::Path::new(home);
        if home.join("pyvenv.cfg").exists() {
            paths.push(home.join("pyvenv.cfg"));
        } else if let Some(lib) = stdlib.file_name() {
            // a prefix as home: its own lib/python3.X
            stdlib = home.join("lib").join(lib);
        }
    }
    paths.push(stdlib.join("encodings/__init__.py"));
    for path in &paths {
        if let Some(why) = unreadable(path, user) {
            return Err(format!(
                "wsgi: the Python at \"{}\" is not readable by the worker user \"{}\": {why}; \
                 install Python where the workers can read it (not under a private home \
                 directory), or set \"user\" to a user who can read it",
                stdlib.display(),
                user.name
            ));
        }
    }
    Ok(())
}

/// `nginx -t`: what an app bug could turn into a persistent compromise or
/// root access: the app's own code, its `wsgi_python_path` or its venv
/// writable by the workers' user (mode bits), and workers that run as root.
/// One warning line each.
pub fn hardening_warnings(mcf: &MainConf, user: &WorkerUser) -> Vec<String> {
    use crate::target::AppSource;
    let mut out = Vec::new();
    if user.uid == 0 {
        out.push(
            "wsgi: the workers run as root (\"user root\"), so any bug of a \
             \"wsgi_pass\" app runs code as root; run them as an unprivileged user"
                .to_string(),
        );
        return out;
    }
    let mut places: Vec<(std::path::PathBuf, &str)> = Vec::new();
    for dir in &mcf.python_path {
        places.push((dir.into(), "wsgi_python_path"));
    }
    if let Some(home) = &mcf.python_home {
        places.push((home.into(), "wsgi_python_home"));
    }
    for app in &mcf.apps {
        match &app.source {
            AppSource::File(f) => {
                let f = std::path::PathBuf::from(f);
                if let Some(dir) = f.parent() {
                    places.push((dir.to_path_buf(), "the app's directory"));
                }
                places.push((f, "the app's file"));
            }
            AppSource::Module(m) => {
                // the package or module as the workers will find it
                let top = m.split('.').next().unwrap_or(m);
                for dir in &mcf.python_path {
                    let dir = std::path::Path::new(dir);
                    for p in [dir.join(top), dir.join(format!("{top}.py"))] {
                        if p.exists() {
                            places.push((p, "the app's code"));
                        }
                    }
                }
            }
        }
    }
    let mut seen = Vec::new();
    for (path, what) in places {
        if seen.contains(&path) || !writable(&path, user) {
            continue;
        }
        out.push(format!(
            "wsgi: {what} \"{}\" is writable by the worker user \"{}\": a bug in the app \
             could rewrite its own code; make it owned by another user and not writable by \
             \"{}\"",
            path.display(),
            user.name,
            user.name
        ));
        seen.push(path);
    }
    out
}

/// Whether `user` may write `path` itself (mode bits of the path; the
/// directories on the way are the readability check's concern).
fn writable(path: &std::path::Path, user: &WorkerUser) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| user_bits(&meta, user) & 0o2 != 0)
}

/// The rwx bits of `meta`'s mode that apply to `user`: owner's, group's
/// (the user's groups included) or others'.
fn user_bits(meta: &std::fs::Metadata, user: &WorkerUser) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    (if meta.uid() == user.uid {
        mode >> 6
    } else if user.gids.contains(&meta.gid()) {
        mode >> 3
    } else {
        mode
    }) & 0o7
}

/// Why `user` cannot read `path` (search every directory on the way, read
/// the file), or `None` if it can.
fn unreadable(path: &std::path::Path, user: &WorkerUser) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if user.uid == 0 {
        return None;
    }
    let mut ancestors: Vec<_> = path.ancestors().collect();
    ancestors.reverse();
    for p in ancestors {
        let Ok(meta) = std::fs::metadata(p) else {
            // missing: Python's own error says so later
            return None;
        };
        let mode = meta.mode();
        let bits = user_bits(&meta, user);
        let (need, what) = if p == path {
            (0o4, "read")
        } else {
            (0o1, "search")
        };
        if bits & need == 0 {
            return Some(format!(
                "it cannot {what} \"{}\" (owner uid {}, mode {:04o})",
                p.display(),
                meta.uid(),
                mode & 0o7777
            ));
        }
    }
    None
}

/// After the http block (postconfiguration): the workers' user may read
/// Python and the app, the hardening warnings, the sandbox's kernel
/// support, and the import check.
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn postconfiguration(cf: *mut ngx_conf_t) -> nginx_sys::ngx_int_t {
    // SAFETY: the http block created our main conf.
    let mcf = unsafe { crate::conf::directives::main_conf(cf) };
    // `nginx -s stop|quit|reopen` parses the configuration only to find the
    // master: an app on disk that does not import (or that the workers'
    // user cannot read) must not keep an operator from stopping nginx or
    // rotating its logs (`-s reload` is still checked).
    // SAFETY: ngx_argv/ngx_argc are set (ngx_save_argv) before any parsing.
    if unsafe { signals_other_than_reload() } {
        return NGX_OK as nginx_sys::ngx_int_t;
    }
    // SAFETY: cf->log is the configuration log.
    let log = unsafe { (*cf).log };
    if !mcf.apps.is_empty() {
        // SAFETY: cf is the configuration being parsed.
        if let Some(user) = unsafe { worker_user(cf) } {
            if let Err(msg) = check_python_readable(mcf, &user) {
                ngx::ngx_log_error!(NGX_LOG_EMERG, log, "{msg}");
                return nginx_sys::NGX_ERROR as nginx_sys::ngx_int_t;
            }
            for warning in hardening_warnings(mcf, &user) {
                ngx::ngx_log_error!(NGX_LOG_WARN, log, "{warning}");
            }
        }
        if mcf.sandbox_on() {
            if let Some(kernel) = wsgi_pool::sandbox::missing_kernel() {
                ngx::ngx_log_error!(
                    NGX_LOG_EMERG,
                    log,
                    "wsgi: \"wsgi_sandbox on\" needs Landlock, but this kernel {kernel}; \
                     the workers would refuse to run the app unsandboxed"
                );
                return nginx_sys::NGX_ERROR as nginx_sys::ngx_int_t;
            }
        }
    }
    let sandbox_paths = !mcf.sandbox_read.is_empty() || !mcf.sandbox_write.is_empty();
    if sandbox_paths && !mcf.sandbox_on() {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "wsgi: \"wsgi_sandbox_read\" and \"wsgi_sandbox_write\" have no effect without \"wsgi_sandbox on\""
        );
    }
    // `nginx -t` says which Python the workers will run, and whether with
    // the GIL (what wsgi_threads buys depends on it).
    // SAFETY: a plain read of nginx's flag, set before configuration.
    let testing = unsafe { nginx_sys::ngx_test_config } != 0;
    let check = mcf.import_check.unwrap_or(true);
    if !check && !testing {
        return NGX_OK as nginx_sys::ngx_int_t;
    }
    // SAFETY: cf is the configuration being parsed.
    let env = worker_environment(&unsafe { env_directives(cf) });
    match check_imports(mcf, &env, !check) {
        Ok(report) => {
            if let Some(report) = report.filter(|_| testing) {
                let (level, text) = report.notice();
                if level > NGX_LOG_WARN as usize {
                    // As nginx -t's own lines: on the terminal, not only in
                    // the log (nginx copies warn and above there itself).
                    crate::log::log_stderr(&text);
                }
                // SAFETY: cf->log is the configuration log.
                crate::log::log_lines(unsafe { (*cf).log }, level, &text);
            }
            NGX_OK as nginx_sys::ngx_int_t
        }
        Err(_) if !check => NGX_OK as nginx_sys::ngx_int_t,
        Err(report) => {
            crate::log::log_lines(log, NGX_LOG_EMERG as usize, &report);
            ngx::ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "wsgi: application import check failed (wsgi_import_check), configuration rejected"
            );
            nginx_sys::NGX_ERROR as nginx_sys::ngx_int_t
        }
    }
}

/// Whether this process is `nginx -s SIGNAL` for a signal other than reload.
///
/// # Safety
/// nginx's ngx_argv/ngx_argc must be set (they are before configuration).
unsafe fn signals_other_than_reload() -> bool {
    // SAFETY: ngx_process is set by nginx's option parsing, before any parsing.
    if unsafe { nginx_sys::ngx_process } as u32 != nginx_sys::NGX_PROCESS_SIGNALLER {
        return false;
    }
    // SAFETY: a read by value; set by nginx's ngx_save_argv, before any
    // parsing, and not changed after.
    let argc = unsafe { nginx_sys::ngx_argc } as usize;
    // SAFETY: as above.
    let argv = unsafe { nginx_sys::ngx_argv };
    let argv: &[*mut c_char] = if argc == 0 || argv.is_null() {
        &[]
    } else {
        // SAFETY: ngx_argv holds ngx_argc pointers (ngx_save_argv).
        unsafe { core::slice::from_raw_parts(argv, argc) }
    };
    let args: Vec<&[u8]> = argv
        .iter()
        // SAFETY: each a NUL-terminated string (ngx_save_argv's copies).
        .map(|&a| unsafe { core::ffi::CStr::from_ptr(a) }.to_bytes())
        .collect();
    signal_option(&args) != Some(b"reload")
}

/// The user the workers will run as: `user`, or nginx's default
/// (`nobody`) when the master runs as root, also when `user` comes after
/// the http block (not read yet); `None` when they keep the master's user.
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn worker_user(cf: *mut ngx_conf_t) -> Option<WorkerUser> {
    use std::ffi::{CStr, CString};
    // SAFETY: the caller's promise: the configuration being parsed.
    let cycle = unsafe { (*cf).cycle };
    // SAFETY: the core module's conf exists before the http block is parsed.
    let ccf = unsafe { core_conf(cycle) }?;
    let (name, uid, gid) = if ccf.user != nginx_sys::ngx_uid_t::MAX && !ccf.username.is_null() {
        // SAFETY: `user` keeps the name NUL-terminated in the cycle's pool.
        let name = unsafe { CStr::from_ptr(ccf.username) };
        (name.to_owned(), ccf.user, ccf.group)
    } else {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        // The entries returned are read at once, before any other
        // getpw*/getgr* call.
        // SAFETY: a NUL-terminated name.
        let pw = unsafe { libc::getpwnam(nginx_sys::NGX_USER.as_ptr()) };
        // SAFETY: as above (getgrnam's buffer is not getpwnam's).
        let gr = unsafe { libc::getgrnam(nginx_sys::NGX_GROUP.as_ptr()) };
        // SAFETY: NULL or libc's live entry, read before the next call.
        let pw = unsafe { pw.as_ref() }?;
        // SAFETY: as above.
        let gid = unsafe { gr.as_ref() }.map_or(pw.pw_gid, |g| g.gr_gid);
        (CString::from(nginx_sys::NGX_USER), pw.pw_uid, gid)
    };
    // initgroups() gives the workers the user's supplementary groups too.
    let mut gids = vec![0 as libc::gid_t; 256];
    let mut n = gids.len() as libc::c_int;
    // SAFETY: `gids` has room for `n` entries; getgrouplist writes at most
    // that many and sets `n` to the count.
    let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, gids.as_mut_ptr(), &mut n) };
    gids.truncate(if rc < 0 { 0 } else { n.max(0) as usize });
    if !gids.contains(&gid) {
        gids.push(gid);
    }
    Some(WorkerUser {
        name: name.to_string_lossy().into_owned(),
        uid,
        gids,
    })
}

/// The main context's `env` directives read so far (nginx keeps them in the
/// core module's conf; those after the http block are not known yet).
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn env_directives(cf: *mut ngx_conf_t) -> Vec<Vec<u8>> {
    // SAFETY: the caller's promise: the configuration being parsed.
    let cycle = unsafe { (*cf).cycle };
    // SAFETY: the cycle being configured.
    let Some(ccf) = (unsafe { core_conf(cycle) }) else {
        return Vec::new();
    };
    if ccf.env.elts.is_null() {
        return Vec::new();
    }
    // SAFETY: the core module's `env` array holds `nelts` ngx_str_t in the
    // cycle's pool.
    let vars =
        unsafe { std::slice::from_raw_parts(ccf.env.elts as *const ngx_str_t, ccf.env.nelts) };
    vars.iter()
        .map(|v| {
            // `env NAME=value` is stored as NAME, with "=value" after it in
            // the (NUL-terminated) argument.
            // SAFETY: an argument nginx's parser made.
            if unsafe { byte_after(v) } == Some(b'=') {
                // SAFETY: the argument is NUL-terminated.
                unsafe { std::ffi::CStr::from_ptr(v.data as *const c_char) }
                    .to_bytes()
                    .to_vec()
            } else {
                // SAFETY: the argument lives in the cycle's pool.
                unsafe { ngx_bytes(v) }.to_vec()
            }
        })
        .collect()
}

/// The byte after an argument's bytes (its NUL, or what `env` cut off at
/// `len`); `None` for an empty one without data.
///
/// # Safety
/// `v` is an argument nginx's parser made, NUL-terminated, in a live pool.
unsafe fn byte_after(v: &ngx_str_t) -> Option<u8> {
    if v.data.is_null() {
        return None;
    }
    // SAFETY: the caller's promise: the bytes go on to the NUL at or after
    // `len`.
    let at = unsafe { v.data.add(v.len) };
    // SAFETY: as above.
    Some(unsafe { *at })
}

#[cfg(test)]
mod tests {
    use super::{
        hardening_warnings, signal_option, unreadable, worker_environment, PythonReport, WorkerUser,
    };
    use crate::conf::MainConf;

    #[test]
    fn python_report_out_of_the_check_output() {
        let out = "Traceback ...\nSyntaxError: x\n\n\x1fwsgi-python\x1f3.14.7\x1f1\x1f0\x1f1\x1flxml.etree,x._y\n";
        let (report, rest) = PythonReport::split_from(out);
        assert_eq!(rest.trim_end(), "Traceback ...\nSyntaxError: x");
        let report = report.expect("a report");
        assert_eq!(report.version, "3.14.7");
        assert!(report.free_threaded && !report.gil_before && report.gil_after);
        assert_eq!(report.gil_modules, ["lxml.etree", "x._y"]);
        let (level, text) = report.notice();
        assert_eq!(level, nginx_sys::NGX_LOG_WARN as usize);
        assert!(
            text.contains("enabled the GIL for \"lxml.etree\", \"x._y\""),
            "{text}"
        );
        let gil = PythonReport {
            version: "3.11.2".into(),
            gil_before: true,
            gil_after: true,
            ..Default::default()
        };
        assert_eq!(
            gil.notice().1,
            "wsgi: Python 3.11.2, GIL enabled: a worker's pool threads run Python one at a time"
        );
        assert_eq!(PythonReport::split_from("no report").0, None);
    }

    #[test]
    fn signal_as_nginx_parses_it() {
        let sig = |args: &[&'static str]| {
            let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
            signal_option(&a).map(|s| String::from_utf8_lossy(s).into_owned())
        };
        assert_eq!(sig(&["nginx", "-s", "quit"]), Some("quit".into()));
        assert_eq!(
            sig(&["nginx", "-p", "/x/", "-c", "n.conf", "-sreopen"]),
            Some("reopen".into())
        );
        assert_eq!(sig(&["nginx", "-qs", "reload"]), Some("reload".into()));
        // "-s" as the value of another option is not the signal
        assert_eq!(sig(&["nginx", "-g", "-s", "-t"]), None);
        assert_eq!(
            sig(&["nginx", "-gdaemon off;", "-s", "stop"]),
            Some("stop".into())
        );
        assert_eq!(sig(&["nginx", "-t"]), None);
        assert_eq!(sig(&["nginx", "-s"]), None);
    }
    use std::ffi::OsString;

    fn get(env: &[(OsString, OsString)], name: &str) -> Option<String> {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_string_lossy().into_owned())
    }

    #[test]
    fn only_what_env_directives_name() {
        // Names no other test uses (tests run in parallel threads).
        std::env::set_var("WSGI_UNIT_KEPT", "kept");
        std::env::set_var("WSGI_UNIT_UNNAMED", "not passed");
        let env = worker_environment(&[
            b"WSGI_UNIT_SET=a=b".to_vec(),
            b"WSGI_UNIT_KEPT".to_vec(),
            b"WSGI_UNIT_ABSENT".to_vec(),
        ]);
        assert_eq!(get(&env, "WSGI_UNIT_SET").as_deref(), Some("a=b"));
        assert_eq!(get(&env, "WSGI_UNIT_KEPT").as_deref(), Some("kept"));
        assert_eq!(get(&env, "WSGI_UNIT_ABSENT"), None);
        assert_eq!(get(&env, "WSGI_UNIT_UNNAMED"), None);
        assert_eq!(get(&env, "PATH"), None);
    }

    #[test]
    fn later_directive_wins_and_tz_can_be_set() {
        let env = worker_environment(&[
            b"WSGI_UNIT_TWICE=1".to_vec(),
            b"WSGI_UNIT_TWICE=2".to_vec(),
            b"TZ=UTC".to_vec(),
        ]);
        assert_eq!(get(&env, "WSGI_UNIT_TWICE").as_deref(), Some("2"));
        assert_eq!(get(&env, "TZ").as_deref(), Some("UTC"));
        assert_eq!(env.iter().filter(|(n, _)| n == "TZ").count(), 1);
    }
    #[test]
    fn hardening_warns_of_writable_code_and_root_workers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("wsgi-unit-hardening-{}", std::process::id()));
        let pkg = dir.join("shop");
        std::fs::create_dir_all(&pkg).unwrap();
        let set = |p: &std::path::Path, m| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&dir, 0o755);
        set(&pkg, 0o755);
        let mut mcf = MainConf {
            python_path: vec![dir.display().to_string()],
            ..Default::default()
        };
        mcf.apps
            .push(crate::target::AppTarget::parse("shop.wsgi:application").unwrap());
        let other = WorkerUser {
            name: "other".into(),
            uid: 4_000_000,
            gids: vec![4_000_000],
        };
        assert!(hardening_warnings(&mcf, &other).is_empty());
        set(&pkg, 0o777);
        let w = hardening_warnings(&mcf, &other);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains(&format!(
                "the app's code \"{}\" is writable by the worker user \"other\"",
                pkg.display()
            )),
            "{w:?}"
        );
        set(&dir, 0o777);
        assert_eq!(hardening_warnings(&mcf, &other).len(), 2);
        let root = WorkerUser {
            name: "root".into(),
            uid: 0,
            gids: vec![0],
        };
        let w = hardening_warnings(&mcf, &root);
        assert!(
            w.len() == 1 && w[0].contains("the workers run as root"),
            "{w:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_names_the_directory_in_the_way() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("wsgi-unit-readable-{}", std::process::id()));
        let file = dir.join("private/lib/os.py");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "").unwrap();
        let set = |p: &std::path::Path, m| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&dir, 0o755);
        set(&file, 0o644);
        // a user who owns nothing here, in no group of the files
        let other = WorkerUser {
            name: "other".into(),
            uid: 4_000_000,
            gids: vec![4_000_000],
        };
        set(&dir.join("private"), 0o755);
        assert_eq!(unreadable(&file, &other), None);
        set(&dir.join("private"), 0o700);
        let why = unreadable(&file, &other).expect("0700 directory of another user");
        assert!(
            why.contains(&format!("search \"{}\"", dir.join("private").display())),
            "{why}"
        );
        assert!(why.contains("mode 0700"), "{why}");
        set(&dir.join("private"), 0o755);
        set(&file, 0o600);
        let why = unreadable(&file, &other).expect("0600 file of another user");
        assert!(why.contains("cannot read"), "{why}");
        // root reads everything
        let root = WorkerUser {
            name: "root".into(),
            uid: 0,
            gids: vec![0],
        };
        assert_eq!(unreadable(&file, &root), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

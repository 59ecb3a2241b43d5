//! Every `wsgi_*` directive: parsing, validation (`nginx -t` messages) and
//! merging (location inherits server inherits http, as with `uwsgi_*`).

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_http_core_loc_conf_t, ngx_http_core_module, ngx_msec_t,
    ngx_pcalloc, ngx_str_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS,
    NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_CONF_TAKE23, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF, NGX_LOG_EMERG, NGX_LOG_WARN,
    NGX_OK,
};
use ngx::http::{HttpModuleMainConf, Merge, MergeConfigError};
use ngx::ngx_conf_log_error;

use crate::fields::core_loc_conf;
use crate::target::AppTarget;
use crate::util::{conf_args, core_conf, ngx_bytes, parse_msec, parse_size, CONF_ERROR, CONF_OK};
use crate::HttpWsgiModule;

pub const DEFAULT_THREADS: usize = 4;
pub const DEFAULT_QUEUE_SIZE: usize = 1024;
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_BUFFER_SIZE: usize = 256 * 1024;
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_THREAD_PRIORITY_LOW: bool = false;

/// http-level settings: one interpreter and one pool per worker process.
#[derive(Default)]
pub struct MainConf {
    pub python_path: Vec<String>,
    pub python_home: Option<String>,
    pub threads: Option<usize>,
    pub queue_size: Option<usize>,
    pub queue_timeout: Option<u64>,
    pub import_check: Option<bool>,
    /// `wsgi_max_requests`: (requests, jitter); 0 requests is off.
    pub max_requests: Option<(u64, u64)>,
    /// Every distinct `wsgi_pass` target, imported once per worker.
    pub apps: Vec<AppTarget>,
    /// `wsgi_sandbox`: Landlock rules for the threads that run Python.
    pub sandbox: Option<bool>,
    /// `wsgi_thread_priority low|normal`: true for low.
    pub thread_priority_low: Option<bool>,
    /// `wsgi_sandbox_read` / `wsgi_sandbox_write`: absolute paths.
    pub sandbox_read: Vec<String>,
    pub sandbox_write: Vec<String>,
}

impl MainConf {
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or(DEFAULT_THREADS)
    }
    pub fn queue_size(&self) -> usize {
        self.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE)
    }
    pub fn queue_timeout_ms(&self) -> u64 {
        self.queue_timeout.unwrap_or(DEFAULT_QUEUE_TIMEOUT_MS)
    }
    pub fn thread_priority_low(&self) -> bool {
        self.thread_priority_low
            .unwrap_or(DEFAULT_THREAD_PRIORITY_LOW)
    }
    pub fn sandbox_on(&self) -> bool {
        self.sandbox.unwrap_or(false)
    }
}

/// A `wsgi_param NAME VALUE [if_not_empty]`.
#[derive(Clone)]
pub struct Param {
    pub name: Vec<u8>,
    /// Compiled value (may hold variables); lives in the cycle pool.
    pub value: *mut ngx_http_complex_value_t,
    pub if_not_empty: bool,
}

/// Settings that may differ per location.
#[derive(Default, Clone)]
pub struct LocConf {
    /// Index into [`MainConf::apps`]; set by `wsgi_pass`.
    pub app: Option<usize>,
    pub script_name: Option<Vec<u8>>,
    pub params: Option<Vec<Param>>,
    pub buffer_size: Option<usize>,
    pub read_timeout: Option<u64>,
    pub request_buffering: Option<bool>,
    /// `wsgi_intercept_errors`: statuses with an `error_page` go to it.
    pub intercept_errors: Option<bool>,
    /// `wsgi_hide_header` names, lower case.
    pub hide_headers: Option<Vec<Vec<u8>>>,
    /// `wsgi_pass_header` names, lower case.
    pub pass_headers: Option<Vec<Vec<u8>>>,
    /// `wsgi_ignore_headers`, as `IGNORE_*` bits.
    pub ignore_headers: Option<u32>,
}

pub const IGNORE_XA_REDIRECT: u32 = 1;
pub const IGNORE_XA_LIMIT_RATE: u32 = 2;
pub const IGNORE_XA_BUFFERING: u32 = 4;
pub const IGNORE_XA_CHARSET: u32 = 8;
pub const IGNORE_XA_EXPIRES: u32 = 16;
/// Accepted for compatibility with proxy_ignore_headers; they only matter
/// to caching, which this module does not do.
pub const IGNORE_CACHE_HEADERS: u32 = 32;

/// Headers hidden from the client unless `wsgi_pass_header` names them, as
/// with proxy_pass: nginx sends its own Date and Server.
const HIDDEN_BY_DEFAULT: [&[u8]; 8] = [
    b"date",
    b"server",
    b"x-pad",
    b"x-accel-expires",
    b"x-accel-redirect",
    b"x-accel-limit-rate",
    b"x-accel-buffering",
    b"x-accel-charset",
];

impl LocConf {
    /// Whether a response header from the app is withheld from the client.
    pub fn hides(&self, name: &[u8]) -> bool {
        let has = |list: &Option<Vec<Vec<u8>>>| {
            list.as_ref()
                .is_some_and(|l| l.iter().any(|h| h.eq_ignore_ascii_case(name)))
        };
        if has(&self.hide_headers) {
            return true;
        }
        HIDDEN_BY_DEFAULT
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
            && !has(&self.pass_headers)
    }

    pub fn ignores(&self, bit: u32) -> bool {
        self.ignore_headers.unwrap_or(0) & bit != 0
    }

    pub fn buffer_size(&self) -> usize {
        self.buffer_size.unwrap_or(DEFAULT_BUFFER_SIZE)
    }
    pub fn read_timeout_ms(&self) -> ngx_msec_t {
        self.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT_MS) as ngx_msec_t
    }
    pub fn params(&self) -> &[Param] {
        self.params.as_deref().unwrap_or(&[])
    }
}

/// After the http block: the import check (see `check.rs`).
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn postconfiguration(cf: *mut ngx_conf_t) -> nginx_sys::ngx_int_t {
    // SAFETY: the http block created our main conf.
    let mcf = unsafe { main_conf(cf) };
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
            if let Err(msg) = crate::check::check_python_readable(mcf, &user) {
                ngx::ngx_log_error!(NGX_LOG_EMERG, log, "{msg}");
                return nginx_sys::NGX_ERROR as nginx_sys::ngx_int_t;
            }
            for warning in crate::check::hardening_warnings(mcf, &user) {
                ngx::ngx_log_error!(NGX_LOG_WARN, log, "{warning}");
            }
        }
        if mcf.sandbox_on() {
            let kernel = wsgi_pool::sandbox::kernel_support();
            if !matches!(kernel, wsgi_pool::sandbox::KernelSupport::Available(_)) {
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
    let env = crate::check::worker_environment(&unsafe { env_directives(cf) });
    match crate::check::check_imports(mcf, &env, !check) {
        Ok(report) => {
            if let Some(report) = report.filter(|_| testing) {
                let (level, text) = report.notice();
                if level > NGX_LOG_WARN as usize {
                    // As nginx -t's own lines: on the terminal, not only in
                    // the log (nginx copies warn and above there itself).
                    crate::util::log_stderr(&text);
                }
                // SAFETY: cf->log is the configuration log.
                crate::notify::log_lines(unsafe { (*cf).log }, level, &text);
            }
            NGX_OK as nginx_sys::ngx_int_t
        }
        Err(_) if !check => NGX_OK as nginx_sys::ngx_int_t,
        Err(report) => {
            crate::notify::log_lines(log, NGX_LOG_EMERG as usize, &report);
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
    // SAFETY: ngx_argv holds ngx_argc NUL-terminated strings (ngx_save_argv).
    let args: Vec<&[u8]> = unsafe {
        (0..nginx_sys::ngx_argc as usize)
            .map(|i| core::ffi::CStr::from_ptr(*nginx_sys::ngx_argv.add(i)).to_bytes())
            .collect()
    };
    crate::check::signal_option(&args) != Some(b"reload")
}

/// The user the workers will run as: `user`, or nginx's default
/// (`nobody`) when the master runs as root, also when `user` comes after
/// the http block (not read yet); `None` when they keep the master's user.
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn worker_user(cf: *mut ngx_conf_t) -> Option<crate::check::WorkerUser> {
    use std::ffi::{CStr, CString};
    // SAFETY: the core module's conf exists before the http block is parsed.
    let ccf = unsafe { core_conf((*cf).cycle) }?;
    let (name, uid, gid) = if ccf.user != nginx_sys::ngx_uid_t::MAX && !ccf.username.is_null() {
        // SAFETY: `user` keeps the name NUL-terminated in the cycle's pool.
        let name = unsafe { CStr::from_ptr(ccf.username) };
        (name.to_owned(), ccf.user, ccf.group)
    } else {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        // SAFETY: NUL-terminated names; the entries returned are read at
        // once, before any other getpw*/getgr* call.
        unsafe {
            let pw = libc::getpwnam(nginx_sys::NGX_USER.as_ptr());
            let gr = libc::getgrnam(nginx_sys::NGX_GROUP.as_ptr());
            let pw = pw.as_ref()?;
            let gid = gr.as_ref().map_or(pw.pw_gid, |g| g.gr_gid);
            (CString::from(nginx_sys::NGX_USER), pw.pw_uid, gid)
        }
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
    Some(crate::check::WorkerUser {
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
    // SAFETY: the core module's `env` array holds ngx_str_t in the
    // cycle's pool.
    unsafe {
        let Some(ccf) = core_conf((*cf).cycle) else {
            return Vec::new();
        };
        if ccf.env.elts.is_null() {
            return Vec::new();
        }
        let vars = std::slice::from_raw_parts(ccf.env.elts as *const ngx_str_t, ccf.env.nelts);
        vars.iter()
            .map(|v| {
                // `env NAME=value` is stored as NAME, with "=value" after
                // it in the (NUL-terminated) argument.
                if !v.data.is_null() && *v.data.add(v.len) == b'=' {
                    std::ffi::CStr::from_ptr(v.data as *const c_char)
                        .to_bytes()
                        .to_vec()
                } else {
                    ngx_bytes(v).to_vec()
                }
            })
            .collect()
    }
}

impl Merge for MainConf {
    fn merge(&mut self, _prev: &Self) -> Result<(), MergeConfigError> {
        Ok(())
    }
}

impl Merge for LocConf {
    fn merge(&mut self, prev: &Self) -> Result<(), MergeConfigError> {
        // wsgi_pass and wsgi_script_name are not inherited by nested
        // locations that set no handler of their own, like proxy_pass.
        if self.params.is_none() {
            self.params = prev.params.clone();
        }
        self.buffer_size = self.buffer_size.or(prev.buffer_size);
        self.read_timeout = self.read_timeout.or(prev.read_timeout);
        self.request_buffering = self.request_buffering.or(prev.request_buffering);
        self.intercept_errors = self.intercept_errors.or(prev.intercept_errors);
        if self.hide_headers.is_none() {
            self.hide_headers = prev.hide_headers.clone();
        }
        if self.pass_headers.is_none() {
            self.pass_headers = prev.pass_headers.clone();
        }
        self.ignore_headers = self.ignore_headers.or(prev.ignore_headers);
        Ok(())
    }
}

/// nginx's merge of a location's settings: the generic merge, then what
/// `if` and `limit_except` blocks inside a `wsgi_pass` location need.
///
/// # Safety
/// Called by nginx with the configuration being merged: `prev` and `conf`
/// are our location confs, and `cf`'s context is `conf`'s location.
pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: nginx passes the parent's and this location's confs.
        let (prev, conf) = unsafe { (&*(prev as *const LocConf), &mut *(conf as *mut LocConf)) };
        if conf.merge(prev).is_err() {
            return CONF_ERROR;
        }
        // An `if` or `limit_except` block is part of its location, not a nested
        // one: requests it matches still go to the location's app (as with
        // proxy_pass), not to the static file handler under `root`.
        // SAFETY: cf's context is this location's during the merge.
        let clcf = unsafe { core_loc_conf(cf) };
        // SAFETY: the location's own conf, being merged on this thread.
        let noname = unsafe { core_loc_conf::noname(clcf) } != 0;
        if noname && conf.app.is_none() && prev.app.is_some() {
            conf.app = prev.app;
            if conf.script_name.is_none() {
                conf.script_name = prev.script_name.clone();
            }
            if clcf.handler.is_none() {
                clcf.handler = Some(crate::handler::content_handler);
            }
        }
        CONF_OK
    })
}

/// Reports a configuration error at the current file:line and fails.
macro_rules! conf_err {
    ($cf:expr, $($arg:tt)+) => {{
        ngx_conf_log_error!(NGX_LOG_EMERG, $cf, $($arg)+);
        return CONF_ERROR;
    }};
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a directive handler's body: a panic (a bug of ours) fails the
/// directive with an `emerg` line naming it, as a bad value does, instead of
/// aborting nginx (a panic must never unwind into nginx's C code).
fn conf_guard(cf: *mut ngx_conf_t, f: impl FnOnce() -> *mut c_char) -> *mut c_char {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(payload) => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "wsgi: internal error (a panic: {}) while parsing this directive",
                crate::util::panic_message(payload.as_ref())
            );
            CONF_ERROR
        }
    }
}

/// Runs a configuration hook (pre- and postconfiguration): a panic fails
/// the configuration with an `emerg` line instead of aborting nginx.
pub fn guard_hook(
    cf: *mut ngx_conf_t,
    what: &str,
    f: impl FnOnce() -> nginx_sys::ngx_int_t,
) -> nginx_sys::ngx_int_t {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        // SAFETY: cf->log is the configuration's log.
        let log = unsafe { (*cf).log };
        ngx::ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "wsgi: internal error (a panic: {}) in {}",
            crate::util::panic_message(payload.as_ref()),
            what
        );
        nginx_sys::NGX_ERROR as nginx_sys::ngx_int_t
    })
}

/// Shared "is duplicate" check: nginx says `"x" directive is duplicate`.
const DUPLICATE: *mut c_char = c"is duplicate".as_ptr() as *mut c_char;

/// The module's main conf of the configuration being parsed.
///
/// # Safety
/// `cf` is the configuration being parsed inside an `http` block.
unsafe fn main_conf<'a>(cf: *mut ngx_conf_t) -> &'a mut MainConf {
    // SAFETY: the http block created our main conf before any directive in it.
    HttpWsgiModule::main_conf_mut(unsafe { &*cf }).expect("wsgi main conf")
}

extern "C" fn set_python_path(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: called by nginx's parser with a valid cf.
        let (args, mcf) = unsafe { (conf_args(cf), main_conf(cf)) };
        for a in &args[1..] {
            // SAFETY: arguments live in the conf pool.
            let dir = unsafe { ngx_bytes(a) };
            if dir.is_empty() {
                conf_err!(cf, "empty path in \"wsgi_python_path\" directive");
            }
            match std::str::from_utf8(dir) {
                Ok(s) => mcf.python_path.push(s.to_string()),
                Err(_) => conf_err!(
                    cf,
                    "path \"{}\" in \"wsgi_python_path\" directive is not valid UTF-8",
                    lossy(dir)
                ),
            }
        }
        CONF_OK
    })
}

extern "C" fn set_python_home(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: called by nginx's parser with a valid cf.
        let (args, mcf) = unsafe { (conf_args(cf), main_conf(cf)) };
        if mcf.python_home.is_some() {
            return DUPLICATE;
        }
        // SAFETY: arguments live in the conf pool.
        let dir = unsafe { ngx_bytes(&args[1]) };
        let Ok(dir) = std::str::from_utf8(dir) else {
            conf_err!(cf, "\"wsgi_python_home\" path is not valid UTF-8");
        };
        if !dir.starts_with('/') {
            conf_err!(
                cf,
                "\"wsgi_python_home\" must be an absolute path, not \"{}\"",
                dir
            );
        }
        let dir = dir.trim_end_matches('/');
        let version = embedded_python_version();
        if let Err(why) = check_python_home(dir, &version, &stdlib_dir_name(&version)) {
            conf_err!(cf, "\"wsgi_python_home\" \"{}\" {}", dir, why);
        }
        mcf.python_home = Some(dir.to_string());
        CONF_OK
    })
}

/// "3.11" for the libpython this module is linked with.
fn embedded_python_version() -> String {
    wsgi_pool::python::embedded_version()
}

/// The embedded Python's library directory name under a prefix or a venv's
/// `lib/`: "python3.11", "python3.14t" for a free-threaded build, as its
/// `sysconfig` said at build time (`WSGI_PYTHON_STDLIB`, python_paths.rs).
fn stdlib_dir_name(version: &str) -> String {
    option_env!("WSGI_PYTHON_STDLIB")
        .and_then(|p| std::path::Path::new(p).file_name()?.to_str())
        .filter(|n| n.starts_with("python"))
        .map_or_else(|| format!("python{version}"), str::to_string)
}

/// A home must be a virtualenv (`pyvenv.cfg`) of the embedded Python's
/// version, or a prefix with that version's standard library (`lib/` +
/// `lib_name`, which tells a free-threaded build's `python3.14t` from
/// `python3.14`); otherwise the worker's Python cannot start (or imports
/// nothing from it), and its own error ("No module named 'encodings'")
/// does not say why.
fn check_python_home(dir: &str, version: &str, lib_name: &str) -> Result<(), String> {
    let home = std::path::Path::new(dir);
    if !home.is_dir() {
        return Err("is not a directory".into());
    }
    if let Ok(cfg) = std::fs::read_to_string(home.join("pyvenv.cfg")) {
        // venv writes "version", virtualenv and uv "version_info".
        let venv_version = cfg.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            matches!(k.trim(), "version" | "version_info").then(|| v.trim().to_string())
        });
        return match venv_version {
            Some(v) if v != version && !v.starts_with(&format!("{version}.")) => Err(format!(
                "is a virtualenv of Python {v}, but this module embeds Python {version}"
            )),
            // Same version, the other build (a free-threaded Python's
            // packages live in lib/python3.14t, the GIL one's in python3.14)
            _ if !home.join("lib").join(lib_name).is_dir()
                && home.join("lib").join(format!("python{version}t")).is_dir()
                    != (lib_name == format!("python{version}t")) =>
            {
                Err(format!(
                    "is a virtualenv of another build of Python {version} (no lib/{lib_name}): \
                     this module embeds a{} build",
                    if lib_name.ends_with('t') {
                        " free-threaded"
                    } else {
                        " GIL"
                    }
                ))
            }
            _ => Ok(()),
        };
    }
    if !home.join("lib").join(lib_name).is_dir() {
        return Err(format!(
            "is neither a virtualenv (no pyvenv.cfg) nor a Python {version} prefix (no lib/{lib_name})"
        ));
    }
    Ok(())
}

/// Parses a positive integer argument, naming the directive on failure.
///
/// # Safety
/// `cf` is the configuration passed to a directive handler.
unsafe fn positive_arg(cf: *mut ngx_conf_t, max: usize) -> Result<usize, ()> {
    // SAFETY: called from a directive handler.
    let args = unsafe { conf_args(cf) };
    // SAFETY: arguments live in the conf pool.
    let (name, value) = unsafe { (ngx_bytes(&args[0]), ngx_bytes(&args[1])) };
    match std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        Some(n) if n >= 1 && n <= max => Ok(n),
        _ => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid value \"{}\" in \"{}\" directive, it must be a number from 1 to {}",
                lossy(value),
                lossy(name),
                max
            );
            Err(())
        }
    }
}

/// Parses a time argument (`30s`, `500ms`) of the current directive.
///
/// # Safety
/// `cf` is the configuration passed to a directive handler.
unsafe fn time_arg(cf: *mut ngx_conf_t) -> Result<u64, ()> {
    // SAFETY: directive handler context; arguments live in the conf pool.
    let args = unsafe { conf_args(cf) };
    // SAFETY: as above.
    let (name, value) = unsafe { (ngx_bytes(&args[0]), ngx_bytes(&args[1])) };
    match parse_msec(value) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid time \"{}\" in \"{}\" directive",
                lossy(value),
                lossy(name)
            );
            Err(())
        }
    }
}

/// `wsgi_max_requests number [jitter=number]`.
///
/// # Safety
/// `cf` is the configuration passed to a directive handler.
unsafe fn max_requests_arg(cf: *mut ngx_conf_t) -> Result<(u64, u64), ()> {
    // SAFETY: directive handler context; arguments live in the conf pool.
    let args = unsafe { conf_args(cf) };
    // SAFETY: as above, for every argument below.
    let name = lossy(unsafe { ngx_bytes(&args[0]) });
    let number = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    // SAFETY: directive handler context; arguments live in the conf pool.
    let value = unsafe { ngx_bytes(&args[1]) };
    let Some(limit) = number(value) else {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid value \"{}\" in \"{}\" directive, it must be a number",
            lossy(value),
            name
        );
        return Err(());
    };
    let mut jitter = 0;
    if let Some(arg) = args.get(2) {
        // SAFETY: as above.
        let arg = unsafe { ngx_bytes(arg) };
        match arg.strip_prefix(b"jitter=").and_then(number) {
            Some(j) => jitter = j,
            None => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "invalid parameter \"{}\" in \"{}\" directive, expected \"jitter=number\"",
                    lossy(arg),
                    name
                );
                return Err(());
            }
        }
    }
    Ok((limit, jitter))
}

/// Parses `on`/`off` of the current directive.
///
/// # Safety
/// `cf` is the configuration passed to a directive handler.
unsafe fn flag_arg(cf: *mut ngx_conf_t) -> Result<bool, ()> {
    // SAFETY: directive handler context; arguments live in the conf pool.
    let args = unsafe { conf_args(cf) };
    // SAFETY: as above.
    let (name, value) = unsafe { (ngx_bytes(&args[0]), ngx_bytes(&args[1])) };
    if value.eq_ignore_ascii_case(b"on") {
        Ok(true)
    } else if value.eq_ignore_ascii_case(b"off") {
        Ok(false)
    } else {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid value \"{}\" in \"{}\" directive, it must be \"on\" or \"off\"",
            lossy(value),
            lossy(name)
        );
        Err(())
    }
}

/// A directive that sets one value once: `$field` of the main conf (`main`)
/// or of this level's conf (`loc`), parsed by `$parse` (which logs why a
/// value is refused). A second occurrence is "duplicate", as in nginx.
macro_rules! one_value_directive {
    ($fn_name:ident, main, $field:ident, $parse:expr) => {
        extern "C" fn $fn_name(
            cf: *mut ngx_conf_t,
            _cmd: *mut ngx_command_t,
            _conf: *mut c_void,
        ) -> *mut c_char {
            // SAFETY: called by nginx's parser with a valid cf.
            let mcf = unsafe { main_conf(cf) };
            one_value_directive!(@set cf, mcf, $field, $parse)
        }
    };
    ($fn_name:ident, loc, $field:ident, $parse:expr) => {
        extern "C" fn $fn_name(
            cf: *mut ngx_conf_t,
            _cmd: *mut ngx_command_t,
            conf: *mut c_void,
        ) -> *mut c_char {
            // SAFETY: nginx passes our conf for this level as `conf`.
            let lcf = unsafe { &mut *(conf as *mut LocConf) };
            one_value_directive!(@set cf, lcf, $field, $parse)
        }
    };
    (@set $cf:ident, $conf:ident, $field:ident, $parse:expr) => {{
        if $conf.$field.is_some() {
            return DUPLICATE;
        }
        // SAFETY: directive handler context; arguments live in the conf pool.
        match unsafe { $parse($cf) } {
            Ok(v) => $conf.$field = Some(v),
            Err(()) => return CONF_ERROR,
        }
        CONF_OK
    }};
}

one_value_directive!(set_threads, main, threads, |cf| positive_arg(cf, 4096));
one_value_directive!(set_queue_size, main, queue_size, |cf| positive_arg(
    cf,
    1 << 20
));
one_value_directive!(set_queue_timeout, main, queue_timeout, time_arg);
one_value_directive!(set_import_check, main, import_check, flag_arg);
one_value_directive!(set_max_requests, main, max_requests, max_requests_arg);
one_value_directive!(set_sandbox, main, sandbox, flag_arg);
one_value_directive!(set_thread_priority, main, thread_priority_low, priority_arg);

/// `low` or `normal` of `wsgi_thread_priority`: true for low.
///
/// # Safety
/// `cf` is the configuration passed to a directive handler.
unsafe fn priority_arg(cf: *mut ngx_conf_t) -> Result<bool, ()> {
    // SAFETY: directive handler context; arguments live in the conf pool.
    let value = unsafe { ngx_bytes(&conf_args(cf)[1]) };
    match value {
        b"low" => Ok(true),
        b"normal" => Ok(false),
        _ => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid value \"{}\" in \"wsgi_thread_priority\" directive, it must be \"low\" or \"normal\"",
                lossy(value)
            );
            Err(())
        }
    }
}

/// `wsgi_sandbox_read PATH...` and `wsgi_sandbox_write PATH...`: absolute
/// paths, added to the directive's list (repeatable).
extern "C" fn set_sandbox_paths(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: called by nginx's parser with a valid cf.
        let (args, mcf) = unsafe { (conf_args(cf), main_conf(cf)) };
        // SAFETY: arguments live in the conf pool.
        let name = unsafe { ngx_bytes(&args[0]) };
        let write = name == b"wsgi_sandbox_write";
        for a in &args[1..] {
            // SAFETY: arguments live in the conf pool.
            let path = unsafe { ngx_bytes(a) };
            let Ok(path) = std::str::from_utf8(path) else {
                conf_err!(
                    cf,
                    "path \"{}\" in \"{}\" directive is not valid UTF-8",
                    lossy(path),
                    lossy(name)
                );
            };
            if !path.starts_with('/') {
                conf_err!(
                    cf,
                    "\"{}\" takes absolute paths, not \"{}\"",
                    lossy(name),
                    path
                );
            }
            let path = match path.trim_end_matches('/') {
                "" => "/",
                p => p,
            };
            if write {
                mcf.sandbox_write.push(path.to_string());
            } else {
                mcf.sandbox_read.push(path.to_string());
            }
        }
        CONF_OK
    })
}
one_value_directive!(set_read_timeout, loc, read_timeout, time_arg);
one_value_directive!(set_request_buffering, loc, request_buffering, flag_arg);
one_value_directive!(set_intercept_errors, loc, intercept_errors, flag_arg);

extern "C" fn set_pass(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: nginx passes our location conf as `conf` for LOC_CONF_OFFSET.
        let lcf = unsafe { &mut *(conf as *mut LocConf) };
        if lcf.app.is_some() {
            return DUPLICATE;
        }
        // SAFETY: directive handler context; arguments live in the conf pool.
        let (args, mcf) = unsafe { (conf_args(cf), main_conf(cf)) };
        // SAFETY: as above.
        let spec = unsafe { ngx_bytes(&args[1]) };
        let Ok(spec) = std::str::from_utf8(spec) else {
            conf_err!(cf, "\"wsgi_pass\" target is not valid UTF-8");
        };
        let target = match AppTarget::parse(spec) {
            Ok(t) => t,
            Err(e) => conf_err!(cf, "invalid \"wsgi_pass\" target: {}", e),
        };
        let index = match mcf.apps.iter().position(|t| *t == target) {
            Some(i) => i,
            None => {
                mcf.apps.push(target);
                mcf.apps.len() - 1
            }
        };
        lcf.app = Some(index);

        // SAFETY: the core module's location conf exists in every location.
        let clcf = unsafe { core_loc_conf(cf) };
        clcf.handler = Some(crate::handler::content_handler);
        // As with proxy_pass: "/app" redirects to "/app/" for "location /app/".
        // SAFETY: the location name lives in the conf pool.
        if unsafe { ngx_bytes(&clcf.name) }.ends_with(b"/") {
            // SAFETY: the location's own conf, being configured on this thread.
            unsafe { core_loc_conf::set_auto_redirect(clcf, 1) };
        }
        CONF_OK
    })
}

extern "C" fn set_script_name(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: nginx passes our location conf as `conf`.
        let lcf = unsafe { &mut *(conf as *mut LocConf) };
        if lcf.script_name.is_some() {
            return DUPLICATE;
        }
        // SAFETY: directive handler context.
        let prefix = unsafe { ngx_bytes(&conf_args(cf)[1]) };
        if !prefix.is_empty() && !prefix.starts_with(b"/") {
            conf_err!(
                cf,
                "\"wsgi_script_name\" must be empty or start with \"/\", not \"{}\"",
                lossy(prefix)
            );
        }
        // "/app/" and "/app" mount the same way; SCRIPT_NAME never ends in "/".
        let mut p = prefix.to_vec();
        while p.ends_with(b"/") {
            p.pop();
        }
        lcf.script_name = Some(p);
        CONF_OK
    })
}

extern "C" fn set_param(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: nginx passes our conf for this level as `conf`.
        let lcf = unsafe { &mut *(conf as *mut LocConf) };
        // SAFETY: directive handler context.
        let args = unsafe { conf_args(cf) };
        // SAFETY: as above.
        let name = unsafe { ngx_bytes(&args[1]) };
        if name.is_empty() {
            conf_err!(cf, "empty name in \"wsgi_param\" directive");
        }
        let if_not_empty = match args.get(3) {
            None => false,
            // SAFETY: as above.
            Some(a) if unsafe { ngx_bytes(a) } == b"if_not_empty" => true,
            Some(a) => conf_err!(
                cf,
                "invalid parameter \"{}\" in \"wsgi_param\" directive",
                // SAFETY: as above.
                lossy(unsafe { ngx_bytes(a) })
            ),
        };
        // SAFETY: pool allocation; zeroed as nginx's compile API expects.
        let cv = unsafe {
            ngx_pcalloc((*cf).pool, core::mem::size_of::<ngx_http_complex_value_t>())
                as *mut ngx_http_complex_value_t
        };
        if cv.is_null() {
            return CONF_ERROR;
        }
        // SAFETY: a plain C struct; all-zero is what nginx expects before filling it.
        let mut ccv: ngx_http_compile_complex_value_t = unsafe { core::mem::zeroed() };
        ccv.cf = cf;
        ccv.value = &args[2] as *const ngx_str_t as *mut ngx_str_t;
        ccv.complex_value = cv;
        // SAFETY: ccv is fully initialised; nginx logs its own error on failure.
        if unsafe { ngx_http_compile_complex_value(&mut ccv) } != NGX_OK as isize {
            return CONF_ERROR;
        }
        lcf.params.get_or_insert_with(Vec::new).push(Param {
            name: name.to_vec(),
            value: cv,
            if_not_empty,
        });
        CONF_OK
    })
}

extern "C" fn set_buffer_size(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: nginx passes our conf for this level as `conf`.
        let lcf = unsafe { &mut *(conf as *mut LocConf) };
        if lcf.buffer_size.is_some() {
            return DUPLICATE;
        }
        // SAFETY: directive handler context.
        let value = unsafe { ngx_bytes(&conf_args(cf)[1]) };
        match parse_size(value) {
            Some(n) if n >= 1024 => lcf.buffer_size = Some(n),
            _ => conf_err!(
                cf,
                "invalid size \"{}\" in \"wsgi_buffer_size\" directive, it must be 1k or more",
                lossy(value)
            ),
        }
        CONF_OK
    })
}

extern "C" fn set_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: the core module's location conf exists in every location.
        let clcf = unsafe { core_loc_conf(cf) };
        clcf.handler = Some(crate::status::status_handler);
        CONF_OK
    })
}

/// The core module's conf for the location being parsed.
///
/// # Safety
/// `cf` is the configuration passed to a location-level directive handler (or a location merge).
unsafe fn core_loc_conf<'a>(cf: *mut ngx_conf_t) -> &'a mut ngx_http_core_loc_conf_t {
    // SAFETY: called from a location-level directive handler.
    unsafe {
        let ctx = (*cf).ctx as *mut nginx_sys::ngx_http_conf_ctx_t;
        &mut *(*(*ctx).loc_conf.add(ngx_http_core_module.ctx_index)
            as *mut ngx_http_core_loc_conf_t)
    }
}

/// `wsgi_hide_header` / `wsgi_pass_header`: adds a (lower-cased) name to
/// the list `pick` chooses.
fn add_header_name(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    pick: fn(&mut LocConf) -> &mut Option<Vec<Vec<u8>>>,
) -> *mut c_char {
    // SAFETY: nginx passes our conf for this level as `conf`.
    let lcf = unsafe { &mut *(conf as *mut LocConf) };
    // SAFETY: directive handler context.
    let name = unsafe { ngx_bytes(&conf_args(cf)[1]) }.to_ascii_lowercase();
    pick(lcf).get_or_insert_with(Vec::new).push(name);
    CONF_OK
}

extern "C" fn set_hide_header(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || add_header_name(cf, conf, |l| &mut l.hide_headers))
}

extern "C" fn set_pass_header(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || add_header_name(cf, conf, |l| &mut l.pass_headers))
}

extern "C" fn set_ignore_headers(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: nginx passes our conf for this level as `conf`.
        let lcf = unsafe { &mut *(conf as *mut LocConf) };
        if lcf.ignore_headers.is_some() {
            return DUPLICATE;
        }
        let mut bits = 0;
        // SAFETY: directive handler context.
        for a in unsafe { &conf_args(cf)[1..] } {
            // SAFETY: as above.
            let v = unsafe { ngx_bytes(a) };
            let bit = match v.to_ascii_lowercase().as_slice() {
                b"x-accel-redirect" => IGNORE_XA_REDIRECT,
                b"x-accel-limit-rate" => IGNORE_XA_LIMIT_RATE,
                b"x-accel-buffering" => IGNORE_XA_BUFFERING,
                b"x-accel-charset" => IGNORE_XA_CHARSET,
                b"x-accel-expires" => IGNORE_XA_EXPIRES,
                b"expires" | b"cache-control" | b"set-cookie" | b"vary" => IGNORE_CACHE_HEADERS,
                _ => conf_err!(
                    cf,
                    "invalid value \"{}\" in \"wsgi_ignore_headers\" directive",
                    lossy(v)
                ),
            };
            bits |= bit;
        }
        lcf.ignore_headers = Some(bits);
        CONF_OK
    })
}

type SetFn = unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

/// One directive. Names are C strings: nginx compares them with strcmp.
const fn command(
    name: &'static core::ffi::CStr,
    type_: u32,
    set: SetFn,
    conf: usize,
) -> ngx_command_t {
    ngx_command_t {
        name: ngx_str_t {
            len: name.count_bytes(),
            data: name.as_ptr() as *mut u8,
        },
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf: conf as ngx_uint_t,
        offset: 0,
        post: ptr::null_mut(),
    }
}

const MAIN: u32 = NGX_HTTP_MAIN_CONF;
const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;
const MAIN_OFF: usize = NGX_HTTP_MAIN_CONF_OFFSET;
const LOC_OFF: usize = NGX_HTTP_LOC_CONF_OFFSET;

/// The directive table nginx reads (`ngx_module_t.commands`).
pub static mut COMMANDS: [ngx_command_t; 23] = [
    command(
        c"wsgi_pass",
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        set_pass,
        LOC_OFF,
    ),
    command(
        c"wsgi_python_path",
        MAIN | NGX_CONF_1MORE,
        set_python_path,
        MAIN_OFF,
    ),
    command(
        c"wsgi_python_home",
        MAIN | NGX_CONF_TAKE1,
        set_python_home,
        MAIN_OFF,
    ),
    command(
        c"wsgi_threads",
        MAIN | NGX_CONF_TAKE1,
        set_threads,
        MAIN_OFF,
    ),
    command(
        c"wsgi_queue_size",
        MAIN | NGX_CONF_TAKE1,
        set_queue_size,
        MAIN_OFF,
    ),
    command(
        c"wsgi_queue_timeout",
        MAIN | NGX_CONF_TAKE1,
        set_queue_timeout,
        MAIN_OFF,
    ),
    command(
        c"wsgi_max_requests",
        MAIN | NGX_CONF_TAKE12,
        set_max_requests,
        MAIN_OFF,
    ),
    command(
        c"wsgi_import_check",
        MAIN | NGX_CONF_FLAG,
        set_import_check,
        MAIN_OFF,
    ),
    command(
        c"wsgi_thread_priority",
        MAIN | NGX_CONF_TAKE1,
        set_thread_priority,
        MAIN_OFF,
    ),
    command(c"wsgi_sandbox", MAIN | NGX_CONF_FLAG, set_sandbox, MAIN_OFF),
    command(
        c"wsgi_sandbox_read",
        MAIN | NGX_CONF_1MORE,
        set_sandbox_paths,
        MAIN_OFF,
    ),
    command(
        c"wsgi_sandbox_write",
        MAIN | NGX_CONF_1MORE,
        set_sandbox_paths,
        MAIN_OFF,
    ),
    command(
        c"wsgi_script_name",
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        set_script_name,
        LOC_OFF,
    ),
    command(
        c"wsgi_param",
        ANY_LEVEL | NGX_CONF_TAKE23,
        set_param,
        LOC_OFF,
    ),
    command(
        c"wsgi_buffer_size",
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_buffer_size,
        LOC_OFF,
    ),
    command(
        c"wsgi_read_timeout",
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_read_timeout,
        LOC_OFF,
    ),
    command(
        c"wsgi_request_buffering",
        ANY_LEVEL | NGX_CONF_FLAG,
        set_request_buffering,
        LOC_OFF,
    ),
    command(
        c"wsgi_intercept_errors",
        ANY_LEVEL | NGX_CONF_FLAG,
        set_intercept_errors,
        LOC_OFF,
    ),
    command(
        c"wsgi_status",
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        set_status,
        LOC_OFF,
    ),
    command(
        c"wsgi_hide_header",
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_hide_header,
        LOC_OFF,
    ),
    command(
        c"wsgi_pass_header",
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_pass_header,
        LOC_OFF,
    ),
    command(
        c"wsgi_ignore_headers",
        ANY_LEVEL | NGX_CONF_1MORE,
        set_ignore_headers,
        LOC_OFF,
    ),
    ngx_command_t::empty(),
];

#[cfg(test)]
mod tests {
    use super::check_python_home;
    use std::fs;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ngx-wsgi-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn python_home_must_match_the_embedded_python() {
        let d = scratch("homes");
        let s = |p: &std::path::Path| p.to_str().unwrap().to_string();

        let missing = d.join("missing");
        assert_eq!(
            check_python_home(&s(&missing), "3.11", "python3.11"),
            Err("is not a directory".to_string())
        );

        let venv = d.join("venv");
        fs::create_dir(&venv).unwrap();
        fs::write(
            venv.join("pyvenv.cfg"),
            "home = /usr/bin\nversion = 3.11.2\n",
        )
        .unwrap();
        assert_eq!(check_python_home(&s(&venv), "3.11", "python3.11"), Ok(()));
        let err = check_python_home(&s(&venv), "3.1", "python3.1").unwrap_err();
        assert!(err.contains("virtualenv of Python 3.11.2"), "{err}");

        let uv = d.join("uv");
        fs::create_dir(&uv).unwrap();
        fs::write(uv.join("pyvenv.cfg"), "version_info = 3.12.1\n").unwrap();
        let err = check_python_home(&s(&uv), "3.11", "python3.11").unwrap_err();
        assert!(err.contains("virtualenv of Python 3.12.1, but this module embeds Python 3.11"));

        let prefix = d.join("prefix");
        fs::create_dir_all(prefix.join("lib/python3.11")).unwrap();
        assert_eq!(check_python_home(&s(&prefix), "3.11", "python3.11"), Ok(()));
        let err = check_python_home(&s(&prefix), "3.12", "python3.12").unwrap_err();
        assert!(err.contains("nor a Python 3.12 prefix"), "{err}");

        // a free-threaded build: lib/python3.14t, in a prefix and a venv
        let ft = d.join("ft");
        fs::create_dir_all(ft.join("lib/python3.14t")).unwrap();
        assert_eq!(check_python_home(&s(&ft), "3.14", "python3.14t"), Ok(()));
        let err = check_python_home(&s(&ft), "3.14", "python3.14").unwrap_err();
        assert!(err.contains("(no lib/python3.14)"), "{err}");
        let ft_venv = d.join("ft-venv");
        fs::create_dir_all(ft_venv.join("lib/python3.14t/site-packages")).unwrap();
        fs::write(ft_venv.join("pyvenv.cfg"), "version = 3.14.7\n").unwrap();
        assert_eq!(
            check_python_home(&s(&ft_venv), "3.14", "python3.14t"),
            Ok(())
        );
        let err = check_python_home(&s(&ft_venv), "3.14", "python3.14").unwrap_err();
        assert!(err.contains("another build of Python 3.14"), "{err}");
        assert!(err.contains("embeds a GIL build"), "{err}");
        let gil_venv = d.join("gil-venv");
        fs::create_dir_all(gil_venv.join("lib/python3.14/site-packages")).unwrap();
        fs::write(gil_venv.join("pyvenv.cfg"), "version = 3.14.7\n").unwrap();
        let err = check_python_home(&s(&gil_venv), "3.14", "python3.14t").unwrap_err();
        assert!(err.contains("embeds a free-threaded build"), "{err}");
        assert_eq!(
            check_python_home(&s(&gil_venv), "3.14", "python3.14"),
            Ok(())
        );

        fs::remove_dir_all(&d).unwrap();
    }
}

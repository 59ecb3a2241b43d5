//! The `wsgi_*` directive handlers nginx's parser calls (`set_*`), the
//! argument parsers they share, the location merge, and the guards that
//! keep a panic in any of them from unwinding into nginx.

use core::ffi::{c_char, c_void};

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_http_core_loc_conf_t, ngx_http_core_module, ngx_http_handler_pt,
    ngx_pcalloc, ngx_str_t, NGX_LOG_EMERG, NGX_OK,
};
use ngx::http::{HttpModuleMainConf, Merge};
use ngx::ngx_conf_log_error;

use super::python_home::{check_python_home, embedded_python_version, stdlib_dir_name};
use super::{
    LocConf, MainConf, Param, IGNORE_CACHE_HEADERS, IGNORE_XA_BUFFERING, IGNORE_XA_CHARSET,
    IGNORE_XA_EXPIRES, IGNORE_XA_LIMIT_RATE, IGNORE_XA_REDIRECT,
};
use crate::ffi::fields::core_loc_conf;
use crate::ffi::{conf_args, conf_words, ngx_bytes, parse_msec, parse_size, CONF_ERROR, CONF_OK};
use crate::pool::ThreadPriority;
use crate::target::AppTarget;
use crate::HttpWsgiModule;

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
        // SAFETY: nginx passes the parent's location conf, not `conf`.
        let prev = unsafe { &*(prev as *const LocConf) };
        // SAFETY: nginx passes this location's conf, ours alone meanwhile.
        let conf = unsafe { &mut *(conf as *mut LocConf) };
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
            conf.handler = prev.handler;
            if clcf.handler.is_none() {
                clcf.handler = prev.handler;
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
                crate::log::panic_message(payload.as_ref())
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
            crate::log::panic_message(payload.as_ref()),
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
pub unsafe fn main_conf<'a>(cf: *mut ngx_conf_t) -> &'a mut MainConf {
    // SAFETY: the http block created our main conf before any directive in it.
    HttpWsgiModule::main_conf_mut(unsafe { &*cf }).expect("wsgi main conf")
}

pub extern "C" fn set_python_path(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: called by nginx's parser with a valid cf.
        let args = unsafe { conf_words(cf) };
        // SAFETY: as above, inside the http block.
        let mcf = unsafe { main_conf(cf) };
        for &dir in &args[1..] {
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

pub extern "C" fn set_python_home(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: called by nginx's parser with a valid cf.
        let args = unsafe { conf_words(cf) };
        // SAFETY: as above, inside the http block.
        let mcf = unsafe { main_conf(cf) };
        if mcf.python_home.is_some() {
            return DUPLICATE;
        }
        let dir = args[1];
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

/// Parses a positive integer argument, naming the directive on failure.
///
/// # Safety
/// `cf` is the configuration passed to a directive handler.
unsafe fn positive_arg(cf: *mut ngx_conf_t, max: usize) -> Result<usize, ()> {
    // SAFETY: called from a directive handler.
    let args = unsafe { conf_words(cf) };
    let (name, value) = (args[0], args[1]);
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
    let args = unsafe { conf_words(cf) };
    let (name, value) = (args[0], args[1]);
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
    let args = unsafe { conf_words(cf) };
    let name = lossy(args[0]);
    let number = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    let value = args[1];
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
    if let Some(&arg) = args.get(2) {
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
    let args = unsafe { conf_words(cf) };
    let (name, value) = (args[0], args[1]);
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
        pub extern "C" fn $fn_name(
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
        pub extern "C" fn $fn_name(
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
one_value_directive!(set_thread_priority, main, thread_priority, priority_arg);
one_value_directive!(set_nginx_first, main, nginx_first, flag_arg);

/// `normal`, `low` or `idle` of `wsgi_thread_priority`.
///
/// # Safety
/// `cf` is the configuration passed to a directive handler.
unsafe fn priority_arg(cf: *mut ngx_conf_t) -> Result<ThreadPriority, ()> {
    // SAFETY: directive handler context; arguments live in the conf pool.
    let value = unsafe { conf_words(cf) }[1];
    match value {
        b"normal" => Ok(ThreadPriority::Normal),
        b"low" => Ok(ThreadPriority::Low),
        b"idle" => Ok(ThreadPriority::Idle),
        _ => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid value \"{}\" in \"wsgi_thread_priority\" directive, it must be \"normal\", \"low\" or \"idle\"",
                lossy(value)
            );
            Err(())
        }
    }
}

/// `wsgi_sandbox_read PATH...` and `wsgi_sandbox_write PATH...`: absolute
/// paths, added to the directive's list (repeatable).
pub extern "C" fn set_sandbox_paths(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: called by nginx's parser with a valid cf.
        let args = unsafe { conf_words(cf) };
        // SAFETY: as above, inside the http block.
        let mcf = unsafe { main_conf(cf) };
        let name = args[0];
        let write = name == b"wsgi_sandbox_write";
        for &path in &args[1..] {
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

pub extern "C" fn set_pass(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: nginx passes our location conf as `conf` for LOC_CONF_OFFSET.
        let lcf = unsafe { &mut *(conf as *mut LocConf) };
        if lcf.app.is_some() {
            return DUPLICATE;
        }
        // SAFETY: directive handler context; arguments live in the conf pool.
        let spec = unsafe { conf_words(cf) }[1];
        // SAFETY: as above, inside the http block.
        let mcf = unsafe { main_conf(cf) };
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
        // SAFETY: nginx passes the directive's table entry.
        let handler = unsafe { posted_handler(cmd) };
        lcf.handler = handler;
        clcf.handler = handler;
        // As with proxy_pass: "/app" redirects to "/app/" for "location /app/".
        // SAFETY: the location name lives in the conf pool.
        if unsafe { ngx_bytes(&clcf.name) }.ends_with(b"/") {
            // SAFETY: the location's own conf, being configured on this thread.
            unsafe { core_loc_conf::set_auto_redirect(clcf, 1) };
        }
        CONF_OK
    })
}

pub extern "C" fn set_script_name(
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
        let prefix = unsafe { conf_words(cf) }[1];
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

pub extern "C" fn set_param(
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
        let words = unsafe { conf_words(cf) };
        let name = words[1];
        if name.is_empty() {
            conf_err!(cf, "empty name in \"wsgi_param\" directive");
        }
        let if_not_empty = match words.get(3) {
            None => false,
            Some(&a) if a == b"if_not_empty" => true,
            Some(&a) => conf_err!(
                cf,
                "invalid parameter \"{}\" in \"wsgi_param\" directive",
                lossy(a)
            ),
        };
        // SAFETY: as above.
        let pool = unsafe { (*cf).pool };
        // SAFETY: the conf's live pool; zeroed as nginx's compile API expects.
        let cv = unsafe { ngx_pcalloc(pool, core::mem::size_of::<ngx_http_complex_value_t>()) }
            as *mut ngx_http_complex_value_t;
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

pub extern "C" fn set_buffer_size(
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
        let value = unsafe { conf_words(cf) }[1];
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

pub extern "C" fn set_status(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || {
        // SAFETY: the core module's location conf exists in every location.
        let clcf = unsafe { core_loc_conf(cf) };
        // SAFETY: nginx passes the directive's table entry.
        clcf.handler = unsafe { posted_handler(cmd) };
        CONF_OK
    })
}

/// The content handler a directive installs, from its table entry's
/// `post` (module.rs): this layer does not name request-time code.
///
/// # Safety
/// `cmd` is the table entry of a directive whose `post` points at an
/// `ngx_http_handler_pt` (or is NULL).
unsafe fn posted_handler(cmd: *mut ngx_command_t) -> ngx_http_handler_pt {
    // SAFETY: the caller's promise; the table is a static.
    let post = unsafe { (*cmd).post }.cast::<ngx_http_handler_pt>();
    if post.is_null() {
        None
    } else {
        // SAFETY: the caller's promise; what `post` points at is a static.
        unsafe { *post }
    }
}

/// The core module's conf for the location being parsed.
///
/// # Safety
/// `cf` is the configuration passed to a location-level directive handler (or a location merge).
unsafe fn core_loc_conf<'a>(cf: *mut ngx_conf_t) -> &'a mut ngx_http_core_loc_conf_t {
    // SAFETY: the caller's promise: a live cf.
    let ctx = unsafe { (*cf).ctx } as *mut nginx_sys::ngx_http_conf_ctx_t;
    // SAFETY: in a location (or its merge) cf's context is an HTTP one.
    let loc_conf = unsafe { (*ctx).loc_conf };
    // SAFETY: a read by value; nginx numbers the HTTP modules before any
    // configuration is parsed.
    let index = unsafe { ngx_http_core_module.ctx_index };
    // SAFETY: loc_conf has a slot for every HTTP module.
    let slot = unsafe { loc_conf.add(index) };
    // SAFETY: the core module's slot, filled as the location was created.
    let conf = unsafe { *slot } as *mut ngx_http_core_loc_conf_t;
    // SAFETY: the location's core conf, in the conf pool, changed only by
    // this (nginx's) thread's parsing.
    unsafe { &mut *conf }
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
    let name = unsafe { conf_words(cf) }[1].to_ascii_lowercase();
    pick(lcf).get_or_insert_with(Vec::new).push(name);
    CONF_OK
}

pub extern "C" fn set_hide_header(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || add_header_name(cf, conf, |l| &mut l.hide_headers))
}

pub extern "C" fn set_pass_header(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guard(cf, || add_header_name(cf, conf, |l| &mut l.pass_headers))
}

pub extern "C" fn set_ignore_headers(
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
        let args = unsafe { conf_words(cf) };
        for &v in &args[1..] {
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

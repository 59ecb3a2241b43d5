//! nginx thread: logging and the guard of every entry point.
//!
//! * [`guard`] runs the body of an entry point nginx calls (handlers,
//!   timers, hooks) and turns a panic into an `alert` line instead of an
//!   unwind into nginx's C code; [`install_panic_hook`] keeps the panic's
//!   place for that line.
//! * [`log_lines`] writes long, multi-line texts (an app's traceback) as
//!   entries nginx does not truncate.
//! * The debug trace of a request's hand-off (`wsgi_trace!`), one line per
//!   step, like nginx's own thread pool logs its tasks. Needs nginx built
//!   `--with-debug` (`scripts/build --debug`) and `error_log … debug`; in any
//!   other build the lines are compiled out (`ngx::log::DEBUG` is false).
//!
//! Steps of job #N: queued, started on thread T (reported by the pool
//! thread), status and headers back, replies taken on each wake-up, paused
//! for backpressure, resumed, client gone, iterable closed (pool thread),
//! finalized with its rc.

use core::cell::{Cell, RefCell};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use nginx_sys::{ngx_log_t, NGX_LOG_ALERT, NGX_LOG_DEBUG_HTTP};
use ngx::ngx_log_error;

/// `wsgi: …` at debug level (`NGX_LOG_DEBUG_HTTP`) on `log`.
macro_rules! wsgi_debug {
    ($log:expr, $($arg:tt)+) => {
        ngx::ngx_log_debug!(
            mask: ngx::log::DebugMask::Http,
            $log,
            "wsgi: {}",
            format_args!($($arg)+)
        );
    };
}

/// `wsgi: …, request: "GET / HTTP/1.1"` at debug level on the log of
/// request `$r` (nginx adds no request context to debug lines itself; the
/// `*N` connection number is there).
macro_rules! wsgi_trace {
    ($r:expr, $($arg:tt)+) => {{
        let r: *mut nginx_sys::ngx_http_request_t = $r;
        // SAFETY: a live request (the caller is one of its handlers).
        #[allow(unused_unsafe)]
        let log = unsafe { $crate::ffi::request_log(r) };
        ngx::ngx_log_debug!(
            mask: ngx::log::DebugMask::Http,
            log,
            "wsgi: {}, request: \"{}\"",
            format_args!($($arg)+),
            $crate::log::RequestLine(r)
        );
    }};
}

/// Displays a request's request line (as nginx's log context does).
pub struct RequestLine(pub *mut nginx_sys::ngx_http_request_t);

impl core::fmt::Display for RequestLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // SAFETY: a live request.
        let line = unsafe { (*self.0).request_line };
        // SAFETY: the request line lives in the request's pool.
        let line = unsafe { crate::ffi::ngx_bytes(&line) };
        f.write_str(&String::from_utf8_lossy(line))
    }
}

/// Whether `log` takes the trace: for the pool thread, which reports its
/// steps only when asked to (`Job::trace`).
pub fn enabled(log: *const ngx_log_t) -> bool {
    // SAFETY: a live log (a request's connection log).
    ngx::log::DEBUG && unsafe { (*log).log_level } & NGX_LOG_DEBUG_HTTP as usize != 0
}

/// A panic's message (`panic!`'s `&str` or formatted `String`), for the
/// log lines of the guards around every entry point nginx calls.
pub fn panic_message(payload: &(dyn core::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// For entry points without a request (the wake-up eventfd, the deferral
/// timer, the status page): a panic is logged at `alert` instead of
/// unwinding into nginx. Returns `None` if `f` panicked.
pub fn guard<T>(log: *mut ngx_log_t, what: &'static str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(payload) => {
            log_panic(log, what, payload.as_ref());
            None
        }
    }
}

thread_local! {
    /// The last panic's message and place on this thread (see
    /// [`install_panic_hook`]).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    static NGINX_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Called once on nginx's thread in each worker: a panic there is recorded
/// for [`crate::request::enter`] and [`guard`] to log through nginx's log (with the request's
/// context) instead of Rust's default hook printing to stderr; other
/// threads keep the default hook.
pub fn install_panic_hook() {
    NGINX_THREAD.with(|t| t.set(true));
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if NGINX_THREAD.with(Cell::get) {
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let text = format!("{}{place}", panic_message(info.payload()));
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
        } else {
            default(info);
        }
    }));
}

pub fn log_panic(log: *mut ngx_log_t, what: &str, payload: &(dyn Any + Send)) {
    let text = LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| panic_message(payload).to_string());
    ngx_log_error!(
        NGX_LOG_ALERT,
        log,
        "wsgi: panic in {}: {} while handling request",
        what,
        text
    );
}

/// Writes a possibly long, multi-line text as log entries nginx will not
/// truncate (each entry stays under nginx's error-line limit).
pub fn log_lines(log: *mut ngx_log_t, level: usize, text: &str) {
    const MAX: usize = 1800;
    let mut chunk = String::new();
    for line in text.trim_end().split('\n') {
        if !chunk.is_empty() && chunk.len() + line.len() + 1 > MAX {
            ngx_log_error!(level, log, "{}", chunk);
            chunk.clear();
        }
        if !chunk.is_empty() {
            chunk.push('\n');
        }
        let mut l = line;
        while l.len() > MAX {
            let mut cut = MAX;
            while !l.is_char_boundary(cut) {
                cut -= 1;
            }
            ngx_log_error!(level, log, "{}", &l[..cut]);
            l = &l[cut..];
        }
        chunk.push_str(l);
    }
    if !chunk.is_empty() {
        ngx_log_error!(level, log, "{}", chunk);
    }
}

/// Writes `nginx: TEXT` to stderr as nginx's own `nginx -t` lines are
/// (`ngx_log_stderr`), unless nginx runs quiet (`-q`).
pub fn log_stderr(text: &str) {
    // SAFETY: a plain read of nginx's flag, set from the command line.
    if unsafe { nginx_sys::ngx_quiet_mode } != 0 {
        return;
    }
    let Ok(text) = std::ffi::CString::new(text) else {
        return;
    };
    // SAFETY: "%s" takes one NUL-terminated string, which `text` is, alive
    // for the call.
    unsafe { nginx_sys::ngx_log_stderr(0, c"%s".as_ptr(), text.as_ptr()) };
}

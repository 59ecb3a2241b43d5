//! nginx thread: the debug trace of a request's hand-off, one line per step,
//! like nginx's own thread pool logs its tasks. Needs nginx built
//! `--with-debug` (`scripts/build --debug`) and `error_log … debug`; in any
//! other build the lines are compiled out (`ngx::log::DEBUG` is false).
//!
//! Steps of job #N: queued, started on thread T (reported by the pool
//! thread), status and headers back, replies taken on each wake-up, paused
//! for backpressure, resumed, client gone, iterable closed (pool thread),
//! finalized with its rc.

use nginx_sys::{ngx_log_t, NGX_LOG_DEBUG_HTTP};

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
        let log = unsafe { (*(*r).connection).log };
        ngx::ngx_log_debug!(
            mask: ngx::log::DebugMask::Http,
            log,
            "wsgi: {}, request: \"{}\"",
            format_args!($($arg)+),
            $crate::trace::RequestLine(r)
        );
    }};
}

/// Displays a request's request line (as nginx's log context does).
pub struct RequestLine(pub *mut nginx_sys::ngx_http_request_t);

impl core::fmt::Display for RequestLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // SAFETY: a live request; its request line lives in its pool.
        let line = unsafe { crate::util::ngx_bytes(&(*self.0).request_line) };
        f.write_str(&String::from_utf8_lossy(line))
    }
}

/// Whether `log` takes the trace: for the pool thread, which reports its
/// steps only when asked to (`Job::trace`).
pub fn enabled(log: *const ngx_log_t) -> bool {
    // SAFETY: a live log (a request's connection log).
    ngx::log::DEBUG && unsafe { (*log).log_level } & NGX_LOG_DEBUG_HTTP as usize != 0
}

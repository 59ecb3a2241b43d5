//! nginx thread: `wsgi_status` — this worker's pool and counters as JSON,
//! or Prometheus text with `?format=prometheus`. Counters are atomics
//! updated without locks on the request path; a request reaches one worker,
//! so each scrape shows the worker that answered it (`pid`).

use core::ptr;
use std::sync::atomic::Ordering;

use nginx_sys::{
    ngx_create_temp_buf, ngx_http_discard_request_body, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_send_header, ngx_int_t, ngx_str_t, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_OK,
};

use crate::ffi::fields::{buf, req};
use crate::ffi::ngx_bytes;
use crate::runtime;

/// A snapshot of one worker's counters.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub pid: u32,
    pub threads: usize,
    pub threads_alive: usize,
    pub busy: usize,
    pub queued: usize,
    pub in_flight: usize,
    pub requests: u64,
    pub responses: u64,
    pub rejected_503: u64,
    pub timeouts_504: u64,
    pub app_errors: u64,
    pub client_aborts: u64,
    pub bytes_out: u64,
    /// Times pool threads woke nginx's event loop (eventfd writes).
    pub wakeups: u64,
    /// The worker's Python runs with the GIL (always true but on a
    /// free-threaded build that no import has turned it on in).
    pub gil: bool,
}

impl Snapshot {
    pub fn idle(&self) -> usize {
        self.threads_alive.saturating_sub(self.busy)
    }

    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"pid\":{},\"threads\":{{\"configured\":{},\"alive\":{},\"busy\":{},\"idle\":{}}},",
                "\"queue\":{},\"in_flight\":{},\"requests\":{},\"responses\":{},",
                "\"rejected_503\":{},\"timeouts_504\":{},\"app_errors\":{},",
                "\"client_aborts\":{},\"bytes_out\":{},\"wakeups\":{},\"gil\":{}}}\n"
            ),
            self.pid,
            self.threads,
            self.threads_alive,
            self.busy,
            self.idle(),
            self.queued,
            self.in_flight,
            self.requests,
            self.responses,
            self.rejected_503,
            self.timeouts_504,
            self.app_errors,
            self.client_aborts,
            self.bytes_out,
            self.wakeups,
            self.gil
        )
    }

    pub fn to_prometheus(&self) -> String {
        let pid = self.pid;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP wsgi_{name} {help}\n# TYPE wsgi_{name} {kind}\nwsgi_{name}{{pid=\"{pid}\"}} {value}\n"
            ));
        };
        metric(
            "threads",
            "gauge",
            "Pool threads configured per worker.",
            self.threads.to_string(),
        );
        metric(
            "threads_busy",
            "gauge",
            "Pool threads running an application.",
            self.busy.to_string(),
        );
        metric(
            "threads_idle",
            "gauge",
            "Pool threads waiting for work.",
            self.idle().to_string(),
        );
        metric(
            "queue_length",
            "gauge",
            "Requests waiting for a pool thread.",
            self.queued.to_string(),
        );
        metric(
            "requests_total",
            "counter",
            "Requests handed to the pool.",
            self.requests.to_string(),
        );
        metric(
            "responses_total",
            "counter",
            "Requests finished.",
            self.responses.to_string(),
        );
        metric(
            "rejected_total",
            "counter",
            "Requests answered 503 (queue full or queue timeout).",
            self.rejected_503.to_string(),
        );
        metric(
            "timeouts_total",
            "counter",
            "Requests that hit wsgi_read_timeout (504 or closed).",
            self.timeouts_504.to_string(),
        );
        metric(
            "app_errors_total",
            "counter",
            "Requests where the application raised or broke the protocol.",
            self.app_errors.to_string(),
        );
        metric(
            "client_aborts_total",
            "counter",
            "Requests whose client went away first.",
            self.client_aborts.to_string(),
        );
        metric(
            "bytes_out_total",
            "counter",
            "Response body bytes handed to nginx.",
            self.bytes_out.to_string(),
        );
        metric(
            "wakeups_total",
            "counter",
            "Times pool threads woke the worker's event loop (eventfd writes).",
            self.wakeups.to_string(),
        );
        metric(
            "gil_enabled",
            "gauge",
            "1 if the worker's Python runs with the GIL (one thread at a time).",
            u8::from(self.gil).to_string(),
        );
        out
    }
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot {
        pid: std::process::id(),
        in_flight: runtime::in_flight(),
        ..Default::default()
    };
    if let Some(rt) = runtime::runtime() {
        let c = &rt.hub.counters;
        s.threads = rt.threads;
        s.threads_alive = rt.pool.threads_alive();
        s.busy = c.busy_threads.load(Ordering::Relaxed);
        s.queued = rt.pool.queue_len();
        s.requests = c.requests.load(Ordering::Relaxed);
        s.responses = c.responses.load(Ordering::Relaxed);
        s.rejected_503 = c.rejected_503.load(Ordering::Relaxed);
        s.timeouts_504 = c.timeouts_504.load(Ordering::Relaxed);
        s.app_errors = c.app_errors.load(Ordering::Relaxed);
        s.client_aborts = c.client_aborts.load(Ordering::Relaxed);
        s.bytes_out = c.bytes_out.load(Ordering::Relaxed);
        s.wakeups = c.wakeups.load(Ordering::Relaxed);
        s.gil = rt.hub.gil.load(Ordering::Relaxed);
    }
    s
}

fn wants_prometheus(args: &[u8]) -> bool {
    args.split(|&c| c == b'&')
        .any(|a| a == b"format=prometheus")
}

/// The content handler installed by `wsgi_status`.
pub extern "C" fn status_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let log = unsafe { crate::ffi::request_log(r) };
    crate::log::guard(log, "status handler", || {
        #[cfg(feature = "panic-inject")]
        crate::inject::maybe_panic(r, "status handler");
        // SAFETY: as above.
        unsafe { status_response(r) }
    })
    .unwrap_or(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t)
}

/// The status page's response.
///
/// # Safety
/// nginx thread; `r` is the live request of a content handler.
unsafe fn status_response(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: the caller's promise: r is live (a content handler's request).
    let method = unsafe { (*r).method } as u32;
    if method & (NGX_HTTP_GET | NGX_HTTP_HEAD) == 0 {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    // SAFETY: as above; nginx thread.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    let snap = snapshot();
    // SAFETY: as above.
    let args = unsafe { (*r).args };
    // SAFETY: the arguments live in the request's pool.
    let (body, ctype) = if wants_prometheus(unsafe { ngx_bytes(&args) }) {
        (snap.to_prometheus(), "text/plain; version=0.0.4")
    } else {
        (snap.to_json(), "application/json")
    };
    // SAFETY: as above; the header is not sent yet.
    unsafe { send_simple(r, ctype, body.as_bytes()) }
}

/// Sends a small complete response from memory.
///
/// # Safety
/// nginx thread; `r` is a live request whose header is not sent yet.
unsafe fn send_simple(r: *mut ngx_http_request_t, ctype: &'static str, body: &[u8]) -> ngx_int_t {
    // SAFETY: the caller's promise: r is live; nginx thread. The reference
    // ends before nginx is called.
    let headers = unsafe { &mut (*r).headers_out };
    headers.status = 200;
    headers.content_length_n = body.len() as i64;
    headers.content_type = ngx_str_t {
        len: ctype.len(),
        data: ctype.as_ptr() as *mut u8,
    };
    headers.content_type_len = ctype.len();
    headers.content_type_lowcase = ptr::null_mut();
    // SAFETY: as above.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: as above.
    if unsafe { req::header_only(r) } != 0 {
        return rc;
    }
    // SAFETY: as above.
    let pool = unsafe { (*r).pool };
    // SAFETY: as above.
    let main = unsafe { (*r).main };
    // SAFETY: the request's live pool.
    let b = unsafe { ngx_create_temp_buf(pool, body.len().max(1)) };
    if b.is_null() {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    // SAFETY: a fresh buffer of ours; the reference ends before nginx's
    // accessors below write its flags.
    let bref = unsafe { &mut *b };
    // SAFETY: `pos` has room for `body.len()` bytes (or more), in fresh pool
    // memory that `body` does not overlap.
    unsafe { ptr::copy_nonoverlapping(body.as_ptr(), bref.pos, body.len()) };
    // SAFETY: the end of the bytes just written, inside the buffer's memory.
    bref.last = unsafe { bref.pos.add(body.len()) };
    // SAFETY: `b` is our live buffer; nginx thread.
    unsafe { buf::set_last_buf(b, if r == main { 1 } else { 0 }) };
    // SAFETY: as above.
    unsafe { buf::set_last_in_chain(b, 1) };
    let mut out = nginx_sys::ngx_chain_t {
        buf: b,
        next: ptr::null_mut(),
    };
    // SAFETY: r is live and its header sent; `out` lives through the call.
    unsafe { ngx_http_output_filter(r, &mut out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_counter() {
        let s = Snapshot {
            pid: 7,
            threads: 4,
            threads_alive: 4,
            busy: 1,
            requests: 10,
            responses: 9,
            ..Default::default()
        };
        let j = s.to_json();
        assert!(j.contains("\"idle\":3"), "{j}");
        assert!(j.contains("\"requests\":10"), "{j}");
        assert!(j.contains("\"rejected_503\":0"), "{j}");
        assert!(j.starts_with("{\"pid\":7,"), "{j}");
        assert!(j.ends_with(",\"gil\":false}\n"), "{j}");
    }

    #[test]
    fn prometheus_lines() {
        let s = Snapshot {
            pid: 42,
            timeouts_504: 3,
            ..Default::default()
        };
        let p = s.to_prometheus();
        assert!(p.contains("# TYPE wsgi_timeouts_total counter\n"));
        assert!(p.contains("wsgi_timeouts_total{pid=\"42\"} 3\n"));
    }

    #[test]
    fn format_argument() {
        assert!(wants_prometheus(b"format=prometheus"));
        assert!(wants_prometheus(b"x=1&format=prometheus"));
        assert!(!wants_prometheus(b"format=json"));
        assert!(!wants_prometheus(b""));
    }
}

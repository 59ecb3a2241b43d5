//! nginx thread: the content handler. Reads the request body with nginx's
//! own machinery, copies what the app needs into owned data, queues a job
//! for the pool, and watches the request (client gone, timeouts) until the
//! reply is complete. Never takes the GIL.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nginx_sys::{
    ngx_connection_local_sockaddr, ngx_current_msec, ngx_event_t, ngx_http_complex_value,
    ngx_http_core_module, ngx_http_core_srv_conf_t, ngx_http_finalize_request,
    ngx_http_read_client_request_body, ngx_http_request_t, ngx_inet_get_port, ngx_int_t,
    ngx_list_push, ngx_msec_t, ngx_str_t, NGX_DECLINED, NGX_DONE, NGX_ERROR,
    NGX_HTTP_GATEWAY_TIME_OUT, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_SERVICE_UNAVAILABLE,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR, NGX_OK,
};
use ngx::http::HttpModuleLocationConf;
use ngx::ngx_log_error;

use crate::conf::{LocConf, Param};
use crate::ffi::fields::{self, event, headers_in, req};
use crate::ffi::{self, for_each_header, ngx_bytes};
use crate::message::{Body, BodySegment, BodyStream, Exchange, Job, Outcome, RequestEnv};
use crate::request::{self, NewRequest, RequestCtx};
use crate::{app_stack, body, hooks, notify, output, runtime, HttpWsgiModule};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn loc_conf<'a>(r: *mut ngx_http_request_t) -> &'a LocConf {
    // SAFETY: a request always has location confs for every module.
    HttpWsgiModule::location_conf(unsafe { &*r }).expect("wsgi loc conf")
}

/// The content handler installed by `wsgi_pass`.
pub extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let log = unsafe { crate::ffi::request_log(r) };
    crate::log::guard(log, "content handler", || {
        #[cfg(feature = "panic-inject")]
        crate::inject::maybe_panic(r, "content handler");
        // SAFETY: as above.
        unsafe { start(r) }
    })
    .unwrap_or(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t)
}

/// Starts a request for the app: reads its body with nginx's machinery.
///
/// # Safety
/// nginx thread; `r` is the live request of a content handler.
unsafe fn start(r: *mut ngx_http_request_t) -> ngx_int_t {
    let lcf = loc_conf(r);
    let Some(app) = lcf.app else {
        return NGX_DECLINED as ngx_int_t;
    };
    // SAFETY: r is the live request nginx handed us.
    let log = unsafe { crate::ffi::request_log(r) };
    match runtime::runtime() {
        None => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "wsgi: Python is not running in this worker (see the errors at worker start) while handling request"
            );
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        Some(rt) if !rt.app_ready(app) => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "wsgi: application \"{}\" failed to load (see the error at worker start) while handling request",
                rt.app_name(app)
            );
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        Some(_) => {}
    }
    if lcf.request_buffering == Some(false) {
        // SAFETY: r is live; set before reading starts, as proxy does.
        unsafe { req::set_request_body_no_buffering(r, 1) };
    }
    // SAFETY: standard nginx body reading; it takes a request reference
    // that the final ngx_http_finalize_request releases.
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_ready)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    NGX_DONE as ngx_int_t
}

extern "C" fn body_ready(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls the body handler with a live request.
    let log = unsafe { crate::ffi::request_log(r) };
    let ok = crate::log::guard(log, "request body handler", || {
        #[cfg(feature = "panic-inject")]
        crate::inject::maybe_panic(r, "request body handler");
        // SAFETY: as above.
        unsafe { dispatch(r) }
    });
    if ok.is_none() {
        // SAFETY: r is live; finalizing releases the body-reading reference.
        unsafe { ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t) };
    }
}

/// Builds the job and hands it to the pool (nginx thread, body complete).
///
/// # Safety
/// nginx thread; `r` is a live request whose body nginx has read (or, unbuffered, started to).
unsafe fn dispatch(r: *mut ngx_http_request_t) {
    let lcf = loc_conf(r);
    let rt = runtime::runtime().expect("checked in start");
    let app = lcf.app.expect("checked in start");
    // SAFETY: r is live for the whole function.
    let log = unsafe { crate::ffi::request_log(r) };

    // SAFETY: the body was read completely by nginx.
    let body = match unsafe { body::collect_body(r) } {
        Ok(b) => b,
        Err(e) => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "wsgi: cannot keep the request body: {} while sending request to application",
                e
            );
            // SAFETY: r is live; releases the body-reading reference.
            unsafe { ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t) };
            return;
        }
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut body = body;
    // With no buffering the rest of the body arrives while the app runs.
    // SAFETY: r is live.
    let stream = if unsafe { req::reading_body(r) } != 0 {
        // SAFETY: as above; what was read is in `body` already.
        unsafe { body::take_body_bufs(r, None) };
        let s = Arc::new(BodyStream::new(id, lcf.buffer_size(), rt.hub.clone()));
        body.segments.push_back(BodySegment::Stream(s.clone()));
        Some(s)
    } else {
        None
    };
    // SAFETY: r is live; the env only copies from it.
    let env = unsafe { collect_env(r, lcf, &body, stream.is_some()) };

    let exchange = Arc::new(Exchange::new(id, lcf.buffer_size()));
    let new = NewRequest {
        lcf: lcf as *const LocConf,
        id,
        exchange: exchange.clone(),
        buffer_size: lcf.buffer_size(),
        read_timeout: lcf.read_timeout_ms(),
        queue_timeout: rt.queue_timeout_ms as ngx_msec_t,
        // SAFETY: ngx_current_msec is only written by this (the nginx) thread.
        now: unsafe { ngx_current_msec },
        stream,
    };
    // SAFETY: r is live and has no state of ours yet.
    let Some(events) = (unsafe { request::create(r, new) }) else {
        // SAFETY: r is live; releases the body-reading reference.
        unsafe { ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t) };
        return;
    };
    // SAFETY: the slot's fresh wake-up event; nothing else refers to it yet.
    let wake = unsafe { &mut *events.wake };
    wake.handler = Some(output::wake_handler);
    wake.data = r.cast::<c_void>();
    wake.log = log;
    // SAFETY: as above, the slot's timer.
    let timer = unsafe { &mut *events.timer };
    timer.handler = Some(timer_handler);
    timer.data = r.cast::<c_void>();
    timer.log = log;
    notify::register(id, r, events.wake);

    let job = Job {
        id,
        app,
        env,
        body,
        exchange,
        queued_at: Instant::now(),
        trace: crate::log::enabled(log),
    };
    // SAFETY: r is live; no `enter` for it is running (its state is new).
    unsafe { request::enter(r, "request body handler", |cx| submit(cx, job)) };
}

/// Arms the request's timer and watchers and queues its job.
fn submit(cx: &mut RequestCtx, job: Job) {
    let r = cx.r();
    let rt = runtime::runtime().expect("checked in start");
    // Non-cancelable: a graceful quit waits for requests in Python.
    // SAFETY: the slot's timer, live with it (nginx thread).
    unsafe { fields::add_timer(cx.timer(), cx.queue_timeout().min(cx.read_timeout())) };
    let req = cx.req();
    req.set_read_handler(if cx.stream().is_some() {
        Some(body::read_body_handler)
    } else {
        Some(body::check_broken_connection)
    });
    req.set_write_handler(Some(output::write_handler));
    let counters = &rt.hub.counters;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    // For the pool's look at the time zone after the request.
    rt.hub.zone.set_log_offset(ffi::log_offset_minutes());
    let id = job.id;
    match rt.submit(job) {
        Ok(()) => {
            wsgi_trace!(
                r,
                "job #{} queued for the app ({} waiting, {} of {} threads busy)",
                id,
                counters.queued.load(Ordering::Relaxed),
                counters.busy_threads.load(Ordering::Relaxed),
                rt.threads
            );
            notify::job_submitted();
            // nginx may have stopped reading on a full body buffer with
            // more bytes in the socket and no event left to announce them
            // (edge-triggered): read on from the posted queue.
            let rev = req.read_event();
            // SAFETY: the live connection's read event (nginx thread).
            let idle = unsafe { event::ready(rev) } != 0 && unsafe { event::posted(rev) } == 0;
            if cx.stream().is_some() && idle {
                // SAFETY: as above; it stays valid until it runs.
                unsafe { fields::post_event(rev) };
            }
        }
        Err(waiting) => {
            counters.rejected_503.fetch_add(1, Ordering::Relaxed);
            ngx_log_error!(
                NGX_LOG_ERR,
                // SAFETY: r is live.
                unsafe { crate::ffi::request_log(r) },
                "wsgi: all {} threads are busy and the queue is full ({} waiting, wsgi_queue_size) while sending request to application",
                rt.threads,
                waiting
            );
            // SAFETY: r is live; the header list is initialised.
            unsafe { add_retry_after(r) };
            // Still one response, so that `requests == responses` once
            // nothing is in flight.
            cx.abort(NGX_HTTP_SERVICE_UNAVAILABLE as ngx_int_t);
        }
    }
}

/// `Retry-After: 1` on 503s, so well-behaved clients back off briefly.
///
/// # Safety
/// nginx thread; `r` is a live request whose response header is not sent yet.
unsafe fn add_retry_after(r: *mut ngx_http_request_t) {
    // SAFETY: the caller's promise: the live request's initialised list.
    let headers = unsafe { &raw mut (*r).headers_out.headers };
    // SAFETY: as above.
    let h = unsafe { ngx_list_push(headers) };
    // SAFETY: NULL or a fresh list entry.
    let Some(h) = (unsafe { h.cast::<nginx_sys::ngx_table_elt_t>().as_mut() }) else {
        return;
    };
    h.hash = 1;
    #[cfg(nginx1_23_0)]
    {
        h.next = ptr::null_mut();
    }
    h.key = ngx_str_t {
        len: 11,
        data: c"Retry-After".as_ptr() as *mut u8,
    };
    h.value = ngx_str_t {
        len: 1,
        data: c"1".as_ptr() as *mut u8,
    };
    h.lowcase_key = ptr::null_mut();
}

fn port_of(sa: *mut nginx_sys::sockaddr) -> u64 {
    if sa.is_null() {
        return 0;
    }
    // SAFETY: nginx sockaddrs are valid for their family.
    unsafe { ngx_inet_get_port(sa) }.into()
}

/// Copies what environ needs out of the request.
///
/// # Safety
/// nginx thread; `r` is a live request.
unsafe fn collect_env(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    body: &Body,
    streaming: bool,
) -> RequestEnv {
    // SAFETY: r is live; read only (nothing below changes it while `rq`
    // is in use: the params, which may, are evaluated after).
    let rq = unsafe { &*r };
    // SAFETY: every string read here lives in the request's or the
    // configuration's pools, longer than this call.
    let s = |v: &ngx_str_t| unsafe { ngx_bytes(v) };
    // SAFETY: a live request's connection.
    let conn = unsafe { &*rq.connection };
    // SAFETY: a plain read of the core module's index, set at start-up.
    let core = unsafe { ngx_http_core_module.ctx_index };
    // SAFETY: every request has the core module's server conf.
    let slot = unsafe { rq.srv_conf.add(core) };
    // SAFETY: as above.
    let cscf = unsafe { *slot }.cast::<ngx_http_core_srv_conf_t>();
    // SAFETY: as above, live in the configuration's pool.
    let server_conf_name = s(&unsafe { &*cscf }.server_name);
    let method = s(&rq.method_name);
    let unparsed_uri = s(&rq.unparsed_uri);
    let args = s(&rq.args);
    let uri = s(&rq.uri);
    let mut protocol = s(&rq.http_protocol);
    if protocol.is_empty() {
        protocol = b"HTTP/0.9";
    }
    let addr = s(&conn.addr_text);
    let mut server_name = server_conf_name;
    if server_name.is_empty() {
        server_name = s(&rq.headers_in.server);
    }
    if server_name.is_empty() {
        server_name = b"localhost";
    }
    let mut header_bytes = 0;
    // SAFETY: the request's initialised header list, not changed meanwhile.
    unsafe {
        for_each_header(&rq.headers_in.headers, |h| {
            header_bytes += h.key.len + h.value.len;
        })
    };
    // Everything below fits without the buffer growing (ports: 5 digits);
    // walking the headers twice costs less than growing it (callgrind).
    let mut env = RequestEnv::with_capacity(
        method.len()
            + unparsed_uri.len()
            + args.len()
            + uri.len()
            + protocol.len()
            + addr.len()
            + server_name.len()
            + 10
            + header_bytes,
    );
    env.method = env.push(method);
    env.request_uri = env.push(unparsed_uri);
    env.query_string = env.push(args);
    env.protocol = env.push(protocol);
    env.remote_addr = env.push(addr);
    env.remote_port = env.push_number(port_of(conn.sockaddr));
    let (script_name, path_info) = split_script_name(uri, lcf.script_name.as_deref());
    env.script_name = env.push(script_name);
    env.path_info = env.push(path_info);
    env.server_name = env.push(server_name);
    #[cfg(ngx_feature = "ssl")]
    {
        env.https = !conn.ssl.is_null();
    }

    let mut has_length_header = false;
    let mut declared_length: Option<u64> = None;
    let mut visit = |h: &nginx_sys::ngx_table_elt_t| {
        if h.hash == 0 {
            return; // removed by nginx
        }
        let name = s(&h.key);
        let value = s(&h.value);
        if name.eq_ignore_ascii_case(b"content-type") {
            env.content_type = Some(env.push(value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            has_length_header = true;
            declared_length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // nginx has taken the chunk framing off (HTTP/1.1 "chunked"
            // is the only coding it accepts, HTTP/2 and 3 have none):
            // wsgi.input is the decoded body, and an app that trusts
            // this header would parse chunk sizes out of it.
        } else {
            let name = env.push(name);
            let value = env.push(value);
            env.headers.push((name, value));
        }
    };
    // SAFETY: as above.
    unsafe { for_each_header(&rq.headers_in.headers, &mut visit) };
    let len = body.len();
    // SAFETY: the request's live headers.
    let chunked = unsafe { headers_in::chunked(&rq.headers_in) } != 0;
    if streaming {
        // Still arriving: only the client's own Content-Length is known.
        env.content_length = declared_length;
    } else if has_length_header || chunked || len > 0 {
        env.content_length = Some(len);
    }

    let c = rq.connection;
    // SAFETY: the live connection; nginx fills in its local address.
    let local_port =
        if unsafe { ngx_connection_local_sockaddr(c, ptr::null_mut(), 0) } == NGX_OK as ngx_int_t {
            // SAFETY: as above, now set.
            port_of(unsafe { (*c).local_sockaddr })
        } else {
            0
        };
    env.server_port = env.push_number(local_port);

    for p in lcf.params() {
        // SAFETY: r is live; the value lives in its pool.
        if let Some(v) = unsafe { eval_param(r, p) } {
            let name = env.push(&p.name);
            let value = env.push(v);
            env.params.push((name, value));
        }
    }
    env
}

/// Evaluates a `wsgi_param` value (in request pool memory); `None` if
/// empty and `if_not_empty`.
///
/// # Safety
/// nginx thread; `r` is a live request; the result lives in its pool (`'a` must not outlive it).
unsafe fn eval_param<'a>(r: *mut ngx_http_request_t, p: &Param) -> Option<&'a [u8]> {
    let mut out = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    // SAFETY: the compiled value lives in the cycle pool; r is live.
    if unsafe { ngx_http_complex_value(r, p.value, &mut out) } != NGX_OK as ngx_int_t {
        return None;
    }
    // SAFETY: the result lives in the request pool.
    let v = unsafe { ngx_bytes(&out) };
    if v.is_empty() && p.if_not_empty {
        None
    } else {
        Some(v)
    }
}

/// Splits the (decoded) URI into SCRIPT_NAME and PATH_INFO for a mount
/// prefix. The prefix matches only at a path-segment boundary.
pub fn split_script_name<'a>(uri: &'a [u8], prefix: Option<&'a [u8]>) -> (&'a [u8], &'a [u8]) {
    match prefix {
        Some(p) if !p.is_empty() => {
            if uri.starts_with(p) && (uri.len() == p.len() || uri[p.len()] == b'/') {
                (p, &uri[p.len()..])
            } else {
                // Not under the mount point: nothing to strip.
                (b"", uri)
            }
        }
        _ => (b"", uri),
    }
}

/// Queue and read timeouts, checked lazily: replies only move a timestamp,
/// and this handler re-arms itself for what remains.
extern "C" fn timer_handler(ev: *mut ngx_event_t) {
    // SAFETY: ev is the timer of a request's slot; its data is the live
    // request (the slot deletes the timer before the request goes away).
    let r = unsafe { (*ev).data }.cast::<ngx_http_request_t>();
    // SAFETY: as above.
    let c = unsafe { (*r).connection };
    // SAFETY: as above: our own event.
    unsafe { event::set_timedout(ev, 0) };
    // SAFETY: as above; nginx thread, no `enter` of this slot running.
    unsafe { request::enter_event(ev, request::SlotEvent::Timer, "timer", on_timer) };
    // SAFETY: the connection outlives its requests' handlers.
    unsafe { nginx_sys::ngx_http_run_posted_requests(c) };
}

fn on_timer(cx: &mut RequestCtx) {
    if cx.is_done() {
        return;
    }
    let r = cx.r();
    let ev = cx.timer();
    // SAFETY: only the nginx thread writes ngx_current_msec.
    let now = unsafe { ngx_current_msec };
    let log = cx.req().log();
    if !cx.exchange().started.load(Ordering::Acquire) {
        let waited = now.wrapping_sub(cx.dispatched_at());
        if waited >= cx.queue_timeout() {
            if let Some(rt) = runtime::runtime() {
                rt.hub.counters.rejected_503.fetch_add(1, Ordering::Relaxed);
            }
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "wsgi: request waited {} ms for a free thread (wsgi_queue_timeout) while sending request to application",
                waited
            );
            // SAFETY: r is live; the header list is initialised.
            unsafe { add_retry_after(r) };
            cx.abort(NGX_HTTP_SERVICE_UNAVAILABLE as ngx_int_t);
            return;
        }
        let left = (cx.queue_timeout() - waited).min(cx.read_timeout());
        // SAFETY: the slot's timer; nginx thread.
        unsafe { fields::add_timer(ev, left.max(1)) };
        return;
    }
    if cx.waiting_on_client() || cx.stream().is_some_and(|s| s.has_room()) {
        // The app waits on the client (backpressure, or a body still
        // arriving): send_timeout / client_body_timeout guard that. A
        // body paused because the app does not read it is the app's.
        // SAFETY: as above.
        unsafe { fields::add_timer(ev, cx.read_timeout()) };
        return;
    }
    let queued_ms = cx.exchange().queue_time_us.load(Ordering::Relaxed) / 1000;
    let started_at = cx.dispatched_at().wrapping_add(queued_ms as ngx_msec_t);
    let last = if cx.last_activity().wrapping_sub(started_at) as i64 > 0 {
        cx.last_activity()
    } else {
        started_at
    };
    let idle = now.wrapping_sub(last);
    if idle < cx.read_timeout() {
        // SAFETY: as above.
        unsafe { fields::add_timer(ev, (cx.read_timeout() - idle).max(1)) };
        return;
    }
    ngx_log_error!(
        NGX_LOG_ERR,
        log,
        "wsgi: application timed out after {} ms (wsgi_read_timeout) while reading response from application",
        idle
    );
    if let Some(rt) = runtime::runtime() {
        // Claimed before the interrupt is sent: the RequestTimeout the app
        // then raises cannot be counted as an app error too (the pool
        // thread's claim comes after it and fails), whatever the timing.
        if cx.exchange().claim(Outcome::TimedOut) {
            rt.hub.counters.timeouts_504.fetch_add(1, Ordering::Relaxed);
        }
        // The watchdog reports where the app was; its line gets this
        // request's context, kept past the request's end.
        // SAFETY: `log` is the live request's connection log.
        unsafe { app_stack::expect(cx.id(), log, notify::connection()) };
        rt.interrupt(cx.id(), cx.exchange().thread_ident.load(Ordering::Acquire));
    }
    // (Tests: the interrupt is sent, the request not ended yet.)
    hooks::wait_job_done(cx.id());
    let rc = if cx.head_sent() {
        NGX_ERROR as ngx_int_t
    } else {
        NGX_HTTP_GATEWAY_TIME_OUT as ngx_int_t
    };
    cx.abort(rc);
}

#[cfg(test)]
mod tests {
    use super::split_script_name;

    #[test]
    fn no_prefix_keeps_whole_path() {
        assert_eq!(split_script_name(b"/a/b", None), (&b""[..], &b"/a/b"[..]));
        assert_eq!(
            split_script_name(b"/a/b", Some(b"")),
            (&b""[..], &b"/a/b"[..])
        );
    }

    #[test]
    fn prefix_splits_at_segment_boundary() {
        assert_eq!(
            split_script_name(b"/app/x", Some(b"/app")),
            (&b"/app"[..], &b"/x"[..])
        );
        assert_eq!(
            split_script_name(b"/app", Some(b"/app")),
            (&b"/app"[..], &b""[..])
        );
        assert_eq!(
            split_script_name(b"/app/", Some(b"/app")),
            (&b"/app"[..], &b"/"[..])
        );
    }

    #[test]
    fn prefix_is_not_a_string_prefix() {
        assert_eq!(
            split_script_name(b"/application", Some(b"/app")),
            (&b""[..], &b"/application"[..])
        );
    }
}

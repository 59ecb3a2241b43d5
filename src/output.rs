//! nginx thread: turns replies from the pool into nginx's response — the
//! head (through [`crate::head`]), body buffers through the output filters,
//! files as file buffers — with backpressure: when the client cannot take more,
//! we stop taking replies, the pool thread blocks on the full exchange, and
//! the connection's write event resumes us. Never takes the GIL.

use core::ptr;
use std::os::fd::AsRawFd;

use nginx_sys::{
    ngx_buf_t, ngx_chain_get_free_buf, ngx_chain_t, ngx_chain_update_chains, ngx_current_msec,
    ngx_event_t, ngx_file_t, ngx_handle_write_event, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_run_posted_requests, ngx_int_t, ngx_pcalloc, ngx_pnalloc, NGX_AGAIN, NGX_ERROR,
    NGX_HTTP_REQUEST_TIME_OUT, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::HttpModule;
use ngx::ngx_log_error;

use crate::ffi::fields::{self, buf, connection, event};
use crate::ffi::{for_each_buf, pool_str};
use crate::message::{Chunk, FileReply};
use crate::request::{self, Held, RequestCtx, SlotEvent};
use crate::{flow, head, HttpWsgiModule};

fn buf_tag() -> nginx_sys::ngx_buf_tag_t {
    HttpWsgiModule::module() as *const _ as nginx_sys::ngx_buf_tag_t
}

/// Posted by the notifier: the pool has replies for this request.
pub extern "C" fn wake_handler(ev: *mut ngx_event_t) {
    // SAFETY: ev is the wake event of a request's slot; data is its live
    // request (the slot removes a posted wake before the request is freed).
    let r = unsafe { (*ev).data }.cast::<ngx_http_request_t>();
    // SAFETY: as above.
    let c = unsafe { (*r).connection };
    let wake = |cx: &mut RequestCtx| {
        // The app may have made room for more of the request body.
        if cx.stream().is_some() {
            crate::body::pull_body(cx);
        }
        pump(cx)
    };
    // SAFETY: as above; nginx thread, no `enter` of this slot running.
    unsafe { request::enter_event(ev, SlotEvent::Wake, "wake-up of the request", wake) };
    // SAFETY: the connection outlives its requests' handlers.
    unsafe { ngx_http_run_posted_requests(c) };
}

/// The request's write handler while we stream: the client can take more.
pub extern "C" fn write_handler(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this on its thread with a live request (from
    // ngx_http_request_handler, which runs posted requests after it).
    unsafe { request::enter(r, "write event handler", on_writable) };
}

fn on_writable(cx: &mut RequestCtx) {
    let req = cx.req();
    let r = req.as_ptr();
    let c = req.connection();
    let wev = req.write_event();
    // SAFETY: the live connection's write event; nginx thread.
    if unsafe { event::timedout(wev) } != 0 {
        ngx_log_error!(
            NGX_LOG_INFO,
            req.log(),
            "wsgi: client timed out while sending response to client"
        );
        // SAFETY: the live connection.
        unsafe { connection::set_timedout(c, 1) };
        cx.abort(NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t);
        return;
    }
    // SAFETY: as above.
    if unsafe { event::delayed(wev) } != 0 {
        // limit_rate: nginx re-arms the event itself.
        let lowat = crate::ffi::core_loc_conf(r).send_lowat;
        // SAFETY: as above.
        if unsafe { ngx_handle_write_event(wev, lowat) } != NGX_OK as ngx_int_t {
            cx.abort(NGX_ERROR as ngx_int_t);
        }
        return;
    }
    if cx.is_done() {
        return;
    }
    // SAFETY: r is live; nginx writes what it still holds of ours.
    let rc = unsafe { ngx_http_output_filter(r, ptr::null_mut()) };
    settle(cx);
    if rc == NGX_ERROR as ngx_int_t {
        cx.abort(NGX_ERROR as ngx_int_t);
        return;
    }
    if cx.has_busy() || rc == NGX_AGAIN as ngx_int_t {
        wait_for_client(cx);
        return;
    }
    // The send_timeout timer is done with; a timer the write filter just
    // armed for limit_rate (delayed) must stay, or nothing wakes us once
    // the next write is held back.
    // SAFETY: as above.
    if unsafe { event::timer_set(wev) } != 0 && unsafe { event::delayed(wev) } == 0 {
        // SAFETY: as above; its timer is set.
        unsafe { fields::del_timer(wev) };
    }
    if cx.waiting_on_client() {
        wsgi_trace!(r, "job #{} resumed: the client took what was sent", cx.id());
    }
    cx.set_waiting_on_client(false);
    // SAFETY: only the nginx thread writes ngx_current_msec.
    cx.touch(unsafe { ngx_current_msec });
    pump(cx);
}

/// Bytes handed to nginx and not yet written.
fn unsent(cx: &RequestCtx) -> usize {
    cx.held()
        // SAFETY: held buffers stay valid until removed from `held`.
        .map(|h| unsafe { buf_size(h.buf()) })
        .sum()
}

/// Bytes of buffer `b` not yet sent.
///
/// # Safety
/// `b` is a live nginx buffer.
unsafe fn buf_size(b: *const ngx_buf_t) -> usize {
    // SAFETY: the caller's promise; read as a plain value.
    let b = unsafe { &*b };
    // SAFETY: as above.
    if unsafe { buf::in_file(b) } != 0 {
        (b.file_last - b.file_pos).max(0) as usize
    } else if b.pos.is_null() {
        0
    } else {
        // SAFETY: `pos` and `last` point into the same buffer.
        unsafe { b.last.offset_from(b.pos) }.max(0) as usize
    }
}

/// Releases what nginx has finished sending and recycles its buffers.
fn settle(cx: &mut RequestCtx) {
    // SAFETY: as in `unsent`.
    let sent = flow::sent_prefix(cx.held().map(|h| unsafe { buf_size(h.buf()) }));
    cx.release_held(sent);
    let pool = request_pool(cx);
    let (free, busy) = cx.chains();
    let mut none: *mut ngx_chain_t = ptr::null_mut();
    // SAFETY: free/busy are chains of our tagged buffers in the request pool.
    unsafe { ngx_chain_update_chains(pool, free, busy, &mut none, buf_tag()) };
}

/// The request's pool.
fn request_pool(cx: &RequestCtx) -> *mut nginx_sys::ngx_pool_t {
    cx.req().pool()
}

/// A chain of our links being built, in order.
struct OutChain {
    head: *mut ngx_chain_t,
    last: *mut ngx_chain_t,
}

impl OutChain {
    fn new() -> Self {
        OutChain {
            head: ptr::null_mut(),
            last: ptr::null_mut(),
        }
    }

    fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Appends `cl`, a fresh link of ours whose `next` is NULL.
    fn push(&mut self, cl: *mut ngx_chain_t) {
        if self.head.is_null() {
            self.head = cl;
        } else {
            // SAFETY: `last` is the chain's live last link, ours.
            unsafe { (*self.last).next = cl };
        }
        self.last = cl;
    }
}

/// Moves replies from the exchange to nginx until the exchange is empty,
/// the response is complete, or the client must catch up first (the steps
/// are `flow`'s).
pub fn pump(cx: &mut RequestCtx) {
    let r = cx.r();
    loop {
        if cx.is_done() {
            return;
        }
        let unsent = unsent(cx);
        if flow::may_take(
            cx.replies_in_hand(),
            cx.waiting_on_client(),
            unsent,
            cx.buffer_size(),
        ) {
            let n = cx.take_replies();
            if n == 0 {
                return;
            }
            wsgi_trace!(r, "job #{} took {} replies", cx.id(), n);
        } else if cx.replies_in_hand() == 0 {
            return;
        }
        // SAFETY: only the nginx thread writes ngx_current_msec.
        let now = unsafe { ngx_current_msec };
        cx.touch(now);
        let first = &cx.shared().first_reply_at;
        if first.get().is_none() {
            first.set(Some(now));
        }

        let mut out = OutChain::new();
        let mut batch = 0usize;
        let mut last = false;
        while let Some(reply) = cx.next_reply() {
            let link = match flow::step(reply, cx.header_only(), cx.end_is_next()) {
                flow::Step::Head(head) => {
                    // headers go out before any body
                    if !head::send_head(cx, head) {
                        return;
                    }
                    None
                }
                flow::Step::Skip => None,
                flow::Step::Memory { data, copy } => {
                    batch += data.len();
                    // the Chunk moves into `held`, or is copied
                    let cl = if copy {
                        copied_buf(cx, data.as_slice())
                    } else {
                        memory_buf(cx, data)
                    };
                    Some(cl)
                }
                flow::Step::File(f) => {
                    batch += f.len as usize;
                    // the fd moves into `held`
                    Some(file_buf(cx, f))
                }
                flow::Step::Last => {
                    last = true;
                    break;
                }
                flow::Step::Fail { status } => {
                    if cx.head_sent() && !out.is_empty() {
                        // What the app sent before it failed goes out
                        // first, as behind proxy_pass: the client sees the
                        // truncation (a short body, no last chunk) rather
                        // than an empty reply.
                        // SAFETY: `out` is a non-empty chain of ours.
                        unsafe { flush_chain(out.head) };
                        // SAFETY: r is live; `out` holds our buffers only.
                        unsafe { ngx_http_output_filter(r, out.head) };
                    }
                    fail(cx, status);
                    return;
                }
            };
            match link {
                None => {}
                Some(Some(cl)) => out.push(cl),
                Some(None) => {
                    cx.abort(NGX_ERROR as ngx_int_t);
                    return;
                }
            }
            if flow::batch_full(batch, cx.buffer_size()) {
                break;
            }
        }

        if last && cx.header_only() {
            // HEAD, 204, 304: the header is all there is.
            cx.finish(NGX_OK as ngx_int_t);
            return;
        }
        if last {
            // marks the end of the response on our chain
            let Some(cl) = last_buf(cx) else {
                cx.abort(NGX_ERROR as ngx_int_t);
                return;
            };
            out.push(cl);
        } else if out.is_empty() {
            continue;
        } else {
            // Send what the app produced now; PEP 3333 forbids holding it.
            // SAFETY: our own fresh, non-empty chain.
            unsafe { flush_chain(out.head) };
        }

        cx.count_out(batch as u64);
        // SAFETY: r is live; `out` holds our buffers only.
        let rc = unsafe { ngx_http_output_filter(r, out.head) };
        settle(cx);
        match flow::after_write(rc, last, cx.has_busy()) {
            flow::AfterWrite::Abort => return cx.abort(NGX_ERROR as ngx_int_t),
            flow::AfterWrite::Finish(rc) => return cx.finish(rc),
            flow::AfterWrite::WaitForClient => return wait_for_client(cx),
            flow::AfterWrite::More => {}
        }
    }
}

/// Marks the last buffer of a non-empty chain of ours for flushing.
///
/// # Safety
/// `out` is a non-empty chain of live links and buffers.
unsafe fn flush_chain(out: *mut ngx_chain_t) {
    let mut last = ptr::null_mut();
    // SAFETY: the caller's promise.
    unsafe {
        for_each_buf(out, |b| {
            last = b as *mut ngx_buf_t;
            true
        })
    };
    // SAFETY: the chain's last live buffer (the chain is not empty).
    unsafe { buf::set_flush(last, 1) };
}

/// Arms the write event (with `send_timeout`) and waits for the client.
fn wait_for_client(cx: &mut RequestCtx) {
    if !cx.waiting_on_client() {
        wsgi_trace!(
            cx.r(),
            "job #{} paused for backpressure ({} bytes not yet sent)",
            cx.id(),
            unsent(cx)
        );
    }
    cx.set_waiting_on_client(true);
    let req = cx.req();
    req.set_write_handler(Some(write_handler));
    let wev = req.write_event();
    let clcf = crate::ffi::core_loc_conf(req.as_ptr());
    // SAFETY: the live connection's write event; nginx thread.
    if unsafe { event::delayed(wev) } == 0 && unsafe { event::ready(wev) } == 0 {
        // SAFETY: as above; the connection's own handler runs it.
        unsafe { fields::add_timer(wev, clcf.send_timeout) };
    }
    // SAFETY: as above.
    if unsafe { ngx_handle_write_event(wev, clcf.send_lowat) } != NGX_OK as ngx_int_t {
        cx.abort(NGX_ERROR as ngx_int_t);
    }
}

/// A clean buffer of ours (recycled from the free chain or new in the
/// request pool) in a link of its own.
fn new_buf<'b>(cx: &mut RequestCtx) -> Option<(*mut ngx_chain_t, &'b mut ngx_buf_t)> {
    let pool = request_pool(cx);
    // SAFETY: reuses our free chain or allocates from the request pool.
    let cl = unsafe { ngx_chain_get_free_buf(pool, cx.chains().0) };
    // SAFETY: NULL or a fresh link of ours.
    let link = unsafe { cl.as_mut() }?;
    link.next = ptr::null_mut();
    // SAFETY: the link's buffer, ours, not in nginx's hands any more; a
    // recycled one keeps stale fields: start from a clean one.
    unsafe { ptr::write_bytes(link.buf, 0, 1) };
    // SAFETY: as above; it lives in the request pool, as long as the
    // response.
    let b = unsafe { &mut *link.buf };
    b.tag = buf_tag();
    Some((cl, b))
}

/// A buffer over `len` bytes at `p`, which must stay valid until nginx has
/// sent them.
///
/// # Safety
/// `p..p + len` is readable memory that stays valid until nginx has sent it.
unsafe fn memory_at(cx: &mut RequestCtx, p: *mut u8, len: usize) -> Option<*mut ngx_chain_t> {
    let (cl, b) = new_buf(cx)?;
    b.start = p;
    b.pos = p;
    // SAFETY: the caller's promise: `len` bytes from `p`.
    b.last = unsafe { p.add(len) };
    b.end = b.last;
    // SAFETY: our own fresh buffer.
    unsafe { buf::set_memory(b, 1) };
    Some(cl)
}

fn memory_buf(cx: &mut RequestCtx, data: Chunk) -> Option<*mut ngx_chain_t> {
    let p = data.as_slice().as_ptr().cast_mut();
    // SAFETY: the buffer points into `data`, which `held` keeps alive until
    // sent (a Vec's heap memory, or a Python bytes buffer, does not move
    // when the Chunk itself moves).
    let cl = unsafe { memory_at(cx, p, data.len()) }?;
    // SAFETY: the fresh link made just above.
    let b = unsafe { (*cl).buf };
    cx.hold(Held::memory(b, data));
    Some(cl)
}

/// A buffer holding a copy of `data` in the request pool, with no entry in
/// `held`: for a response's last chunk only (see `pump`), so that copies
/// the backpressure bound does not count cannot pile up.
fn copied_buf(cx: &mut RequestCtx, data: &[u8]) -> Option<*mut ngx_chain_t> {
    // SAFETY: new pool memory of data.len() bytes; it lives as long as the
    // request.
    let p = unsafe { ngx_pnalloc(request_pool(cx), data.len()) }.cast::<u8>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` has room for data.len() bytes and overlaps nothing.
    unsafe { ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    // SAFETY: filled pool memory, live as long as the request.
    unsafe { memory_at(cx, p, data.len()) }
}

fn file_buf(cx: &mut RequestCtx, f: FileReply) -> Option<*mut ngx_chain_t> {
    let pool = request_pool(cx);
    // SAFETY: pool memory for the file description, zeroed.
    let file =
        unsafe { ngx_pcalloc(pool, core::mem::size_of::<ngx_file_t>()) }.cast::<ngx_file_t>();
    // SAFETY: NULL or the fresh allocation.
    let file_ref = unsafe { file.as_mut() }?;
    file_ref.fd = f.fd.as_raw_fd();
    file_ref.log = cx.req().log();
    // SAFETY: the request's live pool.
    file_ref.name = unsafe { pool_str(pool, b"wsgi.file_wrapper") }?;
    let (cl, b) = new_buf(cx)?;
    b.file = file;
    b.file_pos = f.offset as i64;
    b.file_last = (f.offset + f.len) as i64;
    // SAFETY: our own fresh buffer.
    unsafe { buf::set_in_file(b, 1) };
    // the fd is kept in `held` until nginx has sent the range
    cx.hold(Held::file(b, f.fd));
    Some(cl)
}

/// A zero-length special buffer that ends the response (or, in a
/// subrequest, its part).
fn last_buf(cx: &mut RequestCtx) -> Option<*mut ngx_chain_t> {
    let main = cx.req().is_main();
    let (cl, b) = new_buf(cx)?;
    if main {
        // SAFETY: our own fresh buffer.
        unsafe { buf::set_last_buf(b, 1) };
    } else {
        // SAFETY: as above.
        unsafe { buf::set_sync(b, 1) };
    }
    // SAFETY: as above.
    unsafe { buf::set_last_in_chain(b, 1) };
    Some(cl)
}

/// The app failed: a 500 if nothing went out yet, else cut the connection
/// so the client cannot take a truncated body for a whole one.
fn fail(cx: &mut RequestCtx, status: u16) {
    let rc = if cx.head_sent() {
        NGX_ERROR as ngx_int_t
    } else {
        status as ngx_int_t
    };
    // SAFETY: r is live.
    cx.abort(rc);
}

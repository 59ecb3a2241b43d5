//! nginx thread: the request body on its way to the app, and the client
//! while the app runs. A body nginx has read whole becomes owned data
//! (large buffers taken over, not copied); with `wsgi_request_buffering
//! off` the rest streams to the app as it reads, paused while it does not.
//! The read handlers notice a client that goes away. Never takes the GIL.

use core::ffi::c_void;
use core::ptr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nginx_sys::{
    ngx_buf_t, ngx_current_msec, ngx_http_request_t, ngx_int_t, NGX_ERROR,
    NGX_HTTP_CLIENT_CLOSED_REQUEST, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_INFO, NGX_OK,
};
use ngx::ngx_log_error;

use crate::ffi::fields::{self, buf, connection, event, headers_in, req, Client};
use crate::ffi::{for_each_buf, mem_bytes, mem_len, Request};
use crate::message::{Body, BodySegment, BodyStream, MallocBlock, Outcome};
use crate::request::{self, RequestCtx};
use crate::runtime;

/// Body buffers at least this large are taken over rather than copied.
const DETACH_MIN: usize = 16 * 1024;

/// Turns the request body (memory and temp-file ranges) into owned data.
/// Temp-file ranges are read later through our own duplicate descriptor;
/// memory in a large body buffer is taken over (`detach_block`), the rest
/// copied.
///
/// # Safety
/// nginx thread; `r` is a live request whose body is read (or being read).
pub unsafe fn collect_body(r: *mut ngx_http_request_t) -> std::io::Result<Body> {
    let mut body = Body::default();
    // SAFETY: the caller's promise.
    let rb = unsafe { (*r).request_body };
    // SAFETY: NULL or nginx's request body, live with the request.
    let Some(rb) = (unsafe { rb.as_ref() }) else {
        return Ok(body);
    };
    // nginx reads the body into one buffer, rb->buf, and chains pieces of
    // it (one per read). A large one is taken over whole and the pieces
    // become ranges of it. While the body still streams in, nginx reads
    // the rest into the same buffer: then it is copied.
    // SAFETY: r is live.
    let reading = unsafe { req::reading_body(r) } != 0;
    // SAFETY: NULL or nginx's live body buffer.
    let whole = unsafe { rb.buf.as_ref() }.map(|b| (b.start, b.end));
    let block = match whole {
        Some((start, end)) if !reading && end as usize - start as usize >= DETACH_MIN => {
            // SAFETY: r is live; `start` is its body buffer's.
            unsafe { detach_block(r, start) }
        }
        _ => None,
    };
    let mut last_fd: Option<(i32, Arc<OwnedFd>)> = None;
    let mut failed = None;
    let visit = |b: &mut ngx_buf_t| {
        // SAFETY: a live buffer of the body chain.
        let in_file = unsafe { buf::in_file(b) } != 0 && !b.file.is_null();
        if in_file {
            // SAFETY: checked non-NULL: the buffer's live file.
            let raw = unsafe { (*b.file).fd };
            let fd = match &last_fd {
                Some((n, fd)) if *n == raw => fd.clone(),
                _ => match dup_fd(raw) {
                    Ok(fd) => {
                        let fd = Arc::new(fd);
                        last_fd = Some((raw, fd.clone()));
                        fd
                    }
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                },
            };
            let len = (b.file_last - b.file_pos).max(0) as u64;
            if len > 0 {
                body.segments.push_back(BodySegment::File {
                    fd,
                    offset: b.file_pos as u64,
                    len,
                });
            }
            return true;
        }
        let len = mem_len(b);
        if len == 0 {
            return true;
        }
        match (&block, whole) {
            (Some(k), Some((start, end))) if b.pos >= start && b.last <= end => {
                // SAFETY: the range lies in the block taken over, which
                // nginx no longer writes (the body is complete).
                unsafe { body.push_range(k, b.pos, len) }
            }
            // SAFETY: a memory buffer of the body chain, live with it.
            _ => body.push_copy(unsafe { mem_bytes(b) }),
        }
        true
    };
    // SAFETY: the request body chain is nginx's, live with the request.
    unsafe { for_each_buf(rb.bufs, visit) };
    match failed {
        Some(e) => Err(e),
        None => Ok(body),
    }
}

/// Our own descriptor for the file `raw` is open on (close-on-exec).
fn dup_fd(raw: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let dup = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Takes over a request body buffer nginx allocated on its own from the
/// request pool (a "large" pool block, plain `malloc` memory), so the pool
/// thread can read it without a copy. The pool forgets the block; an `Arc`
/// kept in a pool clean-up stands for nginx's own use of it (the request
/// body chain stays valid for error_page redirects and logging), and the
/// block is freed when both that and the app's `wsgi.input` let go.
/// `None` (copy instead) when `start` is not such a block.
///
/// # Safety
/// nginx thread; `r` is a live request and `start` the start of its body buffer (or NULL).
unsafe fn detach_block(r: *mut ngx_http_request_t, start: *mut u8) -> Option<Arc<MallocBlock>> {
    if start.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    let pool = unsafe { (*r).pool };
    // SAFETY: a live request's pool.
    let mut l = unsafe { (*pool).large };
    // the pool's own singly linked list of (next, alloc) entries
    // SAFETY: each entry is live while the pool is.
    while let Some(entry) = unsafe { l.as_mut() } {
        if entry.alloc == start.cast() {
            // The clean-up first: if it cannot be had, nothing has changed.
            // SAFETY: nginx thread; the pool is live.
            let Ok(keep) = (unsafe { crate::ffi::pool_alloc(pool, None::<Arc<MallocBlock>>) })
            else {
                return None;
            };
            entry.alloc = ptr::null_mut();
            // SAFETY: the pool no longer frees the block: it is ours.
            let block = Arc::new(unsafe { MallocBlock::from_raw(start.cast()) });
            // SAFETY: `keep` is the fresh pool value made above.
            unsafe { *keep = Some(block.clone()) };
            return Some(block);
        }
        l = entry.next;
    }
    None
}

/// Read-event handler while the app runs: notices a client that went away.
pub extern "C" fn check_broken_connection(r: *mut ngx_http_request_t) {
    let check = |cx: &mut RequestCtx| {
        // SAFETY: the request is live while its state is borrowed.
        match unsafe { fields::client_gone(r) } {
            Client::Here => {}
            Client::ClosedConnection => abort_request(cx, "client prematurely closed connection"),
            Client::ClosedStream => abort_request(cx, "client prematurely closed stream"),
        }
    };
    // SAFETY: nginx calls this with a live request on its thread (from
    // ngx_http_request_handler, which runs posted requests after it).
    unsafe { request::enter(r, "read event handler", check) };
}

/// Moves what nginx has read of the body into the stream (or drops it
/// when `stream` is None: it was copied already) and frees nginx's buffers.
/// Returns whether any data moved.
///
/// # Safety
/// nginx thread; `r` is a live request.
pub unsafe fn take_body_bufs(r: *mut ngx_http_request_t, stream: Option<&BodyStream>) -> bool {
    // SAFETY: the caller's promise.
    let rb = unsafe { (*r).request_body };
    // SAFETY: NULL or nginx's request body, live with the request.
    let Some(rb) = (unsafe { rb.as_mut() }) else {
        return false;
    };
    let mut moved = false;
    let visit = |b: &mut ngx_buf_t| {
        // SAFETY: a live buffer of the body chain.
        if unsafe { buf::in_file(b) } == 0 && mem_len(b) > 0 {
            if let Some(s) = stream {
                // SAFETY: a memory buffer of the chain, live with it.
                s.push(unsafe { mem_bytes(b) });
            }
            b.pos = b.last;
            moved = true;
        }
        true
    };
    // SAFETY: the request body chain is nginx's, live with the request.
    unsafe { for_each_buf(rb.bufs, visit) };
    rb.bufs = ptr::null_mut();
    moved
}

/// Read-event handler while the body streams to the app.
pub extern "C" fn read_body_handler(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this on its thread with a live request.
    unsafe { request::enter(r, "request body reader", pull_body) };
}

/// Reads more of the body from the client while the app has room for it.
///
/// # Safety
/// nginx thread; `cx` belongs to a live request.
pub fn pull_body(cx: &mut RequestCtx) {
    let Some(stream) = cx.stream().cloned() else {
        return;
    };
    let req = cx.req();
    let r = req.as_ptr();
    loop {
        if cx.is_done() {
            return;
        }
        if !stream.has_room() {
            // Paused until the app reads; a slow app is not a slow client
            // (wsgi_read_timeout guards the app meanwhile).
            let rev = req.read_event();
            // SAFETY: the live connection's read event; nginx thread.
            if unsafe { event::timer_set(rev) } != 0 {
                // SAFETY: as above; its timer is set.
                unsafe { fields::del_timer(rev) };
            }
            // SAFETY: r is live while its state is borrowed.
            if unsafe { left_mid_body(r) } {
                abort_request(cx, "client prematurely closed connection");
            }
            return;
        }
        // The app took some of the body: it is alive.
        // SAFETY: only the nginx thread writes ngx_current_msec.
        cx.touch(unsafe { ngx_current_msec });
        // SAFETY: r is live; reading goes on into its body buffer.
        let rc = unsafe { nginx_sys::ngx_http_read_unbuffered_request_body(r) };
        // SAFETY: as above.
        let moved = unsafe { take_body_bufs(r, Some(&stream)) };
        if rc == NGX_ERROR as ngx_int_t || rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
            stream.fail("client request body could not be read");
            cx.stream_done();
            let code = if cx.head_sent() || rc == NGX_ERROR as ngx_int_t {
                NGX_ERROR as ngx_int_t
            } else {
                rc
            };
            cx.abort(code);
            return;
        }
        // SAFETY: r is live.
        if rc == NGX_OK as ngx_int_t && unsafe { req::reading_body(r) } == 0 {
            stream.finish();
            cx.stream_done();
            req.set_read_handler(Some(check_broken_connection));
            return;
        }
        if !moved {
            return; // wait for the client
        }
    }
}

/// Whether the client went away while its body is paused (nginx is not
/// reading it, so it would not notice): the connection was reset, or it
/// ended short of the body it announced. Data the client sent before it
/// left stays readable, so the socket's error and what is left to read
/// tell, not a read.
///
/// # Safety
/// nginx thread; `r` is a live request.
unsafe fn left_mid_body(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: the caller's promise.
    let req = unsafe { Request::from_raw(r) }.expect("a live request");
    // SAFETY: as above.
    if unsafe { fields::multiplexed(r) } {
        // A stream shares its socket: its own reset marks it.
        // SAFETY: as above.
        return unsafe { fields::client_gone(r) } != Client::Here;
    }
    let c = req.connection();
    // SAFETY: a live request's connection.
    let fd = unsafe { (*c).fd };
    let mut err: libc::c_int = 0;
    let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for getsockopt to write.
    let got = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast::<c_void>(),
            &mut len,
        )
    };
    let reset = got == 0 && err != 0;
    let rev = req.read_event();
    // SAFETY: the live connection's read event.
    let gone =
        reset || (unsafe { event::pending_eof(rev) } != 0 && unsafe { short_of_body(r, fd) });
    if gone {
        // SAFETY: as above.
        unsafe { event::set_eof(rev, 1) };
        // SAFETY: the live connection.
        unsafe { connection::set_error(c, 1) };
    }
    gone
}

/// After the client's end of stream: whether what is left in the socket is
/// less than the rest of the body it announced (unknown for a chunked body:
/// the app's read timeout decides then).
///
/// # Safety
/// nginx thread; `r` is a live request and `fd` its connection's socket.
unsafe fn short_of_body(r: *mut ngx_http_request_t, fd: libc::c_int) -> bool {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) } != 0 || queued == 0 {
        return true;
    }
    // SAFETY: the caller's promise.
    let r = unsafe { &*r };
    // SAFETY: the request's headers, live with it.
    if unsafe { headers_in::chunked(&r.headers_in) } != 0 {
        return false;
    }
    // SAFETY: NULL or nginx's request body, live with the request.
    let Some(rb) = (unsafe { r.request_body.as_ref() }) else {
        return false;
    };
    // SAFETY: NULL or its live buffer.
    let Some(b) = (unsafe { rb.buf.as_ref() }) else {
        return false;
    };
    (queued as i64) < rb.rest - mem_len(b) as i64
}

/// Ends a request whose client is gone; the app is told at its next write.
fn abort_request(cx: &mut RequestCtx, why: &str) {
    if cx.is_done() {
        return;
    }
    let when = if cx.head_sent() {
        "sending response to client"
    } else {
        "waiting for application"
    };
    ngx_log_error!(NGX_LOG_INFO, cx.req().log(), "wsgi: {} while {}", why, when);
    if let Some(rt) = runtime::runtime() {
        if cx.exchange().claim(Outcome::ClientGone) {
            rt.hub
                .counters
                .client_aborts
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    wsgi_trace!(cx.r(), "job #{} client gone", cx.id());
    cx.abort(NGX_HTTP_CLIENT_CLOSED_REQUEST as ngx_int_t);
}

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
    ngx_current_msec, ngx_http_request_t, ngx_int_t, NGX_ERROR, NGX_HTTP_CLIENT_CLOSED_REQUEST,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_INFO, NGX_OK,
};
use ngx::ngx_log_error;

use crate::ffi::fields::{self, buf, connection, event, headers_in, req, Client};
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
    // SAFETY: r is live; request_body and its chain are nginx's.
    unsafe {
        let rb = (*r).request_body;
        if rb.is_null() {
            return Ok(body);
        }
        // nginx reads the body into one buffer, rb->buf, and chains pieces
        // of it (one per read). A large one is taken over whole and the
        // pieces become ranges of it. While the body still streams in,
        // nginx reads the rest into the same buffer: then it is copied.
        let buf = (*rb).buf;
        let block = if req::reading_body(r) == 0
            && !buf.is_null()
            && (*buf).end.offset_from((*buf).start) as usize >= DETACH_MIN
        {
            detach_block(r, (*buf).start)
        } else {
            None
        };
        let mut cl = (*rb).bufs;
        let mut last_fd: Option<(i32, Arc<OwnedFd>)> = None;
        while !cl.is_null() {
            let b = (*cl).buf;
            if buf::in_file(b) != 0 && !(*b).file.is_null() {
                let raw = (*(*b).file).fd;
                let fd = match &last_fd {
                    Some((n, fd)) if *n == raw => fd.clone(),
                    _ => {
                        let dup = libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0);
                        if dup < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        let fd = Arc::new(OwnedFd::from_raw_fd(dup));
                        last_fd = Some((raw, fd.clone()));
                        fd
                    }
                };
                let len = ((*b).file_last - (*b).file_pos).max(0) as u64;
                if len > 0 {
                    body.segments.push_back(BodySegment::File {
                        fd,
                        offset: (*b).file_pos as u64,
                        len,
                    });
                }
            } else if !(*b).pos.is_null() && (*b).last > (*b).pos {
                let len = (*b).last.offset_from((*b).pos) as usize;
                match &block {
                    Some(k) if (*b).pos >= (*buf).start && (*b).last <= (*buf).end => {
                        body.push_range(k, (*b).pos, len)
                    }
                    _ => body.push_copy(core::slice::from_raw_parts((*b).pos, len)),
                }
            }
            cl = (*cl).next;
        }
    }
    Ok(body)
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
    // SAFETY: r and its pool are live; the large list is the pool's own
    // singly linked list of (next, alloc) entries.
    unsafe {
        if start.is_null() {
            return None;
        }
        let mut l = (*(*r).pool).large;
        while !l.is_null() && (*l).alloc != start.cast() {
            l = (*l).next;
        }
        if l.is_null() {
            return None;
        }
        // The clean-up first: if it cannot be had, nothing has changed.
        let Ok(keep) = crate::ffi::pool_alloc((*r).pool, None::<Arc<MallocBlock>>) else {
            return None;
        };
        (*l).alloc = ptr::null_mut();
        let block = Arc::new(MallocBlock::from_raw(start.cast()));
        *keep = Some(block.clone());
        Some(block)
    }
}

/// Read-event handler while the app runs: notices a client that went away.
pub extern "C" fn check_broken_connection(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with a live request on its thread (from
    // ngx_http_request_handler, which runs posted requests after it).
    unsafe {
        request::enter(r, "read event handler", |cx| match fields::client_gone(r) {
            Client::Here => {}
            Client::ClosedConnection => abort_request(cx, "client prematurely closed connection"),
            Client::ClosedStream => abort_request(cx, "client prematurely closed stream"),
        })
    };
}

/// Moves what nginx has read of the body into the stream (or drops it
/// when `stream` is None: it was copied already) and frees nginx's buffers.
/// Returns whether any data moved.
///
/// # Safety
/// nginx thread; `r` is a live request.
pub unsafe fn take_body_bufs(r: *mut ngx_http_request_t, stream: Option<&BodyStream>) -> bool {
    let mut moved = false;
    // SAFETY: r is live; the chain is nginx's request body chain.
    unsafe {
        let rb = (*r).request_body;
        if rb.is_null() {
            return false;
        }
        let mut cl = (*rb).bufs;
        while !cl.is_null() {
            let b = (*cl).buf;
            if buf::in_file(b) == 0 && !(*b).pos.is_null() && (*b).last > (*b).pos {
                if let Some(s) = stream {
                    let len = (*b).last.offset_from((*b).pos) as usize;
                    s.push(core::slice::from_raw_parts((*b).pos, len));
                }
                (*b).pos = (*b).last;
                moved = true;
            }
            cl = (*cl).next;
        }
        (*rb).bufs = ptr::null_mut();
    }
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
    let r = cx.r();
    // SAFETY: r is live while its ctx is.
    unsafe {
        loop {
            if cx.is_done() {
                return;
            }
            if !stream.has_room() {
                // Paused until the app reads; a slow app is not a slow client
                // (wsgi_read_timeout guards the app meanwhile).
                let rev = (*(*r).connection).read;
                if event::timer_set(rev) != 0 {
                    fields::del_timer(rev);
                }
                if left_mid_body(r) {
                    abort_request(cx, "client prematurely closed connection");
                }
                return;
            }
            // The app took some of the body: it is alive.
            cx.touch(ngx_current_msec);
            let rc = nginx_sys::ngx_http_read_unbuffered_request_body(r);
            let moved = take_body_bufs(r, Some(&stream));
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
            if rc == NGX_OK as ngx_int_t && req::reading_body(r) == 0 {
                stream.finish();
                cx.stream_done();
                (*r).read_event_handler = Some(check_broken_connection);
                return;
            }
            if !moved {
                return; // wait for the client
            }
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
    // SAFETY: r is live (we are in one of its event handlers).
    unsafe {
        let c = (*r).connection;
        if fields::multiplexed(r) {
            // A stream shares its socket: its own reset marks it.
            return fields::client_gone(r) != Client::Here;
        }
        let fd = (*c).fd;
        let mut err: libc::c_int = 0;
        let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let got = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut libc::c_int as *mut c_void,
            &mut len,
        );
        let reset = got == 0 && err != 0;
        let gone = reset || (event::pending_eof((*c).read) != 0 && short_of_body(r, fd));
        if gone {
            event::set_eof((*c).read, 1);
            connection::set_error(c, 1);
        }
        gone
    }
}

/// After the client's end of stream: whether what is left in the socket is
/// less than the rest of the body it announced (unknown for a chunked body:
/// the app's read timeout decides then).
///
/// # Safety
/// nginx thread; `r` is a live request and `fd` its connection's socket.
unsafe fn short_of_body(r: *mut ngx_http_request_t, fd: libc::c_int) -> bool {
    // SAFETY: r is live; its request body and buffer are nginx's.
    unsafe {
        let mut queued: libc::c_int = 0;
        if libc::ioctl(fd, libc::FIONREAD, &mut queued) != 0 || queued == 0 {
            return true;
        }
        let rb = (*r).request_body;
        if rb.is_null() || headers_in::chunked(&(*r).headers_in) != 0 || (*rb).buf.is_null() {
            return false;
        }
        let buffered = (*(*rb).buf).last.offset_from((*(*rb).buf).pos) as i64;
        (queued as i64) < (*rb).rest - buffered
    }
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
    ngx_log_error!(
        NGX_LOG_INFO,
        // SAFETY: the request is live while its state is borrowed.
        unsafe { (*(*cx.r()).connection).log },
        "wsgi: {} while {}",
        why,
        when
    );
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

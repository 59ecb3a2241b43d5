//! nginx thread: "where was the app" when `wsgi_read_timeout` fired.
//!
//! The request ends (504, or a cut connection) as the timeout fires, but
//! the app's Python stack can only be read on a pool-side thread holding
//! the GIL (the watchdog, see `pool.rs`), or, without the GIL, is reported
//! by the app's thread when the interrupt lands; it comes back later. So the
//! timed-out request's log context (its connection number and what its log
//! handler appends: client, server, request line, host) is rendered while
//! the request is alive and kept here, with a copy of its log, until the
//! stack arrives or [`WAIT_MS`] pass; either way one `error` line is
//! written with that context.

use core::cell::RefCell;
use core::ptr;
use std::collections::HashMap;

use nginx_sys::{ngx_connection_t, ngx_event_t, ngx_log_t, u_char, NGX_LOG_ERR};

use crate::ffi::fields::{self, event};
use crate::message::RequestId;
use crate::runtime;

/// How long the stack may take: the watchdog needs the GIL, which a thread
/// in C code that does not release it holds until it returns (without the
/// GIL: the interrupted thread reports it, once the interrupt lands).
pub const WAIT_MS: nginx_sys::ngx_msec_t = 1000;

/// nginx's NGX_MAX_ERROR_STR: no log line is longer.
const MAX_ERROR_STR: usize = 2048;

/// A timed-out request's log, kept until its stack is reported.
#[repr(C)]
struct Pending {
    /// First member: the timer's handler gets back to the entry from it.
    ev: ngx_event_t,
    /// The request's log, copied, with `handler` writing `context`.
    log: ngx_log_t,
    context: Vec<u8>,
    id: RequestId,
}

/// A kept [`Pending`], at an address that never changes while nginx's
/// timer tree may point at its `ev`: it is reached only through the raw
/// pointer `Box::into_raw` gave (a `Box` moved into a map would assert
/// unique ownership of memory that nginx still points into). Dropping it
/// deletes a timer still set and frees the entry.
struct Entry(*mut Pending);

impl Entry {
    fn log(&mut self) -> *mut ngx_log_t {
        // SAFETY: `self.0` is live until drop (from `Box::into_raw`).
        unsafe { &raw mut (*self.0).log }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // SAFETY: `self.0` is live until freed below.
        let ev = unsafe { &raw mut (*self.0).ev };
        // SAFETY: nginx thread (PENDING is thread-local); a kept entry's event.
        unsafe { forget_timer(ev) };
        // SAFETY: `self.0` came from `Box::into_raw` and is freed here, once,
        // after its timer is gone.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

thread_local! {
    static PENDING: RefCell<HashMap<RequestId, Entry>> = RefCell::new(HashMap::new());
}

/// nginx thread, as request `id` times out (before it ends): keep `log`'s
/// context for the stack report. `timer_conn` is any live connection of
/// the worker's (the wake-up eventfd's): debug builds of nginx log a timer
/// event's fd from its `data`.
///
/// # Safety
/// `log` is the live request's connection log (its handler and data are
/// nginx's HTTP log handler and context, valid during this call; its file,
/// writer and `next` chain belong to the cycle).
pub unsafe fn expect(id: RequestId, log: *mut ngx_log_t, timer_conn: *mut ngx_connection_t) {
    let mut buf = [0u8; MAX_ERROR_STR];
    // SAFETY: the caller's promise: a live log.
    let context = match unsafe { (*log).handler } {
        Some(h) => {
            // SAFETY: the caller's promise: nginx's log handler and its
            // data, valid now; it writes at most `len` bytes from `buf` and
            // returns where it stopped.
            let end = unsafe { h(log, buf.as_mut_ptr(), buf.len()) };
            let n = (end as usize)
                .saturating_sub(buf.as_ptr() as usize)
                .min(buf.len());
            buf[..n].to_vec()
        }
        None => Vec::new(),
    };
    // SAFETY: a bitwise copy of a live C struct of plain data.
    let mut kept_log: ngx_log_t = unsafe { ptr::read(log) };
    kept_log.handler = Some(write_context);
    kept_log.data = ptr::null_mut();
    // SAFETY: ngx_event_t is plain C data; all-zero is its initial state.
    let mut ev: ngx_event_t = unsafe { core::mem::zeroed() };
    ev.handler = Some(on_wait_expired);
    ev.log = ngx::log::ngx_cycle_log().as_ptr();
    ev.data = timer_conn.cast();
    let p = Box::into_raw(Box::new(Pending {
        ev,
        log: kept_log,
        context,
        id,
    }));
    let entry = Entry(p);
    // The event stays at this address until `Entry`'s drop deleted its
    // timer (or it fired); nginx thread.
    // SAFETY: `p` is a fresh, live allocation.
    let ev = unsafe { &raw mut (*p).ev };
    // SAFETY: as above.
    unsafe { event::set_cancelable(ev, 1) };
    // SAFETY: as above.
    unsafe { fields::add_timer(ev, WAIT_MS) };
    // one timeout per request: an older entry (not expected) is dropped
    PENDING.with(|m| m.borrow_mut().insert(id, entry));
}

/// nginx thread: the watchdog's report for request `id`. Writes it with
/// the request's kept context; false if there is none (the caller logs it
/// as it can).
pub fn report(id: RequestId, text: &str) -> bool {
    let Some(mut p) = PENDING.with(|m| m.borrow_mut().remove(&id)) else {
        return false;
    };
    crate::log::log_lines(p.log(), NGX_LOG_ERR as usize, text);
    true
}

/// nginx thread, at worker exit: drop what is still waiting (their timers
/// go with them).
pub fn clear() {
    let all: Vec<_> = PENDING.with(|m| m.borrow_mut().drain().collect());
    drop(all);
}

/// # Safety
/// nginx thread; `ev` is a kept entry's event.
unsafe fn forget_timer(ev: *mut ngx_event_t) {
    // SAFETY: the caller's promise.
    if unsafe { event::timer_set(ev) } != 0 {
        // SAFETY: as above; its timer is set.
        unsafe { fields::del_timer(ev) };
    }
}

/// No stack within [`WAIT_MS`]: say so, with the request's context.
extern "C" fn on_wait_expired(ev: *mut ngx_event_t) {
    // SAFETY: `ev` is the first member of a boxed `Pending` (repr(C)) that
    // is still in PENDING: its timer is deleted whenever it leaves.
    let id = unsafe { (*(ev as *mut Pending)).id };
    // SAFETY: as above.
    let log = unsafe { (*ev).log };
    crate::log::guard(log, "stack wait timer", || {
        let Some(mut p) = PENDING.with(|m| m.borrow_mut().remove(&id)) else {
            return;
        };
        // With the GIL the watchdog reads the stack and waits for the GIL
        // to do it; without it the app's thread reports where the
        // interrupt landed, which a thread in C code takes only when it
        // returns (see wsgi-pool's pool.rs).
        let why = if runtime::runtime().is_none_or(|rt| rt.pool.reads_stacks()) {
            "the GIL was not released (the thread may be in C code that holds it)"
        } else {
            "the interrupt has not landed (the thread may be in C code; where it was is \
             logged when it returns)"
        };
        let text = format!(
            "wsgi: the app's thread was at: unknown, no stack within {WAIT_MS} ms: \
             {why}\nwhile reading response from application"
        );
        crate::log::log_lines(p.log(), NGX_LOG_ERR as usize, &text);
    });
}

/// The kept log's handler: appends the context rendered at the timeout,
/// as the request's own handler did then.
///
/// # Safety
/// Called by nginx's logging only, with `log` the `log` member of a live
/// [`Pending`] and `len` writable bytes at `buf`.
unsafe extern "C" fn write_context(
    log: *mut ngx_log_t,
    buf: *mut u_char,
    len: usize,
) -> *mut u_char {
    // SAFETY: `log` is the `log` member of a live `Pending` (the only log
    // with this handler; nginx calls it while we log through it), so the
    // entry starts `offset_of!(Pending, log)` bytes before it.
    let p = unsafe { (log as *mut u8).sub(core::mem::offset_of!(Pending, log)) } as *const Pending;
    // SAFETY: that live `Pending`, only read here.
    let ctx = unsafe { &(*p).context };
    let n = ctx.len().min(len);
    // SAFETY: nginx gives `len` (>= n) writable bytes at `buf`, which the
    // Vec's heap memory does not overlap.
    unsafe { ptr::copy_nonoverlapping(ctx.as_ptr(), buf, n) };
    // SAFETY: at most the end of those `len` bytes.
    unsafe { buf.add(n) }
}

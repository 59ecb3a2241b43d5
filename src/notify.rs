//! nginx thread: the eventfd that pool threads use to wake the event loop,
//! registered as a fake connection, and the table of requests waiting on
//! the pool. Draining turns each completion into a posted event (or a log
//! line), so request work runs from nginx's own posted-event queue.

use core::cell::{Cell, RefCell};
use core::ptr;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use nginx_sys::{
    ngx_close_connection, ngx_connection_t, ngx_cycle_t, ngx_event_t, ngx_get_connection,
    ngx_handle_read_event, ngx_http_request_t, ngx_int_t, ngx_log_t, ngx_msec_t, NGX_OK,
};

use crate::app_stack;
use crate::ffi::fields::{self, event};
use crate::message::{Completion, LogLevel, RequestId};
use crate::runtime;

/// Hashes request ids: our own sequential numbers, not client input, so a
/// multiply spreads them well enough and costs a fraction of SipHash (a
/// request is registered, looked up and removed at least once each).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A request waiting on the pool: its wake-up event (in its slot, outside
/// the state that request handlers borrow) and the request, for its log.
#[derive(Clone, Copy)]
struct Waiter {
    wake: *mut ngx_event_t,
    r: *mut ngx_http_request_t,
}

type Waiting = HashMap<RequestId, Waiter, BuildHasherDefault<IdHasher>>;

// nginx's thread only (thread-locals): pool threads reach it through the
// hub's channel and eventfd, never through these.
thread_local! {
    /// Requests with a job in the pool, by id. Only the nginx thread uses it.
    static WAITING: RefCell<Waiting> = RefCell::new(Waiting::default());
    static CONNECTION: Cell<*mut ngx_connection_t> = const { Cell::new(ptr::null_mut()) };
    /// The deferral timer (see [`job_submitted`]).
    static TICK: Cell<*mut ngx_event_t> = const { Cell::new(ptr::null_mut()) };
    /// A job went to the pool since the deferral timer last fired.
    static SUBMITTED: Cell<bool> = const { Cell::new(false) };
}

/// How long a finished response may wait for its wake-up while the pool is
/// busy (nginx timers have millisecond resolution; this is the smallest).
const DEFER_MS: ngx_msec_t = 1;

/// Registers a request whose job is in the pool; `wake` is posted when
/// replies arrive. Both stay valid until [`unregister`] (the request's
/// state unregisters when it is dropped, before its slot is).
pub fn register(id: RequestId, r: *mut ngx_http_request_t, wake: *mut ngx_event_t) {
    WAITING.with(|w| w.borrow_mut().insert(id, Waiter { wake, r }));
}

pub fn unregister(id: RequestId) {
    WAITING.with(|w| w.borrow_mut().remove(&id));
}

/// The wake-up eventfd's connection (null before `start`, after `stop`),
/// for timer events that need one in `data` (nginx's debug log reads it).
pub fn connection() -> *mut ngx_connection_t {
    CONNECTION.with(|c| c.get())
}

fn lookup(id: RequestId) -> Option<Waiter> {
    WAITING.with(|w| w.borrow().get(&id).copied())
}

/// Why the wake-up eventfd could not join the worker's event loop.
#[derive(Debug)]
pub enum RegisterError {
    Dup(std::io::Error),
    NoConnection,
    EventLoop,
}

impl core::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegisterError::Dup(e) => write!(f, "dup() of the wake-up eventfd failed ({e})"),
            RegisterError::NoConnection => write!(
                f,
                "no free connection for the wake-up eventfd (worker_connections)"
            ),
            RegisterError::EventLoop => {
                write!(f, "cannot add the wake-up eventfd to the event loop")
            }
        }
    }
}

/// Registers the hub's eventfd with the worker's event loop.
///
/// # Safety
/// Called once per worker, on the nginx thread, from init_process.
pub unsafe fn start(cycle: *mut ngx_cycle_t, eventfd: i32) -> Result<(), RegisterError> {
    // The connection gets its own descriptor for the same eventfd, so that
    // closing the connection never closes the one pool threads write to.
    // SAFETY: plain syscall on a descriptor we own.
    let fd = unsafe { libc::fcntl(eventfd, libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(RegisterError::Dup(std::io::Error::last_os_error()));
    }
    // nginx API on its thread; every failure path releases what it took.
    // SAFETY: the caller's promise: the live cycle.
    let log = unsafe { (*cycle).log };
    // SAFETY: nginx thread; `fd` is ours (closed below if this fails).
    let c = unsafe { ngx_get_connection(fd, log) };
    if c.is_null() {
        // SAFETY: `fd` is ours and no connection took it.
        unsafe { libc::close(fd) };
        return Err(RegisterError::NoConnection);
    }
    // SAFETY: a live connection, ours; the reference ends before nginx is
    // called with it.
    let conn = unsafe { &mut *c };
    conn.log = log;
    let rev = conn.read;
    // SAFETY: a free connection comes with its live read event, ours too.
    let rev_ref = unsafe { &mut *rev };
    rev_ref.handler = Some(on_wakeup);
    rev_ref.log = log;
    // SAFETY: nginx thread; the connection's read event, handler set.
    if unsafe { ngx_handle_read_event(rev, 0) } != NGX_OK as ngx_int_t {
        // SAFETY: the connection is ours and unused from here on.
        unsafe { ngx_close_connection(c) };
        return Err(RegisterError::EventLoop);
    }
    CONNECTION.with(|cell| cell.set(c));

    // Lives as long as the worker; cancelable, so a graceful quit does not
    // wait for it.
    // SAFETY: ngx_event_t is plain C data; all-zero is its initial state.
    let mut tick: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
    tick.handler = Some(on_tick);
    tick.log = log;
    // Debug builds of nginx log timer events with the fd of the connection
    // in `data`: it must point at one.
    tick.data = c.cast();
    let tick = Box::into_raw(tick);
    // SAFETY: a live event of ours; nginx thread.
    unsafe { event::set_cancelable(tick, 1) };
    TICK.with(|cell| cell.set(tick));
    Ok(())
}

/// nginx thread, after a job went to the pool: let pool threads that have
/// more queued work hold back wake-ups for finished responses, with the
/// deferral timer bounding how long those wait; and pick up what they
/// already finished, since nginx is awake anyway.
pub fn job_submitted() {
    let Some(rt) = runtime::runtime() else { return };
    SUBMITTED.with(|s| s.set(true));
    let tick = TICK.with(|t| t.get());
    // SAFETY: the tick event lives for the worker's life (see `start`).
    if !tick.is_null() && unsafe { event::timer_set(tick) } == 0 {
        rt.hub.start_deferring();
        // SAFETY: as above; nginx thread.
        unsafe { fields::add_timer(tick, DEFER_MS) };
    }
    rt.hub.drain_quiet(handle);
}

/// The deferral timer: drain, and keep deferring only while jobs keep
/// arriving (an idle pool, or one busy with a few long requests, gets a
/// wake-up per response again and no timer).
extern "C" fn on_tick(ev: *mut ngx_event_t) {
    // SAFETY: `ev` is the tick event, whose log is the cycle's.
    let log = unsafe { (*ev).log };
    let ran = crate::log::guard(log, "deferral timer", || {
        #[cfg(feature = "panic-inject")]
        crate::inject::maybe_panic_global("tick");
        let Some(rt) = runtime::runtime() else { return };
        // Jobs that waited the whole tick with threads parked get one.
        let stalled = rt.pool.nudge();
        if SUBMITTED.with(|s| s.replace(false)) || stalled {
            // SAFETY: `ev` is the tick event; nginx thread.
            unsafe { fields::add_timer(ev, DEFER_MS) };
        } else {
            rt.hub.stop_deferring();
        }
        rt.hub.drain_quiet(handle);
    });
    if ran.is_none() {
        // Without the timer nothing would bound held-back wake-ups: stop
        // deferring, and pick up what is already done.
        crate::log::guard(log, "deferral timer", || {
            if let Some(rt) = runtime::runtime() {
                rt.hub.stop_deferring();
                rt.hub.drain_quiet(handle);
            }
        });
    }
}

/// Closes the eventfd connection (exit_process), so nginx does not report
/// it as left open.
///
/// # Safety
/// nginx thread only.
pub unsafe fn stop() {
    let tick = TICK.with(|t| t.replace(ptr::null_mut()));
    if !tick.is_null() {
        // The tick event is ours (made by `start`); nginx thread.
        // SAFETY: as above.
        if unsafe { event::timer_set(tick) } != 0 {
            // SAFETY: as above; its timer is set.
            unsafe { fields::del_timer(tick) };
        }
        // SAFETY: as above.
        if unsafe { event::posted(tick) } == 0 {
            // SAFETY: `start`'s Box, freed once (TICK is cleared). Out of
            // the timer tree, nginx holds it nowhere (it is never posted:
            // expired timers are called, not queued); were it posted, it
            // would be left to the process's end.
            drop(unsafe { Box::from_raw(tick) });
        }
    }
    if let Some(rt) = runtime::runtime() {
        rt.hub.stop_deferring();
    }
    let c = CONNECTION.with(|cell| cell.replace(ptr::null_mut()));
    if !c.is_null() {
        // SAFETY: the connection is ours and still open.
        unsafe { ngx_close_connection(c) };
    }
}

/// nginx thread, as a request ends: a pool thread queues a request's log
/// lines (an app's prints, a short body) before its last reply, but on
/// another line; drained now, they are written while the request is still
/// registered, with its client and request in the log line.
pub fn drain_before_end() {
    if let Some(rt) = runtime::runtime() {
        rt.hub.drain_quiet(handle);
    }
}

extern "C" fn on_wakeup(ev: *mut ngx_event_t) {
    // SAFETY: `ev` is the eventfd connection's read event (cycle's log).
    let log = unsafe { (*ev).log };
    let ran = crate::log::guard(log, "wake-up handler", || {
        #[cfg(feature = "panic-inject")]
        crate::inject::maybe_panic_global("wakeup");
        let Some(rt) = runtime::runtime() else { return };
        let mut drained = 0usize;
        rt.hub.drain(|c| {
            drained += 1;
            handle(c)
        });
        wsgi_debug!(log, "wake-up: {} completions drained", drained);
    });
    if ran.is_none() {
        // The eventfd is edge-triggered: what the failed drain left would
        // wait for the next wake-up. The completion that failed is gone.
        crate::log::guard(log, "wake-up handler", || {
            if let Some(rt) = runtime::runtime() {
                rt.hub.drain(handle);
            }
        });
    }
}

fn handle(c: Completion) {
    match c {
        Completion::Ready(id) => {
            if let Some(w) = lookup(id) {
                // SAFETY: registered requests are live (they unregister on
                // drop); posting defers the work to nginx's posted events.
                unsafe { fields::post_event(w.wake) };
            }
        }
        Completion::Log { id, level, text } => {
            let waiter = id.and_then(lookup);
            let log: *mut ngx_log_t = match waiter {
                // SAFETY: as above; the request's log carries its context.
                Some(w) => unsafe { crate::ffi::request_log(w.r) },
                None => ngx::log::ngx_cycle_log().as_ptr(),
            };
            match waiter {
                // nginx adds no request context to debug lines: the trace
                // (a pool thread's steps) names the request itself.
                Some(w) if level == LogLevel::Debug => crate::log::log_lines(
                    log,
                    level as usize,
                    &format!("{text}, request: \"{}\"", crate::log::RequestLine(w.r)),
                ),
                _ => crate::log::log_lines(log, level as usize, &text),
            }
        }
        Completion::AppStack { id, text } => {
            if !app_stack::report(id, &text) {
                // Reported after the wait for it ended (already logged as
                // unknown, and the request is gone): for the curious.
                handle(Completion::Log {
                    id: Some(id),
                    level: crate::message::LogLevel::Info,
                    text,
                });
            }
        }
    }
}

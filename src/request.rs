//! nginx thread: one request's state while the app works on it, and the one
//! way in and out of it.
//!
//! # Ownership
//!
//! A [`RequestSlot`] lives in the request's pool (dropped by the pool's
//! clean-up, whatever ends the request) and is found through `r->ctx`. Its
//! mutable part, [`RequestCtx`], is reached only through [`enter`], which
//! every function nginx calls for a request (content and body handlers,
//! event handlers, timers, the wake-up) uses: it makes the one `&mut
//! RequestCtx` of that call, catches panics, and when the request is to end
//! ([`RequestCtx::end`] only records that) finalizes it *after* that borrow
//! is over — `ngx_http_finalize_request` may free the pool, and with it the
//! slot, so nothing reads the slot after it. Code below `enter` never looks
//! the state up again; it is handed `&mut RequestCtx`. What nginx may read
//! while that borrow is live (`$wsgi_*` variables, evaluated by filters
//! inside `send_head`) lives in [`Shared`], outside the borrowed part.

use core::cell::{Cell, UnsafeCell};
use core::ffi::c_void;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nginx_sys::{
    ngx_buf_t, ngx_chain_t, ngx_event_t, ngx_http_finalize_request, ngx_http_request_t, ngx_int_t,
    ngx_msec_t, NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR,
};
use ngx::http::HttpModule;

use crate::conf::LocConf;
use crate::ffi::fields::{self, event};
use crate::ffi::Request;
use crate::message::{BodyStream, Chunk, Exchange, Reply, RequestId};
use crate::{notify, runtime, HttpWsgiModule};

/// What `r->ctx` points at for a request the module serves.
pub struct RequestSlot {
    shared: Shared,
    /// An [`enter`] of this slot is running: a second one would make a
    /// second `&mut` to `state`.
    entered: Cell<bool>,
    /// nginx's event code writes these (timer tree rotations, posting)
    /// whenever it likes: they are not part of the borrowed state, which
    /// reaches them through raw pointers.
    wake: UnsafeCell<ngx_event_t>,
    timer: UnsafeCell<ngx_event_t>,
    state: UnsafeCell<RequestCtx>,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        // Runs on the nginx thread from the request pool's cleanup, after
        // nothing borrows the state any more.
        let (timer, wake) = (self.timer.get(), self.wake.get());
        // SAFETY: both events are ours and live in this slot.
        if unsafe { event::timer_set(timer) } != 0 {
            // SAFETY: as above; its timer is set.
            unsafe { fields::del_timer(timer) };
        }
        // SAFETY: as above.
        if unsafe { event::posted(wake) } != 0 {
            // SAFETY: as above; it is posted.
            unsafe { fields::delete_posted_event(wake) };
        }
    }
}

/// What may be read at any time, even while [`RequestCtx`] is borrowed.
pub struct Shared {
    pub exchange: Arc<Exchange>,
    /// When the job went to the pool.
    pub dispatched_at: ngx_msec_t,
    /// When the first reply came back (`$wsgi_app_time`).
    pub first_reply_at: Cell<Option<ngx_msec_t>>,
}

/// The request's mutable state; see the module comment for who may touch
/// it. Its fields are private: the other layers change a request's state
/// only through the methods below, and end it only through
/// [`finish`](Self::finish) and [`abort`](Self::abort).
pub struct RequestCtx {
    r: *mut ngx_http_request_t,
    /// The location's settings (cycle memory, outlives the request).
    lcf: *const LocConf,
    id: RequestId,
    exchange: Arc<Exchange>,
    /// The slot's shared part (same allocation, never borrowed mutably).
    shared: *const Shared,
    done: bool,
    /// The rc to finalize with once control is back in [`enter`].
    ending: Option<ngx_int_t>,
    head_sent: bool,
    header_only: bool,
    /// Replies taken from the exchange and not yet handed to nginx.
    replies: VecDeque<Reply>,
    /// Memory and files that nginx's buffers point at until written.
    held: VecDeque<Held>,
    free: *mut ngx_chain_t,
    busy: *mut ngx_chain_t,
    /// Queue and read timeouts (the slot's event).
    timer: *mut ngx_event_t,
    buffer_size: usize,
    read_timeout: ngx_msec_t,
    queue_timeout: ngx_msec_t,
    dispatched_at: ngx_msec_t,
    last_activity: ngx_msec_t,
    waiting_on_client: bool,
    bytes_out: u64,
    /// The rest of the request body, while it streams to the app.
    stream: Option<Arc<BodyStream>>,
}

/// What [`create`] needs besides the request.
pub struct NewRequest {
    pub lcf: *const LocConf,
    pub id: RequestId,
    pub exchange: Arc<Exchange>,
    pub buffer_size: usize,
    pub read_timeout: ngx_msec_t,
    pub queue_timeout: ngx_msec_t,
    pub now: ngx_msec_t,
    pub stream: Option<Arc<BodyStream>>,
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        // Runs on the nginx thread from the request pool's cleanup.
        if !self.done {
            self.exchange.cancel();
        }
        if let Some(s) = self.stream.take() {
            s.fail("request ended");
        }
        notify::unregister(self.id);
        runtime::request_finished();
    }
}

impl RequestCtx {
    /// The part of the slot that `$wsgi_*` variables read.
    pub fn shared(&self) -> &Shared {
        // SAFETY: `shared` points into the same pool allocation as `self`,
        // outside the UnsafeCell, and is only ever borrowed shared.
        unsafe { &*self.shared }
    }

    /// The request (live while its state is borrowed).
    pub fn r(&self) -> *mut ngx_http_request_t {
        self.r
    }

    /// The request, typed.
    pub fn req(&self) -> Request {
        // SAFETY: the request is live while its state is borrowed (the
        // slot lives in its pool), and the handle does not leave the
        // borrow's callers on nginx's thread.
        unsafe { Request::from_raw(self.r) }.expect("a slot's request")
    }

    /// The location's settings. They live in the configuration cycle's
    /// pool, longer than the request and its state: the borrow is not tied
    /// to `self`, so the state can change while they are read.
    pub fn loc_conf<'c>(&self) -> &'c LocConf {
        // SAFETY: the location conf lives in the cycle's pool, which
        // outlives every request of that cycle.
        unsafe { &*self.lcf }
    }

    /// The job's id (the pool's and the trace's name for it).
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// What the pool thread and nginx's thread share for this job.
    pub fn exchange(&self) -> &Arc<Exchange> {
        &self.exchange
    }

    /// Whether the request has ended (nothing more may be sent).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the response head went to nginx.
    pub fn head_sent(&self) -> bool {
        self.head_sent
    }

    /// The response head is going to nginx: from now on an error can only
    /// cut the connection.
    pub fn mark_head_sent(&mut self) {
        self.head_sent = true;
    }

    /// nginx sent a header-only response (HEAD, 204, 304): the app's body
    /// is dropped.
    pub fn mark_header_only(&mut self) {
        self.header_only = true;
    }

    /// Whether the response has no body (HEAD, 204, 304).
    pub fn header_only(&self) -> bool {
        self.header_only
    }

    /// The slot's timer (queue and read timeouts).
    pub fn timer(&self) -> *mut ngx_event_t {
        self.timer
    }

    /// `wsgi_buffer_size`: the most a response may have in flight.
    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    pub fn read_timeout(&self) -> ngx_msec_t {
        self.read_timeout
    }

    pub fn queue_timeout(&self) -> ngx_msec_t {
        self.queue_timeout
    }

    /// When the job went to the pool.
    pub fn dispatched_at(&self) -> ngx_msec_t {
        self.dispatched_at
    }

    /// When the app last showed life (a reply, a body read).
    pub fn last_activity(&self) -> ngx_msec_t {
        self.last_activity
    }

    /// The app showed life at `now`.
    pub fn touch(&mut self, now: ngx_msec_t) {
        self.last_activity = now;
    }

    /// Whether the response waits for the client to take what was sent.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client
    }

    pub fn set_waiting_on_client(&mut self, waiting: bool) {
        self.waiting_on_client = waiting;
    }

    /// The rest of the request body, while it streams to the app.
    pub fn stream(&self) -> Option<&Arc<BodyStream>> {
        self.stream.as_ref()
    }

    /// The body has all reached the app (or failed): no more streaming.
    pub fn stream_done(&mut self) {
        self.stream = None;
    }

    /// Replies taken from the exchange and not yet handed to nginx.
    pub fn replies_in_hand(&self) -> usize {
        self.replies.len()
    }

    /// Takes what the app has replied so far (up to `wsgi_buffer_size` of
    /// body); how many replies that was.
    pub fn take_replies(&mut self) -> usize {
        self.exchange.clear_notified();
        self.exchange.take(&mut self.replies, self.buffer_size);
        self.replies.len()
    }

    /// The next reply to hand to nginx.
    pub fn next_reply(&mut self) -> Option<Reply> {
        self.replies.pop_front()
    }

    /// Whether the next reply ends the response.
    pub fn end_is_next(&self) -> bool {
        matches!(self.replies.front(), Some(Reply::End))
    }

    /// Keeps what an nginx buffer points at until it is sent.
    pub fn hold(&mut self, held: Held) {
        self.held.push_back(held);
    }

    /// What nginx's buffers still point at, oldest first.
    pub fn held(&self) -> impl Iterator<Item = &Held> {
        self.held.iter()
    }

    /// Lets go of the `n` oldest held entries (nginx has sent them).
    pub fn release_held(&mut self, n: usize) {
        self.held.drain(..n.min(self.held.len()));
    }

    /// The response's free and busy buffer chains, for
    /// `ngx_chain_get_free_buf` and `ngx_chain_update_chains`.
    pub fn chains(&mut self) -> (&mut *mut ngx_chain_t, &mut *mut ngx_chain_t) {
        (&mut self.free, &mut self.busy)
    }

    /// Whether nginx still has buffers of ours to write.
    pub fn has_busy(&self) -> bool {
        !self.busy.is_null()
    }

    /// Body bytes handed to nginx (`bytes_out` on the status page).
    pub fn count_out(&mut self, bytes: u64) {
        self.bytes_out += bytes;
    }

    /// The response is complete: the app has finished, nothing to cancel.
    /// [`enter`] finalizes with `rc` when the current call returns to it.
    pub fn finish(&mut self, rc: ngx_int_t) {
        self.end(rc, false);
    }

    /// The request ends before the app has finished (an error, a timeout,
    /// the client gone, a redirect): the pool side is cancelled (the app's
    /// iterable closed at its next step). [`enter`] finalizes with `rc`.
    pub fn abort(&mut self, rc: ngx_int_t) {
        self.end(rc, true);
    }

    /// After [`finish`](Self::finish) or [`abort`](Self::abort): finalize
    /// with `rc` instead.
    pub fn finalize_with(&mut self, rc: ngx_int_t) {
        if self.ending.is_some() {
            self.ending = Some(rc);
        }
    }

    /// Ends the request, once: stops the timer, cancels the pool side when
    /// the app has not finished (`cancel`), counts the response, and
    /// records `rc` for [`enter`].
    fn end(&mut self, rc: ngx_int_t, cancel: bool) {
        if self.done {
            return;
        }
        self.done = true;
        self.ending = Some(rc);
        if cancel {
            self.exchange.cancel();
        }
        notify::drain_before_end();
        if let Some(s) = self.stream.take() {
            s.fail("request ended");
        }
        self.replies.clear();
        if let Some(rt) = runtime::runtime() {
            rt.hub.counters.responses.fetch_add(1, Ordering::Relaxed);
            rt.hub
                .counters
                .bytes_out
                .fetch_add(self.bytes_out, Ordering::Relaxed);
        }
        // SAFETY: our timer lives in the slot; nginx thread.
        if unsafe { event::timer_set(self.timer) } != 0 {
            // SAFETY: as above; its timer is set.
            unsafe { fields::del_timer(self.timer) };
        }
    }
}

/// The slot nginx keeps for the module, if this request has one.
///
/// # Safety
/// `r` is a live request.
unsafe fn slot_of(r: *mut ngx_http_request_t) -> *const RequestSlot {
    // SAFETY: the caller's promise.
    let Some(req) = (unsafe { Request::from_raw(r) }) else {
        return core::ptr::null();
    };
    // ours is NULL or what `create` stored
    req.ctx(HttpWsgiModule::module().ctx_index)
        .cast_const()
        .cast()
}

/// The shared part of the request's state, for nginx's variable getters.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn shared<'a>(r: *mut ngx_http_request_t) -> Option<&'a Shared> {
    // SAFETY: the caller's promise.
    let slot = unsafe { slot_of(r) };
    // SAFETY: a slot lives as long as its request; `shared` is never
    // borrowed mutably.
    unsafe { slot.as_ref() }.map(|s| &s.shared)
}

/// The slot's events, for the caller to set up: the wake-up (posted by
/// the notifier when the pool has replies) and the timer.
pub struct Events {
    pub wake: *mut ngx_event_t,
    pub timer: *mut ngx_event_t,
}

/// Allocates the request's state in its pool and records it in `r->ctx`.
/// `None` if the pool is out of memory.
///
/// # Safety
/// nginx thread; `r` is a live request without a slot of ours.
pub unsafe fn create(r: *mut ngx_http_request_t, new: NewRequest) -> Option<Events> {
    let shared = Shared {
        exchange: new.exchange.clone(),
        dispatched_at: new.now,
        first_reply_at: Cell::new(None),
    };
    // counted from here: the ctx's drop, wherever it happens, uncounts it
    runtime::request_started();
    let ctx = RequestCtx {
        r,
        lcf: new.lcf,
        id: new.id,
        exchange: new.exchange,
        shared: core::ptr::null(),
        done: false,
        ending: None,
        head_sent: false,
        header_only: false,
        replies: VecDeque::new(),
        held: VecDeque::new(),
        free: core::ptr::null_mut(),
        busy: core::ptr::null_mut(),
        timer: core::ptr::null_mut(),
        buffer_size: new.buffer_size,
        read_timeout: new.read_timeout,
        queue_timeout: new.queue_timeout,
        dispatched_at: new.now,
        last_activity: new.now,
        waiting_on_client: false,
        bytes_out: 0,
        stream: new.stream,
    };
    let slot = RequestSlot {
        shared,
        entered: Cell::new(false),
        // SAFETY: ngx_event_t is a plain C struct; all-zero is its idle state.
        wake: UnsafeCell::new(unsafe { core::mem::zeroed() }),
        // SAFETY: as above.
        timer: UnsafeCell::new(unsafe { core::mem::zeroed() }),
        state: UnsafeCell::new(ctx),
    };
    #[cfg(feature = "panic-inject")]
    if crate::inject::fail_alloc(r, "request slot") {
        drop(slot);
        return None;
    }
    // SAFETY: the caller's promise.
    let req = unsafe { Request::from_raw(r) }?;
    // SAFETY: nginx thread; the request pool outlives every use of the
    // slot, which its clean-up drops when the request is freed.
    let slot = unsafe { crate::ffi::pool_alloc(req.pool(), slot) };
    // out of memory: the slot (and the request count its ctx took) is
    // dropped here, as the pool's clean-up would have
    let Ok(slot) = slot else {
        return None;
    };
    // SAFETY: a fresh allocation nobody else has seen yet.
    let slot_ref = unsafe { &*slot };
    // SAFETY: as above: nothing else borrows the state yet.
    let ctx = unsafe { &mut *slot_ref.state.get() };
    ctx.shared = &raw const slot_ref.shared;
    ctx.timer = slot_ref.timer.get();
    req.set_ctx(HttpWsgiModule::module().ctx_index, slot.cast::<c_void>());
    Some(Events {
        wake: slot_ref.wake.get(),
        timer: slot_ref.timer.get(),
    })
}

/// Runs `f` on the request's state: the entry of every function nginx
/// calls for a request the module serves (`what` names it in logs). A
/// panic in `f` is logged at `alert` and ends the request (500, or a
/// closed connection once the header is out); the worker goes on. An end
/// that `f` asked for is carried out here, after `f`'s borrow is over.
/// Returns false if the request has no state of ours, or its state is
/// already entered.
///
/// The nesting rule is per slot: one `enter` of a slot at a time, as that
/// is what keeps its `&mut RequestCtx` unique. An `enter` of *another*
/// slot of the same request may run inside this one: `X-Accel-Redirect`
/// into a location with its own `wsgi_pass` runs that location's content
/// handler (which makes the request a new slot, and enters it) from inside
/// `f`. A nested `enter` of the same slot is refused with an `alert`.
///
/// # Safety
/// nginx thread; `r` is a live request.
pub unsafe fn enter(
    r: *mut ngx_http_request_t,
    what: &'static str,
    f: impl FnOnce(&mut RequestCtx),
) -> bool {
    // SAFETY: the caller's promise.
    let slot = unsafe { slot_of(r) };
    if slot.is_null() {
        return false;
    }
    // SAFETY: the slot is live until the request is finalized below;
    // `entered` is a plain flag outside the state.
    let entered = unsafe { &(*slot).entered };
    if entered.replace(true) {
        // SAFETY: r is live (the caller's promise).
        let log = unsafe { crate::ffi::request_log(r) };
        ngx::ngx_log_error!(
            nginx_sys::NGX_LOG_ALERT,
            log,
            "wsgi: {} entered a request's state that is in use, ignored while handling request",
            what
        );
        return false;
    }
    // SAFETY: as above; with `entered` set, this is the only `&mut` to the
    // slot's state.
    let state = unsafe { (*slot).state.get() };
    let ran = catch_unwind(AssertUnwindSafe(|| {
        #[cfg(feature = "panic-inject")]
        crate::inject::maybe_panic(r, what);
        // SAFETY: as above.
        f(unsafe { &mut *state })
    }));
    if let Err(payload) = ran {
        // SAFETY: r is live (nothing finalized it: ends wait for us).
        let log = unsafe { crate::ffi::request_log(r) };
        crate::log::log_panic(log, what, payload.as_ref());
        // SAFETY: as above; `f`'s borrow is gone.
        let cx = unsafe { &mut *state };
        let rc = if cx.head_sent {
            NGX_ERROR as ngx_int_t
        } else {
            NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
        };
        if catch_unwind(AssertUnwindSafe(|| cx.abort(rc))).is_err() {
            cx.ending = Some(rc);
        }
    }
    // SAFETY: the state's last use: finalizing may free the slot.
    let cx = unsafe { &mut *state };
    let (ending, id) = (cx.ending.take(), cx.id);
    entered.set(false);
    if let Some(rc) = ending {
        wsgi_trace!(r, "job #{} finalized with rc {}", id, rc);
        // SAFETY: r is live until this call.
        unsafe { ngx_http_finalize_request(r, rc) };
    }
    true
}

/// Which of a slot's own events fired.
#[derive(Clone, Copy)]
pub enum SlotEvent {
    Wake,
    Timer,
}

/// [`enter`] for the handler of one of a slot's own events (the wake-up
/// posted for its job, its timer): the state entered is the one of the
/// event's slot, and only while that slot is still the request's. After
/// an internal redirect into another `wsgi_pass` (`X-Accel-Redirect`) the
/// request has a new slot; a late wake-up or timer of the first job must
/// not drive the second one's state, so it does nothing (false).
///
/// # Safety
/// nginx thread; `ev` is the `which` event of a live slot, its `data` the
/// slot's live request, and no `enter` for it is running.
pub unsafe fn enter_event(
    ev: *mut ngx_event_t,
    which: SlotEvent,
    what: &'static str,
    f: impl FnOnce(&mut RequestCtx),
) -> bool {
    let offset = match which {
        SlotEvent::Wake => core::mem::offset_of!(RequestSlot, wake),
        SlotEvent::Timer => core::mem::offset_of!(RequestSlot, timer),
    };
    // SAFETY: the caller's promise: `ev` lies `offset` bytes into a slot.
    let slot = unsafe { ev.cast::<u8>().sub(offset) }
        .cast::<RequestSlot>()
        .cast_const();
    // SAFETY: the caller's promise: `data` is that slot's live request.
    let r = unsafe { (*ev).data }.cast::<ngx_http_request_t>();
    // SAFETY: as above.
    if !core::ptr::eq(unsafe { slot_of(r) }, slot) {
        return false;
    }
    // SAFETY: the caller's promise.
    unsafe { enter(r, what, f) }
}

/// What an nginx buffer points into, kept alive until nginx has sent it.
pub struct Held {
    buf: *mut ngx_buf_t,
    _data: HeldData,
}

impl Held {
    /// Memory (a body chunk) that `buf` points into.
    pub fn memory(buf: *mut ngx_buf_t, data: Chunk) -> Self {
        Held {
            buf,
            _data: HeldData::Memory(data),
        }
    }

    /// A file that `buf` has a range of.
    pub fn file(buf: *mut ngx_buf_t, fd: OwnedFd) -> Self {
        Held {
            buf,
            _data: HeldData::File(fd),
        }
    }

    /// The nginx buffer, for how much of it is still unsent.
    pub fn buf(&self) -> *const ngx_buf_t {
        self.buf
    }
}

/// Owned only to be dropped once nginx is done with the buffer.
#[allow(dead_code)]
enum HeldData {
    Memory(Chunk),
    File(OwnedFd),
}

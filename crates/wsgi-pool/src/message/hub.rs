//! The wake-up hub: completions and log lines queued for the nginx
//! thread, the eventfd that wakes its event loop, batching of wake-ups,
//! and the per-worker counters.

use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::timezone::ZoneWatch;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use pyo3::types::PyBytes;
use pyo3::{Py, Python};

/// What pool threads send to the nginx thread besides per-request replies.
pub enum Completion {
    /// New replies are waiting in this request's exchange.
    Ready(RequestId),
    /// A line for nginx's error log, with the request's context if alive.
    Log {
        id: Option<RequestId>,
        level: LogLevel,
        text: String,
    },
    /// Where the app of request `id` was when `wsgi_read_timeout` fired
    /// (its thread's Python stack, or why there is none), for the log.
    AppStack { id: RequestId, text: String },
}

/// nginx's log levels, by name (values are nginx's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Emerg = 1,
    Alert = 2,
    Crit = 3,
    Err = 4,
    Warn = 5,
    Notice = 6,
    Info = 7,
    Debug = 8,
}

impl LogLevel {
    /// Maps a Python `logging` level number to nginx's levels.
    pub fn from_python(level: i64) -> LogLevel {
        match level {
            l if l >= 50 => LogLevel::Crit,
            l if l >= 40 => LogLevel::Err,
            l if l >= 30 => LogLevel::Warn,
            l if l >= 20 => LogLevel::Info,
            _ => LogLevel::Debug,
        }
    }
}

thread_local! {
    /// Pool thread: a finished response was queued without waking nginx
    /// (see [`Hub::finished`]); the wake-up is owed until flushed.
    static OWED: Cell<bool> = const { Cell::new(false) };
    /// Pool thread: this thread's jobs are short enough for deferral to pay.
    static SHORT_JOBS: Cell<bool> = const { Cell::new(false) };
}

/// Pool thread: whether the jobs this thread runs are short (see
/// [`Hub::finished`]); set by the pool loop from recent run times.
pub fn set_short_jobs(short: bool) {
    SHORT_JOBS.with(|s| s.set(short));
}

/// The worker's wake-up line from pool threads to the nginx thread: a
/// channel of completions plus an eventfd the nginx event loop watches.
/// At most one eventfd write is outstanding per batch of completions.
///
/// Under load a pool thread goes on to the next queued job without waking
/// nginx for the response it just finished: on a busy core every wake-up
/// is a context switch, and one per request cost more than the request.
/// Finished responses then wait for the thread to run out of work, for
/// nginx to wake anyway (new requests) or for nginx's deferral timer,
/// which bounds the wait (see `notify`). Only the nginx thread turns
/// deferral on, and only while that timer is armed.
pub struct Hub {
    tx: Sender<Completion>,
    rx: Receiver<Completion>,
    eventfd: OwnedFd,
    pending: AtomicBool,
    /// nginx has a deferral timer armed: finished responses may wait for it.
    defer: AtomicBool,
    pub counters: Counters,
    /// The worker's time zone as it started, and the changes reported.
    pub zone: ZoneWatch,
    /// Whether the worker's Python has the GIL enabled (the status page):
    /// set by the pool at start, and by a pool thread if an import during a
    /// request turns it on (free-threaded builds; it never goes off again).
    pub gil: AtomicBool,
    /// Python objects the nginx thread is done with (see [`SharedBytes`]):
    /// a channel; the nginx thread sends them without touching their
    /// reference count, a pool thread drops them with its thread state
    /// attached (the GIL, or a free-threaded build's attached state).
    pub(super) graveyard: Arc<Graveyard>,
    /// Idle pool threads: how nginx's thread wakes one.
    pub idle: Arc<Idlers>,
}

/// What woke an idle pool thread ([`Hub::wait_idle`]).
pub enum Idle<T> {
    /// A job, or `None` when the queue is gone.
    Work(Option<T>),
    /// The graveyard's bell: release what waits there.
    Release,
}

/// Python `bytes` objects nginx has finished sending, waiting for a pool
/// thread to drop them. A busy thread empties it before each job; an idle
/// one is rung (`bell`) once what waits here reaches
/// [`Graveyard::IDLE_RELEASE_BYTES`], so that a worker that has gone quiet
/// after a large response gives its memory back instead of keeping it
/// until its next request.
pub struct Graveyard {
    /// The objects and their sizes: a channel.
    tx: Sender<(Py<PyBytes>, usize)>,
    rx: Receiver<(Py<PyBytes>, usize)>,
    /// Bytes waiting: added by the nginx thread as it buries, taken off by
    /// the pool thread that drops them (an estimate: only the bell reads it).
    bytes: AtomicUsize,
    /// Rung (set) when `bytes` crosses the line; an idle pool thread looks
    /// at it beside the job queue, and is woken for it.
    bell: AtomicBool,
    idle: Arc<Idlers>,
}

impl Graveyard {
    /// Below this, what waits is left for the next job to release.
    pub const IDLE_RELEASE_BYTES: usize = 1 << 20;

    fn new(idle: Arc<Idlers>) -> Graveyard {
        let (tx, rx) = crossbeam_channel::unbounded();
        Graveyard {
            tx,
            rx,
            bytes: AtomicUsize::new(0),
            bell: AtomicBool::new(false),
            idle,
        }
    }

    /// Any thread, without the GIL: hands `obj` (`len` bytes) over, or
    /// gives it back if no pool is left to take it.
    pub(super) fn bury(&self, obj: Py<PyBytes>, len: usize) -> Result<(), Py<PyBytes>> {
        self.tx.send((obj, len)).map_err(|e| e.into_inner().0)?;
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before < Self::IDLE_RELEASE_BYTES && before + len >= Self::IDLE_RELEASE_BYTES {
            self.bell.store(true, Ordering::SeqCst);
            self.idle.wake_one();
        }
        Ok(())
    }
}

impl Hub {
    /// Made before Python starts: the zone watch takes the worker's zone
    /// as it was then (its master's).
    pub fn new() -> std::io::Result<Hub> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let idle = Arc::new(Idlers::default());
        Ok(Hub {
            graveyard: Arc::new(Graveyard::new(idle.clone())),
            idle,
            tx,
            rx,
            // SAFETY: `fd` was just created and is owned by nobody else.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
            defer: AtomicBool::new(false),
            counters: Counters::default(),
            zone: ZoneWatch::new(),
            gil: AtomicBool::new(true),
        })
    }

    /// Pool thread: releases the Python objects nginx has finished sending.
    pub fn release_python(&self, _py: Python<'_>) {
        while let Ok((obj, len)) = self.graveyard.rx.try_recv() {
            // attached (`_py` proves it); any pool thread may drop any of
            // them: without the GIL a decref from another thread than the
            // one that made the object is CPython's shared-count path
            drop(obj);
            self.graveyard.bytes.fetch_sub(len, Ordering::AcqRel);
        }
    }

    /// Pool thread, idle, without the GIL: the next job, or `Idle::Release`
    /// when nginx has finished sending enough Python bytes that they should
    /// go back now rather than with the next job (see [`Idlers::wait`]).
    pub fn wait_idle<T>(&self, jobs: &Receiver<T>) -> Idle<T> {
        self.idle.wait(|| match jobs.try_recv() {
            Ok(w) => Some(Idle::Work(Some(w))),
            Err(TryRecvError::Disconnected) => Some(Idle::Work(None)),
            Err(TryRecvError::Empty) => self
                .graveyard
                .bell
                .swap(false, Ordering::SeqCst)
                .then_some(Idle::Release),
        })
    }

    pub fn eventfd(&self) -> i32 {
        self.eventfd.as_raw_fd()
    }

    /// Any thread: queue a completion and wake the nginx thread if it is
    /// not already due to wake.
    pub fn send(&self, c: Completion) {
        if self.tx.send(c).is_err() {
            return;
        }
        self.wake();
    }

    /// Pool thread: a request's response is complete (its last reply is
    /// queued). While nginx allows it, the wake-up is only owed: the
    /// thread flushes it with [`Hub::flush_owed`] before it waits for work.
    pub fn finished(&self, id: RequestId, needs_wake: bool) {
        if !needs_wake {
            return;
        }
        if self.tx.send(Completion::Ready(id)).is_err() {
            return;
        }
        // Pairs with the fence in `stop_deferring`: either nginx sees this
        // completion when it drains after turning deferral off, or we see
        // deferral off and wake it.
        fence(Ordering::SeqCst);
        if self.defer.load(Ordering::Relaxed) && SHORT_JOBS.with(|s| s.get()) {
            OWED.with(|o| o.set(true));
        } else {
            self.wake();
        }
    }

    /// Pool thread: wake nginx for responses held back by this thread.
    pub fn flush_owed(&self) {
        if OWED.with(|o| o.replace(false)) {
            self.wake();
        }
    }

    /// nginx thread: pool threads may hold back wake-ups for finished
    /// responses; the caller has a timer armed that drains them.
    pub fn start_deferring(&self) {
        self.defer.store(true, Ordering::Relaxed);
    }

    /// nginx thread: wake-ups are no longer deferred. The caller drains
    /// the channel right after this returns, which picks up anything a pool
    /// thread held back before it saw the change.
    pub fn stop_deferring(&self) {
        self.defer.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// nginx thread: hand queued completions to `f` without touching the
    /// eventfd (for when nginx is awake anyway).
    pub fn drain_quiet(&self, mut f: impl FnMut(Completion)) {
        while let Ok(c) = self.rx.try_recv() {
            f(c);
        }
    }

    /// Writes the eventfd unless a write is already outstanding. Any wake-up
    /// makes nginx drain everything queued, so nothing stays owed.
    fn wake(&self) {
        OWED.with(|o| o.set(false));
        if !self.pending.swap(true, Ordering::SeqCst) {
            self.counters.wakeups.fetch_add(1, Ordering::Relaxed);
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a valid u64 to our eventfd. A
            // failure (counter overflow) still leaves the fd readable.
            unsafe {
                libc::write(
                    self.eventfd.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                )
            };
        }
    }

    /// Pool thread: after pushing into an exchange, wake nginx if needed.
    pub fn ready(&self, id: RequestId, needs_wake: bool) {
        if needs_wake {
            self.send(Completion::Ready(id));
        }
    }

    pub fn log(&self, id: Option<RequestId>, level: LogLevel, text: String) {
        self.send(Completion::Log { id, level, text });
    }

    /// nginx thread: reset the eventfd and hand every queued completion to
    /// `f`. Order matters: read the eventfd first, then clear `pending`,
    /// then drain. A send after the clear writes the eventfd again; a send
    /// before it is already in the channel. (Clearing before the read could
    /// swallow a write and leave `pending` set with no wake-up to come.)
    pub fn drain(&self, f: impl FnMut(Completion)) {
        let mut buf: u64 = 0;
        // SAFETY: reading 8 bytes into a valid u64 from our non-blocking fd.
        unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                &mut buf as *mut u64 as *mut libc::c_void,
                8,
            )
        };
        self.pending.store(false, Ordering::SeqCst);
        self.drain_quiet(f);
    }
}

/// Per-worker counters, updated without locks from either side: each is
/// one atomic read-modify-write (no lost update, with or without the GIL);
/// Relaxed, as nothing else is published through them and the status page
/// reads each on its own (a snapshot, not a consistent cut).
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub responses: AtomicU64,
    pub busy_threads: AtomicUsize,
    pub queued: AtomicUsize,
    pub rejected_503: AtomicU64,
    pub timeouts_504: AtomicU64,
    pub app_errors: AtomicU64,
    pub client_aborts: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Eventfd writes: times a pool thread woke nginx's event loop.
    pub wakeups: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    fn eventfd_count(hub: &Hub) -> u64 {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a local u64 from the hub's eventfd.
        let n = unsafe { libc::read(hub.eventfd(), &mut v as *mut u64 as *mut _, 8) };
        if n == 8 {
            v
        } else {
            0
        }
    }

    fn ready_ids(hub: &Hub) -> Vec<RequestId> {
        let mut ids = vec![];
        hub.drain_quiet(|c| {
            if let Completion::Ready(id) = c {
                ids.push(id)
            }
        });
        ids
    }

    #[test]
    fn finished_wakes_at_once_unless_deferring() {
        let hub = Hub::new().unwrap();
        hub.finished(1, true);
        assert_eq!(eventfd_count(&hub), 1, "no deferral: one wake-up");
        hub.drain(|_| {});
        hub.finished(2, false);
        assert_eq!(eventfd_count(&hub), 0, "already notified: no wake-up");
        assert!(ready_ids(&hub).is_empty(), "and nothing queued");
    }

    #[test]
    fn deferred_wake_is_owed_until_flushed() {
        let hub = Arc::new(Hub::new().unwrap());
        hub.start_deferring();
        let h2 = hub.clone();
        // A pool thread finishes two responses back to back (no wake-up
        // yet), then runs out of work and flushes: one wake-up for both.
        let (held, go) = (
            Arc::new(std::sync::Barrier::new(2)),
            Arc::new(std::sync::Barrier::new(2)),
        );
        let (h, g) = (held.clone(), go.clone());
        let t = thread::spawn(move || {
            set_short_jobs(true);
            h2.finished(1, true);
            h2.finished(2, true);
            h.wait();
            g.wait();
            h2.flush_owed();
            h2.flush_owed();
        });
        held.wait();
        assert_eq!(eventfd_count(&hub), 0, "held back while deferring");
        go.wait();
        t.join().unwrap();
        assert_eq!(eventfd_count(&hub), 1, "one wake-up for the flush");
        assert_eq!(ready_ids(&hub), vec![1, 2], "both were queued");
    }

    #[test]
    fn long_jobs_are_never_deferred() {
        let hub = Hub::new().unwrap();
        set_short_jobs(false);
        hub.start_deferring();
        hub.finished(1, true);
        assert_eq!(
            eventfd_count(&hub),
            1,
            "a long job's response wakes at once"
        );
    }

    #[test]
    fn stop_deferring_then_drain_sees_held_back_responses() {
        let hub = Hub::new().unwrap();
        set_short_jobs(true);
        hub.start_deferring();
        hub.finished(7, true);
        assert_eq!(eventfd_count(&hub), 0);
        // What the nginx deferral timer does when jobs stop arriving.
        hub.stop_deferring();
        assert_eq!(ready_ids(&hub), vec![7]);
        // From now on every finished response wakes nginx again.
        hub.finished(8, true);
        assert_eq!(eventfd_count(&hub), 1);
    }

    #[test]
    fn a_wake_up_clears_what_the_thread_owed() {
        let hub = Hub::new().unwrap();
        set_short_jobs(true);
        hub.start_deferring();
        hub.finished(1, true);
        assert_eq!(eventfd_count(&hub), 0, "held back");
        // A mid-stream reply of another request wakes nginx, which drains
        // everything queued, the held-back response included.
        hub.ready(2, true);
        assert_eq!(eventfd_count(&hub), 1);
        hub.drain(|_| {});
        hub.flush_owed();
        assert_eq!(eventfd_count(&hub), 0, "nothing owed after a wake-up");
    }

    #[test]
    fn hub_coalesces_eventfd_writes() {
        let hub = Hub::new().unwrap();
        hub.send(Completion::Ready(1));
        hub.send(Completion::Ready(2));
        assert_eq!(eventfd_count(&hub), 1, "two sends, one eventfd write");
        let mut ids = vec![];
        hub.drain(|c| {
            if let Completion::Ready(id) = c {
                ids.push(id)
            }
        });
        assert_eq!(ids, vec![1, 2]);
        hub.send(Completion::Ready(3));
        assert_eq!(eventfd_count(&hub), 1, "a send after drain wakes again");
    }
}

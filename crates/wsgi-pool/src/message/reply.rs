//! Replies and the per-request byte queue: what a pool thread sends back
//! (head, body chunks, files, end, error) through a bounded [`Exchange`].

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::*;
use pyo3::types::{PyBytes, PyBytesMethods};
use pyo3::{Bound, Py};

/// The response head as the app gave it, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseHead {
    pub status: u16,
    /// The full status line, e.g. `200 OK`.
    pub status_line: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A file the app handed over with `wsgi.file_wrapper`, for nginx to send.
pub struct FileReply {
    pub fd: OwnedFd,
    pub offset: u64,
    pub len: u64,
}

/// Messages from a pool thread about one request, in order.
/// Response body bytes on their way to nginx.
pub enum Chunk {
    /// Our own copy.
    Owned(Vec<u8>),
    /// A large Python `bytes` object's own buffer, sent without a copy.
    Shared(SharedBytes),
}

impl Chunk {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(b) => b.as_slice(),
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for Chunk {
    fn from(v: Vec<u8>) -> Chunk {
        Chunk::Owned(v)
    }
}

/// The first `len` bytes of a Python `bytes` object, readable without the
/// GIL (or any attached thread state): a `bytes` buffer never changes or
/// moves while the object lives (CPython moves no object, with or without
/// the GIL), and we hold a strong reference. That reference is never released here (the
/// nginx thread must not touch Python): dropping hands it to the hub's
/// graveyard, which pool threads empty while holding the GIL.
pub struct SharedBytes {
    obj: Option<Py<PyBytes>>,
    ptr: *const u8,
    len: usize,
    graveyard: Arc<Graveyard>,
}

// SAFETY: `ptr` points into the immutable buffer of `obj`, which stays alive
// as long as this value; `Py` itself is Send.
unsafe impl Send for SharedBytes {}

impl SharedBytes {
    /// Pool thread, with the GIL.
    pub fn new(obj: &Bound<'_, PyBytes>, len: usize, hub: &Hub) -> SharedBytes {
        let data = obj.as_bytes();
        SharedBytes {
            ptr: data.as_ptr(),
            len: len.min(data.len()),
            obj: Some(obj.clone().unbind()),
            graveyard: hub.graveyard.clone(),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: see the type's comment.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for SharedBytes {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take() {
            if let Err(obj) = self.graveyard.bury(obj, self.len) {
                // No pool left to release it with the GIL (process exit):
                // leaking beats a refcount change without the GIL.
                std::mem::forget(obj);
            }
        }
    }
}

pub enum Reply {
    Head(ResponseHead),
    Body(Chunk),
    File(FileReply),
    /// The response is complete.
    End,
    /// The app failed; `status` is used if no header went out yet.
    Error {
        status: u16,
    },
}

impl Reply {
    /// Bytes this message holds in memory, for the backpressure bound.
    pub fn weight(&self) -> usize {
        match self {
            Reply::Body(b) => b.len(),
            _ => 0,
        }
    }
}

/// Why a pool thread can no longer deliver a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// How a request went wrong, decided once for the worker's counters: the
/// first thread to [`claim`](Exchange::claim) one counts it, so that a
/// request is never counted twice (a timed-out app raises the
/// `RequestTimeout` it was interrupted with; that is not an app error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// The app raised or broke the protocol (pool thread: `app_errors`).
    AppError = 1,
    /// `wsgi_read_timeout` (nginx thread, before it interrupts the app:
    /// `timeouts_504`).
    TimedOut = 2,
    /// The client went away (nginx thread: `client_aborts`).
    ClientGone = 3,
}

struct ExchangeState {
    replies: VecDeque<Reply>,
    bytes: usize,
    /// Pool threads blocked on `room` (0 or 1): notifying a condvar is a
    /// syscall even when nobody waits, so the nginx thread only does it
    /// when someone does.
    waiting: usize,
}

/// The per-request meeting point of one pool thread and the nginx thread.
/// The reply queue is under `state`'s mutex (with `room` to wait on), the
/// flags are atomics: none of it relies on the GIL (nginx's thread never
/// has it).
///
/// The pool thread pushes replies; pushing blocks while more than `limit`
/// bytes wait, so a slow client slows the app instead of growing memory.
/// The nginx thread takes replies when it can write, and cancels the
/// exchange when the request ends early.
pub struct Exchange {
    pub id: RequestId,
    limit: usize,
    state: Mutex<ExchangeState>,
    room: Condvar,
    cancelled: AtomicBool,
    /// The [`Outcome`] claimed, 0 while none is: a compare-and-swap from 0,
    /// so exactly one thread wins (not a check-then-act under the GIL).
    outcome: AtomicU8,
    /// Set while a wake-up for this request is queued and not yet handled.
    notified: AtomicBool,
    /// Python thread ident of the thread running the app (0: not started).
    pub thread_ident: AtomicU64,
    /// Pool thread number + 1 (0: not started), for `$wsgi_thread`.
    pub thread_no: AtomicU64,
    /// Microseconds spent queued / until the first reply (for variables).
    pub queue_time_us: AtomicU64,
    pub started: AtomicBool,
}

impl Exchange {
    pub fn new(id: RequestId, limit: usize) -> Exchange {
        Exchange {
            id,
            limit: limit.max(1),
            state: Mutex::new(ExchangeState {
                replies: VecDeque::new(),
                bytes: 0,
                waiting: 0,
            }),
            room: Condvar::new(),
            cancelled: AtomicBool::new(false),
            outcome: AtomicU8::new(0),
            notified: AtomicBool::new(false),
            thread_ident: AtomicU64::new(0),
            thread_no: AtomicU64::new(0),
            queue_time_us: AtomicU64::new(0),
            started: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ExchangeState> {
        // A panic while holding this lock leaves plain data behind; go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Any thread: records how the request went wrong, if nothing was
    /// recorded yet; true if this call did (then the caller counts it).
    pub fn claim(&self, outcome: Outcome) -> bool {
        self.outcome
            .compare_exchange(0, outcome as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// nginx thread: the request is gone; wake a pool thread blocked on us.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        let mut st = self.lock();
        st.replies.clear();
        st.bytes = 0;
        let waiting = st.waiting > 0;
        drop(st);
        if waiting {
            self.room.notify_all();
        }
    }

    /// Would a push of `weight` bytes block now?
    pub fn is_full(&self, weight: usize) -> bool {
        let st = self.lock();
        st.bytes > 0 && st.bytes + weight > self.limit
    }

    /// Pool thread: queue replies, blocking while the queue is over its
    /// bound (a single message larger than the bound is let through alone).
    /// Returns whether the nginx thread must be woken for this request.
    pub fn push<I: IntoIterator<Item = Reply>>(&self, replies: I) -> Result<bool, Cancelled> {
        let mut st = self.lock();
        for reply in replies {
            let w = reply.weight();
            // Only data waits for room: a head or an end marker carries no
            // bytes, and the nginx thread is not woken until the whole
            // batch is queued, so waiting here for them would never end.
            while w > 0 && st.bytes > 0 && st.bytes + w > self.limit && !self.is_cancelled() {
                st.waiting += 1;
                st = self.room.wait(st).unwrap_or_else(|e| e.into_inner());
                st.waiting -= 1;
            }
            if self.is_cancelled() {
                return Err(Cancelled);
            }
            st.bytes += w;
            st.replies.push_back(reply);
        }
        drop(st);
        Ok(!self.notified.swap(true, Ordering::AcqRel))
    }

    /// Pool thread: wait until the queue is under its bound or `timeout`.
    pub fn wait_for_room(&self, weight: usize, timeout: Duration) {
        let mut st = self.lock();
        if st.bytes > 0 && st.bytes + weight > self.limit && !self.is_cancelled() {
            st.waiting += 1;
            let (mut st, _) = self
                .room
                .wait_timeout(st, timeout)
                .unwrap_or_else(|e| e.into_inner());
            st.waiting -= 1;
        }
    }

    /// nginx thread: we are about to look at the queue; later pushes must
    /// wake us again.
    pub fn clear_notified(&self) {
        self.notified.store(false, Ordering::Release);
    }

    /// nginx thread: take queued replies into `out`, up to `max_bytes` of
    /// body data (at least one message if any is queued).
    pub fn take(&self, out: &mut VecDeque<Reply>, max_bytes: usize) -> usize {
        let mut st = self.lock();
        let mut taken = 0usize;
        let mut n = 0;
        if out.is_empty() && st.bytes <= max_bytes {
            // All of it (a small response, typically): take the pool
            // thread's queue itself rather than moving the replies into a
            // queue the nginx thread allocates for them.
            std::mem::swap(out, &mut st.replies);
            taken = st.bytes;
            n = out.len();
        }
        while let Some(front) = st.replies.front() {
            let w = front.weight();
            if n > 0 && taken + w > max_bytes {
                break;
            }
            taken += w;
            n += 1;
            let r = st.replies.pop_front().expect("front exists");
            out.push_back(r);
        }
        st.bytes -= taken;
        let waiting = st.waiting > 0;
        drop(st);
        if taken > 0 && waiting {
            self.room.notify_all();
        }
        n
    }

    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn push_wakes_once_until_cleared() {
        let ex = Exchange::new(1, 1024);
        assert!(ex.push([Reply::Body(vec![1; 10].into())]).unwrap());
        assert!(!ex.push([Reply::Body(vec![2; 10].into())]).unwrap());
        ex.clear_notified();
        assert!(ex.push([Reply::End]).unwrap());
    }

    #[test]
    fn one_outcome_per_request_whoever_claims_first() {
        let ex = Arc::new(Exchange::new(1, 1024));
        let winners: Vec<bool> = [Outcome::TimedOut, Outcome::AppError, Outcome::ClientGone]
            .into_iter()
            .map(|o| {
                let ex = ex.clone();
                thread::spawn(move || ex.claim(o))
            })
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(winners.iter().filter(|&&w| w).count(), 1, "{winners:?}");
        assert!(!ex.claim(Outcome::AppError), "decided once");
    }

    #[test]
    fn take_respects_byte_budget_but_makes_progress() {
        let ex = Exchange::new(1, 1 << 20);
        ex.push([
            Reply::Body(vec![0; 100].into()),
            Reply::Body(vec![0; 100].into()),
            Reply::End,
        ])
        .unwrap();
        let mut out = VecDeque::new();
        assert_eq!(ex.take(&mut out, 50), 1);
        assert_eq!(ex.queued_bytes(), 100);
        assert_eq!(ex.take(&mut out, 1000), 2);
        assert_eq!(ex.queued_bytes(), 0);
        assert!(matches!(out.back(), Some(Reply::End)));
    }

    #[test]
    fn take_into_an_empty_queue_takes_everything_that_fits() {
        let ex = Exchange::new(1, 1 << 20);
        ex.push([Reply::Body(vec![0; 100].into()), Reply::End])
            .unwrap();
        let mut out = VecDeque::new();
        assert_eq!(ex.take(&mut out, 100), 2);
        assert_eq!(ex.queued_bytes(), 0);
        assert!(matches!(out.back(), Some(Reply::End)));
        // The exchange still works after giving its queue away.
        ex.push([Reply::Body(vec![0; 10].into())]).unwrap();
        assert_eq!(ex.queued_bytes(), 10);
        out.clear();
        assert_eq!(ex.take(&mut out, 5), 1);
        assert_eq!(ex.queued_bytes(), 0);
    }

    #[test]
    fn full_queue_blocks_producer_until_consumer_takes() {
        let ex = Arc::new(Exchange::new(7, 100));
        ex.push([Reply::Body(vec![0; 80].into())]).unwrap();
        assert!(ex.is_full(80));
        let (tx, rx) = std::sync::mpsc::channel();
        let ex2 = ex.clone();
        let t = thread::spawn(move || {
            ex2.push([Reply::Body(vec![0; 80].into())]).unwrap();
            tx.send(()).unwrap();
        });
        // The producer cannot finish while the first chunk is queued.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        let mut out = VecDeque::new();
        ex.take(&mut out, 1000);
        rx.recv().unwrap();
        t.join().unwrap();
        assert_eq!(ex.queued_bytes(), 80);
    }

    #[test]
    fn oversized_body_with_end_does_not_block() {
        // A complete response whose body alone exceeds the bound: the end
        // marker must not wait behind it (nobody would ever take it).
        let ex = Exchange::new(7, 100);
        let head = ResponseHead {
            status: 200,
            status_line: b"200 OK".to_vec(),
            headers: vec![],
        };
        assert!(ex
            .push([
                Reply::Head(head),
                Reply::Body(vec![0; 300].into()),
                Reply::End
            ])
            .unwrap());
        assert_eq!(ex.queued_bytes(), 300);
    }

    #[test]
    fn cancel_releases_blocked_producer() {
        let ex = Arc::new(Exchange::new(7, 10));
        ex.push([Reply::Body(vec![0; 10].into())]).unwrap();
        let ex2 = ex.clone();
        let t = thread::spawn(move || ex2.push([Reply::Body(vec![0; 10].into())]));
        ex.cancel();
        assert_eq!(t.join().unwrap(), Err(Cancelled));
        assert_eq!(ex.push([Reply::End]), Err(Cancelled));
    }
}

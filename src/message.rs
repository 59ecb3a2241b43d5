//! What crosses between the nginx thread and the pool threads.
//!
//! Everything here is owned data: no `ngx_*` pointer ever lives in these
//! types, and nothing here takes the GIL. The nginx thread builds a [`Job`],
//! a pool thread answers through the request's [`Exchange`], and the
//! [`Hub`] wakes the nginx thread through its eventfd.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use pyo3::types::{PyBytes, PyBytesMethods};
use pyo3::{Bound, Py, Python};

/// Identifies a request on the nginx thread; pool threads only echo it back.
pub type RequestId = u64;

/// One request, handed from the nginx thread to a pool thread.
pub struct Job {
    pub id: RequestId,
    /// Index of the application in the worker's import table.
    pub app: usize,
    pub env: RequestEnv,
    pub body: Body,
    pub exchange: Arc<Exchange>,
    pub queued_at: Instant,
}

/// Request data for environ, copied out of nginx's request on its thread.
///
/// Strings are raw bytes (HTTP is latin-1 at heart); the pool thread decodes
/// them as latin-1 `str` as PEP 3333 asks. They all live in one buffer,
/// named by [`Span`]s: one allocation made on the nginx thread and freed on
/// a pool thread instead of one per string.
#[derive(Default, Debug, Clone)]
pub struct RequestEnv {
    data: Vec<u8>,
    pub method: Span,
    pub script_name: Span,
    pub path_info: Span,
    pub query_string: Span,
    pub request_uri: Span,
    pub protocol: Span,
    pub server_name: Span,
    pub server_port: Span,
    pub remote_addr: Span,
    pub remote_port: Span,
    pub https: bool,
    pub content_type: Option<Span>,
    pub content_length: Option<u64>,
    /// Request headers in arrival order, as (name, value).
    pub headers: Vec<(Span, Span)>,
    /// `wsgi_param` results, applied last (they override).
    pub params: Vec<(Span, Span)>,
}

/// A string of a [`RequestEnv`]: a range of its buffer.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: usize,
    len: usize,
}

impl RequestEnv {
    /// An empty env whose buffer holds `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> RequestEnv {
        RequestEnv {
            data: Vec::with_capacity(capacity),
            ..Default::default()
        }
    }

    /// Copies `bytes` in and names them.
    pub fn push(&mut self, bytes: &[u8]) -> Span {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len(),
        }
    }

    /// Writes a number in decimal and names it (by hand: `write!` costs
    /// ten times as much, twice per request for the two ports).
    pub fn push_number(&mut self, mut n: u64) -> Span {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }

    pub fn get(&self, span: Span) -> &[u8] {
        &self.data[span.start..span.start + span.len]
    }
}

/// A request body, fully read by nginx before the app runs.
#[derive(Default)]
pub struct Body {
    pub segments: VecDeque<BodySegment>,
}

/// A piece of a request body: in memory, a range of nginx's temp file, or
/// (with `wsgi_request_buffering off`) the rest of the body as it arrives.
pub enum BodySegment {
    Memory(BodyBytes),
    Stream(Arc<BodyStream>),
    /// `fd` is our own duplicate, so it outlives the request's temp file.
    File {
        fd: Arc<OwnedFd>,
        offset: u64,
        len: u64,
    },
}

impl Body {
    /// Appends a copy of `bytes` (to the last piece, if that is a copy too).
    pub fn push_copy(&mut self, bytes: &[u8]) {
        match self.segments.back_mut() {
            Some(BodySegment::Memory(BodyBytes::Owned(v))) => v.extend_from_slice(bytes),
            _ => self
                .segments
                .push_back(BodySegment::Memory(bytes.to_vec().into())),
        }
    }

    /// Appends `len` bytes of `block` at `ptr`, extending the last piece
    /// when it is the range just before.
    ///
    /// # Safety
    /// `ptr..ptr+len` lies inside `block`, and nobody writes to it any more.
    pub unsafe fn push_range(&mut self, block: &Arc<MallocBlock>, ptr: *const u8, len: usize) {
        if let Some(BodySegment::Memory(BodyBytes::Block {
            block: last,
            ptr: p,
            len: l,
        })) = self.segments.back_mut()
        {
            if Arc::ptr_eq(last, block) && std::ptr::eq(p.wrapping_add(*l), ptr) {
                *l += len;
                return;
            }
        }
        self.segments
            .push_back(BodySegment::Memory(BodyBytes::Block {
                block: block.clone(),
                ptr,
                len,
            }));
    }

    pub fn len(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| match s {
                BodySegment::Memory(v) => v.len() as u64,
                BodySegment::File { len, .. } => *len,
                BodySegment::Stream(_) => 0,
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Request body bytes in memory: our own copy, or a range of a block nginx
/// allocated for the body and gave up to us (`handler::collect_body`), so a
/// large body crosses to the pool thread without a copy.
pub enum BodyBytes {
    Owned(Vec<u8>),
    Block {
        block: Arc<MallocBlock>,
        ptr: *const u8,
        len: usize,
    },
}

// SAFETY: `ptr..ptr+len` lies inside `block`, which nobody writes to once
// detached and which lives as long as this value: read-only shared memory.
unsafe impl Send for BodyBytes {}
// SAFETY: as for Send above.
unsafe impl Sync for BodyBytes {}

impl BodyBytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            BodyBytes::Owned(v) => v,
            // SAFETY: see the type's Send comment.
            BodyBytes::Block { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for BodyBytes {
    fn default() -> BodyBytes {
        BodyBytes::Owned(Vec::new())
    }
}

impl From<Vec<u8>> for BodyBytes {
    fn from(v: Vec<u8>) -> BodyBytes {
        BodyBytes::Owned(v)
    }
}

/// A block from libc's `malloc` that we own and `free` when the last
/// reference goes (on whichever thread that is).
pub struct MallocBlock(*mut libc::c_void);

// SAFETY: the block is plain memory, owned only by this value; free() may
// be called from any thread.
unsafe impl Send for MallocBlock {}
// SAFETY: as for Send above (shared access only reads the pointer).
unsafe impl Sync for MallocBlock {}

impl MallocBlock {
    /// # Safety
    /// `p` came from `malloc` (or `posix_memalign`) and nothing else frees it.
    pub unsafe fn from_raw(p: *mut libc::c_void) -> MallocBlock {
        MallocBlock(p)
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.0 as *const u8
    }
}

impl Drop for MallocBlock {
    fn drop(&mut self) {
        // SAFETY: we own the block (from_raw's contract).
        unsafe { libc::free(self.0) }
    }
}

struct StreamState {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    eof: bool,
    error: Option<String>,
    /// nginx stopped reading from the client because we were full.
    paused: bool,
}

/// The size of the pieces a streamed request body crosses in.
pub const STREAM_CHUNK: usize = 64 * 1024;

/// A request body streamed from the nginx thread to the app while it
/// arrives. Bounded: past `limit` bytes nginx stops reading the client
/// (TCP pushes back), and resumes when the app has read.
pub struct BodyStream {
    id: RequestId,
    limit: usize,
    hub: Arc<Hub>,
    state: Mutex<StreamState>,
    ready: Condvar,
}

impl BodyStream {
    pub fn new(id: RequestId, limit: usize, hub: Arc<Hub>) -> BodyStream {
        BodyStream {
            id,
            limit: limit.max(1),
            hub,
            state: Mutex::new(StreamState {
                chunks: VecDeque::new(),
                bytes: 0,
                eof: false,
                error: None,
                paused: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// nginx thread: queue body bytes from the client for the app. They are copied into
    /// chunks of one size, [`STREAM_CHUNK`], filling the last queued one
    /// first: nginx's reads come in every size, and blocks of every size
    /// freed on the pool thread left the allocator holding tens of MiB
    /// after a large upload.
    pub fn push(&self, mut data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut st = self.lock();
        st.bytes += data.len();
        while !data.is_empty() {
            let chunk = match st.chunks.back_mut() {
                Some(c) if c.len() < c.capacity() => c,
                _ => {
                    st.chunks.push_back(Vec::with_capacity(STREAM_CHUNK));
                    st.chunks.back_mut().expect("just pushed")
                }
            };
            let n = data.len().min(chunk.capacity() - chunk.len());
            chunk.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        drop(st);
        self.ready.notify_all();
    }

    /// nginx thread: may we read more from the client now? If not, we are
    /// paused until the app reads.
    pub fn has_room(&self) -> bool {
        let mut st = self.lock();
        let room = st.bytes < self.limit;
        st.paused = !room;
        room
    }

    /// nginx thread: the body is complete.
    pub fn finish(&self) {
        self.lock().eof = true;
        self.ready.notify_all();
    }

    /// nginx thread: the body will never complete (client gone, timeout).
    pub fn fail(&self, why: &str) {
        let mut st = self.lock();
        if !st.eof && st.error.is_none() {
            st.error = Some(why.to_string());
        }
        drop(st);
        self.ready.notify_all();
    }

    /// Pool thread: the next chunk, blocking until one arrives; `None` at
    /// the end of the body.
    pub fn next_chunk(&self) -> std::io::Result<Option<Vec<u8>>> {
        let mut st = self.lock();
        loop {
            if let Some(c) = st.chunks.pop_front() {
                st.bytes -= c.len();
                let resume = st.paused && st.bytes < self.limit;
                if resume {
                    st.paused = false;
                }
                drop(st);
                if resume {
                    self.hub.send(Completion::Ready(self.id));
                }
                return Ok(Some(c));
            }
            if let Some(e) = &st.error {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    e.clone(),
                ));
            }
            if st.eof {
                return Ok(None);
            }
            st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Reads a file segment with `pread`, never moving a shared offset.
pub fn read_segment_at(fd: &OwnedFd, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    // SAFETY: the File is wrapped in ManuallyDrop so the borrowed descriptor
    // is not closed here; `fd` stays owned by the caller.
    let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) });
    file.read_at(buf, offset)
}

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
/// GIL: a `bytes` buffer never changes or moves while the object lives, and
/// we hold a strong reference. That reference is never released here (the
/// nginx thread must not touch Python): dropping hands it to the hub's
/// graveyard, which pool threads empty while holding the GIL.
pub struct SharedBytes {
    obj: Option<Py<PyBytes>>,
    ptr: *const u8,
    len: usize,
    graveyard: Sender<Py<PyBytes>>,
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
            graveyard: hub.graveyard_tx.clone(),
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
            if let Err(e) = self.graveyard.send(obj) {
                // No pool left to release it with the GIL (process exit):
                // leaking beats a refcount change without the GIL.
                std::mem::forget(e.into_inner());
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

struct ExchangeState {
    replies: VecDeque<Reply>,
    bytes: usize,
    /// Pool threads blocked on `room` (0 or 1): notifying a condvar is a
    /// syscall even when nobody waits, so the nginx thread only does it
    /// when someone does.
    waiting: usize,
}

/// The per-request meeting point of one pool thread and the nginx thread.
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
    /// Python objects the nginx thread is done with (see [`SharedBytes`]).
    graveyard_tx: Sender<Py<PyBytes>>,
    graveyard_rx: Receiver<Py<PyBytes>>,
}

impl Hub {
    pub fn new() -> std::io::Result<Hub> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let (graveyard_tx, graveyard_rx) = crossbeam_channel::unbounded();
        Ok(Hub {
            graveyard_tx,
            graveyard_rx,
            tx,
            rx,
            // SAFETY: `fd` was just created and is owned by nobody else.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
            defer: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    /// Pool thread: releases the Python objects nginx has finished sending.
    pub fn release_python(&self, _py: Python<'_>) {
        while let Ok(obj) = self.graveyard_rx.try_recv() {
            drop(obj); // with the GIL held: `_py` proves it
        }
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

/// Per-worker counters, updated without locks from either side.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn request_env_strings_share_one_buffer() {
        let mut env = RequestEnv::with_capacity(4);
        env.method = env.push(b"GET");
        env.query_string = env.push(b"");
        env.remote_port = env.push_number(54321);
        let zero = env.push_number(0);
        let max = env.push_number(u64::MAX);
        env.path_info = env.push(b"/caf\xc3\xa9");
        let host = (env.push(b"Host"), env.push(b"example.org"));
        env.headers.push(host);
        assert_eq!(env.get(env.method), b"GET");
        assert_eq!(env.get(env.query_string), b"");
        assert_eq!(env.get(env.remote_port), b"54321");
        assert_eq!(env.get(zero), b"0");
        assert_eq!(env.get(max), b"18446744073709551615");
        assert_eq!(env.get(env.path_info), b"/caf\xc3\xa9");
        assert_eq!(env.get(env.headers[0].0), b"Host");
        assert_eq!(env.get(env.headers[0].1), b"example.org");
        // Unset strings are empty, not someone else's bytes.
        assert_eq!(env.get(env.server_name), b"");
    }

    #[test]
    fn push_wakes_once_until_cleared() {
        let ex = Exchange::new(1, 1024);
        assert!(ex.push([Reply::Body(vec![1; 10].into())]).unwrap());
        assert!(!ex.push([Reply::Body(vec![2; 10].into())]).unwrap());
        ex.clear_notified();
        assert!(ex.push([Reply::End]).unwrap());
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

    #[test]
    fn streamed_body_travels_in_chunks_of_one_size() {
        let hub = Arc::new(Hub::new().unwrap());
        let s = BodyStream::new(1, 1 << 20, hub);
        s.push(&[1; 100 * 1024]);
        s.push(&[2; 40 * 1024]);
        s.push(&[]);
        s.finish();
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        while let Some(c) = s.next_chunk().unwrap() {
            assert_eq!(c.capacity(), STREAM_CHUNK);
            sizes.push(c.len());
            all.extend(c);
        }
        assert_eq!(sizes, [65536, 65536, 12288]);
        assert_eq!(all.len(), 140 * 1024);
        assert!(all[..100 * 1024].iter().all(|&b| b == 1));
        assert!(all[100 * 1024..].iter().all(|&b| b == 2));
    }

    #[test]
    fn body_pieces_merge_when_contiguous() {
        let mut body = Body::default();
        // SAFETY: a fresh malloc'd block, owned by the Arc.
        let block = unsafe {
            let p = libc::malloc(100);
            assert!(!p.is_null());
            libc::memset(p, b'x' as i32, 100);
            Arc::new(MallocBlock::from_raw(p))
        };
        let base = block.as_ptr();
        body.push_copy(b"ab");
        body.push_copy(b"cd");
        // SAFETY: all ranges lie inside the 100-byte block.
        unsafe {
            body.push_range(&block, base, 10);
            body.push_range(&block, base.wrapping_add(10), 30);
            body.push_range(&block, base.wrapping_add(50), 5);
        }
        body.push_copy(b"e");
        let sizes: Vec<usize> = body
            .segments
            .iter()
            .map(|s| match s {
                BodySegment::Memory(b) => b.len(),
                _ => usize::MAX,
            })
            .collect();
        assert_eq!(sizes, [4, 40, 5, 1]);
        assert_eq!(body.len(), 50);
        assert_eq!(Arc::strong_count(&block), 3);
        drop(body);
        assert_eq!(Arc::strong_count(&block), 1);
    }

    #[test]
    fn body_len_sums_segments() {
        let mut b = Body::default();
        b.segments.push_back(BodySegment::Memory(vec![0; 5].into()));
        let fd: OwnedFd = File::open("/dev/null").unwrap().into();
        b.segments.push_back(BodySegment::File {
            fd: Arc::new(fd),
            offset: 0,
            len: 7,
        });
        assert_eq!(b.len(), 12);
    }
}

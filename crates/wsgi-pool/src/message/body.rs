//! Request bodies and who owns their memory: bytes copied or taken over
//! from nginx, ranges of nginx's temp file, and the bounded stream of a
//! body that arrives while the app runs.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::*;

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
/// (TCP pushes back), and resumes when the app has read. Shared by the
/// two threads under `state`'s mutex (`ready` to wait on).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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

//! Pool threads: `wsgi.input` over the request body nginx read — memory
//! pieces and ranges of nginx's temp file (through our own descriptor, read
//! with `pread` without the GIL). Reading never involves the nginx thread.

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::ptr;

use pyo3::exceptions::PyOSError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::message::{read_segment_at, Body, BodyBytes, BodySegment};

const FILE_CHUNK: usize = 64 * 1024;

/// Largest `read(n)` of a streaming body made into a bytes object of `n`
/// bytes up front.
const DIRECT_READ_MAX: usize = 1 << 20;

/// Reads that needed a buffer this large give its memory back at once.
const RELEASE_AFTER: usize = 16 << 20;

/// Returns this thread's free mimalloc pages to the system.
#[cfg(not(feature = "system-alloc"))]
fn release_free_memory() {
    // SAFETY: a plain call into the allocator (mimalloc's own API: collect
    // and purge free memory now); no pointers cross.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// The system allocator (`--features system-alloc`) keeps its own policy.
#[cfg(feature = "system-alloc")]
fn release_free_memory() {}

/// Byte source behind `wsgi.input`, independent of Python for testing.
pub struct BodyReader {
    segments: VecDeque<BodySegment>,
    /// The segment being read (memory, or a chunk read from the temp file).
    buf: BodyBytes,
    pos: usize,
}

impl BodyReader {
    pub fn new(body: Body) -> BodyReader {
        BodyReader {
            segments: body.segments,
            buf: BodyBytes::default(),
            pos: 0,
        }
    }

    /// Whether reading on may touch the temp file (worth releasing the GIL).
    pub fn has_file(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, BodySegment::File { .. } | BodySegment::Stream(_)))
    }

    fn available(&self) -> &[u8] {
        &self.buf.as_slice()[self.pos..]
    }

    /// Refills the buffer from the next segment; false at end of body.
    fn fill(&mut self) -> std::io::Result<bool> {
        while self.pos >= self.buf.len() {
            let Some(seg) = self.segments.pop_front() else {
                return Ok(false);
            };
            match seg {
                BodySegment::Stream(stream) => {
                    // Blocks (without the GIL) until the client sends more.
                    if let Some(chunk) = stream.next_chunk()? {
                        self.buf = chunk.into();
                        self.pos = 0;
                        self.segments.push_front(BodySegment::Stream(stream));
                    }
                }
                BodySegment::Memory(v) => {
                    self.buf = v;
                    self.pos = 0;
                }
                BodySegment::File { fd, offset, len } => {
                    let n = (len as usize).min(FILE_CHUNK);
                    // Reuse the last chunk's allocation when it was ours.
                    let mut chunk = match std::mem::take(&mut self.buf) {
                        BodyBytes::Owned(v) => v,
                        BodyBytes::Block { .. } => Vec::new(),
                    };
                    chunk.clear();
                    chunk.resize(n, 0);
                    // Empty until the chunk is read whole (an error leaves
                    // nothing half-read behind).
                    self.pos = 0;
                    let mut got = 0;
                    while got < n {
                        let r = read_segment_at(&fd, offset + got as u64, &mut chunk[got..])?;
                        if r == 0 {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "request body temp file is shorter than expected",
                            ));
                        }
                        got += r;
                    }
                    self.buf = BodyBytes::Owned(chunk);
                    if (n as u64) < len {
                        self.segments.push_front(BodySegment::File {
                            fd,
                            offset: offset + n as u64,
                            len: len - n as u64,
                        });
                    }
                }
            }
        }
        Ok(true)
    }

    /// Bytes left to read, when known (not while the body still streams in).
    pub fn remaining(&self) -> Option<u64> {
        let mut n = self.available().len() as u64;
        for s in &self.segments {
            n += match s {
                BodySegment::Memory(v) => v.len() as u64,
                BodySegment::File { len, .. } => *len,
                BodySegment::Stream(_) => return None,
            };
        }
        Some(n)
    }

    /// Fills `out` from the body; returns how much was filled (less only at
    /// the end of the body). `out` may be uninitialised: it is only written.
    pub fn read_into(&mut self, out: &mut [MaybeUninit<u8>]) -> std::io::Result<usize> {
        let mut got = 0;
        while got < out.len() {
            if !self.fill()? {
                break;
            }
            let avail = self.available();
            let n = avail.len().min(out.len() - got);
            // SAFETY: `n` bytes fit both; `out` is memory of our own, not
            // the body's buffer, so they do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(avail.as_ptr(), out[got..].as_mut_ptr().cast::<u8>(), n)
            };
            self.pos += n;
            got += n;
        }
        Ok(got)
    }

    /// Up to `limit` bytes (all remaining if `None`).
    pub fn read(&mut self, limit: Option<usize>) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let want = match limit {
                Some(l) if out.len() >= l => break,
                Some(l) => l - out.len(),
                None => usize::MAX,
            };
            if !self.fill()? {
                break;
            }
            let avail = self.available();
            let n = avail.len().min(want);
            if out.is_empty()
                && limit.is_none()
                && self.pos == 0
                && n == self.buf.len()
                && self.segments.is_empty()
            {
                // Whole remaining body is this one buffer: hand it over.
                self.pos = 0;
                return Ok(match std::mem::take(&mut self.buf) {
                    BodyBytes::Owned(v) => v,
                    block => block.as_slice().to_vec(),
                });
            }
            out.extend_from_slice(&avail[..n]);
            self.pos += n;
        }
        Ok(out)
    }

    /// One line including its `\n`, at most `limit` bytes.
    pub fn readline(&mut self, limit: Option<usize>) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            if !self.fill()? {
                break;
            }
            let want = limit.map(|l| l - out.len()).unwrap_or(usize::MAX);
            let avail = self.available();
            let window = &avail[..avail.len().min(want)];
            if let Some(i) = window.iter().position(|&c| c == b'\n') {
                out.extend_from_slice(&window[..=i]);
                self.pos += i + 1;
                break;
            }
            out.extend_from_slice(window);
            self.pos += window.len();
        }
        Ok(out)
    }
}

/// A bytes object of `n` bytes written by `fill`, which returns how many it
/// wrote (fewer only at the end of the body). pyo3's `PyBytes::new_with`
/// zero-fills the buffer first: on the 64 KiB reads of a 256 KiB POST that
/// memset cost a fifth as much as the copy itself.
fn new_bytes_filled<'py>(
    py: Python<'py>,
    n: usize,
    fill: impl FnOnce(&mut [MaybeUninit<u8>]) -> PyResult<usize>,
) -> PyResult<Bound<'py, PyBytes>> {
    // SAFETY: with a null source CPython allocates `n` uninitialised bytes
    // (and the trailing NUL); the result is a new reference to a bytes object.
    let obj = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyBytes_FromStringAndSize(ptr::null(), n as ffi::Py_ssize_t),
        )?
        .cast_into_unchecked::<PyBytes>()
    };
    // SAFETY: the buffer holds `n` bytes and nobody else sees the object
    // until it is returned.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(
            ffi::PyBytes_AsString(obj.as_ptr()).cast::<MaybeUninit<u8>>(),
            n,
        )
    };
    let got = fill(buf)?;
    if got == n {
        return Ok(obj);
    }
    // SAFETY: `fill` wrote the first `got` bytes.
    let written = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), got) };
    Ok(PyBytes::new(py, written))
}

fn io_err(e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("cannot read request body: {e}"))
}

fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    match size {
        None => Ok(None),
        Some(s) if s.is_none() => Ok(None),
        Some(s) => {
            let n: i64 = s.extract()?;
            Ok(if n < 0 { None } else { Some(n as usize) })
        }
    }
}

/// `environ['wsgi.input']`. Its methods take `&mut self`: pyo3's borrow
/// flag (atomic in free-threaded builds) makes an app that reads one from
/// two threads at once get "Already borrowed" instead of a data race.
#[pyclass(module = "ngx_wsgi")]
pub struct Input {
    reader: BodyReader,
}

impl Input {
    pub fn new(body: Body) -> Input {
        Input {
            reader: BodyReader::new(body),
        }
    }

    /// Reads `body` from the start (a recycled `wsgi.input`).
    pub fn reset(&mut self, body: Body) {
        self.reader = BodyReader::new(body);
    }

    /// Runs a read, without the GIL only when it may wait on the disk:
    /// giving the GIL away for a memcpy would cost a thread switch.
    fn with_reader<T: Send>(
        &mut self,
        py: Python<'_>,
        f: impl FnOnce(&mut BodyReader) -> std::io::Result<T> + Send,
    ) -> PyResult<T> {
        let reader = &mut self.reader;
        if reader.has_file() {
            py.detach(|| f(reader)).map_err(io_err)
        } else {
            f(reader).map_err(io_err)
        }
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size)?;
        // Straight into the bytes object, without a Vec to copy from: the
        // usual read(CONTENT_LENGTH) of a buffered body, and the loop over
        // read(65536) of one still arriving (of a bounded size: a larger
        // `n` may be far more than the client sends).
        let direct = match self.reader.remaining() {
            Some(rem) => Some(limit.map_or(rem, |l| rem.min(l as u64)) as usize),
            None => limit.filter(|&n| n <= DIRECT_READ_MAX),
        };
        if let Some(n) = direct {
            // Unseen by anyone yet: safe to fill without the GIL.
            return new_bytes_filled(py, n, |buf| self.with_reader(py, |r| r.read_into(buf)));
        }
        let data = self.with_reader(py, |r| r.read(limit))?;
        let bytes = PyBytes::new(py, &data);
        if data.capacity() >= RELEASE_AFTER {
            // mimalloc would keep this block's pages for the thread's next
            // allocation, however far away: a worker that once read a
            // 256 MiB body in one call would hold 256 MiB more until then.
            drop(data);
            release_free_memory();
        }
        Ok(bytes)
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size)?;
        let data = self.with_reader(py, |r| r.readline(limit))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint)?;
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.with_reader(py, |r| r.readline(None))?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| h > 0 && total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with_reader(py, |r| r.readline(None))?;
        Ok(if line.is_empty() {
            None
        } else {
            Some(PyBytes::new(py, &line))
        })
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MallocBlock;
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use std::sync::Arc;

    fn body(parts: Vec<BodySegment>) -> Body {
        Body {
            segments: parts.into(),
        }
    }

    fn temp_file(content: &[u8]) -> Arc<OwnedFd> {
        let mut f = tempfile();
        f.write_all(content).unwrap();
        Arc::new(f.into())
    }

    fn tempfile() -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "wsgi-input-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    /// "mem line\n" in memory, then 17 bytes of a temp file from offset 2.
    fn mem_and_file_body() -> BodyReader {
        let fd = temp_file(b"XXhello file\nsecond");
        BodyReader::new(body(vec![
            BodySegment::Memory(b"mem line\n".to_vec().into()),
            BodySegment::File {
                fd,
                offset: 2,
                len: 17,
            },
        ]))
    }

    #[test]
    fn read_all_across_memory_and_file() {
        let mut r = mem_and_file_body();
        assert_eq!(r.read(None).unwrap(), b"mem line\nhello file\nsecond");
        assert_eq!(r.read(None).unwrap(), b"");
    }

    #[test]
    fn read_sized_and_readline() {
        let mut r = BodyReader::new(body(vec![
            BodySegment::Memory(b"ab".to_vec().into()),
            BodySegment::Memory(b"c\ndef\n".to_vec().into()),
            BodySegment::Memory(b"tail".to_vec().into()),
        ]));
        assert_eq!(r.read(Some(1)).unwrap(), b"a");
        assert_eq!(r.readline(None).unwrap(), b"bc\n");
        assert_eq!(r.readline(Some(2)).unwrap(), b"de");
        assert_eq!(r.readline(None).unwrap(), b"f\n");
        assert_eq!(r.readline(None).unwrap(), b"tail");
        assert_eq!(r.readline(None).unwrap(), b"");
        assert_eq!(r.read(Some(10)).unwrap(), b"");
    }

    /// Two ranges of one malloc'd block (as `collect_body` makes them),
    /// between owned memory and a temp-file range; the block outlives the
    /// reader's use of it and is freed once (run under valgrind/ASan to see).
    #[test]
    fn block_ranges_read_like_owned_memory() {
        let data = b"0123456789abcdefghij";
        // SAFETY: a fresh malloc'd block, filled before anyone reads it.
        let block = unsafe {
            let p = libc::malloc(data.len()) as *mut u8;
            assert!(!p.is_null());
            std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
            Arc::new(MallocBlock::from_raw(p.cast()))
        };
        let base = block.as_ptr();
        let fd = temp_file(b"FILE");
        let mut r = BodyReader::new(body(vec![
            BodySegment::Memory(b"<".to_vec().into()),
            BodySegment::Memory(BodyBytes::Block {
                block: block.clone(),
                ptr: base.wrapping_add(2),
                len: 5,
            }),
            BodySegment::File {
                fd,
                offset: 0,
                len: 4,
            },
            BodySegment::Memory(BodyBytes::Block {
                block: block.clone(),
                ptr: base.wrapping_add(10),
                len: 10,
            }),
        ]));
        drop(block);
        assert_eq!(r.remaining(), Some(20));
        assert_eq!(r.readline(Some(3)).unwrap(), b"<23");
        assert_eq!(r.read(Some(6)).unwrap(), b"456FIL");
        assert_eq!(read_into_vec(&mut r, 11), b"Eabcdefghij");
        assert_eq!(r.remaining(), Some(0));
    }

    /// `read_into` into fresh (uninitialised) memory, as `read()` does.
    fn read_into_vec(r: &mut BodyReader, cap: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(cap);
        let got = r.read_into(&mut v.spare_capacity_mut()[..cap]).unwrap();
        // SAFETY: read_into wrote the first `got` bytes.
        unsafe { v.set_len(got) };
        v
    }

    #[test]
    fn remaining_and_read_into_across_segments() {
        let mut r = mem_and_file_body();
        assert_eq!(r.remaining(), Some(26));
        assert_eq!(read_into_vec(&mut r, 4), b"mem ");
        assert_eq!(r.remaining(), Some(22));
        // Asked for more than is left: fills only what the body has.
        assert_eq!(read_into_vec(&mut r, 30), b"line\nhello file\nsecond");
        assert_eq!(r.remaining(), Some(0));
    }

    #[test]
    fn large_file_segment_is_read_in_chunks() {
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let fd = temp_file(&content);
        let mut r = BodyReader::new(body(vec![BodySegment::File {
            fd,
            offset: 0,
            len: content.len() as u64,
        }]));
        let mut got = r.read(Some(100_001)).unwrap();
        got.extend(r.read(None).unwrap());
        assert_eq!(got, content);
    }

    #[test]
    fn short_temp_file_is_an_error() {
        let fd = temp_file(b"abc");
        let mut r = BodyReader::new(body(vec![BodySegment::File {
            fd,
            offset: 0,
            len: 10,
        }]));
        assert!(r.read(None).is_err());
    }
}

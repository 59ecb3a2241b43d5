//! Pool threads: `wsgi.errors`, and `sys.stdout`/`sys.stderr` replaced by
//! streams that feed nginx's error log. Lines travel as completions to the
//! nginx thread, which writes them with `ngx_log_error` (with the request's
//! context when it is still alive); no pool thread touches nginx's log.
//!
//! `wsgi.errors` is a plain text stream ([`LogStream`]): it is made for
//! every request and must stay cheap. `sys.stdout` and `sys.stderr` are
//! real `io.TextIOWrapper`s (every attribute apps look at is genuine) over
//! a binary stream of ours, [`LogBuffer`], whose `raw` is a [`LogRaw`]:
//!
//! ```text
//! sys.stdout  io.TextIOWrapper(utf-8, backslashreplace, line_buffering, write_through)
//!   .buffer   LogBuffer: bytes, cut into lines per writing thread
//!     .raw    LogRaw: every write() goes to the log at once
//! ```
//!
//! With `write_through` the wrapper hands each write's bytes straight to
//! the buffer (no Python code runs on the way, so the GIL is not given up
//! between a `print()`'s text and its newline), and the buffer keeps each
//! thread's partial line apart: a line carries the request that wrote it.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyTuple};

use crate::message::{Hub, LogLevel, RequestId};

static HUB: OnceLock<Arc<Hub>> = OnceLock::new();

/// sys.stdout's and sys.stderr's lines (for the end of a request and exit).
static STDIO: OnceLock<[Arc<StdStream>; 2]> = OnceLock::new();

/// A partial line longer than this is written as a line of its own: an app
/// writing without newlines must not grow a buffer forever.
const MAX_PARTIAL: usize = 8192;

thread_local! {
    /// This thread left a partial line in sys.stdout or sys.stderr.
    static STDIO_PARTIAL: Cell<bool> = const { Cell::new(false) };
    /// sys.stdout, sys.stderr closed by this thread: `Some(request)` during
    /// which it was closed (None: outside a request). Closed for the rest
    /// of that request only.
    static STDIO_CLOSED: Cell<[Option<Option<RequestId>>; 2]> = const { Cell::new([None, None]) };
}

fn current_request() -> Option<RequestId> {
    super::CURRENT.with(|c| c.get())
}

/// Complete lines written to one destination become log entries at its
/// level; each writing thread's partial last line waits for its newline.
struct LineSink {
    hub: Arc<Hub>,
    level: LogLevel,
    /// The request (wsgi.errors) plus one; 0: the thread's current request
    /// (sys.stdout, sys.stderr). A pool thread's wsgi.errors is recycled
    /// from request to request (`rebind`). An atomic (frozen pyclass).
    request: AtomicU64,
    /// Partial lines, per writing thread (the streams are shared): a mutex.
    pending: Mutex<HashMap<std::thread::ThreadId, Vec<u8>>>,
}

impl LineSink {
    fn new(hub: Arc<Hub>, level: LogLevel, request: u64) -> LineSink {
        LineSink {
            hub,
            level,
            request: AtomicU64::new(request),
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn request(&self) -> Option<RequestId> {
        match self.request.load(Ordering::Relaxed) {
            0 => current_request(),
            n => Some(n - 1),
        }
    }

    /// Logs the complete lines of `data` (after this thread's partial
    /// line); keeps the rest. True if a partial line is left.
    fn write(&self, data: &[u8]) -> bool {
        let tid = std::thread::current().id();
        let mut lines = Vec::new();
        let partial = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let buf = pending.entry(tid).or_default();
            buf.extend_from_slice(data);
            let mut start = 0;
            while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
                lines.push(buf[start..start + i].to_vec());
                start += i + 1;
            }
            buf.drain(..start);
            if buf.len() > MAX_PARTIAL {
                lines.push(std::mem::take(buf));
            }
            !buf.is_empty()
        };
        for l in lines {
            self.emit(&l);
        }
        partial
    }

    /// Logs all of `data` now, a partial last line as a line of its own.
    fn write_now(&self, data: &[u8]) {
        for line in data.split(|&b| b == b'\n') {
            self.emit(line);
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(line);
        self.hub
            .log(self.request(), self.level, format!("wsgi: {line}"));
    }

    /// Writes out this thread's partial last line.
    fn flush_thread(&self) {
        let tid = std::thread::current().id();
        let rest = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tid);
        if let Some(rest) = rest {
            self.emit(&rest);
        }
    }

    /// Writes out every thread's partial last line.
    fn flush_all(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for rest in pending.into_values() {
            self.emit(&rest);
        }
    }
}

/// `wsgi.errors`: a text stream whose complete lines become error-log
/// entries of its request.
#[pyclass(frozen, module = "ngx_wsgi")]
pub struct LogStream {
    sink: LineSink,
}

impl LogStream {
    pub fn for_request(hub: Arc<Hub>, id: RequestId, level: LogLevel) -> LogStream {
        LogStream {
            sink: LineSink::new(hub, level, id.wrapping_add(1)),
        }
    }

    /// The request a recycled wsgi.errors now belongs to.
    pub fn rebind(&self, id: RequestId) {
        self.sink
            .request
            .store(id.wrapping_add(1), Ordering::Relaxed);
    }

    /// Writes out every thread's partial last line
    /// (`wsgi.errors.write("no newline")`), as when the stream goes away.
    pub fn flush_all(&self) {
        self.sink.flush_all();
    }

    /// Python `logging` records (already formatted) to nginx's log.
    pub fn emit_now(level: LogLevel, message: &str) {
        if let Some(hub) = HUB.get() {
            hub.log(current_request(), level, format!("wsgi: {message}"));
        }
    }
}

/// A partial last line (`wsgi.errors.write("no newline")`) is still
/// written when the stream goes away, e.g. with its request's environ.
impl Drop for LogStream {
    fn drop(&mut self) {
        self.flush_all();
    }
}

#[pymethods]
impl LogStream {
    fn write(&self, text: &str) -> usize {
        self.sink.write(text.as_bytes());
        text.chars().count()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            let line = line?;
            self.write(line.extract::<&str>()?);
        }
        Ok(())
    }

    fn flush(&self) {
        self.sink.flush_thread();
    }

    fn isatty(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        true
    }

    fn readable(&self) -> bool {
        false
    }

    /// nginx points its stderr at the error log.
    fn fileno(&self) -> i32 {
        2
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        "utf-8"
    }

    #[getter]
    fn errors(&self) -> &'static str {
        "backslashreplace"
    }

    #[getter]
    fn closed(&self) -> bool {
        false
    }
}

/// sys.stdout or sys.stderr below its text layer: what LogBuffer and
/// LogRaw share.
struct StdStream {
    /// 0: stdout, 1: stderr (`STDIO_CLOSED`).
    index: usize,
    name: &'static str,
    /// A descriptor whose bytes reach the error log: nginx's stderr, which
    /// nginx points at its error log. stdout has none.
    fd: Option<i32>,
    sink: LineSink,
}

impl StdStream {
    fn closed(&self) -> bool {
        STDIO_CLOSED.with(|c| c.get()[self.index]) == Some(current_request())
    }

    fn check_open(&self, what: &str) -> PyResult<()> {
        if self.closed() {
            return Err(PyValueError::new_err(format!("{what} closed file")));
        }
        Ok(())
    }

    /// Closed for the rest of this thread's request (or, outside one, for
    /// this thread): another request, and this thread's next one, find it
    /// open. The thread's partial line is written out, as a file's close
    /// flushes it.
    fn close(&self) {
        if self.closed() {
            return;
        }
        self.sink.flush_thread();
        STDIO_CLOSED.with(|c| {
            let mut closed = c.get();
            closed[self.index] = Some(current_request());
            c.set(closed);
        });
    }

    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.fd.ok_or_else(|| {
            unsupported(
                py,
                format!(
                    "fileno: {} has no file descriptor (its lines go to nginx's error log)",
                    self.name
                ),
            )
        })
    }
}

fn unsupported(py: Python<'_>, msg: String) -> PyErr {
    match py
        .import("io")
        .and_then(|io| io.getattr("UnsupportedOperation"))
    {
        Ok(ty) => PyErr::from_type(ty.cast_into().expect("a type"), msg),
        Err(e) => e,
    }
}

/// The bytes of a bytes-like object (as `BufferedWriter.write` takes).
fn bytes_of<'a>(data: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    match pyo3::buffer::PyBuffer::<u8>::get(data) {
        Ok(buf) => Ok(Cow::Owned(buf.to_vec(data.py())?)),
        Err(_) => Err(PyTypeError::new_err(format!(
            "a bytes-like object is required, not '{}'",
            data.get_type().name()?
        ))),
    }
}

/// The Python methods of a binary layer: its own (`write`, `flush` ...)
/// and those the two layers share.
macro_rules! binary_stream {
    ($ty:ident { $($own:tt)* }) => {
        #[pymethods]
        impl $ty {
            $($own)*

            fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
                for line in lines.try_iter()? {
                    self.write(&line?)?;
                }
                Ok(())
            }

            fn close(&self) {
                self.std.close();
            }

            #[getter]
            fn closed(&self) -> bool {
                self.std.closed()
            }

            fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
                self.std.fileno(py)
            }

            fn isatty(&self) -> PyResult<bool> {
                self.std.check_open("I/O operation on")?;
                Ok(false)
            }

            fn readable(&self) -> bool {
                false
            }

            fn writable(&self) -> bool {
                true
            }

            fn seekable(&self) -> bool {
                false
            }

            #[getter]
            fn name(&self) -> &'static str {
                self.std.name
            }

            #[getter]
            fn mode(&self) -> &'static str {
                "wb"
            }

            #[pyo3(signature = (*_args))]
            fn read(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
                Err(unsupported(py, "not readable".into()))
            }

            #[pyo3(signature = (*_args))]
            fn readinto(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
                Err(unsupported(py, "not readable".into()))
            }

            #[pyo3(signature = (*_args))]
            fn readline(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
                Err(unsupported(py, "not readable".into()))
            }

            #[pyo3(signature = (*_args))]
            fn seek(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
                Err(unsupported(py, "seek".into()))
            }

            fn tell(&self, py: Python<'_>) -> PyResult<()> {
                Err(unsupported(py, "tell".into()))
            }

            #[pyo3(signature = (*_args))]
            fn truncate(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
                Err(unsupported(py, "truncate".into()))
            }

            fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
                slf.get().std.check_open("I/O operation on")?;
                Ok(slf)
            }

            #[pyo3(signature = (*_args))]
            fn __exit__(&self, _args: &Bound<'_, PyTuple>) {
                self.std.close();
            }
        }
    };
}

/// `sys.stdout.buffer`, `sys.stderr.buffer`: a binary stream, line
/// buffered per writing thread; bytes are decoded as UTF-8 with
/// `errors="replace"` when their line is logged.
#[pyclass(frozen, module = "ngx_wsgi")]
pub struct LogBuffer {
    std: Arc<StdStream>,
    raw: Py<LogRaw>,
}

binary_stream!(LogBuffer {
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.std.check_open("write to")?;
        let data = bytes_of(data)?;
        if self.std.sink.write(&data) {
            STDIO_PARTIAL.with(|p| p.set(true));
        }
        Ok(data.len())
    }

    /// Lines are written as they complete (or at the end of the request):
    /// a log entry cannot be continued, so flush() does not cut a line.
    fn flush(&self) -> PyResult<()> {
        self.std.check_open("flush of")
    }

    #[getter]
    fn raw(&self, py: Python<'_>) -> Py<LogRaw> {
        self.raw.clone_ref(py)
    }

    fn detach(&self, py: Python<'_>) -> PyResult<()> {
        Err(unsupported(py, format!("detach: {} is not detachable", self.std.name)))
    }

    #[pyo3(signature = (*_args))]
    fn read1(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        Err(unsupported(py, "not readable".into()))
    }
});

/// `sys.stdout.buffer.raw`: unbuffered, each write() goes to the log at
/// once (a partial last line as a line of its own).
#[pyclass(frozen, module = "ngx_wsgi")]
pub struct LogRaw {
    std: Arc<StdStream>,
}

binary_stream!(LogRaw {
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.std.check_open("write to")?;
        let data = bytes_of(data)?;
        self.std.sink.write_now(&data);
        Ok(data.len())
    }

    fn flush(&self) -> PyResult<()> {
        self.std.check_open("flush of")
    }
});

/// Points `sys.stdout` (info) and `sys.stderr` (error), and
/// `sys.__stdout__`/`sys.__stderr__`, at nginx's log.
pub fn install_log_streams(py: Python<'_>, hub: Arc<Hub>) -> PyResult<()> {
    let _ = HUB.set(hub.clone());
    let io = py.import("io")?;
    io.getattr("BufferedIOBase")?
        .call_method1("register", (py.get_type::<LogBuffer>(),))?;
    io.getattr("RawIOBase")?
        .call_method1("register", (py.get_type::<LogRaw>(),))?;
    let std = |index, name, level, fd| {
        Arc::new(StdStream {
            index,
            name,
            fd,
            sink: LineSink::new(hub.clone(), level, 0),
        })
    };
    let streams = STDIO.get_or_init(|| {
        [
            std(0, "<stdout>", LogLevel::Info, None),
            std(1, "<stderr>", LogLevel::Err, Some(2)),
        ]
    });
    let sys = py.import("sys")?;
    for (std, name) in streams.iter().zip(["stdout", "stderr"]) {
        let raw = Py::new(py, LogRaw { std: std.clone() })?;
        let buffer = Bound::new(
            py,
            LogBuffer {
                std: std.clone(),
                raw,
            },
        )?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("encoding", "utf-8")?;
        kwargs.set_item("errors", "backslashreplace")?;
        kwargs.set_item("line_buffering", true)?;
        kwargs.set_item("write_through", true)?;
        let text = io
            .getattr("TextIOWrapper")?
            .call((buffer,), Some(&kwargs))?;
        text.setattr("mode", "w")?;
        sys.setattr(name, &text)?;
        sys.setattr(format!("__{name}__"), &text)?;
    }
    Ok(())
}

/// After a request (or the app's import) on this thread: its partial
/// lines of sys.stdout and sys.stderr are written, with that request.
pub fn end_of_request() {
    if !STDIO_PARTIAL.with(|p| p.replace(false)) {
        return;
    }
    if let Some(streams) = STDIO.get() {
        for std in streams {
            std.sink.flush_thread();
        }
    }
}

/// At exit: text held in the wrappers (an app that turned write_through
/// and line_buffering off) and every thread's partial line.
pub fn flush_log_streams(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr", "__stdout__", "__stderr__"] {
            if let Ok(s) = sys.getattr(name) {
                let _ = s.call_method0("flush");
            }
        }
    }
    if let Some(streams) = STDIO.get() {
        for std in streams {
            std.sink.flush_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Completion;

    fn lines(hub: &Hub) -> Vec<String> {
        let mut out = vec![];
        hub.drain_quiet(|c| {
            if let Completion::Log { text, .. } = c {
                out.push(text);
            }
        });
        out
    }

    #[test]
    fn complete_lines_only_and_per_thread() {
        let hub = Arc::new(Hub::new().unwrap());
        let sink = Arc::new(LineSink::new(hub.clone(), LogLevel::Info, 0));
        assert!(sink.write(b"one\ntw"));
        let s2 = sink.clone();
        // another thread's partial line does not join this one's
        std::thread::spawn(move || {
            assert!(s2.write(b"other "));
            assert!(!s2.write(b"thread\n"));
        })
        .join()
        .unwrap();
        assert!(!sink.write(b"o\r\n\nthree\n"));
        assert_eq!(
            lines(&hub),
            [
                "wsgi: one",
                "wsgi: other thread",
                "wsgi: two",
                "wsgi: three"
            ]
        );
    }

    #[test]
    fn bytes_not_utf8_are_replaced() {
        let hub = Arc::new(Hub::new().unwrap());
        let sink = LineSink::new(hub.clone(), LogLevel::Err, 0);
        // a character split across writes stays whole
        sink.write(b"caf\xc3");
        sink.write(b"\xa9 \xff\n");
        assert_eq!(lines(&hub), ["wsgi: caf\u{e9} \u{fffd}"]);
    }

    #[test]
    fn partial_lines_wait_for_their_newline_or_a_flush() {
        let hub = Arc::new(Hub::new().unwrap());
        let sink = LineSink::new(hub.clone(), LogLevel::Info, 0);
        sink.write(b"partial");
        assert!(lines(&hub).is_empty());
        sink.flush_thread();
        assert_eq!(lines(&hub), ["wsgi: partial"]);
        sink.write_now(b"raw\nwrite");
        assert_eq!(lines(&hub), ["wsgi: raw", "wsgi: write"]);
        sink.write(&[b'x'; MAX_PARTIAL + 1]);
        assert_eq!(lines(&hub).len(), 1, "a long partial line is cut");
    }
}

//! Pool threads: `wsgi.errors`, and `sys.stdout`/`sys.stderr` replaced by
//! streams that feed nginx's error log. Lines travel as completions to the
//! nginx thread, which writes them with `ngx_log_error` (with the request's
//! context when it is still alive); no pool thread touches nginx's log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;

use crate::message::{Hub, LogLevel, RequestId};

static HUB: OnceLock<Arc<Hub>> = OnceLock::new();

/// A text stream whose complete lines become error-log entries.
#[pyclass(frozen, module = "ngx_wsgi")]
pub struct LogStream {
    hub: Arc<Hub>,
    level: LogLevel,
    /// The request (wsgi.errors) plus one; 0: the thread's current request
    /// (sys.stdout, sys.stderr). A pool thread's wsgi.errors is recycled
    /// from request to request (`rebind`). An atomic (frozen pyclass).
    request: AtomicU64,
    /// Partial lines, per writing thread (sys.stderr is shared): a mutex.
    pending: Mutex<HashMap<std::thread::ThreadId, String>>,
    fd: i32,
}

impl LogStream {
    pub fn for_request(hub: Arc<Hub>, id: RequestId, level: LogLevel) -> LogStream {
        LogStream {
            hub,
            level,
            request: AtomicU64::new(id.wrapping_add(1)),
            pending: Mutex::new(HashMap::new()),
            fd: 2,
        }
    }

    fn current_request(&self) -> Option<RequestId> {
        match self.request.load(Ordering::Relaxed) {
            0 => super::CURRENT.with(|c| c.get()),
            n => Some(n - 1),
        }
    }

    /// The request a recycled wsgi.errors now belongs to.
    pub fn rebind(&self, id: RequestId) {
        self.request.store(id.wrapping_add(1), Ordering::Relaxed);
    }

    /// Writes out every thread's partial last line
    /// (`wsgi.errors.write("no newline")`), as when the stream goes away.
    pub fn flush_all(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for rest in pending.into_values() {
            self.emit(&rest);
        }
    }

    fn emit(&self, line: &str) {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            return;
        }
        self.hub
            .log(self.current_request(), self.level, format!("wsgi: {line}"));
    }

    /// Python `logging` records (already formatted) to nginx's log.
    pub fn emit_now(level: LogLevel, message: &str) {
        if let Some(hub) = HUB.get() {
            let id = super::CURRENT.with(|c| c.get());
            hub.log(id, level, format!("wsgi: {message}"));
        }
    }

    fn flush_pending(&self) {
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
        let tid = std::thread::current().id();
        let mut lines = Vec::new();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let buf = pending.entry(tid).or_default();
            buf.push_str(text);
            while let Some(i) = buf.find('\n') {
                lines.push(buf[..i].to_string());
                buf.drain(..=i);
            }
            // An app writing without newlines must not grow this forever.
            if buf.len() > 8192 {
                lines.push(std::mem::take(buf));
            }
        }
        for l in lines {
            self.emit(&l);
        }
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
        self.flush_pending();
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

    fn fileno(&self) -> i32 {
        self.fd
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

/// Points `sys.stdout` (info) and `sys.stderr` (error) at nginx's log.
pub fn install_log_streams(py: Python<'_>, hub: Arc<Hub>) -> PyResult<()> {
    let _ = HUB.set(hub.clone());
    let sys = py.import("sys")?;
    let mk = |level, fd| LogStream {
        hub: hub.clone(),
        level,
        request: AtomicU64::new(0),
        pending: Mutex::new(HashMap::new()),
        fd,
    };
    sys.setattr("stdout", Bound::new(py, mk(LogLevel::Info, 1))?)?;
    sys.setattr("stderr", Bound::new(py, mk(LogLevel::Err, 2))?)?;
    Ok(())
}

/// Flushes partial lines of sys.stdout/stderr (at exit).
pub fn flush_log_streams(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(s) = sys.getattr(name) {
                let _ = s.call_method0("flush");
            }
        }
    }
}

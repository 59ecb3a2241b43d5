//! Pool threads: `wsgi.file_wrapper`. Over a regular file with a real
//! descriptor, the response becomes a file range that nginx sends itself
//! (sendfile where enabled) from a duplicate descriptor; otherwise it is an
//! ordinary iterable of `blksize` blocks.

use std::os::fd::{FromRawFd, OwnedFd};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::message::FileReply;

#[pyclass(frozen, module = "ngx_wsgi")]
pub struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        let empty = match data.cast::<PyBytes>() {
            Ok(b) => b.as_bytes().is_empty(),
            Err(_) => data.len().map(|n| n == 0).unwrap_or(true),
        };
        Ok(if empty { None } else { Some(data) })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }

    #[getter]
    fn filelike(&self, py: Python<'_>) -> Py<PyAny> {
        self.filelike.clone_ref(py)
    }

    #[getter]
    fn blksize(&self) -> usize {
        self.blksize
    }
}

impl FileWrapper {
    /// The file range to send from the file's current offset to its end,
    /// or `None` if this is not a regular file with a descriptor.
    pub fn as_file(&self, py: Python<'_>) -> PyResult<Option<FileReply>> {
        let f = self.filelike.bind(py);
        let Ok(fileno) = f.call_method0("fileno") else {
            let _ = PyErr::take(py);
            return Ok(None);
        };
        let Ok(fd) = fileno.extract::<i32>() else {
            return Ok(None);
        };
        // Python-level buffers may be ahead of the descriptor's offset.
        if f.hasattr("flush")? {
            let _ = f.call_method0("flush");
        }
        let offset = match f.call_method0("tell") {
            Ok(pos) => pos.extract::<u64>()?,
            Err(_) => return Ok(None),
        };
        // SAFETY: fstat on a descriptor the app owns, into a local struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on a descriptor the app owns, into a local struct.
        if unsafe { libc::fstat(fd, &mut st) } != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFREG
        {
            return Ok(None);
        }
        let size = st.st_size.max(0) as u64;
        // SAFETY: duplicating the app's descriptor; we own the copy.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Ok(None);
        }
        Ok(Some(FileReply {
            // SAFETY: `dup` is a fresh descriptor owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(dup) },
            offset,
            len: size.saturating_sub(offset),
        }))
    }
}

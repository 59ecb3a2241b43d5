//! Pool threads: the environ dict. Constant entries are built once per
//! thread and copied per request; keys are interned strings; header names
//! map to `HTTP_*` keys through a per-thread cache.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{ffi, intern};

use super::errors::LogStream;
use super::file_wrapper::FileWrapper;
use super::input::Input;
use crate::message::{Hub, Job, LogLevel};

/// Header-name cache entries per thread; beyond this, names are converted
/// each time (bounds memory against clients sending random header names).
const HEADER_CACHE_MAX: usize = 512;

pub struct ThreadContext {
    base: Py<PyDict>,
    header_keys: HashMap<Vec<u8>, Option<Py<PyString>>>,
}

/// Decodes bytes as latin-1 into a `str` (PEP 3333 "native strings").
pub fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyAny> {
    // SAFETY: PyUnicode_DecodeLatin1 reads exactly `len` bytes and cannot
    // fail on any byte sequence except out of memory.
    unsafe {
        let p = ffi::PyUnicode_DecodeLatin1(
            b.as_ptr() as *const _,
            b.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Bound::from_owned_ptr_or_err(py, p).unwrap_or_else(|_| PyString::new(py, "").into_any())
    }
}

/// `User-Agent` → `HTTP_USER_AGENT`; `None` for names that must not appear
/// as `HTTP_*` (Content-Type and Content-Length have their own keys).
pub fn cgi_header_key(name: &[u8]) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(name.len() + 5);
    key.extend_from_slice(b"HTTP_");
    for &c in name {
        key.push(match c {
            b'-' => b'_',
            c => c.to_ascii_uppercase(),
        });
    }
    if key == b"HTTP_CONTENT_TYPE" || key == b"HTTP_CONTENT_LENGTH" {
        None
    } else {
        Some(key)
    }
}

impl ThreadContext {
    pub fn new(py: Python<'_>, _threads: usize, multiprocess: bool) -> PyResult<ThreadContext> {
        let base = PyDict::new(py);
        base.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
        base.set_item("wsgi.multithread", true)?;
        base.set_item("wsgi.multiprocess", multiprocess)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        base.set_item(
            "SERVER_SOFTWARE",
            concat!("nginx-wsgi/", env!("CARGO_PKG_VERSION")),
        )?;
        base.set_item("GATEWAY_INTERFACE", "CGI/1.1")?;
        Ok(ThreadContext {
            base: base.unbind(),
            header_keys: HashMap::new(),
        })
    }

    fn header_key<'py>(&mut self, py: Python<'py>, name: &[u8]) -> Option<Bound<'py, PyString>> {
        if let Some(k) = self.header_keys.get(name) {
            return k.as_ref().map(|k| k.bind(py).clone());
        }
        let key = cgi_header_key(name).map(|k| PyString::intern(py, &String::from_utf8_lossy(&k)));
        if self.header_keys.len() < HEADER_CACHE_MAX {
            self.header_keys
                .insert(name.to_vec(), key.as_ref().map(|k| k.clone().unbind()));
        }
        key
    }

    /// Builds environ for a job (the body moves into `wsgi.input`).
    pub fn environ<'py>(
        &mut self,
        py: Python<'py>,
        job: &mut Job,
        hub: &Arc<Hub>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let e = &job.env;
        let env = self.base.bind(py).copy()?;
        env.set_item(intern!(py, "REQUEST_METHOD"), latin1(py, e.get(e.method)))?;
        env.set_item(intern!(py, "SCRIPT_NAME"), latin1(py, e.get(e.script_name)))?;
        env.set_item(intern!(py, "PATH_INFO"), latin1(py, e.get(e.path_info)))?;
        env.set_item(
            intern!(py, "QUERY_STRING"),
            latin1(py, e.get(e.query_string)),
        )?;
        env.set_item(intern!(py, "REQUEST_URI"), latin1(py, e.get(e.request_uri)))?;
        env.set_item(
            intern!(py, "SERVER_PROTOCOL"),
            latin1(py, e.get(e.protocol)),
        )?;
        env.set_item(intern!(py, "SERVER_NAME"), latin1(py, e.get(e.server_name)))?;
        env.set_item(intern!(py, "SERVER_PORT"), latin1(py, e.get(e.server_port)))?;
        env.set_item(intern!(py, "REMOTE_ADDR"), latin1(py, e.get(e.remote_addr)))?;
        env.set_item(intern!(py, "REMOTE_PORT"), latin1(py, e.get(e.remote_port)))?;
        if let Some(ct) = e.content_type {
            env.set_item(intern!(py, "CONTENT_TYPE"), latin1(py, e.get(ct)))?;
        }
        if let Some(cl) = e.content_length {
            env.set_item(intern!(py, "CONTENT_LENGTH"), cl.to_string())?;
        }
        if e.https {
            env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
            env.set_item(intern!(py, "HTTPS"), intern!(py, "on"))?;
        } else {
            env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "http"))?;
        }
        for &(name, value) in &e.headers {
            let Some(key) = self.header_key(py, e.get(name)) else {
                continue;
            };
            let value = latin1(py, e.get(value));
            // Repeated headers are joined (cookies with "; ", as browsers
            // would send them in one line).
            match env.get_item(&key)? {
                None => env.set_item(&key, value)?,
                Some(prev) => {
                    let sep = if key.to_cow()? == "HTTP_COOKIE" {
                        "; "
                    } else {
                        ","
                    };
                    let joined = format!("{}{}{}", prev.str()?, sep, value.str()?);
                    env.set_item(&key, joined)?;
                }
            }
        }
        for &(name, value) in &e.params {
            env.set_item(latin1(py, e.get(name)), latin1(py, e.get(value)))?;
        }
        let input = Input::new(std::mem::take(&mut job.body));
        env.set_item(intern!(py, "wsgi.input"), Bound::new(py, input)?)?;
        env.set_item(
            intern!(py, "wsgi.errors"),
            Bound::new(
                py,
                LogStream::for_request(hub.clone(), job.id, LogLevel::Err),
            )?,
        )?;
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::cgi_header_key;

    #[test]
    fn header_keys() {
        assert_eq!(cgi_header_key(b"User-Agent").unwrap(), b"HTTP_USER_AGENT");
        assert_eq!(
            cgi_header_key(b"x-forwarded-for").unwrap(),
            b"HTTP_X_FORWARDED_FOR"
        );
        assert_eq!(cgi_header_key(b"Host").unwrap(), b"HTTP_HOST");
    }

    #[test]
    fn content_headers_have_their_own_keys() {
        assert!(cgi_header_key(b"Content-Type").is_none());
        assert!(cgi_header_key(b"content-length").is_none());
        assert!(cgi_header_key(b"Content_Length").is_none());
    }
}

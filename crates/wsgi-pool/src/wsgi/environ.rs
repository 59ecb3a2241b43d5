//! Pool threads: the environ dict. Constant entries are built once per
//! thread and copied per request; keys are interned strings; header names
//! map to `HTTP_*` keys through a per-thread cache.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{ffi, intern};

use super::file_wrapper::FileWrapper;
use super::recycle::Recycled;
use crate::message::{Hub, Job};

/// Header-name cache entries per thread; beyond this, names are converted
/// each time (bounds memory against clients sending random header names).
const HEADER_CACHE_MAX: usize = 512;

/// Header positions remembered per thread (see `by_position`).
const BY_POSITION_MAX: usize = 64;

/// One per pool thread, owned by it and never shared: the environ template
/// (`base`, copied per request: only the copy reaches the app), the
/// recycled objects and the caches of immutable `str` keys and values.
pub struct ThreadContext {
    base: Py<PyDict>,
    /// `start_response`, `write`, `wsgi.input` and `wsgi.errors`, kept
    /// between requests.
    pub recycled: Recycled,
    header_keys: HashMap<Vec<u8>, Option<Py<PyString>>>,
    /// The name and key of the header last seen at each position: clients
    /// send the same headers in the same order, so most names are found
    /// here by one comparison instead of hashing.
    by_position: Vec<(Vec<u8>, Option<Py<PyString>>)>,
    method: Recent,
    protocol: Recent,
    server_name: Recent,
    server_port: Recent,
    remote_addr: Recent,
}

/// An empty dict with room for `n` entries: CPython's `_PyDict_NewPresized`
/// (exported, but private, so pyo3-ffi leaves it out and a future Python
/// may drop it: looked up at run time, a plain dict when it is missing).
fn presized_dict(py: Python<'_>, n: ffi::Py_ssize_t) -> PyResult<Bound<'_, PyDict>> {
    type NewPresized = unsafe extern "C" fn(ffi::Py_ssize_t) -> *mut ffi::PyObject;
    // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches the
    // libraries already loaded (libpython among them).
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_PyDict_NewPresized".as_ptr()) };
    if sym.is_null() {
        return Ok(PyDict::new(py));
    }
    // SAFETY: the symbol is CPython's function of this signature; it returns
    // a new reference to an empty dict (or NULL and an exception).
    unsafe {
        let new_presized: NewPresized = std::mem::transmute(sym);
        Ok(Bound::from_owned_ptr_or_err(py, new_presized(n))?.cast_into_unchecked::<PyDict>())
    }
}

/// Entries the environ template makes room for: the 21 every request has
/// and about as many request headers. A copy keeps the template's table
/// size, so filling it in does not grow (rehash) the dict.
const ENVIRON_ROOM: ffi::Py_ssize_t = 42;

/// Keys every request sets: in the template (as `None`) so the copy has
/// them in place already.
const PER_REQUEST_KEYS: [&str; 13] = [
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "REQUEST_URI",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "wsgi.url_scheme",
    "wsgi.input",
    "wsgi.errors",
];

/// The `str` last made for one environ value, reused while requests repeat
/// it, as most do for the method, the protocol, the server's name and port
/// and a client's address.
#[derive(Default)]
struct Recent {
    bytes: Vec<u8>,
    text: Option<Py<PyAny>>,
}

impl Recent {
    fn get<'py>(&mut self, py: Python<'py>, b: &[u8]) -> Bound<'py, PyAny> {
        if let Some(text) = &self.text {
            if self.bytes == b {
                return text.bind(py).clone();
            }
        }
        let text = latin1(py, b);
        self.bytes.clear();
        self.bytes.extend_from_slice(b);
        self.text = Some(text.clone().unbind());
        text
    }
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
/// as `HTTP_*`: Content-Type and Content-Length have their own keys, and a
/// name with an underscore (nginx accepts one only with
/// `underscores_in_headers on`) would be indistinguishable from its dashed
/// form, letting a client add to `X-Forwarded-For` as `X_Forwarded_For`
/// (gunicorn and mod_wsgi drop these too).
pub fn cgi_header_key(name: &[u8]) -> Option<Vec<u8>> {
    if name.contains(&b'_') {
        return None;
    }
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
        let base = presized_dict(py, ENVIRON_ROOM)?;
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
        for key in PER_REQUEST_KEYS {
            base.set_item(PyString::intern(py, key), py.None())?;
        }
        Ok(ThreadContext {
            base: base.unbind(),
            recycled: Recycled::default(),
            header_keys: HashMap::new(),
            by_position: Vec::new(),
            method: Recent::default(),
            protocol: Recent::default(),
            server_name: Recent::default(),
            server_port: Recent::default(),
            remote_addr: Recent::default(),
        })
    }

    /// The environ key for the request's `position`th header, `name`.
    fn header_key<'py>(
        &mut self,
        py: Python<'py>,
        position: usize,
        name: &[u8],
    ) -> Option<Bound<'py, PyString>> {
        if let Some((seen, key)) = self.by_position.get(position) {
            if seen.as_slice() == name {
                return key.as_ref().map(|k| k.bind(py).clone());
            }
        }
        let key = self.header_key_by_name(py, name);
        if position < BY_POSITION_MAX {
            let entry = (name.to_vec(), key.as_ref().map(|k| k.clone().unbind()));
            if position < self.by_position.len() {
                self.by_position[position] = entry;
            } else if position == self.by_position.len() {
                self.by_position.push(entry);
            }
        }
        key
    }

    fn header_key_by_name<'py>(
        &mut self,
        py: Python<'py>,
        name: &[u8],
    ) -> Option<Bound<'py, PyString>> {
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
        env.set_item(
            intern!(py, "REQUEST_METHOD"),
            self.method.get(py, e.get(e.method)),
        )?;
        env.set_item(intern!(py, "SCRIPT_NAME"), latin1(py, e.get(e.script_name)))?;
        env.set_item(intern!(py, "PATH_INFO"), latin1(py, e.get(e.path_info)))?;
        env.set_item(
            intern!(py, "QUERY_STRING"),
            latin1(py, e.get(e.query_string)),
        )?;
        env.set_item(intern!(py, "REQUEST_URI"), latin1(py, e.get(e.request_uri)))?;
        env.set_item(
            intern!(py, "SERVER_PROTOCOL"),
            self.protocol.get(py, e.get(e.protocol)),
        )?;
        env.set_item(
            intern!(py, "SERVER_NAME"),
            self.server_name.get(py, e.get(e.server_name)),
        )?;
        env.set_item(
            intern!(py, "SERVER_PORT"),
            self.server_port.get(py, e.get(e.server_port)),
        )?;
        env.set_item(
            intern!(py, "REMOTE_ADDR"),
            self.remote_addr.get(py, e.get(e.remote_addr)),
        )?;
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
        for (position, &(name, value)) in e.headers.iter().enumerate() {
            let Some(key) = self.header_key(py, position, e.get(name)) else {
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
        let input = self.recycled.input(py, std::mem::take(&mut job.body))?;
        env.set_item(intern!(py, "wsgi.input"), input)?;
        env.set_item(
            intern!(py, "wsgi.errors"),
            self.recycled.errors(py, hub, job.id)?,
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

    #[test]
    fn underscored_names_are_dropped() {
        assert!(cgi_header_key(b"X_Forwarded_For").is_none());
        assert!(cgi_header_key(b"x-real_ip").is_none());
        assert!(cgi_header_key(b"X-Real-Ip").is_some());
    }
}

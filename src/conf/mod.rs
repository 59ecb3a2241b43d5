//! Every `wsgi_*` directive's settings: the types the other layers read
//! ([`MainConf`], [`LocConf`]), their defaults and merging (location
//! inherits server inherits http, as with `uwsgi_*`). Parsing and
//! validation (`nginx -t` messages) are in [`directives`]; the directive
//! table that names them is `module.rs`'s.

use nginx_sys::{ngx_http_complex_value_t, ngx_msec_t};
use ngx::http::{Merge, MergeConfigError};

use crate::pool::ThreadPriority;
use crate::target::AppTarget;

pub mod directives;
mod python_home;

pub const DEFAULT_THREADS: usize = 4;
pub const DEFAULT_QUEUE_SIZE: usize = 1024;
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_BUFFER_SIZE: usize = 256 * 1024;
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 60_000;

/// http-level settings: one interpreter and one pool per worker process.
#[derive(Default)]
pub struct MainConf {
    pub python_path: Vec<String>,
    pub python_home: Option<String>,
    pub threads: Option<usize>,
    pub queue_size: Option<usize>,
    pub queue_timeout: Option<u64>,
    pub import_check: Option<bool>,
    /// `wsgi_max_requests`: (requests, jitter); 0 requests is off.
    pub max_requests: Option<(u64, u64)>,
    /// Every distinct `wsgi_pass` target, imported once per worker.
    pub apps: Vec<AppTarget>,
    /// `wsgi_sandbox`: Landlock rules for the threads that run Python.
    pub sandbox: Option<bool>,
    /// `wsgi_thread_priority normal|low|idle`.
    pub thread_priority: Option<ThreadPriority>,
    /// `wsgi_nginx_first`: nginx's thread takes the shortest time slice.
    pub nginx_first: Option<bool>,
    /// `wsgi_sandbox_read` / `wsgi_sandbox_write`: absolute paths.
    pub sandbox_read: Vec<String>,
    pub sandbox_write: Vec<String>,
}

impl MainConf {
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or(DEFAULT_THREADS)
    }
    pub fn queue_size(&self) -> usize {
        self.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE)
    }
    pub fn queue_timeout_ms(&self) -> u64 {
        self.queue_timeout.unwrap_or(DEFAULT_QUEUE_TIMEOUT_MS)
    }
    pub fn thread_priority(&self) -> ThreadPriority {
        self.thread_priority.unwrap_or_default()
    }
    pub fn nginx_first(&self) -> bool {
        self.nginx_first.unwrap_or(true)
    }
    pub fn sandbox_on(&self) -> bool {
        self.sandbox.unwrap_or(false)
    }
}

/// A `wsgi_param NAME VALUE [if_not_empty]`.
#[derive(Clone)]
pub struct Param {
    pub name: Vec<u8>,
    /// Compiled value (may hold variables); lives in the cycle pool.
    pub value: *mut ngx_http_complex_value_t,
    pub if_not_empty: bool,
}

/// Settings that may differ per location.
#[derive(Default, Clone)]
pub struct LocConf {
    /// Index into [`MainConf::apps`]; set by `wsgi_pass`.
    pub app: Option<usize>,
    /// The content handler `wsgi_pass` installs (from its directive's
    /// `post`: conf does not name request-time code), for the `if` and
    /// `limit_except` blocks inside the location to install too.
    pub handler: nginx_sys::ngx_http_handler_pt,
    pub script_name: Option<Vec<u8>>,
    pub params: Option<Vec<Param>>,
    pub buffer_size: Option<usize>,
    pub read_timeout: Option<u64>,
    pub request_buffering: Option<bool>,
    /// `wsgi_intercept_errors`: statuses with an `error_page` go to it.
    pub intercept_errors: Option<bool>,
    /// `wsgi_hide_header` names, lower case.
    pub hide_headers: Option<Vec<Vec<u8>>>,
    /// `wsgi_pass_header` names, lower case.
    pub pass_headers: Option<Vec<Vec<u8>>>,
    /// `wsgi_ignore_headers`, as `IGNORE_*` bits.
    pub ignore_headers: Option<u32>,
}

pub const IGNORE_XA_REDIRECT: u32 = 1;
pub const IGNORE_XA_LIMIT_RATE: u32 = 2;
pub const IGNORE_XA_BUFFERING: u32 = 4;
pub const IGNORE_XA_CHARSET: u32 = 8;
pub const IGNORE_XA_EXPIRES: u32 = 16;
/// Accepted for compatibility with proxy_ignore_headers; they only matter
/// to caching, which this module does not do.
pub const IGNORE_CACHE_HEADERS: u32 = 32;

/// Headers hidden from the client unless `wsgi_pass_header` names them, as
/// with proxy_pass: nginx sends its own Date and Server.
const HIDDEN_BY_DEFAULT: [&[u8]; 8] = [
    b"date",
    b"server",
    b"x-pad",
    b"x-accel-expires",
    b"x-accel-redirect",
    b"x-accel-limit-rate",
    b"x-accel-buffering",
    b"x-accel-charset",
];

impl LocConf {
    /// Whether a response header from the app is withheld from the client.
    pub fn hides(&self, name: &[u8]) -> bool {
        let has = |list: &Option<Vec<Vec<u8>>>| {
            list.as_ref()
                .is_some_and(|l| l.iter().any(|h| h.eq_ignore_ascii_case(name)))
        };
        if has(&self.hide_headers) {
            return true;
        }
        HIDDEN_BY_DEFAULT
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
            && !has(&self.pass_headers)
    }

    pub fn ignores(&self, bit: u32) -> bool {
        self.ignore_headers.unwrap_or(0) & bit != 0
    }

    pub fn buffer_size(&self) -> usize {
        self.buffer_size.unwrap_or(DEFAULT_BUFFER_SIZE)
    }
    pub fn read_timeout_ms(&self) -> ngx_msec_t {
        self.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT_MS) as ngx_msec_t
    }
    pub fn params(&self) -> &[Param] {
        self.params.as_deref().unwrap_or(&[])
    }
}

impl Merge for MainConf {
    fn merge(&mut self, _prev: &Self) -> Result<(), MergeConfigError> {
        Ok(())
    }
}

impl Merge for LocConf {
    fn merge(&mut self, prev: &Self) -> Result<(), MergeConfigError> {
        // wsgi_pass and wsgi_script_name are not inherited by nested
        // locations that set no handler of their own, like proxy_pass.
        if self.params.is_none() {
            self.params = prev.params.clone();
        }
        self.buffer_size = self.buffer_size.or(prev.buffer_size);
        self.read_timeout = self.read_timeout.or(prev.read_timeout);
        self.request_buffering = self.request_buffering.or(prev.request_buffering);
        self.intercept_errors = self.intercept_errors.or(prev.intercept_errors);
        if self.hide_headers.is_none() {
            self.hide_headers = prev.hide_headers.clone();
        }
        if self.pass_headers.is_none() {
            self.pass_headers = prev.pass_headers.clone();
        }
        self.ignore_headers = self.ignore_headers.or(prev.ignore_headers);
        Ok(())
    }
}

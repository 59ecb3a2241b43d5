//! Request data: the job the nginx thread hands a pool thread, and the
//! strings environ is built from, copied out of nginx's request.

use std::sync::Arc;
use std::time::Instant;

use super::*;

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
    /// The request's log takes debug lines: the pool thread reports its
    /// steps (started, finished) as `LogLevel::Debug` lines for it.
    pub trace: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

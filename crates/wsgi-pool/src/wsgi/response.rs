//! Pool threads: `start_response`, the `write()` callable, and the rules a
//! response must follow (status line, header names and values, Content-
//! Length) before anything is sent to nginx.

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::message::{
    Chunk, Exchange, FileReply, Hub, LogLevel, Outcome, Reply, ResponseHead, SharedBytes,
};

/// Body pieces at least this large go to nginx without a copy (the bytes
/// object itself is kept alive); smaller ones are cheaper to copy.
const ZERO_COPY_MIN: usize = 4096;

/// A piece of the app's body: a `bytes` object (which may be sent without a
/// copy) or bytes we already own.
pub enum BodyPart<'a, 'py> {
    Bytes(&'a Bound<'py, PyBytes>),
    Owned(Vec<u8>),
}

impl BodyPart<'_, '_> {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            BodyPart::Bytes(b) => b.as_bytes(),
            BodyPart::Owned(v) => v,
        }
    }
}

/// Why a reply could not be delivered.
#[derive(Debug)]
pub enum SendError {
    /// The request is over on the nginx side.
    Cancelled,
    /// The request is over on the pool side: a `write()` kept past it.
    Closed,
    /// The app broke the protocol (message for the log).
    Protocol(String),
}

struct State {
    head: Option<ResponseHead>,
    head_sent: bool,
    content_length: Option<u64>,
    sent: u64,
    truncated_logged: bool,
    /// The last reply (End or Error) is made: a list, tuple or file
    /// response is complete at once, and the iterable's end adds nothing.
    ended: bool,
    /// A complete response (list, tuple, file), held until [`end`]: its
    /// last reply lets nginx finalize the request, so it goes out after
    /// the iterable's `close()`, whose errors and trace line are logged
    /// while the request is still there to name.
    ///
    /// [`end`]: Responder::end
    complete: Option<Vec<Reply>>,
    /// The request is over for the app: a `start_response` or `write()` it
    /// kept refuses to work. Set, under this lock, before the response's
    /// last reply is queued (or when the pool thread is done with the
    /// request), and checked under it by both: whichever thread calls a
    /// kept one later finds it dead, without the GIL's help.
    closed: bool,
}

/// The pool-thread half of one response.
pub struct Responder {
    exchange: Arc<Exchange>,
    hub: Arc<Hub>,
    /// HEAD request: a declared Content-Length need not be met.
    head_request: bool,
    state: Mutex<State>,
}

impl Responder {
    pub fn new(exchange: Arc<Exchange>, hub: Arc<Hub>, head_request: bool) -> Responder {
        Responder {
            exchange,
            hub,
            head_request,
            state: Mutex::new(State {
                head: None,
                head_sent: false,
                content_length: None,
                sent: 0,
                truncated_logged: false,
                ended: false,
                complete: None,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn head_sent(&self) -> bool {
        self.lock().head_sent
    }

    pub fn is_cancelled(&self) -> bool {
        self.exchange.is_cancelled()
    }

    /// See [`Exchange::claim`].
    pub fn claim(&self, outcome: Outcome) -> bool {
        self.exchange.claim(outcome)
    }

    /// Pool thread, when it is done with the request: `start_response` and
    /// `write()` of this request refuse to work from now on.
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Queues replies, releasing the GIL if the exchange is full.
    fn push(&self, py: Python<'_>, replies: Vec<Reply>) -> Result<(), SendError> {
        let weight: usize = replies.iter().map(Reply::weight).sum();
        let last = matches!(replies.last(), Some(Reply::End | Reply::Error { .. }));
        if last {
            // While nginx still has the request: its lines carry its context.
            super::errors::end_of_request();
        }
        let r = if self.exchange.is_full(weight) {
            py.detach(|| self.exchange.push(replies))
        } else {
            self.exchange.push(replies)
        };
        match r {
            Ok(wake) => {
                if last {
                    self.hub.finished(self.exchange.id, wake);
                } else {
                    self.hub.ready(self.exchange.id, wake);
                }
                // While a long response streams, release what nginx has
                // already sent of it, not only after the app returns.
                self.hub.release_python(py);
                Ok(())
            }
            Err(_) => Err(SendError::Cancelled),
        }
    }

    /// `data` (a prefix of `part`) as a message body: large `bytes`
    /// objects travel as themselves, the rest as a copy.
    fn chunk(&self, part: &BodyPart<'_, '_>, data: &[u8]) -> Chunk {
        match part {
            BodyPart::Bytes(obj) if data.len() >= ZERO_COPY_MIN => {
                Chunk::Shared(SharedBytes::new(obj, data.len(), &self.hub))
            }
            _ => Chunk::Owned(data.to_vec()),
        }
    }

    /// Applies the Content-Length bound; returns what may be sent.
    fn clamp<'a>(&self, st: &mut State, data: &'a [u8]) -> &'a [u8] {
        match st.content_length {
            Some(cl) if st.sent + data.len() as u64 > cl => {
                if !st.truncated_logged {
                    st.truncated_logged = true;
                    self.hub.log(
                        Some(self.exchange.id),
                        LogLevel::Warn,
                        format!(
                            "wsgi: app sent more than its Content-Length ({cl}), extra bytes dropped while sending response to client"
                        ),
                    );
                }
                &data[..(cl - st.sent) as usize]
            }
            _ => data,
        }
    }

    fn take_head(st: &mut State) -> Result<Option<Reply>, SendError> {
        if st.head_sent {
            return Ok(None);
        }
        match &mut st.head {
            None => Err(SendError::Protocol(
                "app returned a response body before calling start_response()".into(),
            )),
            Some(h) => {
                st.head_sent = true;
                // Once sent, only the status is looked at again.
                Ok(Some(Reply::Head(ResponseHead {
                    status: h.status,
                    status_line: std::mem::take(&mut h.status_line),
                    headers: std::mem::take(&mut h.headers),
                })))
            }
        }
    }

    /// One body chunk from the iterable or `write()`.
    pub fn send_body(&self, py: Python<'_>, part: &BodyPart<'_, '_>) -> Result<(), SendError> {
        let data = part.as_slice();
        let mut st = self.lock();
        if st.closed {
            return Err(SendError::Closed);
        }
        if data.is_empty() {
            // Headers wait for the first non-empty chunk (PEP 3333).
            return if st.head.is_none() {
                Err(SendError::Protocol(
                    "app returned a response body before calling start_response()".into(),
                ))
            } else {
                Ok(())
            };
        }
        if st.ended {
            // write() from the close() of a complete response: its last
            // reply is made, nothing may follow it.
            return Err(SendError::Protocol(
                "write() called after the app returned its whole response".into(),
            ));
        }
        let mut replies = Vec::with_capacity(2);
        if let Some(h) = Self::take_head(&mut st)? {
            replies.push(h);
        }
        let data = self.clamp(&mut st, data);
        st.sent += data.len() as u64;
        if !data.is_empty() {
            replies.push(Reply::Body(self.chunk(part, data)));
        }
        drop(st);
        if replies.is_empty() {
            return Ok(());
        }
        self.push(py, replies)
    }

    /// A complete body (list or tuple): head, body and end in one message,
    /// which [`end`](Self::end) sends.
    pub fn complete(&self, parts: &[BodyPart<'_, '_>]) -> Result<(), SendError> {
        let total: usize = parts.iter().map(|c| c.as_slice().len()).sum();
        let mut st = self.lock();
        if st.head.is_none() {
            return Err(SendError::Protocol(
                "app returned without calling start_response()".into(),
            ));
        }
        if !st.head_sent && st.content_length.is_none() && !(self.head_request && total == 0) {
            let head = st.head.as_mut().expect("checked");
            if status_allows_body(head.status) {
                head.headers
                    .push((b"Content-Length".to_vec(), total.to_string().into_bytes()));
                st.content_length = Some(total as u64);
            }
        }
        if !st.head_sent && self.falls_short(&st, total as u64) {
            // The whole response is here, short of its own Content-Length,
            // and nothing went out yet: a 500.
            st.sent = total as u64;
            let end = self.end_reply(&mut st);
            st.complete = Some(vec![end]);
            return Ok(());
        }
        let mut replies = Vec::with_capacity(3);
        if let Some(h) = Self::take_head(&mut st)? {
            replies.push(h);
        }
        let body = match parts {
            [] => None,
            [one] => {
                let data = self.clamp(&mut st, one.as_slice());
                (!data.is_empty()).then(|| self.chunk(one, data))
            }
            _ => {
                let mut body = Vec::with_capacity(total);
                for c in parts {
                    body.extend_from_slice(c.as_slice());
                }
                let keep = self.clamp(&mut st, &body).len();
                body.truncate(keep);
                (!body.is_empty()).then_some(Chunk::Owned(body))
            }
        };
        if let Some(body) = body {
            st.sent += body.len() as u64;
            replies.push(Reply::Body(body));
        }
        let end = self.end_reply(&mut st);
        replies.push(end);
        st.complete = Some(replies);
        Ok(())
    }

    /// A `wsgi.file_wrapper` over a real file: nginx sends the range itself
    /// (head, file and end in one message, which [`end`](Self::end) sends).
    pub fn complete_with_file(&self, mut file: FileReply) -> Result<(), SendError> {
        let mut st = self.lock();
        if st.head.is_none() {
            return Err(SendError::Protocol(
                "app returned a file before calling start_response()".into(),
            ));
        }
        if !st.head_sent && st.content_length.is_none() {
            let head = st.head.as_mut().expect("checked");
            if status_allows_body(head.status) {
                head.headers.push((
                    b"Content-Length".to_vec(),
                    file.len.to_string().into_bytes(),
                ));
                st.content_length = Some(file.len);
            }
        }
        if let Some(cl) = st.content_length {
            file.len = file.len.min(cl.saturating_sub(st.sent));
        }
        let mut replies = Vec::with_capacity(3);
        if let Some(h) = Self::take_head(&mut st)? {
            replies.push(h);
        }
        st.sent += file.len;
        replies.push(Reply::File(file));
        let end = self.end_reply(&mut st);
        replies.push(end);
        st.complete = Some(replies);
        Ok(())
    }

    /// Whether `sent` body bytes fall short of the app's Content-Length
    /// (HEAD and bodiless statuses need none of it).
    fn falls_short(&self, st: &State, sent: u64) -> bool {
        match (st.content_length, &st.head) {
            (Some(cl), Some(h)) => sent < cl && !self.head_request && status_allows_body(h.status),
            _ => false,
        }
    }

    /// The response's last reply: End, or an Error if the body fell short.
    fn end_reply(&self, st: &mut State) -> Reply {
        st.ended = true;
        st.closed = true;
        if let Some(cl) = st.content_length {
            if self.falls_short(st, st.sent) {
                let then = if st.head_sent {
                    "closing connection"
                } else {
                    "answering 500"
                };
                self.hub.log(
                    Some(self.exchange.id),
                    LogLevel::Err,
                    format!(
                        "wsgi: app sent {} bytes, less than its Content-Length ({cl}), {then} while sending response to client",
                        st.sent
                    ),
                );
                return Reply::Error { status: 500 };
            }
        }
        Reply::End
    }

    /// The iterable is exhausted and closed: the response is complete.
    pub fn end(&self, py: Python<'_>) -> Result<(), SendError> {
        let mut st = self.lock();
        if st.ended {
            return match st.complete.take() {
                Some(replies) => {
                    drop(st);
                    self.push(py, replies)
                }
                None => Ok(()),
            };
        }
        if st.head.is_none() {
            return Err(SendError::Protocol(
                "app returned without calling start_response()".into(),
            ));
        }
        let mut replies = Vec::with_capacity(2);
        if !st.head_sent && st.content_length.is_none() {
            // Nothing was sent: an empty body has a known length.
            let head = st.head.as_mut().expect("checked");
            if status_allows_body(head.status) && !self.head_request {
                head.headers
                    .push((b"Content-Length".to_vec(), b"0".to_vec()));
            }
        }
        let end = self.end_reply(&mut st);
        // Short of its Content-Length with nothing sent yet: only the
        // error, which nginx answers with a 500.
        if st.head_sent || !matches!(end, Reply::Error { .. }) {
            if let Some(h) = Self::take_head(&mut st)? {
                replies.push(h);
            }
        }
        replies.push(end);
        drop(st);
        self.push(py, replies)
    }

    /// The app failed: nginx answers 500, or cuts the connection if the
    /// headers already went out.
    pub fn fail(&self, py: Python<'_>, status: u16) {
        self.close();
        let _ = self.push(py, vec![Reply::Error { status }]);
    }
}

/// 1xx, 204 and 304 responses have no body.
pub fn status_allows_body(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 304)
}

/// Encodes a `str` as latin-1, as PEP 3333 requires of header text.
fn latin1(s: &Bound<'_, PyString>, what: &str) -> PyResult<Vec<u8>> {
    let text = s.to_cow()?;
    if text.is_ascii() {
        return Ok(text.as_bytes().to_vec());
    }
    let mut out = Vec::with_capacity(text.len());
    for ch in text.chars() {
        let c = ch as u32;
        if c > 0xFF {
            return Err(PyValueError::new_err(format!(
                "{what} {:?} is not latin-1 (PEP 3333: encode other text in the body, or use RFC 2047/5987 encoding)",
                text
            )));
        }
        out.push(c as u8);
    }
    Ok(out)
}

/// Parses `"200 OK"`: a three-digit code, then optionally a space and a
/// reason without control characters.
pub fn parse_status(s: &[u8]) -> Result<u16, String> {
    // Only an error shows the status: no text is made for a good one.
    let shown = Shown(s);
    if s.len() < 3 || !s[..3].iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "status {shown:?} does not start with a three-digit code"
        ));
    }
    let code = (s[0] - b'0') as u16 * 100 + (s[1] - b'0') as u16 * 10 + (s[2] - b'0') as u16;
    if code < 100 {
        return Err(format!("status {shown:?} has an invalid code"));
    }
    if (100..200).contains(&code) {
        return Err(format!(
            "status {shown:?}: informational (1xx) responses cannot be sent from WSGI"
        ));
    }
    if s.len() > 3 {
        if s[3] != b' ' {
            return Err(format!(
                "status {shown:?}: the code must be followed by a space"
            ));
        }
        if s[4..].iter().any(|&c| c < 0x20 || c == 0x7F) {
            return Err(format!("status {shown:?} contains control characters"));
        }
    }
    Ok(code)
}

/// A status line as an error message quotes it (Debug of its lossy text).
struct Shown<'a>(&'a [u8]);

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&String::from_utf8_lossy(self.0), f)
    }
}

/// RFC 9110 token characters.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

pub fn check_header_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty header name".into());
    }
    if !name.iter().all(|&c| is_tchar(c)) {
        return Err(format!(
            "invalid header name {:?}",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

/// Values may hold any latin-1 text but no control characters (CR and LF
/// above all: they would let the app inject headers).
pub fn check_header_value(name: &[u8], value: &[u8]) -> Result<(), String> {
    if value.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7F) {
        return Err(format!(
            "value of header {:?} contains CR, LF or other control characters",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

/// A field value without the optional whitespace around it (RFC 9110
/// 5.5), which is not part of the value: Django's `Set-Cookie` values, for
/// one, start with a space (`Morsel.output(header="")`).
pub fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |c: &u8| *c == b' ' || *c == b'\t';
    let start = value.iter().position(|c| !is_ows(c)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|c| !is_ows(c))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

pub fn parse_content_length(value: &[u8]) -> Result<u64, String> {
    let v = std::str::from_utf8(value).unwrap_or("").trim();
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "invalid Content-Length {:?}",
            String::from_utf8_lossy(value)
        ));
    }
    v.parse::<u64>()
        .map_err(|_| format!("Content-Length {v:?} is too large"))
}

/// The `start_response` callable handed to the app. A pool thread keeps
/// one (and its `write`) from request to request while nothing else holds
/// it (see `Recycled`): making and freeing two Python objects per request
/// cost more than the rest of `start_response`.
#[pyclass(module = "ngx_wsgi")]
pub struct StartResponse {
    /// The request's, `None` between requests.
    pub(super) responder: Option<Arc<Responder>>,
    pub(super) write: Py<Write>,
}

/// The error of a `start_response` or `write` kept past its request.
fn outside_request() -> PyErr {
    PyAssertionError::new_err("start_response() and write() work only during their request")
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Write>> {
        let responder = self.responder.as_ref().ok_or_else(outside_request)?;
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let st = responder.lock();
            if st.closed {
                return Err(outside_request());
            }
            if let Some(info) = exc_info {
                if st.head_sent {
                    // Too late to change the response: re-raise (PEP 3333).
                    let info = info.cast::<PyTuple>()?;
                    let value = info.get_item(1)?;
                    let tb = info.get_item(2)?;
                    let value = value.call_method1("with_traceback", (tb,))?;
                    return Err(PyErr::from_value(value));
                }
            } else if st.head.is_some() {
                return Err(PyAssertionError::new_err(
                    "start_response() called a second time without exc_info",
                ));
            }
        }
        let status = status.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "status must be a str such as \"200 OK\", not {}",
                status
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let status_line = latin1(status, "status")?;
        let code = parse_status(&status_line).map_err(PyValueError::new_err)?;
        let headers = headers.cast::<PyList>().map_err(|_| {
            PyTypeError::new_err(format!(
                "response headers must be a list of (name, value) tuples, not {}",
                headers
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let mut out = Vec::with_capacity(headers.len());
        let mut content_length: Option<u64> = None;
        for item in headers.iter() {
            let pair = item.cast::<PyTuple>().map_err(|_| {
                PyTypeError::new_err("each response header must be a (name, value) tuple")
            })?;
            if pair.len() != 2 {
                return Err(PyTypeError::new_err(
                    "each response header must be a (name, value) tuple of two str",
                ));
            }
            let name = pair.get_item(0)?;
            let value = pair.get_item(1)?;
            let name = name
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("header names must be str"))?;
            let value = value.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "value of header {:?} must be a str",
                    name.to_string()
                ))
            })?;
            let name = latin1(name, "header name")?;
            let value = latin1(value, "header value")?;
            check_header_name(&name).map_err(PyValueError::new_err)?;
            check_header_value(&name, &value).map_err(PyValueError::new_err)?;
            let value = match trim_ows(&value) {
                t if t.len() == value.len() => value,
                t => t.to_vec(),
            };
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_content_length(&value).map_err(PyValueError::new_err)?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(PyValueError::new_err("conflicting Content-Length headers"));
                }
                if content_length.is_some() {
                    continue;
                }
                content_length = Some(n);
            }
            out.push((name, value));
        }
        let mut st = responder.lock();
        // (Checked again: the request may have ended while we parsed.)
        if st.closed {
            return Err(outside_request());
        }
        st.head = Some(ResponseHead {
            status: code,
            status_line,
            headers: out,
        });
        st.content_length = content_length;
        drop(st);
        Ok(self.write.clone_ref(py))
    }
}

/// The legacy `write()` callable returned by `start_response`.
#[pyclass(module = "ngx_wsgi")]
pub struct Write {
    /// The request's, `None` between requests.
    pub(super) responder: Option<Arc<Responder>>,
}

impl Write {
    pub(super) fn new(responder: &Arc<Responder>) -> Write {
        Write {
            responder: Some(responder.clone()),
        }
    }
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let part = if let Ok(b) = data.cast::<PyBytes>() {
            BodyPart::Bytes(b)
        } else if let Ok(b) = data.cast::<pyo3::types::PyByteArray>() {
            BodyPart::Owned(b.to_vec())
        } else {
            return Err(PyTypeError::new_err("write() takes bytes"));
        };
        let responder = self.responder.as_ref().ok_or_else(outside_request)?;
        match responder.send_body(py, &part) {
            Ok(()) => Ok(()),
            Err(SendError::Cancelled) => Err(PyOSError::new_err(
                "client connection closed (request ended in nginx)",
            )),
            Err(SendError::Closed) => Err(outside_request()),
            Err(SendError::Protocol(m)) => Err(PyAssertionError::new_err(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"200 OK"), Ok(200));
        assert_eq!(parse_status(b"404 Not Found"), Ok(404));
        assert_eq!(parse_status(b"299"), Ok(299));
        assert_eq!(parse_status(b"599 Custom Thing"), Ok(599));
        assert!(parse_status(b"OK").is_err());
        assert!(parse_status(b"20 OK").is_err());
        assert!(parse_status(b"200OK").is_err());
        assert!(parse_status(b"200 OK\r\nX-Injected: 1").is_err());
        assert!(parse_status(b"100 Continue").is_err());
        assert!(parse_status(b"099 x").is_err());
    }

    #[test]
    fn header_names_are_tokens() {
        assert!(check_header_name(b"X-Custom_Header.1").is_ok());
        assert!(check_header_name(b"").is_err());
        assert!(check_header_name(b"Bad Name").is_err());
        assert!(check_header_name(b"Bad:Name").is_err());
        assert!(check_header_name(b"X\r\nY").is_err());
    }

    #[test]
    fn header_values_reject_injection() {
        assert!(check_header_value(b"X", b"plain value\twith tab \xe9").is_ok());
        assert!(check_header_value(b"X", b"a\r\nSet-Cookie: x").is_err());
        assert!(check_header_value(b"X", b"a\nb").is_err());
        assert!(check_header_value(b"X", b"a\0b").is_err());
    }

    #[test]
    fn header_values_lose_surrounding_whitespace() {
        assert_eq!(trim_ows(b" csrftoken=x; Path=/"), b"csrftoken=x; Path=/");
        assert_eq!(trim_ows(b"\t a b \t"), b"a b");
        assert_eq!(trim_ows(b"plain"), b"plain");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b"0"), Ok(0));
        assert_eq!(parse_content_length(b" 42 "), Ok(42));
        assert!(parse_content_length(b"-1").is_err());
        assert!(parse_content_length(b"1e3").is_err());
        assert!(parse_content_length(b"").is_err());
        assert!(parse_content_length(b"99999999999999999999999").is_err());
    }

    #[test]
    fn bodiless_statuses() {
        assert!(status_allows_body(200));
        assert!(status_allows_body(404));
        assert!(!status_allows_body(204));
        assert!(!status_allows_body(304));
    }
}

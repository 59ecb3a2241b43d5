//! Pool threads: one PEP 3333 call per job. Builds environ, calls the app,
//! walks its iterable, and sends owned replies through the exchange. The
//! iterable's `close()` is called on every path. No `ngx_*` here.

pub mod environ;
pub mod errors;
pub mod file_wrapper;
pub mod input;
pub mod recycle;
pub mod response;

use std::sync::Arc;

use pyo3::exceptions::PyBaseException;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString, PyTuple};

use crate::message::{Hub, Job, LogLevel, Outcome, RequestId};
use response::{BodyPart, Responder, SendError};

pub use environ::ThreadContext;

pyo3::create_exception!(
    ngx_wsgi,
    RequestTimeout,
    PyBaseException,
    "Raised in an application thread that overran wsgi_read_timeout."
);

/// One line naming the exception, then its traceback.
/// With `wsgi_sandbox on`, a `PermissionError` on a path outside the
/// sandbox's rules is the sandbox's doing: say so, and how to allow it.
fn sandbox_hint(py: Python<'_>, err: &PyErr) -> Option<String> {
    if !crate::sandbox::is_on() || !err.is_instance_of::<pyo3::exceptions::PyPermissionError>(py) {
        return None;
    }
    let path: std::path::PathBuf = err.value(py).getattr("filename").ok()?.extract().ok()?;
    let path = std::path::absolute(&path).unwrap_or(path);
    let (read, write) = crate::sandbox::allowed();
    if crate::sandbox::under_any(&path, &write) {
        return None;
    }
    Some(if crate::sandbox::under_any(&path, &read) {
        format!(
            "wsgi_sandbox allows \"{}\" read-only: for writes, add it to \"wsgi_sandbox_write\"",
            path.display()
        )
    } else {
        format!(
            "wsgi_sandbox denies \"{}\": it is under no \"wsgi_sandbox_read\" or \"wsgi_sandbox_write\" path",
            path.display()
        )
    })
}

pub fn describe_error(py: Python<'_>, err: &PyErr) -> String {
    let ty = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "exception".into());
    let msg = err
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut out = if msg.is_empty() {
        ty
    } else {
        format!("{ty}: {msg}")
    };
    if let Some(tb) = err.traceback(py) {
        if let Ok(text) = tb.format() {
            out.push('\n');
            out.push_str(text.trim_end());
        }
    }
    if let Some(hint) = sandbox_hint(py, err) {
        out.push('\n');
        out.push_str(&hint);
    }
    if err.is_instance_of::<pyo3::exceptions::PySyntaxError>(py) {
        // The message names the file by its base name only: add Python's
        // own lines for it (the full path, the line, a caret).
        if let Some(where_) = syntax_error_location(py, err) {
            out.push('\n');
            out.push_str(&where_);
        }
    }
    out
}

/// `  File "/srv/app.py", line 2` and the offending line with its caret.
fn syntax_error_location(py: Python<'_>, err: &PyErr) -> Option<String> {
    let lines = py
        .import("traceback")
        .ok()?
        // (type, value): the one-argument form is Python 3.10+.
        .call_method1("format_exception_only", (err.get_type(py), err.value(py)))
        .ok()?;
    let text: String = lines.extract::<Vec<String>>().ok()?.concat();
    // The last line repeats "SyntaxError: message".
    let body = text.trim_end().rsplit_once('\n')?.0;
    (!body.trim().is_empty()).then(|| body.to_string())
}

thread_local! {
    /// The request this pool thread is running (for log context).
    pub static CURRENT: std::cell::Cell<Option<RequestId>> = const { std::cell::Cell::new(None) };
}

/// Runs one request to completion (or cancellation). `app_done` is called
/// as soon as none of the app's code runs for the request any more (the
/// pool closes the window in which the watchdog may interrupt it), before
/// the outcome is judged.
pub fn run(
    py: Python<'_>,
    tctx: &mut ThreadContext,
    hub: &Arc<Hub>,
    app: &Bound<'_, PyAny>,
    job: Job,
    app_done: impl FnOnce(Python<'_>) -> bool,
) {
    let id = job.id;
    CURRENT.with(|c| c.set(Some(id)));
    let head_only = job.env.get(job.env.method) == b"HEAD";
    let exchange = job.exchange.clone();
    let responder = Arc::new(Responder::new(job.exchange.clone(), hub.clone(), head_only));
    let outcome = call_app(py, tctx, hub, app, job, &responder);
    // (The last reply did it, if one went: not for a cancelled request.)
    errors::end_of_request();
    // (Tests: the response's end is handed over, the clean-up not done.)
    crate::hooks::hold(py, crate::hooks::Point::ResponseEnd, id);
    let report_stack = app_done(py);
    // A start_response or write() the app kept is dead from here on (if
    // the response ended, it has been since before its end was queued).
    responder.close();
    tctx.recycled.release(py);
    let when = if responder.head_sent() {
        "while sending response to client"
    } else {
        "while handling request"
    };
    if report_stack {
        // Interrupted where the watchdog does not read stacks (see
        // pool.rs): this thread says where the interrupt found the app.
        let landed = match &outcome {
            Err(Failure::Interrupted(e)) => Some(e),
            Err(Failure::App(e)) if e.is_instance_of::<RequestTimeout>(py) => Some(e),
            _ => None,
        };
        let text = landed_stack(py, landed);
        hub.send(crate::message::Completion::AppStack { id, text });
    }
    let failed = match outcome {
        Ok(()) | Err(Failure::Cancelled | Failure::Interrupted(_)) => None,
        Err(Failure::App(err)) => Some(app_error_line(py, &err, when)),
        Err(Failure::Output(msg)) => Some(format!("wsgi: {msg} {when}")),
    };
    // Counted once: unless nginx's thread ended the request first (a
    // timeout, whose interrupt may be what the app raised, or a client
    // gone), in which case it counts it and nobody waits for a reply.
    if let Some(line) = failed {
        if exchange.claim(Outcome::AppError) {
            report_app_error(hub, id, line);
            responder.fail(py, 500);
        }
    }
    CURRENT.with(|c| c.set(None));
}

/// Why a request did not complete normally.
enum Failure {
    /// The request ended on the nginx side (client gone, timeout).
    Cancelled,
    /// Likewise, and the app raised the `RequestTimeout` it was
    /// interrupted with (kept for where it landed).
    Interrupted(PyErr),
    /// The app raised (an app error, unless nginx's thread ended the
    /// request first: see [`Outcome`]).
    App(PyErr),
    /// The app's output broke the protocol (message for the log).
    Output(String),
}

impl From<SendError> for Failure {
    fn from(e: SendError) -> Failure {
        match e {
            // (Closed: only a kept write() finds its request closed, never
            // the request's own iterable, which ends before it closes.)
            SendError::Cancelled | SendError::Closed => Failure::Cancelled,
            SendError::Protocol(m) => Failure::Output(m),
        }
    }
}

fn call_app(
    py: Python<'_>,
    tctx: &mut ThreadContext,
    hub: &Arc<Hub>,
    app: &Bound<'_, PyAny>,
    mut job: Job,
    responder: &Arc<Responder>,
) -> Result<(), Failure> {
    let (id, trace) = (job.id, job.trace);
    let environ = tctx.environ(py, &mut job, hub).map_err(Failure::App)?;
    drop(job);
    let start_response = tctx
        .recycled
        .start_response(py, responder)
        .map_err(Failure::App)?;
    let result = app
        .call1((environ, start_response))
        .map_err(|e| raised(py, responder, e))?;
    // From here on, close() must run whatever happens.
    let sent = send_iterable(py, responder, &result);
    if let Err(e) = close_iterable(&result) {
        // The body is what the app meant to send: a failing close() is the
        // app's clean-up going wrong, logged but not cutting the response
        // short (as gunicorn, uWSGI and mod_wsgi do).
        if responder.claim(Outcome::AppError) {
            report_app_error(
                hub,
                id,
                app_error_line(py, &e, "while closing the response iterable"),
            );
        }
    }
    if trace {
        // Before the last reply (a complete response's too: `end` sends
        // it): the request is still registered on the nginx side, so the
        // line carries its context and comes before "finalized".
        hub.log(
            Some(id),
            LogLevel::Debug,
            format!("wsgi: job #{id} iterable closed"),
        );
    }
    sent?;
    responder.end(py).map_err(Failure::from)
}

/// What the app raising `err` means: an app error, unless the request
/// ended on the nginx side first.
fn raised(py: Python<'_>, responder: &Responder, err: PyErr) -> Failure {
    if !responder.is_cancelled() {
        Failure::App(err)
    } else if err.is_instance_of::<RequestTimeout>(py) {
        Failure::Interrupted(err)
    } else {
        Failure::Cancelled
    }
}

/// Innermost frames of an interrupted app's stack that go to the log.
pub const STACK_LIMIT: usize = 50;

/// Where `RequestTimeout` landed in the app (its traceback, innermost
/// last, as `traceback.format_stack` prints a stack), for the timed-out
/// request's log; or why that is unknown.
fn landed_stack(py: Python<'_>, err: Option<&PyErr>) -> String {
    const WHILE: &str = "while reading response from application";
    let Some(tb) = err.and_then(|e| e.traceback(py)) else {
        return format!(
            "wsgi: the app's thread was at: unknown, the app returned without raising \
             the interrupt (it had returned, or it caught RequestTimeout) {WHILE}"
        );
    };
    let limit = -(STACK_LIMIT as i64);
    let lines = py
        .import("traceback")
        .and_then(|m| m.call_method1("format_tb", (tb, limit)))
        .and_then(|l| l.extract::<Vec<String>>());
    match lines {
        Ok(lines) => format!("wsgi: the app's thread was at:\n{}{WHILE}", lines.concat()),
        Err(e) => format!(
            "wsgi: cannot read the app's stack: {} {WHILE}",
            describe_error(py, &e)
        ),
    }
}

/// Counts an app error and logs it against its request.
fn report_app_error(hub: &Hub, id: RequestId, line: String) {
    hub.counters
        .app_errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    hub.log(Some(id), LogLevel::Err, line);
}

/// "wsgi: app raised X: msg while ..." and the traceback, for the error log.
fn app_error_line(py: Python<'_>, err: &PyErr, when: &str) -> String {
    let text = describe_error(py, err);
    match text.split_once('\n') {
        Some((first, rest)) if !rest.is_empty() => {
            format!("wsgi: app raised {first} {when}\n{rest}")
        }
        _ => format!("wsgi: app raised {} {when}", text.trim_end_matches('\n')),
    }
}

fn close_iterable(result: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = result.py();
    // Lists and tuples have no close(); looking it up would build an
    // AttributeError (message and all) on every request.
    if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    match result.getattr(pyo3::intern!(py, "close")) {
        Ok(close) => close.call0().map(|_| ()),
        Err(_) => Ok(()),
    }
}

/// A body chunk as bytes; anything but a bytes-like object is an error.
fn chunk_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> Result<BodyPart<'a, 'py>, Failure> {
    if let Ok(b) = item.cast::<PyBytes>() {
        return Ok(BodyPart::Bytes(b));
    }
    if let Ok(b) = item.cast::<PyByteArray>() {
        return Ok(BodyPart::Owned(b.to_vec()));
    }
    Err(Failure::Output(format!(
        "app returned a response body chunk of type {}, not bytes (PEP 3333 bodies are bytes)",
        type_name(item)
    )))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn send_iterable(
    py: Python<'_>,
    responder: &Arc<Responder>,
    result: &Bound<'_, PyAny>,
) -> Result<(), Failure> {
    // wsgi.file_wrapper over a real file: let nginx send the file itself.
    if let Ok(fw) = result.cast::<file_wrapper::FileWrapper>() {
        match fw.get().as_file(py) {
            Ok(Some(file)) => return responder.complete_with_file(file).map_err(Failure::from),
            Ok(None) => {}
            Err(e) => return Err(Failure::App(e)),
        }
    }
    // A list or tuple is complete already: send it as one message, with a
    // Content-Length if the app gave none. Read by index, without a Python
    // iterator object.
    let items: Option<Vec<Bound<'_, PyAny>>> = if let Ok(list) = result.cast_exact::<PyList>() {
        Some(list.iter().collect())
    } else if let Ok(tuple) = result.cast_exact::<PyTuple>() {
        Some(tuple.iter().collect())
    } else {
        None
    };
    if let Some(items) = items {
        let mut parts = Vec::with_capacity(items.len());
        for item in &items {
            parts.push(chunk_bytes(item)?);
        }
        return responder.complete(&parts).map_err(Failure::from);
    }
    let iter = match result.try_iter() {
        // A bytes or str object is iterable, by element: the common slip
        // of returning the body itself instead of a list holding it.
        Ok(_)
            if result.is_instance_of::<PyBytes>()
                || result.is_instance_of::<PyByteArray>()
                || result.is_instance_of::<PyString>() =>
        {
            return Err(Failure::Output(format!(
                "app returned a {} object instead of an iterable of bytes (return [body], PEP 3333)",
                type_name(result)
            )));
        }
        Ok(iter) => iter,
        Err(e) if !e.is_instance_of::<pyo3::exceptions::PyTypeError>(py) => {
            return Err(Failure::App(e));
        }
        Err(_) => {
            return Err(Failure::Output(format!(
                "app returned {}, not an iterable of bytes (PEP 3333)",
                if result.is_none() {
                    "None".to_string()
                } else {
                    format!("an object of type {}", type_name(result))
                }
            )));
        }
    };
    for item in iter {
        let item = item.map_err(|e| raised(py, responder, e))?;
        let part = chunk_bytes(&item)?;
        responder.send_body(py, &part).map_err(Failure::from)?;
    }
    Ok(())
}

//! Pool threads: the per-request Python objects a thread keeps from one
//! request to the next (`start_response`, its `write`, `wsgi.input`,
//! `wsgi.errors`) while the app holds no reference to them: making and
//! freeing them per request cost more than all the rest of
//! `start_response`.

use std::sync::Arc;

use pyo3::prelude::*;

use super::errors::LogStream;
use super::input::Input;
use super::response::{Responder, StartResponse, Write};
use crate::message::{Body, Hub, LogLevel, RequestId};

/// Is `obj`'s reference the only one (nothing else can reach the object)?
///
/// Sound without the GIL too: the objects are this thread's own (made
/// here, kept in its `Recycled`, never handed to another thread by us),
/// and `Py_REFCNT` is the true count (a free-threaded build adds the
/// owner's local count and the shared one). A count of 1 is our own
/// reference: no other thread holds one, so none can make one, and the
/// answer cannot go stale. A count above 1 read while another thread drops
/// its reference only makes us build a new object.
fn sole_reference<T>(_py: Python<'_>, obj: &Py<T>) -> bool {
    // SAFETY: `obj` is a live object (we hold a reference); the thread
    // state is attached (`_py`).
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) == 1 }
}

/// The object in `slot` if this slot's reference is its only one (it can
/// be reset and reused: no borrow of it can be out).
fn unshared<'py, T>(py: Python<'py>, slot: &Option<Py<T>>) -> Option<Bound<'py, T>> {
    slot.as_ref()
        .filter(|obj| sole_reference(py, obj))
        .map(|obj| obj.bind(py).clone())
}

/// A pool thread's recycled objects: each is the one the last request used
/// when the app kept no reference to it, else a new one. Per thread (in
/// its `ThreadContext`), never shared. A `start_response` the app kept is
/// dead after its request by its responder's `closed` flag, not by this
/// struct unbinding it (another thread may call it at any time).
#[derive(Default)]
pub struct Recycled {
    start_response: Option<Py<StartResponse>>,
    input: Option<Py<Input>>,
    errors: Option<Py<LogStream>>,
}

impl Recycled {
    /// `wsgi.errors` of request `id`.
    pub fn errors<'py>(
        &mut self,
        py: Python<'py>,
        hub: &Arc<Hub>,
        id: RequestId,
    ) -> PyResult<Bound<'py, LogStream>> {
        if let Some(errors) = unshared(py, &self.errors) {
            errors.get().rebind(id);
            return Ok(errors);
        }
        let errors = Bound::new(py, LogStream::for_request(hub.clone(), id, LogLevel::Err))?;
        self.errors = Some(errors.clone().unbind());
        Ok(errors)
    }

    /// `wsgi.input` reading `body`.
    pub fn input<'py>(&mut self, py: Python<'py>, body: Body) -> PyResult<Bound<'py, Input>> {
        if let Some(input) = unshared(py, &self.input) {
            input.borrow_mut().reset(body);
            return Ok(input);
        }
        let input = Bound::new(py, Input::new(body))?;
        self.input = Some(input.clone().unbind());
        Ok(input)
    }

    /// `start_response` (and its `write`) for the request of `responder`.
    pub fn start_response<'py>(
        &mut self,
        py: Python<'py>,
        responder: &Arc<Responder>,
    ) -> PyResult<Bound<'py, StartResponse>> {
        if let Some(sr) = unshared(py, &self.start_response) {
            let mut inner = sr.borrow_mut();
            if sole_reference(py, &inner.write) {
                inner.write.borrow_mut(py).responder = Some(responder.clone());
            } else {
                inner.write = Py::new(py, Write::new(responder))?;
            }
            inner.responder = Some(responder.clone());
            drop(inner);
            return Ok(sr);
        }
        let sr = Bound::new(
            py,
            StartResponse {
                responder: Some(responder.clone()),
                write: Py::new(py, Write::new(responder))?,
            },
        )?;
        self.start_response = Some(sr.clone().unbind());
        Ok(sr)
    }

    /// After the request: unbinds `start_response` and `write` from it, so
    /// that its state is freed now and ones the app kept refuse to work
    /// later (rather than act on a finished request); writes out
    /// `wsgi.errors`' partial last line with its request and frees the body
    /// of `wsgi.input`. What the app kept is forgotten (a kept `wsgi.errors`
    /// writes its partial line, a kept `wsgi.input` frees its body, when
    /// the app lets go of them, as without recycling).
    pub fn release(&mut self, py: Python<'_>) {
        if let Some(sr) = &self.start_response {
            let kept = !sole_reference(py, sr);
            // (A kept one may be in a call on another thread right now:
            // then it stays bound, as it would without recycling.)
            if let Ok(mut inner) = sr.bind(py).try_borrow_mut() {
                inner.responder = None;
                if let Ok(mut write) = inner.write.bind(py).try_borrow_mut() {
                    write.responder = None;
                }
            }
            if kept {
                self.start_response = None;
            }
        }
        match unshared(py, &self.errors) {
            Some(errors) => errors.get().flush_all(),
            None => self.errors = None,
        }
        match unshared(py, &self.input) {
            Some(input) => input.borrow_mut().reset(Body::default()),
            None => self.input = None,
        }
    }
}

//! Pool threads: the per-request Python objects a thread keeps from one
//! request to the next (`start_response`, its `write`, `wsgi.input`,
//! `wsgi.errors`) while
//! the app holds no reference to them: making and freeing them per request
//! cost more than all the rest of `start_response`.

use std::sync::Arc;

use pyo3::prelude::*;

use super::errors::LogStream;
use super::input::Input;
use super::response::{Responder, StartResponse, Write};
use crate::message::{Body, Hub, LogLevel, RequestId};

/// Is `obj`'s reference the only one (nothing else can reach the object)?
fn sole_reference<T>(_py: Python<'_>, obj: &Py<T>) -> bool {
    // SAFETY: `obj` is a live object (we hold a reference) and the GIL is
    // held (`_py`), so its reference count is stable while we read it.
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) == 1 }
}

/// A pool thread's recycled objects: each is the one the last request used
/// when the app kept no reference to it, else a new one.
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
        if let Some(errors) = &self.errors {
            if sole_reference(py, errors) {
                errors.get().rebind(id);
                return Ok(errors.bind(py).clone());
            }
        }
        let errors = Bound::new(py, LogStream::for_request(hub.clone(), id, LogLevel::Err))?;
        self.errors = Some(errors.clone().unbind());
        Ok(errors)
    }

    /// `wsgi.input` reading `body`.
    pub fn input<'py>(&mut self, py: Python<'py>, body: Body) -> PyResult<Bound<'py, Input>> {
        if let Some(input) = &self.input {
            if sole_reference(py, input) {
                let input = input.bind(py);
                input.borrow_mut().reset(body);
                return Ok(input.clone());
            }
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
        if let Some(sr) = &self.start_response {
            let sr = sr.bind(py);
            // Held by this cache alone (after `release`): no borrow can be out.
            if sole_reference(py, sr.as_unbound()) {
                let mut inner = sr.borrow_mut();
                if sole_reference(py, &inner.write) {
                    inner.write.borrow_mut(py).responder = Some(responder.clone());
                } else {
                    inner.write = Py::new(py, Write::new(responder))?;
                }
                inner.responder = Some(responder.clone());
                drop(inner);
                return Ok(sr.clone());
            }
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

    /// After the request: unbinds both from the request, so that its state
    /// is freed now and a `start_response` or `write` the app kept refuses
    /// to work later (rather than act on a finished request); forgets what
    /// the app kept.
    pub fn release(&mut self, py: Python<'_>) {
        let Some(sr) = &self.start_response else {
            return;
        };
        let kept = !sole_reference(py, sr);
        // (A kept one may be in a call on another thread right now: then it
        // stays bound, as it would without recycling.)
        if let Ok(mut inner) = sr.bind(py).try_borrow_mut() {
            inner.responder = None;
            if let Ok(mut write) = inner.write.bind(py).try_borrow_mut() {
                write.responder = None;
            }
        }
        if kept {
            self.start_response = None;
        }
        // A partial last line is written with its request, as when the
        // stream went away with the environ; a kept one writes it when the
        // app lets it go.
        if let Some(errors) = &self.errors {
            if sole_reference(py, errors) {
                errors.get().flush_all();
            } else {
                self.errors = None;
            }
        }
        // The body (memory, a temp file) is freed now; a `wsgi.input` the
        // app kept (with its environ) keeps its body, as without recycling.
        if let Some(input) = &self.input {
            if sole_reference(py, input) {
                input.borrow_mut(py).reset(Body::default());
            } else {
                self.input = None;
            }
        }
    }
}

//! The pool side of ngx_http_wsgi_module: everything that runs on the
//! Rust threads that call the WSGI app, and the interpreter's start-up.
//!
//! This crate has no nginx dependency at all: the compiler, not a comment,
//! keeps nginx's data out of the pool threads. It talks to the nginx side
//! only through [`message`]: owned jobs in, replies and completions out,
//! and an eventfd to wake nginx's event loop.
//!
//! * [`message`] — what crosses threads: jobs, bodies, replies, the hub;
//! * [`pool`] — the threads: signal masks, thread states, the job loop;
//! * [`wsgi`] — environ, `start_response`, `wsgi.input`, iteration;
//! * [`python`] — interpreter start-up per worker, app import;
//! * [`target`] — what `wsgi_pass` names (module:callable or a file);
//! * [`hooks`] — tests only: holds a thread where two threads race;
//! * [`sandbox`] — `wsgi_sandbox`: Landlock rules for the Python threads;
//! * [`sched`] — a thread's scheduler time slice (`wsgi_nginx_first`);
//! * [`timezone`] — the process's time zone, which nginx's log times
//!   follow, watched for an app that changes it.

// The bench-only `transport-floor` build skips the WSGI call, leaving it unused.
#![cfg_attr(feature = "transport-floor", allow(dead_code))]

pub mod hooks;
pub mod message;
pub mod pool;
pub mod python;
pub mod sandbox;
pub mod sched;
pub mod target;
pub mod timezone;
pub mod wsgi;

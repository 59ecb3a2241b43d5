//! ngx_http_wsgi_module: runs Python WSGI applications inside nginx workers.
//!
//! The nginx event loop never waits for Python. Where code runs:
//!
//! * nginx thread — this crate, in layers (the `mod` list below, lowest
//!   first: a module uses only those above it; `scripts/import-graph`
//!   checks it): [`ffi`] (nginx's structs as C lays them out, a typed
//!   request handle), [`log`], [`conf`] (directives), [`check`]
//!   (configuration-time probing), [`runtime`] (the worker's pool as nginx
//!   sees it), [`notify`] (the eventfd that wakes the event loop),
//!   [`request`] (a request's state, the guarded entry of every handler,
//!   finish and abort), [`body`], [`head`], [`flow`] and [`output`] (the
//!   response, backpressure), [`handler`] (content handler, dispatch),
//!   [`status`], [`variables`], [`worker`] (per-worker start and exit) and
//!   [`module`] (what nginx reads; the only file naming its handlers).
//!   None of these take the GIL, and none can: this crate does not depend
//!   on pyo3. Python is reached only through `wsgi-pool`'s functions; the
//!   ones that take the GIL (`python::initialize`, `python::import_apps`,
//!   `python::run_atexit`) are called from [`worker`] at worker start and
//!   exit only, and take it inside the pool crate, never while requests
//!   are served.
//! * pool threads — the `wsgi-pool` crate (`crates/wsgi-pool`): `pool`
//!   (threads, signal masks, thread states), `wsgi` (environ,
//!   `start_response`, `wsgi.input`, iteration), `python` (interpreter
//!   start-up and app import), `sandbox` (`wsgi_sandbox`'s Landlock rules
//!   for the threads that run Python). It does not depend on nginx's
//!   bindings, so no `ngx_*` type can reach a pool thread.
//! * between them — `wsgi_pool::message`: owned jobs and replies only.

// One unsafe operation per `unsafe` block, each with its own SAFETY line.
#![deny(clippy::multiple_unsafe_ops_per_block)]
// The bench-only `transport-floor` build skips the WSGI call, leaving it unused.
#![cfg_attr(feature = "transport-floor", allow(dead_code))]

use core::ptr::addr_of;

use nginx_sys::ngx_module_t;
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

// Layers, lowest first; a module uses only those above it in this list
// (`scripts/import-graph` checks that src/ has no circle).
mod ffi; //       nginx's structs as C lays them out, raw helpers
#[macro_use]
mod log; //       logging, the trace macros, the panic guard
#[cfg(feature = "panic-inject")]
mod inject; //    test builds: injected panics and failed allocations
mod conf; //      directive settings, parsing, merging
mod check; //     configuration-time probing and the import check
mod runtime; //   the worker's pool and counters as nginx's thread sees them
mod app_stack; // where a timed-out app was
mod notify; //    the eventfd wake-up and the table of waiting requests
mod request; //   a request's state: enter, finish, abort
mod body; //      the request body to the app; the client going away
mod head; //      the response head
mod flow; //      the response's state machine, without nginx
mod output; //    the response body, backpressure
mod handler; //   the content handler: dispatch, timers
mod status; //    wsgi_status
mod variables; // $wsgi_* variables
mod worker; //    worker start and exit
mod module; //    what nginx reads: contexts, directive table, hooks

// The pool side lives in its own crate, which has no nginx dependency.
use wsgi_pool::{hooks, message, pool, python, target};

/// Buffers move between threads on every request (a body chunk made on a
/// pool thread is freed on nginx's); glibc's malloc serialises such frees on
/// the allocating thread's arena lock, mimalloc frees them without locking.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The module's identity: every layer finds its configuration and its
/// per-request slot through it (nginx's index fields in
/// [`ngx_http_wsgi_module`]); what nginx calls is wired in `module.rs`.
pub struct HttpWsgiModule;

impl HttpModule for HttpWsgiModule {
    fn module() -> &'static ngx_module_t {
        let module = addr_of!(ngx_http_wsgi_module);
        // SAFETY: the module static is only written by nginx while loading
        // the module (index fields), before any request runs.
        unsafe { &*module }
    }
}

// SAFETY: MainConf/LocConf are what create_*_conf allocate.
unsafe impl HttpModuleMainConf for HttpWsgiModule {
    type MainConf = conf::MainConf;
}

// SAFETY: as above.
unsafe impl HttpModuleLocationConf for HttpWsgiModule {
    type LocationConf = conf::LocConf;
}

// The module table for a cargo-built .so; nginx's build writes its own.
#[cfg(all(not(test), feature = "export-modules"))]
ngx::ngx_modules!(ngx_http_wsgi_module);

#[cfg_attr(not(test), used)]
#[allow(non_upper_case_globals)]
#[cfg_attr(not(test), no_mangle)]
pub static mut ngx_http_wsgi_module: ngx_module_t = module::module();

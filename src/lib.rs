//! ngx_http_wsgi_module: runs Python WSGI applications inside nginx workers.
//!
//! The nginx event loop never waits for Python. Where code runs:
//!
//! * nginx thread — this crate: [`conf`] (directives), [`request`] (a
//!   request's state, the guarded entry of every handler, its one end),
//!   [`handler`] (content handler, request body, dispatch), [`output`]
//!   (response to nginx's filters, backpressure), [`notify`] (the eventfd
//!   that wakes the event loop), [`worker`] (per-worker start and exit),
//!   [`variables`], [`status`], [`fields`] (nginx's structs as C lays them
//!   out). None of these take the GIL, and none can: this crate does not
//!   depend on pyo3. Python is reached only through `wsgi-pool`'s
//!   functions; the ones that take the GIL run at worker start and exit
//!   (`python::initialize`, `python::import_apps`, `python::run_atexit`),
//!   never while requests are served.
//! * pool threads — the `wsgi-pool` crate (`crates/wsgi-pool`): `pool`
//!   (threads, signal masks, thread states), `wsgi` (environ,
//!   `start_response`, `wsgi.input`, iteration), `python` (interpreter
//!   start-up and app import), `sandbox` (`wsgi_sandbox`'s Landlock rules
//!   for the threads that run Python). It does not depend on nginx's
//!   bindings, so no `ngx_*` type can reach a pool thread.
//! * between them — `wsgi_pool::message`: owned jobs and replies only.

// The bench-only `transport-floor` build skips the WSGI call, leaving it unused.
#![cfg_attr(feature = "transport-floor", allow(dead_code))]

use core::ptr::addr_of;

use nginx_sys::{ngx_http_module_t, ngx_module_t, NGX_HTTP_MODULE};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

#[macro_use]
mod trace;

mod app_stack;
mod check;
mod conf;
mod fields;
mod handler;
mod head;
mod notify;
mod output;
mod request;
mod status;
mod util;
mod variables;
mod worker;

// The pool side lives in its own crate, which has no nginx dependency.
use wsgi_pool::{hooks, message, pool, python, target};

/// Buffers move between threads on every request (a body chunk made on a
/// pool thread is freed on nginx's); glibc's malloc serialises such frees on
/// the allocating thread's arena lock, mimalloc frees them without locking.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub struct HttpWsgiModule;

impl HttpModule for HttpWsgiModule {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while loading
        // the module (index fields), before any request runs.
        unsafe { &*addr_of!(ngx_http_wsgi_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut nginx_sys::ngx_conf_t) -> nginx_sys::ngx_int_t {
        // SAFETY: nginx calls this with a valid cf.
        conf::guard_hook(cf, "preconfiguration", || unsafe {
            variables::add_variables(cf)
        })
    }

    unsafe extern "C" fn postconfiguration(cf: *mut nginx_sys::ngx_conf_t) -> nginx_sys::ngx_int_t {
        // SAFETY: nginx calls this with a valid cf, after the http block.
        conf::guard_hook(cf, "postconfiguration", || unsafe {
            conf::postconfiguration(cf)
        })
    }
}

// SAFETY: MainConf/LocConf are what create_*_conf below allocate.
unsafe impl HttpModuleMainConf for HttpWsgiModule {
    type MainConf = conf::MainConf;
}

// SAFETY: as above.
unsafe impl HttpModuleLocationConf for HttpWsgiModule {
    type LocationConf = conf::LocConf;
}

static NGX_HTTP_WSGI_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(HttpWsgiModule::preconfiguration),
    postconfiguration: Some(HttpWsgiModule::postconfiguration),
    create_main_conf: Some(HttpWsgiModule::create_main_conf),
    init_main_conf: Some(HttpWsgiModule::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(HttpWsgiModule::create_loc_conf),
    merge_loc_conf: Some(conf::merge_loc_conf),
};

// The module table for a cargo-built .so; nginx's build writes its own.
#[cfg(all(not(test), feature = "export-modules"))]
ngx::ngx_modules!(ngx_http_wsgi_module);

#[cfg_attr(not(test), used)]
#[allow(non_upper_case_globals)]
#[cfg_attr(not(test), no_mangle)]
pub static mut ngx_http_wsgi_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(NGX_HTTP_WSGI_MODULE_CTX) as _,
    // SAFETY: only the address is taken; nginx reads the table.
    commands: unsafe { &raw mut conf::COMMANDS[0] },
    type_: NGX_HTTP_MODULE as _,
    init_process: Some(worker::init_process),
    exit_process: Some(worker::exit_process),
    ..ngx_module_t::default()
};

//! nginx thread: the worker's Python side as nginx's thread sees it — the
//! pool, the hub its replies come through, the apps — and the worker's
//! request counts (`wsgi_max_requests`). Set once by `worker.rs` at worker
//! start; read by every request-time layer.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use nginx_sys::{NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_PROCESS_WORKER};
use ngx::ngx_log_error;

use crate::message::{Hub, Job};
use crate::pool::Pool;

/// The worker's Python side as the nginx thread sees it.
pub struct Runtime {
    pub hub: Arc<Hub>,
    pub pool: Pool,
    pub threads: usize,
    pub queue_timeout_ms: u64,
    pub app_names: Vec<String>,
    pub app_ready: Vec<bool>,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

pub fn runtime() -> Option<&'static Runtime> {
    RUNTIME.get()
}

/// Worker start, once: what [`runtime`] returns from now on.
pub fn install(rt: Runtime) {
    let _ = RUNTIME.set(rt);
}

impl Runtime {
    pub fn app_ready(&self, app: usize) -> bool {
        self.app_ready.get(app).copied().unwrap_or(false)
    }

    pub fn app_name(&self, app: usize) -> &str {
        self.app_names.get(app).map(String::as_str).unwrap_or("?")
    }

    /// Queues a job; on a full queue returns how many are waiting.
    pub fn submit(&self, job: Job) -> Result<(), usize> {
        self.pool.submit(job)
    }

    /// Asks the pool to interrupt the thread running request `id`.
    pub fn interrupt(&self, id: u64, ident: u64) {
        self.pool.interrupt(id, ident);
    }
}

thread_local! {
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
    /// Requests this worker handed to the pool (`wsgi_max_requests`).
    static DISPATCHED: Cell<u64> = const { Cell::new(0) };
    /// This worker's `wsgi_max_requests`, jitter added; 0: no limit.
    static MAX_REQUESTS: Cell<u64> = const { Cell::new(0) };
}

pub fn request_started() {
    IN_FLIGHT.with(|n| n.set(n.get() + 1));
    let served = DISPATCHED.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    if served == MAX_REQUESTS.with(Cell::get) {
        retire(served);
    }
}

/// `wsgi_max_requests` reached: the worker shuts down gracefully, as on
/// SIGQUIT (requests in flight finish, `atexit` handlers run), and the
/// master starts a fresh worker, with a fresh interpreter, in its place.
fn retire(served: u64) {
    ngx_log_error!(
        NGX_LOG_NOTICE,
        ngx::log::ngx_cycle_log().as_ptr(),
        "wsgi: worker process has handed {} requests to the app (wsgi_max_requests), exiting gracefully",
        served
    );
    // SAFETY: a worker's own flag for a graceful exit, which its signal
    // handler would set on SIGQUIT; set on the nginx thread, read by the
    // worker's loop after this event.
    unsafe { nginx_sys::ngx_quit = 1 };
}

/// This worker's request limit: `wsgi_max_requests` plus a random part of
/// its jitter, so that workers started together do not all restart at once.
fn max_requests(mcf: &crate::conf::MainConf, log: *mut nginx_sys::ngx_log_t) -> u64 {
    let Some((limit, jitter)) = mcf.max_requests.filter(|(limit, _)| *limit > 0) else {
        return 0;
    };
    // SAFETY: ngx_process is set before init_process hooks run.
    if unsafe { nginx_sys::ngx_process } as u32 != NGX_PROCESS_WORKER {
        // Without a master nobody would start a new worker.
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "wsgi: \"wsgi_max_requests\" is ignored without a master process"
        );
        return 0;
    }
    // From the kernel, not from state the workers inherited from the master.
    let mut r: u64 = std::process::id().into();
    // SAFETY: getrandom writes at most the 8 bytes it is given.
    unsafe { libc::getrandom((&raw mut r).cast(), 8, 0) };
    limit.saturating_add(r % jitter.saturating_add(1))
}

pub fn in_flight() -> usize {
    IN_FLIGHT.with(|n| n.get())
}

pub fn request_finished() {
    IN_FLIGHT.with(|n| n.set(n.get().saturating_sub(1)));
}

/// Worker start: this worker's `wsgi_max_requests` (jitter drawn now).
pub fn set_max_requests(mcf: &crate::conf::MainConf, log: *mut nginx_sys::ngx_log_t) {
    let limit = max_requests(mcf, log);
    MAX_REQUESTS.with(|m| m.set(limit));
}

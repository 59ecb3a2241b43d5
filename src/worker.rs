//! nginx thread: per-worker start and exit. After fork, each worker starts
//! its own interpreter and pool, imports the apps and registers the
//! wake-up eventfd; at exit it lets the pool drain and runs `atexit`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nginx_sys::{
    ngx_cycle_t, ngx_int_t, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_OK,
    NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_log_error;

use crate::message::Hub;
use crate::pool::{Pool, PoolConfig};
use crate::python::{self, Interpreter};
use crate::runtime::{self, runtime, Runtime};
use crate::{notify, HttpWsgiModule};

fn worker_processes(cycle: *mut ngx_cycle_t) -> usize {
    // SAFETY: the live cycle; the core module's conf exists in every cycle.
    match unsafe { crate::ffi::core_conf(cycle) } {
        Some(ccf) if ccf.master != 0 => ccf.worker_processes.max(1) as usize,
        _ => 1,
    }
}

pub extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    crate::log::install_panic_hook();
    // SAFETY: nginx calls this with the live cycle.
    let log = unsafe { (*cycle).log };
    // A panic here is logged; the worker serves what does not need Python.
    crate::log::guard(log, "worker start", || start_worker(cycle)).unwrap_or(NGX_OK as ngx_int_t)
}

fn start_worker(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // Cache manager and loader processes run this hook too: no Python there.
    // SAFETY: ngx_process is set before init_process hooks run.
    let process = unsafe { nginx_sys::ngx_process } as u32;
    if process != NGX_PROCESS_WORKER && process != NGX_PROCESS_SINGLE {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: cycle is the live cycle.
    let Some(mcf) = HttpWsgiModule::main_conf(unsafe { &*cycle }) else {
        return NGX_OK as ngx_int_t;
    };
    if mcf.apps.is_empty() {
        return NGX_OK as ngx_int_t; // loaded but unused: no interpreter
    }
    // SAFETY: cycle is live.
    let log = unsafe { (*cycle).log };
    // `wsgi_sandbox on` on a kernel without Landlock (`nginx -t` refuses
    // it; a kernel can change under a running master): this worker does
    // not start at all rather than run the app unsandboxed.
    if mcf.sandbox_on() {
        if let Some(kernel) = wsgi_pool::sandbox::missing_kernel() {
            ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "wsgi: \"wsgi_sandbox on\" needs Landlock, but this kernel {}; refusing to start the worker process",
                kernel
            );
            return nginx_sys::NGX_ERROR as ngx_int_t;
        }
    }
    // A worker that cannot start Python still serves everything else; the
    // locations that need it answer 500 with a pointer to this error.
    if let Err(e) = start(cycle, mcf) {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "wsgi: {} while starting worker process",
            e
        );
    }
    NGX_OK as ngx_int_t
}

/// Why a worker could not start Python; the worker then serves what
/// does not need it, and `wsgi_pass` locations answer 500.
#[derive(Debug)]
enum StartError {
    EventFd(std::io::Error),
    Python(String),
    Pool(String),
    WakeUp(notify::RegisterError),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::EventFd(e) => write!(f, "eventfd() failed ({e})"),
            StartError::Python(e) => write!(f, "{e}"),
            StartError::Pool(e) => write!(f, "{e}"),
            StartError::WakeUp(e) => write!(f, "{e}"),
        }
    }
}

/// glibc's malloc hands out blocks of 128 KiB and more as fresh mappings and
/// unmaps them on free (until its adaptive threshold happens to rise). A
/// request body buffer of that size (nginx's) and the bytes objects an app
/// reads it into are then page-faulted in and zeroed by the kernel on every
/// request, which cost more than half the CPU of a 256 KiB POST here. Keep
/// blocks up to 4 MiB in the heap. And keep up to 16 MiB of free heap
/// before giving memory back: with 4 MiB, a few 1 MiB bodies in flight
/// pushed the free top of the heap over the line on every request, so each
/// body buffer was trimmed and faulted in again (~100 faults per 1 MiB
/// POST, 2.4k instead of 3.4-3.8k req/s). That allowance is per arena, and
/// glibc gives threads arenas of their own: each pool thread's arena kept
/// its 16 MiB of a large upload's bytes objects (a worker grew by ~16 MiB
/// per thread that had served one). One arena for the process: the app's
/// allocations happen under the GIL, so it is shared by nginx's thread and
/// one pool thread at a time. Worker processes that run apps only.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; any thread may
        // call it.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20) };
        // SAFETY: as above.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20) };
        // SAFETY: as above.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

/// nginx's SIGCHLD handler reaps every child of the process
/// (`waitpid(-1)`); a worker has none of its own, but an app's do: with the
/// handler, `subprocess.run(...).returncode` was 0 whenever nginx collected
/// the child first, and multiprocessing lost its workers ("unknown process
/// ... exited" in the log). With the default disposition children stay for
/// the code that started them to wait for. Worker processes that run apps
/// only; the master keeps its handler.
fn leave_children_to_python() {
    // SAFETY: resetting one signal's disposition to its default.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// A worker inherits the directory nginx was started from (unless
/// `working_directory` is set), and after switching to nginx's `user` it
/// may no longer enter it: the app's relative paths would fail, and so does
/// multiprocessing's "spawn", whose children chdir to the parent's
/// directory. Use "/" then, as daemons do, and say so.
fn check_current_dir(log: *mut nginx_sys::ngx_log_t) {
    let Ok(cwd) = std::env::current_dir() else {
        return;
    };
    if let Err(e) = std::env::set_current_dir(&cwd) {
        let moved = std::env::set_current_dir("/").is_ok();
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "wsgi: the worker process cannot use its current directory \"{}\" ({}){}; set \"working_directory\" for the app's directory",
            cwd.display(),
            e,
            if moved { ", using \"/\"" } else { "" }
        );
    }
}

fn start(cycle: *mut ngx_cycle_t, mcf: &crate::conf::MainConf) -> Result<(), StartError> {
    tune_malloc();
    leave_children_to_python();
    // SAFETY: cycle is live.
    check_current_dir(unsafe { (*cycle).log });
    let hub = Arc::new(Hub::new().map_err(StartError::EventFd)?);
    let interp = Interpreter {
        python_path: mcf.python_path.clone(),
        python_home: mcf.python_home.clone(),
        multiprocess: worker_processes(cycle) > 1,
        sandbox: mcf.sandbox_on().then(|| sandbox_spec(mcf)),
    };
    python::initialize(&interp, &hub).map_err(StartError::Python)?;
    let apps = python::import_apps(&mcf.apps, &hub);
    let app_ready: Vec<bool> = apps.iter().map(Option::is_some).collect();
    let pool = Pool::start(
        PoolConfig {
            threads: mcf.threads(),
            queue_size: mcf.queue_size(),
            multiprocess: interp.multiprocess,
            priority: mcf.thread_priority(),
        },
        hub.clone(),
        Arc::new(apps),
    )
    .map_err(StartError::Pool)?;
    // After the pool threads exist: a thread inherits its creator's slice.
    let first = nginx_first(mcf);
    // SAFETY: init_process runs on the nginx thread.
    unsafe { notify::start(cycle, hub.eventfd()) }.map_err(StartError::WakeUp)?;
    // Import errors were queued as log completions; show them now.
    let rt = Runtime {
        hub,
        pool,
        threads: mcf.threads(),
        queue_timeout_ms: mcf.queue_timeout_ms(),
        app_names: mcf.apps.iter().map(|a| a.to_string()).collect(),
        app_ready,
    };
    ngx_log_error!(
        NGX_LOG_NOTICE,
        // SAFETY: cycle is live.
        unsafe { (*cycle).log },
        "{}{first} while starting worker process",
        rt.pool.describe()
    );
    runtime::install(rt);
    // SAFETY: cycle is live.
    runtime::set_max_requests(mcf, unsafe { (*cycle).log });
    flush_logs();
    Ok(())
}

/// `wsgi_nginx_first on` (the default): this thread, nginx's event loop,
/// takes the kernel's shortest time slice, so that waking while every pool
/// thread runs Python it preempts one at once instead of waiting out its
/// slice (see wsgi_pool::sched). Returns what to add to the start notice.
fn nginx_first(mcf: &crate::conf::MainConf) -> String {
    use wsgi_pool::sched::{set_own_slice, Slice, SHORTEST_SLICE_NS};
    if !mcf.nginx_first() {
        return String::new();
    }
    match set_own_slice(SHORTEST_SLICE_NS) {
        Ok(Slice::Set(ns)) => format!(", nginx's thread first ({} µs time slice)", ns / 1000),
        Ok(Slice::Unsupported) => {
            ", nginx's thread first: not on this kernel (per-thread time slices need Linux 6.12)"
                .to_string()
        }
        Ok(Slice::OtherPolicy(p)) => {
            format!(", nginx's thread first: not in scheduling policy {p}")
        }
        Err(e) => format!(", nginx's thread first: sched_setattr() failed ({e})"),
    }
}

/// `wsgi_sandbox on`: the configured paths, and the directory of every app
/// loaded from a file (a module is found through `sys.path`, which the
/// pool side adds with Python's own paths).
fn sandbox_spec(mcf: &crate::conf::MainConf) -> wsgi_pool::sandbox::SandboxSpec {
    let mut read: Vec<std::path::PathBuf> = mcf.sandbox_read.iter().map(Into::into).collect();
    for app in &mcf.apps {
        if let crate::target::AppSource::File(f) = &app.source {
            if let Some(dir) = std::path::Path::new(f).parent() {
                read.push(dir.to_path_buf());
            }
        }
    }
    wsgi_pool::sandbox::SandboxSpec {
        read,
        write: mcf.sandbox_write.iter().map(Into::into).collect(),
    }
}

/// Writes queued log completions now (used outside the event loop).
fn flush_logs() {
    if let Some(rt) = runtime() {
        rt.hub.drain(|c| {
            if let crate::message::Completion::Log { level, text, .. } = c {
                crate::log::log_lines(ngx::log::ngx_cycle_log().as_ptr(), level as usize, &text);
            }
        });
    }
}

pub extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
    // SAFETY: nginx calls this with the live cycle.
    let log = unsafe { (*cycle).log };
    crate::log::guard(log, "worker exit", || stop_worker(cycle));
}

fn stop_worker(cycle: *mut ngx_cycle_t) {
    let Some(rt) = runtime() else { return };
    // SAFETY: exit_process runs on the nginx thread.
    unsafe { notify::stop() };
    crate::app_stack::clear();
    // SAFETY: plain reads of nginx's process flags on its thread.
    let terminating = unsafe { nginx_sys::ngx_terminate } != 0;
    // SAFETY: the cycle and its core conf outlive exit_process.
    let shutdown_timeout = unsafe { crate::ffi::core_conf(cycle) }.is_some_and(|ccf| {
        ccf.shutdown_timeout != 0 && ccf.shutdown_timeout != nginx_sys::ngx_msec_t::MAX
    });
    // Graceful exit waits for the pool (requests are done by now); a
    // terminate (`nginx -s stop`), or a quit bounded by
    // worker_shutdown_timeout, waits briefly, then leaves stuck threads.
    let wait = if terminating || shutdown_timeout {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    let all_stopped = rt.pool.shutdown(wait);
    if all_stopped {
        python::run_atexit(&rt.hub);
    } else {
        ngx_log_error!(
            NGX_LOG_NOTICE,
            ngx::log::ngx_cycle_log().as_ptr(),
            "wsgi: {} pool threads still busy at exit, not running atexit handlers",
            rt.hub.counters.busy_threads.load(Ordering::Relaxed)
        );
    }
    flush_logs();
}

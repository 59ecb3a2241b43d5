//! Pool threads: the Rust sibling of nginx's `ngx_thread_pool.c`. Each
//! thread blocks async signals (nginx relies on its own thread getting
//! them), keeps one Python thread state for its whole life (so
//! `threading.local()` survives between requests), waits for jobs with the
//! GIL released and runs one app call per job. No `ngx_*` here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};

use crate::hooks;
use crate::message::{self, Hub, Idle, Job, LogLevel, Reply};
use crate::wsgi;

pub struct PoolConfig {
    pub threads: usize,
    pub queue_size: usize,
    pub multiprocess: bool,
    /// `wsgi_thread_priority`: pool threads may yield to nginx's thread.
    pub priority: ThreadPriority,
}

/// How far `wsgi_thread_priority low` lowers a pool thread (nice): its
/// CPU weight is about a third of nginx's thread's.
const LOW_PRIORITY_NICE: libc::c_int = 5;

/// `wsgi_thread_priority`: how pool threads share the CPU with the
/// worker's nginx thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThreadPriority {
    /// The worker's own policy and nice value.
    #[default]
    Normal,
    /// `SCHED_BATCH` and nice +5.
    Low,
    /// `SCHED_IDLE`: a pool thread runs only when nginx's thread (and
    /// everything else on the core) does not want it.
    Idle,
}

impl ThreadPriority {
    pub fn name(self) -> &'static str {
        match self {
            ThreadPriority::Normal => "normal",
            ThreadPriority::Low => "low",
            ThreadPriority::Idle => "idle",
        }
    }
}

/// `wsgi_thread_priority low|idle`, on the calling pool thread.
///
/// `low`: `SCHED_BATCH` (the scheduler no longer lets a waking pool thread
/// preempt the running nginx thread) and nice +5 (a third of its weight
/// when both want the core). `idle`: `SCHED_IDLE`, the lowest weight the
/// scheduler has; a waking nginx thread preempts it at once. nginx's thread
/// keeps the worker's own priority, so the event loop (static files,
/// proxying, the responses Python has finished) gets the CPU first while
/// every pool thread is busy.
fn yield_to_nginx(priority: ThreadPriority) -> std::io::Result<()> {
    let policy = match priority {
        ThreadPriority::Normal => return Ok(()),
        ThreadPriority::Low => libc::SCHED_BATCH,
        ThreadPriority::Idle => libc::SCHED_IDLE,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if priority == ThreadPriority::Idle {
        return Ok(());
    }
    // SAFETY: plain syscalls on the calling thread (Linux applies
    // PRIO_PROCESS to the one thread its id names).
    let rc = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            libc::getpriority(libc::PRIO_PROCESS, 0) + LOW_PRIORITY_NICE,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

enum Work {
    Job(Box<Job>),
    Stop,
}

/// What the watchdog is asked to do.
enum Watch {
    Interrupt { id: u64, ident: u64 },
    Stop,
}

/// One pool thread as the others see it (the thread itself and the
/// watchdog).
struct Slot {
    /// Python thread ident (for `PyThreadState_SetAsyncExc`). Written once
    /// by the thread before it takes a job. No two live slots share one: a
    /// slot leaves `Shared::slots` before its thread ends.
    ident: AtomicU64,
    /// The request the thread runs and whether the watchdog interrupted
    /// it. This mutex, not the GIL, makes "is the thread still on request
    /// `id`?" and "raise in it" one step against the thread finishing the
    /// request ([`Slot::interrupt`], [`Slot::finish`]).
    run: Mutex<Running>,
    /// Leave after the current job: a replacement already took our place.
    /// Set by the watchdog inside `run`'s lock, read by the thread after
    /// [`Slot::finish`] took that lock.
    retire: AtomicBool,
    /// Thread number (as in its name, `wsgi-N`).
    number: u64,
}

/// A slot's request, under `Slot::run`.
#[derive(Default)]
struct Running {
    /// The request being run, 0 between requests.
    id: u64,
    /// `RequestTimeout` was raised in the thread for `id`.
    interrupted: bool,
}

impl Slot {
    fn run(&self) -> MutexGuard<'_, Running> {
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pool thread: it starts request `id`.
    fn begin(&self, id: u64) {
        *self.run() = Running {
            id,
            interrupted: false,
        };
    }

    /// Whether the thread is on request `id` now.
    fn is_on(&self, id: u64) -> bool {
        self.run().id == id
    }

    /// Watchdog: raises `exc` in the thread if, and only if, it is still on
    /// request `id`, and marks it to retire after the request if `retire`.
    /// False if it had finished the request. In the lock: a few C calls
    /// that run no Python code and wait on no other thread (so neither the
    /// GIL nor a free-threaded build's stop-the-world can be waited for
    /// while the thread waits on this lock).
    fn interrupt(&self, _py: Python<'_>, id: u64, exc: &Bound<'_, PyType>, retire: bool) -> bool {
        let mut run = self.run();
        if run.id != id {
            return false;
        }
        // Before the exception: a thread running Python takes it at once
        // and may be back in its job loop, checking `retire`, very soon.
        self.retire.store(retire, Ordering::Release);
        // SAFETY: the thread state is attached (`_py`); `exc` is a live
        // exception type. Only sets the target thread's pending exception.
        unsafe {
            pyo3::ffi::PyThreadState_SetAsyncExc(
                self.ident.load(Ordering::Acquire) as _,
                exc.as_ptr(),
            )
        };
        run.interrupted = true;
        true
    }

    /// Pool thread, once none of the app's code runs for the request any
    /// more: from here on no interrupt can be raised for it, and one that
    /// was raised and not yet taken is cleared, so it cannot hit the next
    /// request. Returns whether the request was interrupted.
    fn finish(&self, py: Python<'_>) -> bool {
        let mut run = self.run();
        run.id = 0;
        let interrupted = std::mem::take(&mut run.interrupted);
        if interrupted {
            // SAFETY: the thread state is attached (`py`); NULL clears this
            // thread's pending async exception.
            unsafe {
                pyo3::ffi::PyThreadState_SetAsyncExc(
                    self.ident.load(Ordering::Acquire) as _,
                    std::ptr::null_mut(),
                )
            };
        }
        drop(run);
        let _ = PyErr::take(py);
        interrupted
    }
}

/// What the pool's threads share (see README "Threads without the GIL"
/// for every piece of shared state and its guard).
struct Shared {
    hub: Arc<Hub>,
    /// The apps' callables: written once before any thread starts, then
    /// only read; pool threads call one at once (`wsgi.multithread`: the
    /// app's own state is its business, GIL or not).
    apps: Arc<Vec<Option<Py<PyAny>>>>,
    /// Jobs from nginx's thread (a channel: its own lock-free queue).
    jobs: Receiver<Work>,
    /// The live threads, for the watchdog to find one (this mutex).
    slots: Mutex<Vec<Arc<Slot>>>,
    threads: usize,
    multiprocess: bool,
    priority: ThreadPriority,
    /// The watchdog reads a timed-out app's stack from its thread (see
    /// [`watchdog`]); false where the interrupted thread reports it itself.
    read_stacks: bool,
    /// The embedded Python's version, and whether it is a free-threaded
    /// build.
    version: String,
    free_threaded: bool,
    /// Threads alive, and a condvar signalled as they exit.
    alive: Mutex<usize>,
    exited: Condvar,
    /// Threads ever started (their numbers): an atomic counter.
    spawned: AtomicUsize,
}

pub struct Pool {
    jobs: Sender<Work>,
    watch: Sender<Watch>,
    shared: Arc<Shared>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// Spawns a thread with every async signal blocked from its first
/// instruction (the mask is inherited, so it is set around the spawn).
pub fn spawn_with_signals_blocked<F, T>(name: &str, f: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: sigset manipulation on local values; the old mask of this
    // thread is restored right after the spawn.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        for s in [libc::SIGILL, libc::SIGFPE, libc::SIGSEGV, libc::SIGBUS] {
            libc::sigdelset(&mut all, s);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let r = std::thread::Builder::new()
            .name(name.to_string())
            .stack_size(8 << 20)
            .spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

impl Pool {
    pub fn start(
        cfg: PoolConfig,
        hub: Arc<Hub>,
        apps: Arc<Vec<Option<Py<PyAny>>>>,
    ) -> Result<Pool, String> {
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_size);
        let (wtx, wrx) = crossbeam_channel::unbounded();
        let (gil, (version, free_threaded)) =
            Python::attach(|py| (crate::python::gil_enabled(py), crate::python::build(py)));
        hub.gil.store(gil, Ordering::Relaxed);
        let read_stacks = gil && !hooks::threads_report_stacks();
        let spin = spin_from_env(std::env::var("WSGI_POOL_SPIN_US").ok().as_deref());
        if let Err(e) = &spin {
            hub.log(None, LogLevel::Warn, e.clone());
        }
        hub.idle.set_spin(spin.unwrap_or(message::DEFAULT_SPIN));
        let shared = Arc::new(Shared {
            read_stacks,
            version,
            free_threaded,
            hub,
            apps,
            jobs: rx,
            slots: Mutex::new(Vec::new()),
            threads: cfg.threads,
            multiprocess: cfg.multiprocess,
            priority: cfg.priority,
            alive: Mutex::new(0),
            exited: Condvar::new(),
            spawned: AtomicUsize::new(0),
        });
        let pool = Pool {
            jobs: tx,
            watch: wtx,
            shared: shared.clone(),
            handles: Mutex::new(Vec::new()),
        };
        for _ in 0..cfg.threads {
            let h = spawn_worker(&shared).map_err(|e| format!("cannot start pool thread: {e}"))?;
            pool.handles.lock().unwrap().push(h);
        }
        #[cfg(feature = "transport-floor")]
        shared.hub.log(
            None,
            LogLevel::Warn,
            "wsgi: this module was built with the transport-floor feature \
             (for scripts/bench): apps are not called"
                .into(),
        );
        let s2 = shared.clone();
        spawn_with_signals_blocked("wsgi-watchdog", move || watchdog(s2, wrx))
            .map_err(|e| format!("cannot start watchdog thread: {e}"))?;
        Ok(pool)
    }

    /// nginx thread: queue a job without blocking. On a full queue, returns
    /// how many jobs are waiting.
    pub fn submit(&self, job: Job) -> Result<(), usize> {
        match self.jobs.try_send(Work::Job(Box::new(job))) {
            Ok(()) => {
                let hub = &self.shared.hub;
                hub.idle.wake_one();
                hub.counters
                    .queued
                    .store(self.jobs.len(), Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(self.jobs.len()),
        }
    }

    /// Jobs waiting for a thread.
    pub fn queue_len(&self) -> usize {
        self.jobs.len()
    }

    /// nginx thread, from its deferral timer (about once per millisecond
    /// while jobs arrive): wakes a parked thread if queued jobs found no
    /// taker since the last call (see [`message::Idlers::nudge`]). Returns
    /// whether jobs wait with threads parked: call again a tick later.
    pub fn nudge(&self) -> bool {
        self.shared.hub.idle.nudge(!self.jobs.is_empty())
    }

    /// nginx thread: ask the watchdog to stop the app running request `id`.
    pub fn interrupt(&self, id: u64, ident: u64) {
        let _ = self.watch.send(Watch::Interrupt { id, ident });
    }

    /// Whether a timed-out app's stack is read by the watchdog as the
    /// timeout fires (with the GIL), rather than reported by the app's
    /// thread when the interrupt lands (without it).
    pub fn reads_stacks(&self) -> bool {
        self.shared.read_stacks
    }

    /// The worker's start-up line: which Python, and whether the GIL is
    /// enabled (what `wsgi_threads` buys depends on it).
    pub fn describe(&self) -> String {
        let s = &self.shared;
        let gil = if s.hub.gil.load(Ordering::Relaxed) {
            "GIL enabled: one pool thread runs Python at a time"
        } else {
            "GIL disabled: pool threads run Python in parallel"
        };
        let build = if s.free_threaded {
            " free-threaded"
        } else {
            ""
        };
        format!(
            "wsgi: Python {}{build}, {} pool threads, {gil}",
            s.version, s.threads
        )
    }

    /// Threads that exist now (including ones replaced after a timeout).
    pub fn threads_alive(&self) -> usize {
        *self.shared.alive.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks every thread to stop once idle and waits up to `wait` for them.
    /// Returns true if all of them stopped.
    pub fn shutdown(&self, wait: Duration) -> bool {
        let _ = self.watch.send(Watch::Stop);
        let n = self.shared.spawned.load(Ordering::Acquire);
        for _ in 0..n {
            // Never block the exiting worker on a full queue.
            let _ = self.jobs.try_send(Work::Stop);
        }
        self.shared.hub.idle.wake_all();
        let deadline = Instant::now() + wait;
        let mut alive = self.shared.alive.lock().unwrap_or_else(|e| e.into_inner());
        while *alive > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            alive = self
                .shared
                .exited
                .wait_timeout(alive, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

fn spawn_worker(shared: &Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    let n = shared.spawned.fetch_add(1, Ordering::AcqRel);
    let slot = Arc::new(Slot {
        ident: AtomicU64::new(0),
        run: Mutex::new(Running::default()),
        retire: AtomicBool::new(false),
        number: n as u64,
    });
    shared.slots.lock().unwrap().push(slot.clone());
    *shared.alive.lock().unwrap() += 1;
    let s2 = shared.clone();
    let r = spawn_with_signals_blocked(&format!("wsgi-{n}"), move || {
        thread_main(&s2, &slot);
        s2.slots.lock().unwrap().retain(|s| !Arc::ptr_eq(s, &slot));
        let mut alive = s2.alive.lock().unwrap_or_else(|e| e.into_inner());
        *alive -= 1;
        s2.exited.notify_all();
    });
    if r.is_err() {
        *shared.alive.lock().unwrap() -= 1;
    }
    r
}

fn thread_main(shared: &Shared, slot: &Slot) {
    // wsgi_sandbox: bound before the first line of Python on this thread.
    if let Err(e) = crate::sandbox::enter() {
        shared.hub.log(
            None,
            LogLevel::Alert,
            format!("wsgi: pool thread cannot enter wsgi_sandbox: {e}"),
        );
        return;
    }
    // `wsgi_nginx_first`: the short slice is nginx's thread's alone; a
    // thread it spawns inherits it. (Best effort: without the call a pool
    // thread has the kernel's default already.)
    let _ = crate::sched::set_own_slice(0);
    if let Err(e) = yield_to_nginx(shared.priority) {
        shared.hub.log(
            None,
            LogLevel::Warn,
            format!(
                "wsgi: cannot lower a pool thread's priority (wsgi_thread_priority {}): {e}",
                shared.priority.name()
            ),
        );
    }
    // One thread state for the thread's life; the GIL is released while
    // waiting for work and held for each app call.
    Python::attach(|py| {
        slot.ident.store(
            // SAFETY: a plain query of the current thread's id.
            unsafe { pyo3::ffi::PyThread_get_thread_ident() } as u64,
            Ordering::Release,
        );
        let mut tctx = match wsgi::ThreadContext::new(py, shared.threads, shared.multiprocess) {
            Ok(t) => t,
            Err(e) => {
                shared.hub.log(
                    None,
                    LogLevel::Alert,
                    format!(
                        "wsgi: pool thread cannot start: {}",
                        wsgi::describe_error(py, &e)
                    ),
                );
                return;
            }
        };
        let mut run_time = RunTime::default();
        let mut modules = 0;
        let idle = &shared.hub.idle;
        // Counted awake while it will look at the queue before it parks.
        idle.enter();
        loop {
            // Take the next job while still holding the GIL: under load the
            // queue is rarely empty, and handing the GIL to another thread
            // (and waking it) per request costs more than the request.
            // Python objects nginx has finished sending go back with the GIL.
            shared.hub.release_python(py);
            let work = match shared.jobs.try_recv() {
                Ok(w) => Some(w),
                Err(_) => {
                    // Out of work: wake nginx for what this thread finished.
                    shared.hub.flush_owed();
                    match py.detach(|| shared.hub.wait_idle(&shared.jobs)) {
                        Idle::Work(w) => w,
                        // A large response went out while every thread was
                        // idle: its bytes go back now (loop: released at the
                        // top), not with whatever request comes next.
                        Idle::Release => continue,
                    }
                }
            };
            let job = match work {
                Some(Work::Job(job)) => job,
                Some(Work::Stop) | None => break,
            };
            idle.took();
            // A short job with the GIL: this thread will take the next one
            // before any other could run it, so it stays counted awake and
            // nginx wakes nobody for new jobs meanwhile. A long one (or
            // threads that run in parallel) leaves the queue to the others,
            // and wakes one for what waits.
            let stays_awake = run_time.short() && shared.hub.gil.load(Ordering::Relaxed);
            if !stays_awake {
                idle.leave();
                if !shared.jobs.is_empty() {
                    idle.wake_one();
                }
            }
            // And what nginx finished while we waited.
            shared.hub.release_python(py);
            // Holding back a wake-up pays when jobs take about as long as
            // the wake-up itself; a longer job would only delay the response
            // it follows.
            message::set_short_jobs(run_time.short());
            let started = Instant::now();
            let id = job.id;
            hooks::arm(id, &job.env);
            run_job(py, shared, slot, &mut tctx, *job, started);
            hooks::job_done(id);
            run_time.add(started.elapsed());
            watch_gil(py, &shared.hub, &mut modules, id);
            if !stays_awake {
                idle.enter();
            }
            if slot.retire.load(Ordering::Acquire) {
                break;
            }
        }
        idle.leave();
        // Leaving: wake nginx for what this thread finished last.
        shared.hub.flush_owed();
    });
}

/// Free-threaded builds: an import during a request can turn the GIL on
/// for good (an extension module that does not declare it can run without
/// it). Keeps `hub.gil` true to that, and says so once. Looked at only
/// while the GIL is off, and only when `sys.modules` has grown (one C call
/// per request).
fn watch_gil(py: Python<'_>, hub: &Hub, modules: &mut isize, id: u64) {
    if hub.gil.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: the thread state is attached (`py`); the interpreter's
    // modules dict is a borrowed reference that lives as long as it does.
    let n = unsafe { pyo3::ffi::PyDict_Size(pyo3::ffi::PyImport_GetModuleDict()) };
    if n == *modules {
        return;
    }
    *modules = n;
    if crate::python::gil_enabled(py) && !hub.gil.swap(true, Ordering::Relaxed) {
        hub.log(
            Some(id),
            LogLevel::Warn,
            "wsgi: the app imported a module that enabled the GIL (Python's RuntimeWarning \
             names it: it does not declare it can run without it); this worker's pool \
             threads run Python one at a time from now on while handling request"
                .into(),
        );
    }
}

/// `WSGI_POOL_SPIN_US` (the worker's environment, nginx's `env`): how
/// long an idle pool thread looks for the next job before it parks, in
/// microseconds; 0 parks at once.
fn spin_from_env(value: Option<&str>) -> Result<Duration, String> {
    let Some(v) = value else {
        return Ok(message::DEFAULT_SPIN);
    };
    match v.trim().parse::<u64>() {
        Ok(us) if Duration::from_micros(us) <= message::MAX_SPIN => Ok(Duration::from_micros(us)),
        _ => Err(format!(
            "wsgi: invalid WSGI_POOL_SPIN_US \"{v}\" (microseconds, 0 to {}), using {}",
            message::MAX_SPIN.as_micros(),
            message::DEFAULT_SPIN.as_micros()
        )),
    }
}

/// A pool thread's recent app run times (moving average).
#[derive(Default)]
struct RunTime {
    avg_ns: u64,
}

impl RunTime {
    /// Jobs shorter than this on average get their wake-ups deferred.
    const SHORT_NS: u64 = 20_000;

    fn add(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128 / 2) as u64;
        // 1/8 weight for the newest sample.
        self.avg_ns = self.avg_ns - self.avg_ns / 8 + ns / 8;
    }

    fn short(&self) -> bool {
        self.avg_ns < Self::SHORT_NS
    }
}

fn run_job(
    py: Python<'_>,
    shared: &Shared,
    slot: &Slot,
    tctx: &mut wsgi::ThreadContext,
    job: Job,
    started: Instant,
) {
    let waited = started.saturating_duration_since(job.queued_at);
    job.exchange
        .queue_time_us
        .store(waited.as_micros() as u64, Ordering::Relaxed);
    if job.exchange.is_cancelled() {
        return; // the client left (or the queue timeout hit) while queued
    }
    job.exchange
        .thread_ident
        .store(slot.ident.load(Ordering::Relaxed), Ordering::Release);
    job.exchange
        .thread_no
        .store(slot.number + 1, Ordering::Relaxed);
    job.exchange.started.store(true, Ordering::Release);
    if job.trace {
        shared.hub.log(
            Some(job.id),
            LogLevel::Debug,
            format!(
                "wsgi: job #{} started on thread {} after {} us in the queue",
                job.id,
                slot.number,
                waited.as_micros()
            ),
        );
    }
    let Some(Some(app)) = shared.apps.get(job.app) else {
        let wake = job
            .exchange
            .push([Reply::Error { status: 500 }])
            .unwrap_or(false);
        shared.hub.ready(job.id, wake);
        return;
    };
    let counters = &shared.hub.counters;
    counters.busy_threads.fetch_add(1, Ordering::Relaxed);
    // From here until `finish` (called by `wsgi::run` as soon as the app's
    // code is done with the request) the watchdog may interrupt it.
    slot.begin(job.id);
    #[cfg(not(feature = "transport-floor"))]
    wsgi::run(py, tctx, &shared.hub, app.bind(py), job, |py| {
        slot.finish(py) && !shared.read_stacks
    });
    #[cfg(feature = "transport-floor")]
    {
        let _ = (app, &tctx);
        transport_floor(shared, job);
        slot.finish(py);
    }
    shared.hub.zone.after_request(py, &shared.hub);
    counters.busy_threads.fetch_sub(1, Ordering::Relaxed);
}

/// Built only with `--features transport-floor`, for `scripts/bench`'s
/// `floor` stack: every request gets hello world's response from the pool
/// thread without entering Python, so the bench can show what the hand-off
/// itself (queue, wake-ups, messages, nginx's side) costs per request.
#[cfg(feature = "transport-floor")]
fn transport_floor(shared: &Shared, job: Job) {
    use crate::message::{Chunk, ResponseHead};
    let head = ResponseHead {
        status: 200,
        status_line: b"200 OK".to_vec(),
        headers: vec![
            (b"Content-Type".to_vec(), b"text/plain".to_vec()),
            (b"Content-Length".to_vec(), b"13".to_vec()),
        ],
    };
    let body = Chunk::Owned(b"Hello, World!".to_vec());
    let wake = job
        .exchange
        .push([Reply::Head(head), Reply::Body(body), Reply::End])
        .unwrap_or(false);
    shared.hub.finished(job.id, wake);
}

/// Stops apps that overran `wsgi_read_timeout`: reports where the app was
/// (its thread's Python stack, for the request's log), raises
/// `RequestTimeout` in its thread (effective in Python code; a thread
/// blocked in C sees it when it returns), and starts a replacement so the
/// pool keeps its capacity; the stuck thread retires once its call returns.
///
/// Where the app was: with the GIL, read here from the thread's frames
/// (`sys._current_frames()`) while the GIL keeps them still. Without it
/// that is not safe (CPython: frame objects of another running thread may
/// not be read), so the interrupted thread reports the traceback of the
/// `RequestTimeout` it raises instead (`wsgi::run`), when it lands.
fn watchdog(shared: Arc<Shared>, rx: Receiver<Watch>) {
    // It runs Python too (the stack's source lines come from the app's
    // loaders): bound like the pool threads.
    if let Err(e) = crate::sandbox::enter() {
        shared.hub.log(
            None,
            LogLevel::Alert,
            format!("wsgi: the watchdog cannot enter wsgi_sandbox: {e}; wsgi_read_timeout will not stop apps"),
        );
        return;
    }
    while let Ok(Watch::Interrupt { id, ident }) = rx.recv() {
        let slot = {
            let slots = shared.slots.lock().unwrap();
            slots
                .iter()
                .find(|s| s.ident.load(Ordering::Acquire) == ident)
                .cloned()
        };
        let Some(slot) = slot else {
            report_stack(&shared, id, "wsgi: the app's thread was not found".into());
            continue;
        };
        // (Tests: the interrupt is in hand, about to be raised.)
        hooks::hold_detached(hooks::Point::Watchdog, id);
        let returned = || (false, Some(RETURNED.to_string()));
        let (replace, stack) = Python::attach(|py| {
            if !slot.is_on(id) {
                return returned();
            }
            // Read before the exception is raised: the thread still
            // stands where the timeout found it. The thread may finish the
            // request meanwhile; the frames are then discarded below.
            let frames = shared.read_stacks.then(|| stack_frames(py, ident));
            // Bound the spares: at most as many stuck threads as real ones.
            let replace = *shared.alive.lock().unwrap() < shared.threads * 2;
            let exc = py.get_type::<wsgi::RequestTimeout>();
            if !slot.interrupt(py, id, &exc, replace) {
                return returned();
            }
            // Source lines come from linecache (Python code): only now.
            (replace, frames.map(|f| format_stack(py, f)))
        });
        if let Some(text) = stack {
            report_stack(&shared, id, text);
        }
        if replace {
            if let Err(e) = spawn_worker(&shared) {
                shared.hub.log(
                    None,
                    LogLevel::Err,
                    format!("wsgi: cannot start a replacement pool thread: {e}"),
                );
            }
        }
    }
}

/// What the watchdog reports when the thread finished the request first.
const RETURNED: &str = "wsgi: the app had returned when its stack was read";

fn report_stack(shared: &Shared, id: u64, text: String) {
    shared.hub.send(message::Completion::AppStack { id, text });
}

use wsgi::STACK_LIMIT;

/// One frame of a stack: file, line, function.
struct Frame {
    file: String,
    line: Option<i64>,
    name: String,
}

/// The frames of thread `ident`, innermost first, read with C calls only:
/// `sys._current_frames` (taken from `sys` without an import), frame and
/// code attributes. `Ok(None)`: the thread has no Python frame.
fn stack_frames(py: Python<'_>, ident: u64) -> PyResult<Option<Vec<Frame>>> {
    // SAFETY: we hold the GIL; the name is NUL-terminated; the result is a
    // borrowed reference (or NULL, checked).
    let f = unsafe { pyo3::ffi::PySys_GetObject(c"_current_frames".as_ptr()) };
    if f.is_null() {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "sys._current_frames is missing",
        ));
    }
    // SAFETY: `f` is a live object (borrowed from sys's dict, checked above).
    let current_frames = unsafe { Bound::from_borrowed_ptr(py, f) };
    let all = current_frames.call0()?;
    let Some(mut frame) = all.cast::<PyDict>()?.get_item(ident)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    while !frame.is_none() && out.len() < STACK_LIMIT {
        let code = frame.getattr("f_code")?;
        out.push(Frame {
            file: code.getattr("co_filename")?.extract()?,
            line: frame.getattr("f_lineno")?.extract()?,
            name: code.getattr("co_name")?.extract()?,
        });
        frame = frame.getattr("f_back")?;
    }
    Ok(Some(out))
}

/// The log text for a timed-out request: its app's stack as
/// `traceback.format_stack` prints it (innermost last, with source lines).
fn format_stack(py: Python<'_>, frames: PyResult<Option<Vec<Frame>>>) -> String {
    let frames = match frames {
        Ok(Some(f)) if !f.is_empty() => f,
        Ok(_) => {
            return "wsgi: the app's thread was at: no Python frame (it is in C code) \
                    while reading response from application"
                .into()
        }
        Err(e) => {
            return format!(
                "wsgi: cannot read the app's stack: {} while reading response from application",
                wsgi::describe_error(py, &e)
            )
        }
    };
    let getline = py
        .import("linecache")
        .and_then(|m| m.getattr("getline"))
        .ok();
    let mut text = String::from("wsgi: the app's thread was at:\n");
    for f in frames.iter().rev() {
        let line = f.line.map_or("?".to_string(), |l| l.to_string());
        text.push_str(&format!(
            "  File \"{}\", line {}, in {}\n",
            f.file, line, f.name
        ));
        let source = match (&getline, f.line) {
            (Some(g), Some(l)) => g
                .call1((f.file.as_str(), l))
                .and_then(|s| s.extract::<String>())
                .unwrap_or_default(),
            _ => String::new(),
        };
        if !source.trim().is_empty() {
            text.push_str(&format!("    {}\n", source.trim()));
        }
    }
    text.push_str("while reading response from application");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_from_the_environment() {
        assert_eq!(spin_from_env(None), Ok(message::DEFAULT_SPIN));
        assert_eq!(spin_from_env(Some("0")), Ok(Duration::ZERO));
        assert_eq!(spin_from_env(Some("20")), Ok(Duration::from_micros(20)));
        assert!(spin_from_env(Some("20us")).is_err());
        assert!(spin_from_env(Some("-1")).is_err());
        assert!(spin_from_env(Some("10001")).is_err());
    }

    #[test]
    fn run_time_tells_short_jobs_from_long_ones() {
        let mut rt = RunTime::default();
        assert!(rt.short(), "no history: short");
        for _ in 0..50 {
            rt.add(Duration::from_micros(5));
        }
        assert!(rt.short());
        for _ in 0..50 {
            rt.add(Duration::from_millis(2));
        }
        assert!(!rt.short(), "a run of slow jobs turns deferral off");
        for _ in 0..50 {
            rt.add(Duration::from_micros(5));
        }
        assert!(rt.short(), "and fast ones turn it back on");
    }
}

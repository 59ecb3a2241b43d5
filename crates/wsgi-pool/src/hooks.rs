//! Tests only (`--features test-hooks`; without it every function here is
//! an empty inline one): holds a thread at a point where two threads race,
//! so that a test makes the race happen every time, on a Python with the
//! GIL as well as without it (t/wsgi_races.t).
//!
//! A request arms points with the header `X-Wsgi-Hold: POINT [POINT ...]`
//! (read from the job when a pool thread starts it). A thread that reaches
//! an armed point for that request creates `held-POINT` in the directory
//! named by the worker's environment variable `WSGI_TEST_HOLD_DIR` (set with
//! nginx's `env` directive), then waits until the test creates
//! `release-POINT` there (at most 30 s); both files are gone when it goes
//! on. [`hold`] releases the GIL meanwhile.
//!
//! [`Point::Timeout`] is different: nginx's thread waits (at most 10 s) until
//! the pool thread is done with the request's job.

use pyo3::Python;

use crate::message::{RequestEnv, RequestId};

/// Where a thread can be held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The watchdog has a timed-out request's interrupt in hand and is
    /// about to raise it in the request's thread.
    Watchdog,
    /// A pool thread has handed the request's last reply over and has not
    /// cleaned up after the request yet.
    ResponseEnd,
    /// nginx's thread has sent a timed-out request's interrupt and has not
    /// ended the request yet: it waits until the pool thread is done with
    /// the job.
    Timeout,
}

#[cfg(feature = "test-hooks")]
mod imp {
    use std::path::PathBuf;
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    use super::{Point, RequestEnv, RequestId};

    impl Point {
        fn name(self) -> &'static str {
            match self {
                Point::Watchdog => "watchdog",
                Point::ResponseEnd => "response-end",
                Point::Timeout => "timeout",
            }
        }

        const ALL: [Point; 3] = [Point::Watchdog, Point::ResponseEnd, Point::Timeout];
    }

    /// Armed (request, point) pairs; requests whose timeout waits for
    /// their job ([`Point::Timeout`]), and those whose job is done.
    struct Registry {
        armed: Vec<(RequestId, Point)>,
        waiting: Vec<RequestId>,
        done: Vec<RequestId>,
    }

    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        armed: Vec::new(),
        waiting: Vec::new(),
        done: Vec::new(),
    });
    static JOB_DONE: Condvar = Condvar::new();

    fn registry() -> std::sync::MutexGuard<'static, Registry> {
        REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn arm(id: RequestId, env: &RequestEnv) {
        for &(name, value) in &env.headers {
            if !env.get(name).eq_ignore_ascii_case(b"x-wsgi-hold") {
                continue;
            }
            let value = String::from_utf8_lossy(env.get(value)).into_owned();
            let mut reg = registry();
            for word in value.split([' ', ',']).filter(|w| !w.is_empty()) {
                if let Some(p) = Point::ALL.into_iter().find(|p| p.name() == word) {
                    reg.armed.push((id, p));
                }
            }
        }
    }

    /// Whether `point` was armed for request `id` (disarms it).
    pub fn take(point: Point, id: RequestId) -> bool {
        let mut reg = registry();
        match reg.armed.iter().position(|&a| a == (id, point)) {
            Some(i) => {
                reg.armed.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Waits at `point` (armed and taken) until the test releases it.
    pub fn wait_release(point: Point, id: RequestId) {
        let Some(dir) = std::env::var_os("WSGI_TEST_HOLD_DIR").map(PathBuf::from) else {
            return;
        };
        let held = dir.join(format!("held-{}", point.name()));
        let release = dir.join(format!("release-{}", point.name()));
        let _ = std::fs::write(&held, id.to_string());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !release.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = std::fs::remove_file(&release);
        let _ = std::fs::remove_file(&held);
    }

    pub fn job_done(id: RequestId) {
        let mut reg = registry();
        let timeout = reg.armed.contains(&(id, Point::Timeout)) || reg.waiting.contains(&id);
        reg.armed.retain(|&(i, p)| i != id || p == Point::Timeout);
        if timeout {
            reg.done.push(id);
            JOB_DONE.notify_all();
        }
    }

    pub fn wait_job_done(id: RequestId) {
        let mut reg = registry();
        let Some(i) = reg.armed.iter().position(|&a| a == (id, Point::Timeout)) else {
            return;
        };
        reg.armed.swap_remove(i);
        reg.waiting.push(id);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reg.done.contains(&id) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            reg = JOB_DONE
                .wait_timeout(reg, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        reg.done.retain(|&d| d != id);
        reg.waiting.retain(|&w| w != id);
    }
}

#[cfg(not(feature = "test-hooks"))]
mod imp {
    use super::{Point, RequestEnv, RequestId};

    #[inline(always)]
    pub fn arm(_: RequestId, _: &RequestEnv) {}
    #[inline(always)]
    pub fn take(_: Point, _: RequestId) -> bool {
        false
    }
    #[inline(always)]
    pub fn wait_release(_: Point, _: RequestId) {}
    #[inline(always)]
    pub fn job_done(_: RequestId) {}
    #[inline(always)]
    pub fn wait_job_done(_: RequestId) {}
}

/// Whether interrupted threads report their own stack even with the GIL
/// (the way they do without it, see pool.rs): the worker's environment
/// variable `WSGI_TEST_STACK=self`, in test-hooks builds only.
pub fn threads_report_stacks() -> bool {
    cfg!(feature = "test-hooks") && std::env::var_os("WSGI_TEST_STACK").is_some_and(|v| v == "self")
}

/// Pool thread, as it starts request `id`'s job: arms the points its
/// `X-Wsgi-Hold` header names.
pub fn arm(id: RequestId, env: &RequestEnv) {
    imp::arm(id, env)
}

/// Holds the calling thread at `point` if request `id` armed it (once),
/// until the test releases it, with the GIL released meanwhile.
pub fn hold(py: Python<'_>, point: Point, id: RequestId) {
    if imp::take(point, id) {
        py.detach(|| imp::wait_release(point, id));
    }
}

/// [`hold`] for a thread without the GIL.
pub fn hold_detached(point: Point, id: RequestId) {
    if imp::take(point, id) {
        imp::wait_release(point, id);
    }
}

/// Pool thread: request `id`'s job is over (disarms what it left armed,
/// and lets [`wait_job_done`] go on).
pub fn job_done(id: RequestId) {
    imp::job_done(id)
}

/// nginx thread, at [`Point::Timeout`]: if request `id` armed it, waits
/// until [`job_done`] for it (at most 10 s).
pub fn wait_job_done(id: RequestId) {
    imp::wait_job_done(id)
}

//! The wake-up line the other way: nginx's thread (a job queued, Python
//! bytes to release) waking idle pool threads, with as few kernel wake-ups
//! as the work needs.
//!
//! A pool thread that runs out of work looks once more, may look for a
//! bounded time (`WSGI_POOL_SPIN_US`: spinning, and yielding its CPU so
//! that nginx's thread can run and queue the next jobs), then parks. nginx
//! wakes a parked thread only when no thread is *awake*: looking, or
//! running a short job with the GIL (it will take the next job before it
//! parks). On a busy worker that makes most hand-offs a store into the
//! queue with no system call on either side; the old channel woke a parked
//! thread (a futex call, then the thread waiting for the GIL) for nearly
//! every job.
//!
//! A job that was taken as short and turns out long keeps its thread
//! counted awake; [`Idlers::nudge`] (nginx's deferral timer) wakes a parked
//! thread when jobs waited a whole tick with none taken.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle pool thread looks for work before it parks, unless
/// `WSGI_POOL_SPIN_US` in the worker's environment says otherwise (see
/// README "Performance"): by default it parks at once. Measured on 2
/// shared cores (hello and 64 KiB, with Python and without, pinned to one
/// core and not): a 10-50 us spin cuts context switches per request from
/// 0.9-1.9 to 0.17-0.6, but costs 1-5 us more CPU per request than parking
/// at once (the spin runs while nginx waits for its clients), and req/s
/// did not gain; waking no thread while one is awake is what saved the CPU.
pub const DEFAULT_SPIN: Duration = Duration::ZERO;

/// The longest spin `WSGI_POOL_SPIN_US` may ask for.
pub const MAX_SPIN: Duration = Duration::from_millis(10);

/// A parked pool thread.
struct Parked {
    thread: Thread,
    /// Set by the waker before it unparks (guards against spurious wakes).
    woken: AtomicBool,
}

/// Idle pool threads and how to wake them.
pub struct Idlers {
    /// Threads that will look at the queue before they park: spinning
    /// ones, woken ones, and ones running a short job with the GIL.
    awake: AtomicUsize,
    /// Parked threads (a stack: the most recently parked is woken first,
    /// its caches are the warmest) and their count, read without the lock.
    parked: Mutex<Vec<Arc<Parked>>>,
    parked_n: AtomicUsize,
    /// Nanoseconds a thread spins before parking.
    spin_ns: AtomicU64,
    /// Jobs taken so far, and what [`Idlers::nudge`] saw last time.
    taken: AtomicU64,
    taken_seen: AtomicU64,
}

impl Default for Idlers {
    fn default() -> Idlers {
        Idlers {
            awake: AtomicUsize::new(0),
            parked: Mutex::new(Vec::new()),
            parked_n: AtomicUsize::new(0),
            spin_ns: AtomicU64::new(DEFAULT_SPIN.as_nanos() as u64),
            taken: AtomicU64::new(0),
            taken_seen: AtomicU64::new(0),
        }
    }
}

impl Idlers {
    fn lot(&self) -> MutexGuard<'_, Vec<Arc<Parked>>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how long idle threads spin before parking (0: park at once).
    pub fn set_spin(&self, spin: Duration) {
        self.spin_ns
            .store(spin.min(MAX_SPIN).as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed))
    }

    /// Pool thread: it is awake (starting, or done with a long job).
    pub fn enter(&self) {
        self.awake.fetch_add(1, Ordering::SeqCst);
    }

    /// Pool thread: it no longer looks at the queue soon (a long job, or
    /// leaving).
    pub fn leave(&self) {
        self.awake.fetch_sub(1, Ordering::SeqCst);
    }

    /// Pool thread: it took a job (for [`Idlers::nudge`]).
    pub fn took(&self) {
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Pool thread, counted awake, without the GIL: returns what `poll`
    /// finds, spinning for the configured time and then parking until
    /// woken. The thread is still counted awake when this returns.
    pub fn wait<R>(&self, mut poll: impl FnMut() -> Option<R>) -> R {
        loop {
            if let Some(r) = self.spin_for(&mut poll) {
                return r;
            }
            let me = Arc::new(Parked {
                thread: std::thread::current(),
                woken: AtomicBool::new(false),
            });
            {
                let mut lot = self.lot();
                lot.push(me.clone());
                self.parked_n.fetch_add(1, Ordering::SeqCst);
            }
            // Pairs with the fence in `wake_one`: either the waker sees this
            // thread no longer awake (and parked), or this thread sees the
            // work the waker made visible before it looked.
            self.awake.fetch_sub(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if let Some(r) = poll() {
                if self.unlist(&me) {
                    self.awake.fetch_add(1, Ordering::SeqCst);
                    return r;
                }
                // A waker took us out and counted us awake already: its
                // unpark is ours to absorb (below) before going on.
                while !me.woken.load(Ordering::Acquire) {
                    std::thread::park();
                }
                return r;
            }
            while !me.woken.load(Ordering::Acquire) {
                std::thread::park();
            }
            // Woken: counted awake by the waker; look again.
        }
    }

    /// Spins up to the configured time; `None` if nothing came.
    fn spin_for<R>(&self, poll: &mut impl FnMut() -> Option<R>) -> Option<R> {
        if let Some(r) = poll() {
            return Some(r);
        }
        let spin = self.spin();
        if spin.is_zero() {
            return None;
        }
        let start = Instant::now();
        let mut round = 0u32;
        while start.elapsed() < spin {
            if round < 16 {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            } else {
                // Let nginx's thread (or anything else) have this CPU: on a
                // worker that shares one core, nginx queues the next jobs
                // only while the pool thread is off it.
                // SAFETY: plain syscall.
                unsafe { libc::sched_yield() };
            }
            round += 1;
            if let Some(r) = poll() {
                return Some(r);
            }
        }
        None
    }

    /// Takes `me` off the parked list; false if a waker already did.
    fn unlist(&self, me: &Arc<Parked>) -> bool {
        let mut lot = self.lot();
        match lot.iter().position(|p| Arc::ptr_eq(p, me)) {
            Some(i) => {
                lot.remove(i);
                self.parked_n.fetch_sub(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Any thread, after making work visible (a job queued, bytes to
    /// release): wakes a parked thread unless one is awake to see it.
    pub fn wake_one(&self) {
        fence(Ordering::SeqCst);
        if self.awake.load(Ordering::SeqCst) == 0 && self.parked_n.load(Ordering::SeqCst) > 0 {
            self.unpark_one();
        }
    }

    fn unpark_one(&self) -> bool {
        let p = {
            let mut lot = self.lot();
            let Some(p) = lot.pop() else { return false };
            self.parked_n.fetch_sub(1, Ordering::SeqCst);
            self.awake.fetch_add(1, Ordering::SeqCst);
            p
        };
        p.woken.store(true, Ordering::Release);
        p.thread.unpark();
        true
    }

    /// nginx thread, shutting down: wakes every parked thread.
    pub fn wake_all(&self) {
        while self.unpark_one() {}
    }

    /// nginx thread, about once per millisecond while jobs arrive: if jobs
    /// are waiting (`queued`) and none was taken since the last call, the
    /// threads counted awake are stuck in jobs that turned out long: wake
    /// a parked one. Returns whether jobs are still waiting with threads
    /// parked (the caller keeps its timer for another look).
    pub fn nudge(&self, queued: bool) -> bool {
        let taken = self.taken.load(Ordering::Relaxed);
        let seen = self.taken_seen.swap(taken, Ordering::Relaxed);
        if !queued || self.parked_n.load(Ordering::SeqCst) == 0 {
            return false;
        }
        if taken == seen {
            self.unpark_one();
        }
        true
    }

    /// Threads parked now (tests).
    pub fn parked(&self) -> usize {
        self.parked_n.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::TryRecvError;
    use std::thread;

    fn poller(rx: &crossbeam_channel::Receiver<u32>) -> impl FnMut() -> Option<Option<u32>> + '_ {
        move || match rx.try_recv() {
            Ok(v) => Some(Some(v)),
            Err(TryRecvError::Disconnected) => Some(None),
            Err(TryRecvError::Empty) => None,
        }
    }

    fn wait_parked(idle: &Idlers, n: usize) {
        let start = Instant::now();
        while idle.parked() != n {
            assert!(start.elapsed() < Duration::from_secs(5), "never parked");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_parked_thread_is_woken_for_work() {
        for spin in [0, 20] {
            let idle = Arc::new(Idlers::default());
            idle.set_spin(Duration::from_micros(spin));
            let (tx, rx) = crossbeam_channel::unbounded::<u32>();
            let i2 = idle.clone();
            let t = thread::spawn(move || {
                let mut got = vec![];
                i2.enter();
                while let Some(v) = i2.wait(poller(&rx)) {
                    got.push(v);
                }
                i2.leave();
                got
            });
            for v in 0..100 {
                wait_parked(&idle, 1);
                tx.send(v).unwrap();
                idle.wake_one();
            }
            wait_parked(&idle, 1);
            drop(tx);
            idle.wake_all();
            assert_eq!(t.join().unwrap(), (0..100).collect::<Vec<_>>());
        }
    }

    #[test]
    fn no_lost_wake_ups_under_races() {
        // Many threads, jobs sent at random moments: every job is taken.
        let idle = Arc::new(Idlers::default());
        idle.set_spin(Duration::from_micros(1));
        let (tx, rx) = crossbeam_channel::unbounded::<u32>();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (i2, rx) = (idle.clone(), rx.clone());
                thread::spawn(move || {
                    let mut n = 0u32;
                    i2.enter();
                    while i2.wait(poller(&rx)).is_some() {
                        n += 1;
                    }
                    i2.leave();
                    n
                })
            })
            .collect();
        for v in 0..20_000 {
            tx.send(v).unwrap();
            idle.wake_one();
            if v % 64 == 0 {
                thread::sleep(Duration::from_micros(50));
            }
        }
        // Everything sent is taken without any further wake-up.
        let start = Instant::now();
        while !rx.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5), "a job was left");
            thread::sleep(Duration::from_millis(1));
        }
        drop(tx);
        idle.wake_all();
        let total: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 20_000);
    }

    #[test]
    fn an_awake_thread_means_no_wake_up() {
        let idle = Arc::new(Idlers::default());
        idle.set_spin(Duration::ZERO);
        let (tx, rx) = crossbeam_channel::unbounded::<u32>();
        let i2 = idle.clone();
        let t = thread::spawn(move || {
            i2.enter();
            let r = i2.wait(poller(&rx));
            i2.leave();
            r
        });
        wait_parked(&idle, 1);
        idle.enter(); // another thread, busy with a short job
        tx.send(1).unwrap();
        idle.wake_one();
        thread::sleep(Duration::from_millis(20));
        assert_eq!(idle.parked(), 1, "not woken: the awake thread will take it");
        // Stuck: a tick with the job still queued and none taken wakes one.
        assert!(idle.nudge(true), "jobs wait with a thread parked");
        assert_eq!(t.join().unwrap(), Some(1));
        idle.leave();
        assert!(!idle.nudge(false));
    }
}

//! A thread's time slice: how long the scheduler lets it run before a
//! waking thread of the same class may take the core (`wsgi_nginx_first`).
//!
//! Since Linux 6.6 the fair scheduler is EEVDF: a running thread keeps the
//! core until its slice is used up (about 1.4 ms here), whatever the nice
//! value or policy of the thread that wakes. Measured on this project's
//! 2-core machine with nginx's thread and four pool threads burning Python
//! on one core, nginx's thread waited up to 2.8 ms for a pool thread's slice
//! to end, with nice -15 or the pool threads in `SCHED_IDLE` as well. Since
//! Linux 6.12 a thread may ask for a shorter slice (`sched_setattr`'s
//! `sched_runtime`, 0.1 to 100 ms, no privilege needed), and a waking thread
//! with a shorter slice than the running one preempts it. This module is
//! used on both sides: nginx's thread shortens its own slice, a pool thread
//! keeps the kernel's default.

use std::io;

/// The shortest slice the kernel accepts: 0.1 ms.
pub const SHORTEST_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` of `sched_setattr(2)`, the fields of its first
/// version (`SCHED_ATTR_SIZE_VER0`, 48 bytes) and the two utilization
/// clamps after them (`VER1`, 56 bytes).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// What [`set_own_slice`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Slice {
    /// The calling thread's slice is now this many nanoseconds.
    Set(u64),
    /// The kernel takes no slice for a fair thread (before Linux 6.12): it
    /// accepted the call and ignored the length.
    Unsupported,
    /// The thread is not in `SCHED_OTHER` or `SCHED_BATCH` (nginx started
    /// under `chrt --fifo`, say): its policy is left alone.
    OtherPolicy(u32),
}

fn get_own() -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as libc::c_uint;
    // SAFETY: pid 0 is the calling thread; the kernel writes at most `size`
    // bytes into `attr`, which is that large.
    let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// Gives the calling thread a slice of `ns` nanoseconds (0: the kernel's
/// default), keeping its policy and nice value (nginx's `worker_priority`).
pub fn set_own_slice(ns: u64) -> io::Result<Slice> {
    let mut attr = get_own()?;
    if attr.policy != libc::SCHED_OTHER as u32 && attr.policy != libc::SCHED_BATCH as u32 {
        return Ok(Slice::OtherPolicy(attr.policy));
    }
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    attr.flags = 0;
    attr.runtime = ns;
    // SAFETY: pid 0 is the calling thread; `attr` is a complete sched_attr
    // whose `size` says how much of it the kernel reads.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Since 6.12 the kernel reports a fair thread's slice; before, 0.
    match get_own()?.runtime {
        0 => Ok(Slice::Unsupported),
        got => Ok(Slice::Set(got)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read back from /proc, which the kernel fills from the same field the
    /// scheduler uses (`se.slice`), not from this module's own syscall.
    fn proc_slice() -> Option<u64> {
        // SAFETY: a plain query of the calling thread's id.
        let tid = unsafe { libc::gettid() };
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).ok()?;
        let line = text.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[test]
    fn shortest_slice_then_default_on_a_thread_of_its_own() {
        std::thread::spawn(|| {
            let before = proc_slice();
            match set_own_slice(SHORTEST_SLICE_NS).unwrap() {
                Slice::Set(ns) => {
                    assert_eq!(ns, SHORTEST_SLICE_NS);
                    assert_eq!(proc_slice(), Some(SHORTEST_SLICE_NS));
                    match set_own_slice(0).unwrap() {
                        Slice::Set(ns) => assert_eq!(proc_slice(), Some(ns)),
                        other => panic!("default slice: {other:?}"),
                    }
                    assert_eq!(proc_slice(), before);
                }
                // Linux before 6.12: nothing to check but that it said so.
                Slice::Unsupported => assert_eq!(proc_slice(), before),
                Slice::OtherPolicy(p) => panic!("a new thread in policy {p}"),
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn keeps_the_nice_value() {
        std::thread::spawn(|| {
            // SAFETY: a plain query of the calling thread's id.
            let tid = unsafe { libc::gettid() } as libc::id_t;
            // SAFETY: raises this test thread's own nice value.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 3) };
            assert_eq!(rc, 0);
            set_own_slice(SHORTEST_SLICE_NS).unwrap();
            // SAFETY: a plain query of this thread's nice value.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
            assert_eq!(nice, 3);
            assert_eq!(get_own().unwrap().nice, 3);
        })
        .join()
        .unwrap();
    }
}

//! Test builds only (`--features panic-inject`): a request with the header
//! `X-Wsgi-Panic: NAME` panics in the entry point named NAME; with
//! `X-Wsgi-Panic: wakeup` (or `tick`) the next wake-up (or deferral timer)
//! panics, whatever request it is for. `X-Wsgi-Fail: request slot` makes
//! the allocation of the request's state fail (an out-of-memory pool).

use core::sync::atomic::{AtomicBool, Ordering};

use nginx_sys::{ngx_http_request_t, ngx_table_elt_t};

use crate::ffi::{for_each_header, ngx_bytes};

static WAKEUP: AtomicBool = AtomicBool::new(false);
static TICK: AtomicBool = AtomicBool::new(false);

/// Calls `f` with the name and value of each of request `r`'s headers.
fn each_header(r: *mut ngx_http_request_t, mut f: impl FnMut(&[u8], &[u8])) {
    let each = |h: &ngx_table_elt_t| {
        // SAFETY: a live request's header names live in its pool.
        let key = unsafe { ngx_bytes(&h.key) };
        // SAFETY: as above, its header values.
        let value = unsafe { ngx_bytes(&h.value) };
        f(key, value)
    };
    // SAFETY: r is live (the caller is one of its handlers).
    let headers = unsafe { &raw const (*r).headers_in.headers };
    // SAFETY: its header list is initialised and not changed meanwhile.
    unsafe { for_each_header(headers, each) };
}

/// Panics if the request asks for a panic in `what`.
pub fn maybe_panic(r: *mut ngx_http_request_t, what: &str) {
    let mut wanted = None;
    each_header(r, |key, value| {
        if key.eq_ignore_ascii_case(b"x-wsgi-panic") {
            wanted = Some(value.to_vec());
        }
    });
    match wanted.as_deref() {
        Some(b"wakeup") => WAKEUP.store(true, Ordering::Relaxed),
        Some(b"tick") => TICK.store(true, Ordering::Relaxed),
        Some(w) if w == what.as_bytes() => panic!("injected panic in {what}"),
        _ => {}
    }
}

/// Whether the request asks (`X-Wsgi-Fail: NAME`) that the pool
/// allocation named NAME fail, as it does when the pool is out of memory.
pub fn fail_alloc(r: *mut ngx_http_request_t, what: &str) -> bool {
    let mut wanted = false;
    each_header(r, |key, value| {
        if key.eq_ignore_ascii_case(b"x-wsgi-fail") && value == what.as_bytes() {
            wanted = true;
        }
    });
    wanted
}

/// Panics once after a request asked for it (`wakeup`, `tick`).
pub fn maybe_panic_global(what: &str) {
    let flag = match what {
        "wakeup" => &WAKEUP,
        "tick" => &TICK,
        _ => return,
    };
    if flag.swap(false, Ordering::Relaxed) {
        panic!("injected panic in {what}");
    }
}

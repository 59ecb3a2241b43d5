//! nginx thread: `$wsgi_*` variables for `log_format`, in the style of
//! `$upstream_response_time` (seconds with millisecond resolution).

use std::sync::atomic::Ordering;

use nginx_sys::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_int_t, ngx_str_t,
    ngx_variable_value_t, NGX_ERROR, NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};

use crate::ffi::fields::variable_value;
use crate::ffi::pool_str;
use crate::request;

/// What a variable shows of a request's shared state (`None`: not found).
type Value = fn(&request::Shared) -> Option<String>;

const VARIABLES: [(&str, Value); 3] = [
    ("wsgi_queue_time", queue_time),
    ("wsgi_app_time", app_time),
    ("wsgi_thread", thread),
];

/// Registers the module's variables (preconfiguration).
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    for (index, (name, _)) in VARIABLES.iter().enumerate() {
        let mut n = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        // SAFETY: nginx copies the name; cf is the live configuration.
        let v = unsafe { ngx_http_add_variable(cf, &mut n, NGX_HTTP_VAR_NOCACHEABLE as _) };
        if v.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        // SAFETY: v points at nginx's new variable entry, ours to fill.
        let v = unsafe { &mut *v };
        v.get_handler = Some(get_variable);
        v.data = index;
    }
    NGX_OK as ngx_int_t
}

/// `1.234` from milliseconds, as nginx prints `$upstream_response_time`.
pub fn format_msec(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Sets a variable's value (copied into the request pool), or marks it not found.
///
/// # Safety
/// nginx thread; `r` is a live request and `v` the value nginx asked for.
unsafe fn set(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    value: Option<String>,
) -> ngx_int_t {
    // The caller's promise: v is nginx's live output slot (each block
    // below writes one of its members); nginx thread.
    match value {
        None => {
            // SAFETY: as above.
            unsafe { variable_value::set_not_found(v, 1) };
        }
        Some(s) => {
            // SAFETY: the caller's promise: r is live.
            let pool = unsafe { (*r).pool };
            // SAFETY: the request's live pool; the string is copied into it.
            let Some(out) = (unsafe { pool_str(pool, s.as_bytes()) }) else {
                return NGX_ERROR as ngx_int_t;
            };
            // SAFETY: as above.
            unsafe { variable_value::set_len(v, out.len as u32) };
            // SAFETY: as above.
            unsafe { (*v).data = out.data };
            // SAFETY: as above.
            unsafe { variable_value::set_valid(v, 1) };
            // SAFETY: as above.
            unsafe { variable_value::set_no_cacheable(v, 0) };
            // SAFETY: as above.
            unsafe { variable_value::set_not_found(v, 0) };
        }
    }
    NGX_OK as ngx_int_t
}

/// The get handler of every `$wsgi_*` variable (`data`: its index in
/// [`VARIABLES`]), guarded as every entry point nginx calls: a panic is
/// logged at `alert` and the variable fails (nginx logs an empty value).
///
/// # Safety
/// nginx calls variable getters on its thread with a live request and value.
unsafe extern "C" fn get_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    data: usize,
) -> ngx_int_t {
    let Some(&(name, value)) = VARIABLES.get(data) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: nginx calls getters with a live request.
    let log = unsafe { crate::ffi::request_log(r) };
    crate::log::guard(log, name, || {
        #[cfg(feature = "panic-inject")]
        crate::inject::maybe_panic(r, name);
        // SAFETY: as above; the shared part is only ever borrowed shared.
        let shown = unsafe { request::shared(r) }.and_then(value);
        // SAFETY: nginx gave us a live request and value.
        unsafe { set(r, v, shown) }
    })
    .unwrap_or(NGX_ERROR as ngx_int_t)
}

/// `$wsgi_queue_time`: how long the job waited for a thread.
fn queue_time(cx: &request::Shared) -> Option<String> {
    cx.exchange
        .started
        .load(Ordering::Acquire)
        .then(|| format_msec(cx.exchange.queue_time_us.load(Ordering::Relaxed) / 1000))
}

/// `$wsgi_app_time`: from the app's start to its first reply.
fn app_time(cx: &request::Shared) -> Option<String> {
    let first = cx.first_reply_at.get()?;
    let queued_ms = cx.exchange.queue_time_us.load(Ordering::Relaxed) / 1000;
    let started = cx.dispatched_at.wrapping_add(queued_ms as _);
    let ms = first.wrapping_sub(started) as i64;
    Some(format_msec(ms.max(0) as u64))
}

/// `$wsgi_thread`: the pool thread that ran the app.
fn thread(cx: &request::Shared) -> Option<String> {
    let n = cx.exchange.thread_no.load(Ordering::Relaxed);
    (n > 0).then(|| (n - 1).to_string())
}

#[cfg(test)]
mod tests {
    use super::format_msec;

    #[test]
    fn seconds_with_milliseconds() {
        assert_eq!(format_msec(0), "0.000");
        assert_eq!(format_msec(7), "0.007");
        assert_eq!(format_msec(1234), "1.234");
    }
}

//! nginx struct members as nginx's C compiler lays them out.
//!
//! nginx-sys's bindings come from bindgen, whose bitfield layout can differ
//! from the C compiler's (bindgen 0.72 on nginx >= 1.29.3: from
//! `ngx_http_request_t.uri_changes` on, every flag two bits off, so a
//! worker took a fully read body for a streaming one and crashed). So:
//!
//! * every bitfield the module reads or writes goes through a C accessor
//!   compiled with nginx's own headers: `fields::req::reading_body(r)`,
//!   `fields::buf::set_last_buf(b, 1)`. bindgen's bitfield methods and
//!   nginx-sys's Rust copies of nginx's inline event helpers are refused by
//!   clippy (`clippy.toml`);
//! * every plain member and struct size the module relies on is listed in
//!   `src/fields.list`; build.rs asks the C compiler where each lies and the
//!   crate does not compile if nginx-sys's bindings disagree, naming it.
//!
//! To use another nginx member, add it to `src/fields.list`.

use nginx_sys::{ngx_event_t, ngx_http_request_t, ngx_int_t, ngx_msec_t, ngx_uint_t};

include!(concat!(env!("OUT_DIR"), "/fields.rs"));

unsafe extern "C" {
    fn ngx_http_wsgi_add_timer(ev: *mut ngx_event_t, timer: ngx_msec_t);
    fn ngx_http_wsgi_del_timer(ev: *mut ngx_event_t);
    fn ngx_http_wsgi_post_event(ev: *mut ngx_event_t);
    fn ngx_http_wsgi_delete_posted_event(ev: *mut ngx_event_t);
    fn ngx_http_wsgi_client_gone(r: *mut ngx_http_request_t) -> ngx_int_t;
    fn ngx_http_wsgi_multiplexed(r: *const ngx_http_request_t) -> ngx_uint_t;
}

/// nginx's `ngx_add_timer`: (re)arms `ev` to fire in `ms` milliseconds.
///
/// # Safety
/// nginx thread; `ev` is a live event with a handler that stays valid until
/// the timer fires or is deleted.
pub unsafe fn add_timer(ev: *mut ngx_event_t, ms: ngx_msec_t) {
    // SAFETY: the caller's promise; nginx's own inline code does the work.
    unsafe { ngx_http_wsgi_add_timer(ev, ms) }
}

/// nginx's `ngx_del_timer`.
///
/// # Safety
/// nginx thread; `ev` is a live event whose timer is set.
pub unsafe fn del_timer(ev: *mut ngx_event_t) {
    // SAFETY: as above.
    unsafe { ngx_http_wsgi_del_timer(ev) }
}

/// nginx's `ngx_post_event(ev, &ngx_posted_events)` (a no-op if posted).
///
/// # Safety
/// nginx thread; `ev` is a live event that stays valid until it runs or is
/// removed with [`delete_posted_event`].
pub unsafe fn post_event(ev: *mut ngx_event_t) {
    // SAFETY: as above.
    unsafe { ngx_http_wsgi_post_event(ev) }
}

/// nginx's `ngx_delete_posted_event`.
///
/// # Safety
/// nginx thread; `ev` is a live event that is posted.
pub unsafe fn delete_posted_event(ev: *mut ngx_event_t) {
    // SAFETY: as above.
    unsafe { ngx_http_wsgi_delete_posted_event(ev) }
}

/// What [`client_gone`] found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Client {
    Here,
    /// The connection closed (or was reset).
    ClosedConnection,
    /// The request's HTTP/2 or HTTP/3 stream was reset.
    ClosedStream,
}

/// Whether the client of a request nginx is not reading from went away:
/// nginx's `ngx_http_test_reading` checks (an HTTP/2 stream's error, an
/// HTTP/3 stream's, EPOLLRDHUP, else a peek), in C, without finalizing.
/// Marks the connection as nginx would (`eof`, `error`).
///
/// # Safety
/// nginx thread; `r` is a live request.
pub unsafe fn client_gone(r: *mut ngx_http_request_t) -> Client {
    // SAFETY: the caller's promise.
    match unsafe { ngx_http_wsgi_client_gone(r) } {
        0 => Client::Here,
        2 => Client::ClosedStream,
        _ => Client::ClosedConnection,
    }
}

/// Whether `r` is a stream of an HTTP/2 or HTTP/3 connection (which shares
/// its socket with other requests).
///
/// # Safety
/// `r` is a live request.
pub unsafe fn multiplexed(r: *const ngx_http_request_t) -> bool {
    // SAFETY: the caller's promise.
    unsafe { ngx_http_wsgi_multiplexed(r) != 0 }
}

//! A typed handle on a live `ngx_http_request_t`: the reads and writes of
//! the request that the request-time layers make most, each behind one
//! small `unsafe` here, so their own code dereferences no request pointer
//! for them.

use core::ptr::NonNull;

use nginx_sys::{
    ngx_connection_t, ngx_event_t, ngx_http_event_handler_pt, ngx_http_request_t, ngx_log_t,
    ngx_pool_t,
};

/// A request nginx handed the module, on nginx's thread.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Request(NonNull<ngx_http_request_t>);

impl Request {
    /// # Safety
    /// `r` is a live request; the handle is used on nginx's thread only,
    /// and only while the request lives (not after a call that may free
    /// it, such as `ngx_http_finalize_request`).
    pub unsafe fn from_raw(r: *mut ngx_http_request_t) -> Option<Request> {
        NonNull::new(r).map(Request)
    }

    pub fn as_ptr(self) -> *mut ngx_http_request_t {
        self.0.as_ptr()
    }

    fn get(&self) -> &ngx_http_request_t {
        // SAFETY: `from_raw`'s promise: the request is live, and nginx's
        // thread (ours) is the only one that changes it.
        unsafe { self.0.as_ref() }
    }

    /// The request's connection (a stream's, for HTTP/2 and HTTP/3).
    pub fn connection(self) -> *mut ngx_connection_t {
        self.get().connection
    }

    /// The connection's log, with the request's context.
    pub fn log(self) -> *mut ngx_log_t {
        // SAFETY: a live request's connection is live.
        unsafe { (*self.connection()).log }
    }

    /// The connection's read event.
    pub fn read_event(self) -> *mut ngx_event_t {
        // SAFETY: as above.
        unsafe { (*self.connection()).read }
    }

    /// The connection's write event.
    pub fn write_event(self) -> *mut ngx_event_t {
        // SAFETY: as above.
        unsafe { (*self.connection()).write }
    }

    /// The request's pool.
    pub fn pool(self) -> *mut ngx_pool_t {
        self.get().pool
    }

    /// Whether this is the main request (not a subrequest).
    pub fn is_main(self) -> bool {
        self.get().main == self.as_ptr()
    }

    /// The module context of the module with `ctx_index` (`r->ctx[i]`).
    pub fn ctx(self, ctx_index: usize) -> *mut core::ffi::c_void {
        // SAFETY: `r->ctx` has a slot for every HTTP module, and
        // `ctx_index` is one's.
        let slot = unsafe { self.get().ctx.add(ctx_index) };
        // SAFETY: as above.
        unsafe { *slot }
    }

    /// Sets `r->ctx[ctx_index]`.
    pub fn set_ctx(self, ctx_index: usize, value: *mut core::ffi::c_void) {
        // SAFETY: as above; the array is the request's, on nginx's thread.
        let slot = unsafe { self.get().ctx.add(ctx_index) };
        // SAFETY: as above.
        unsafe { *slot = value };
    }

    /// Sets the handler nginx calls on the connection's read events.
    pub fn set_read_handler(self, h: ngx_http_event_handler_pt) {
        // SAFETY: `from_raw`'s promise; nginx reads the field from its own
        // thread (ours) only.
        unsafe { (*self.as_ptr()).read_event_handler = h };
    }

    /// Sets the handler nginx calls on the connection's write events.
    pub fn set_write_handler(self, h: ngx_http_event_handler_pt) {
        // SAFETY: as above.
        unsafe { (*self.as_ptr()).write_event_handler = h };
    }
}

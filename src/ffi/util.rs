//! Small helpers at the FFI edge. Each `unsafe` here is one line of nginx
//! API use with the reason it holds.

use core::ffi::c_char;
use core::ptr;

use nginx_sys::{
    ngx_conf_t, ngx_core_conf_t, ngx_cycle_t, ngx_http_request_t, ngx_int_t, ngx_list_part_t,
    ngx_list_t, ngx_log_t, ngx_pool_t, ngx_str_t, ngx_table_elt_t, NGX_ERROR,
};

/// nginx's `NGX_CONF_ERROR` (`(char *) -1`).
pub const CONF_ERROR: *mut c_char = usize::MAX as *mut c_char;
/// nginx's `NGX_CONF_OK`.
pub const CONF_OK: *mut c_char = ptr::null_mut();

/// The bytes of an `ngx_str_t`.
///
/// # Safety
/// `s` must describe valid memory for the lifetime `'a` (or be empty).
pub unsafe fn ngx_bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        // SAFETY: per the caller's promise `data` holds `len` bytes.
        unsafe { core::slice::from_raw_parts(s.data, s.len) }
    }
}

/// The UTC offset, in minutes, of nginx's cached log times: the process's
/// time zone as nginx's thread last applied it.
pub fn log_offset_minutes() -> i64 {
    // SAFETY: a read by value of the pointer, which only this (nginx's)
    // thread moves.
    let now = unsafe { nginx_sys::ngx_cached_time };
    // SAFETY: nginx points ngx_cached_time at a filled slot before any
    // module code runs.
    unsafe { (*now).gmtoff as i64 }
}

/// The core module's settings of `cycle` (`env`, `worker_shutdown_timeout`).
///
/// # Safety
/// `cycle` must be live, its configuration parsed up to the point of use.
pub unsafe fn core_conf<'a>(cycle: *mut ngx_cycle_t) -> Option<&'a ngx_core_conf_t> {
    // SAFETY: the caller's promise: `cycle` is live.
    let ctx = unsafe { (*cycle).conf_ctx };
    // SAFETY: a read by value; nginx numbers its modules while loading
    // them, before any configuration is parsed.
    let index = unsafe { nginx_sys::ngx_core_module.index };
    // SAFETY: conf_ctx has a slot for every module (ngx_max_module), the
    // core module's at its index (nginx's ngx_get_conf).
    let slot = unsafe { ctx.add(index) };
    // SAFETY: the slot is initialised: ngx_init_cycle fills every core
    // module's before parsing.
    let conf = unsafe { *slot } as *const ngx_core_conf_t;
    // SAFETY: NULL or the core module's conf, which lives as long as the
    // cycle.
    unsafe { conf.as_ref() }
}

/// The arguments of the directive being parsed, directive name first.
///
/// # Safety
/// `cf` must be the `ngx_conf_t` passed to a directive handler.
pub unsafe fn conf_args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: the caller's promise: `cf` is live.
    let args = unsafe { (*cf).args };
    // SAFETY: during a directive handler `cf->args` is nginx's live array
    // of the directive's words.
    let args = unsafe { &*args };
    // SAFETY: that array holds `nelts` (at least the name) initialised
    // ngx_str_t at `elts`.
    unsafe { core::slice::from_raw_parts(args.elts as *const ngx_str_t, args.nelts) }
}

/// The words of the directive being parsed, directive name first (each
/// [`conf_args`] entry's bytes).
///
/// # Safety
/// `cf` must be the `ngx_conf_t` passed to a directive handler; the bytes
/// live in the configuration's pool (`'a`).
pub unsafe fn conf_words<'a>(cf: *mut ngx_conf_t) -> Vec<&'a [u8]> {
    // SAFETY: the caller's promise.
    let args = unsafe { conf_args(cf) };
    args.iter()
        // SAFETY: nginx's parser puts each word's bytes in the conf's pool.
        .map(|a| unsafe { ngx_bytes(a) })
        .collect()
}

/// Copies `bytes` into pool memory as an `ngx_str_t`; `None` if out of memory.
///
/// # Safety
/// `pool` must be a live nginx pool.
pub unsafe fn pool_str(pool: *mut ngx_pool_t, bytes: &[u8]) -> Option<ngx_str_t> {
    if bytes.is_empty() {
        return Some(ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        });
    }
    // SAFETY: ngx_pnalloc returns memory for `len` bytes or NULL.
    let data = unsafe { nginx_sys::ngx_pnalloc(pool, bytes.len()) } as *mut u8;
    if data.is_null() {
        return None;
    }
    // SAFETY: `data` has room for `bytes.len()` bytes and does not overlap.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len()) };
    Some(ngx_str_t {
        len: bytes.len(),
        data,
    })
}

/// Walks an `ngx_list_t` of `ngx_table_elt_t` (request or response headers).
///
/// # Safety
/// `list` must be an initialised list of `ngx_table_elt_t` that is not
/// modified while the closure runs.
pub unsafe fn for_each_header(list: *const ngx_list_t, mut f: impl FnMut(&ngx_table_elt_t)) {
    // SAFETY: the caller's promise: an initialised list, left alone meanwhile.
    let mut part: Option<&ngx_list_part_t> = Some(unsafe { &(*list).part });
    while let Some(p) = part {
        if p.nelts > 0 {
            // SAFETY: nginx lists are a chain of parts, each an array of
            // `nelts` initialised elements at `elts`.
            let elts =
                unsafe { core::slice::from_raw_parts(p.elts as *const ngx_table_elt_t, p.nelts) };
            elts.iter().for_each(&mut f);
        }
        // SAFETY: `next` is NULL or the list's next part.
        part = unsafe { p.next.as_ref() };
    }
}

/// Parses an nginx time value (`60s`, `1m`, `500ms`) into milliseconds.
pub fn parse_msec(value: &[u8]) -> Option<u64> {
    let mut s = ngx_str_t {
        len: value.len(),
        data: value.as_ptr() as *mut u8,
    };
    // SAFETY: ngx_parse_time only reads `len` bytes of `data`.
    let ms: ngx_int_t = unsafe { nginx_sys::ngx_parse_time(&mut s, 0) };
    if ms == NGX_ERROR as ngx_int_t || ms < 0 {
        None
    } else {
        Some(ms as u64)
    }
}

/// Parses an nginx size value (`64k`, `1m`).
pub fn parse_size(value: &[u8]) -> Option<usize> {
    let mut s = ngx_str_t {
        len: value.len(),
        data: value.as_ptr() as *mut u8,
    };
    // SAFETY: ngx_parse_size only reads `len` bytes of `data`.
    let n = unsafe { nginx_sys::ngx_parse_size(&mut s) };
    if n < 0 {
        None
    } else {
        Some(n as usize)
    }
}

/// ASCII case-insensitive comparison for header names.
pub fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Moves `value` into `pool`'s memory, to be dropped when the pool is
/// destroyed; `Err(value)` (nothing changed in the pool but an inert
/// clean-up entry) when the pool is out of memory. ngx 0.5's
/// `Pool::allocate` writes through `ngx_palloc`'s result unchecked.
///
/// # Safety
/// nginx thread; `pool` is a live pool, and the value may live as long as
/// it (it is dropped from the pool's clean-up, on the nginx thread).
pub unsafe fn pool_alloc<T>(pool: *mut ngx_pool_t, value: T) -> Result<*mut T, T> {
    const {
        // ngx_palloc aligns to NGX_ALIGNMENT (sizeof(unsigned long))
        assert!(core::mem::align_of::<T>() <= core::mem::size_of::<core::ffi::c_ulong>())
    };
    // The clean-up first: a clean-up entry whose handler stays NULL is
    // skipped by ngx_destroy_pool, so failing after it changes nothing.
    // SAFETY: the caller's promise; size 0 allocates no data.
    let cln = unsafe { nginx_sys::ngx_pool_cleanup_add(pool, 0) };
    if cln.is_null() {
        return Err(value);
    }
    // SAFETY: the caller's promise.
    let p = unsafe { nginx_sys::ngx_palloc(pool, core::mem::size_of::<T>()) }.cast::<T>();
    if p.is_null() {
        return Err(value);
    }
    // SAFETY: `p` is fresh pool memory of T's size and alignment (checked
    // above).
    unsafe { ptr::write(p, value) };
    // SAFETY: `cln` is the live clean-up entry just added, ours alone.
    let cln = unsafe { &mut *cln };
    // The handler drops that T once, from the pool's destruction.
    cln.data = p.cast();
    cln.handler = Some(drop_in_pool::<T>);
    Ok(p)
}

/// The clean-up handler of [`pool_alloc`].
///
/// # Safety
/// Called by nginx once, with the `T` that `pool_alloc` wrote.
unsafe extern "C" fn drop_in_pool<T>(data: *mut core::ffi::c_void) {
    // SAFETY: the caller's promise.
    unsafe { ptr::drop_in_place(data.cast::<T>()) };
}

/// The core module's location conf of request `r` (`send_timeout`,
/// `error_page`s, ...).
pub fn core_loc_conf<'a>(r: *mut ngx_http_request_t) -> &'a nginx_sys::ngx_http_core_loc_conf_t {
    // SAFETY: a live request (this is called from its handlers).
    let loc_conf = unsafe { (*r).loc_conf };
    // SAFETY: a read by value; nginx numbers the HTTP modules before any
    // configuration is parsed.
    let index = unsafe { nginx_sys::ngx_http_core_module.ctx_index };
    // SAFETY: a request's loc_conf has a slot for every HTTP module.
    let slot = unsafe { loc_conf.add(index) };
    // SAFETY: every location has the core module's conf at its slot.
    let conf = unsafe { *slot } as *const nginx_sys::ngx_http_core_loc_conf_t;
    // SAFETY: that conf lives as long as the configuration, past the request.
    unsafe { &*conf }
}

/// The log of request `r`'s connection (nginx's request context: client,
/// server, request line).
///
/// # Safety
/// `r` is a live request.
pub unsafe fn request_log(r: *const ngx_http_request_t) -> *mut ngx_log_t {
    // SAFETY: the caller's promise.
    let c = unsafe { (*r).connection };
    // SAFETY: a live request has its live connection.
    unsafe { (*c).log }
}

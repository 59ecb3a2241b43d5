//! nginx thread: the response head. The app's status and headers become
//! nginx's (hop-by-hop headers dropped, `wsgi_hide_header`), `X-Accel-*`
//! instructions are carried out (`X-Accel-Redirect` hands the request to
//! another location), and `wsgi_intercept_errors` hands an error status to
//! the location's `error_page`. Never takes the GIL.

use core::ptr;

use nginx_sys::{
    ngx_http_core_get_method, ngx_http_err_page_t, ngx_http_headers_out_t,
    ngx_http_internal_redirect, ngx_http_named_location, ngx_http_parse_unsafe_uri,
    ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_list_push, ngx_pcalloc, ngx_pool_t,
    ngx_str_t, ngx_table_elt_t, ngx_uint_t, NGX_DONE, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_LOG_UNSAFE, NGX_HTTP_NOT_FOUND, NGX_OK,
};

use crate::conf::{IGNORE_XA_CHARSET, IGNORE_XA_LIMIT_RATE, IGNORE_XA_REDIRECT};
use crate::ffi::fields::req;
use crate::ffi::{core_loc_conf, eq_ignore_case, ngx_bytes, pool_str};
use crate::message::ResponseHead;
use crate::request::RequestCtx;

/// Whether a (validated) status such as `200 OK` has a reason phrase.
fn has_reason(status_line: &[u8]) -> bool {
    status_line
        .get(4..)
        .is_some_and(|reason| reason.iter().any(|&c| c != b' ' && c != b'\t'))
}

/// Headers that describe a connection, not a response: nginx owns them.
fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"proxy-connection",
        b"upgrade",
        b"te",
        b"trailer",
    ];
    HOP.iter().any(|h| eq_ignore_case(name, h))
}

/// Whether the request's location has an `error_page` for `status`.
fn has_error_page(r: *mut ngx_http_request_t, status: u16) -> bool {
    let pages = core_loc_conf(r).error_pages;
    if pages.is_null() {
        return false;
    }
    // SAFETY: the error_page directive's array, in the configuration pool.
    let a = unsafe { &*pages };
    // SAFETY: it holds `nelts` ngx_http_err_page_t.
    let pages =
        unsafe { std::slice::from_raw_parts(a.elts as *const ngx_http_err_page_t, a.nelts) };
    pages.iter().any(|p| p.status == status as ngx_int_t)
}

/// `wsgi_intercept_errors`: the app's status goes to the location's
/// `error_page` instead of its own body, as with `proxy_intercept_errors`.
/// A 401 keeps the app's `WWW-Authenticate`. True if intercepted.
fn intercept(cx: &mut RequestCtx, head: &ResponseHead) -> bool {
    let r = cx.r();
    // SAFETY: the location conf lives as long as the cycle.
    let lcf = cx.loc_conf();
    if head.status < 300 || lcf.intercept_errors != Some(true) || !has_error_page(r, head.status) {
        return false;
    }
    if head.status == 401 {
        for (name, value) in &head.headers {
            if !eq_ignore_case(name, b"www-authenticate") {
                continue;
            }
            // SAFETY: r is live while its state is borrowed; its headers
            // are not sent, and this is the only reference to them.
            let ho = unsafe { &mut (*r).headers_out };
            // SAFETY: `ho` is the live request's, `pool` its pool.
            match unsafe { push_header(ho, cx.req().pool(), name, value) } {
                // SAFETY: `h` is a fresh entry of that list.
                Some(h) => unsafe { link_www_authenticate(ho, h) },
                None => {
                    cx.abort(NGX_ERROR as ngx_int_t);
                    return true;
                }
            }
        }
    }
    // The app's body is not wanted: the pool thread closes its iterable.
    // SAFETY: r is live; nginx runs the error_page from here.
    cx.abort(head.status as ngx_int_t);
    true
}

/// Sets status and headers and sends them; false if the request ended
/// (or was handed to another location by `X-Accel-Redirect` or an
/// intercepted error).
pub fn send_head(cx: &mut RequestCtx, head: ResponseHead) -> bool {
    let r = cx.r();
    let lcf = cx.loc_conf();
    if intercept(cx, &head) {
        return false;
    }
    let pool = cx.req().pool();
    // X-Accel-* instructions first, as behind proxy_pass.
    let mut redirect: Option<&[u8]> = None;
    for (name, value) in &head.headers {
        if name.len() < 8 || !name[..8].eq_ignore_ascii_case(b"x-accel-") {
            continue;
        }
        let what = &name[8..];
        if what.eq_ignore_ascii_case(b"redirect") && !lcf.ignores(IGNORE_XA_REDIRECT) {
            redirect = Some(value);
        } else if what.eq_ignore_ascii_case(b"limit-rate") && !lcf.ignores(IGNORE_XA_LIMIT_RATE) {
            if let Some(n) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                // SAFETY: r is live while its state is borrowed.
                unsafe { (*r).limit_rate = n };
                // SAFETY: as above.
                unsafe { req::set_limit_rate_set(r, 1) };
            }
        } else if what.eq_ignore_ascii_case(b"charset") && !lcf.ignores(IGNORE_XA_CHARSET) {
            // SAFETY: the request's live pool.
            let s = unsafe { ngx_pcalloc(pool, core::mem::size_of::<ngx_str_t>()) };
            // SAFETY: as above; copied into it.
            let v = unsafe { pool_str(pool, value) };
            if let (false, Some(v)) = (s.is_null(), v) {
                let s = s.cast::<ngx_str_t>();
                // SAFETY: fresh pool memory of an ngx_str_t's size.
                unsafe { s.write(v) };
                // SAFETY: r is live.
                unsafe { (*r).headers_out.override_charset = s };
            }
        }
    }
    if let Some(uri) = redirect {
        if !uri.is_empty() {
            redirect_to(cx, uri, &head);
            return false;
        }
    }

    // SAFETY: r is live; its response headers are not sent yet, and this
    // is the only reference to them until `ngx_http_send_header` below.
    let ho = unsafe { &mut (*r).headers_out };
    ho.status = head.status as usize;
    // "200" with no reason phrase: nginx writes its own ("200 OK"), or
    // the code and the space a status line needs for codes it does not
    // know; "HTTP/1.1 200" alone is not a valid status line.
    if has_reason(&head.status_line) {
        // SAFETY: the request's live pool.
        match unsafe { pool_str(pool, &head.status_line) } {
            Some(s) => ho.status_line = s,
            None => {
                cx.abort(NGX_ERROR as ngx_int_t);
                return false;
            }
        }
    }
    for (name, value) in &head.headers {
        if eq_ignore_case(name, b"content-type") {
            // SAFETY: the request's live pool.
            let Some(v) = (unsafe { pool_str(pool, value) }) else {
                cx.abort(NGX_ERROR as ngx_int_t);
                return false;
            };
            set_content_type(ho, v);
            continue;
        }
        if eq_ignore_case(name, b"content-length") {
            // Validated by the pool thread.
            ho.content_length_n = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(-1);
            continue;
        }
        if is_hop_by_hop(name) || lcf.hides(name) {
            continue;
        }
        // SAFETY: `ho` is the live request's, `pool` its pool.
        let Some(h) = (unsafe { push_header(ho, pool, name, value) }) else {
            cx.abort(NGX_ERROR as ngx_int_t);
            return false;
        };
        if eq_ignore_case(name, b"server") {
            ho.server = h;
        } else if eq_ignore_case(name, b"date") {
            ho.date = h;
        } else if eq_ignore_case(name, b"content-encoding") {
            // gzip must not compress an already encoded body.
            ho.content_encoding = h;
        } else if eq_ignore_case(name, b"www-authenticate") {
            // auth_request passes a 401's challenges on from here.
            // SAFETY: `h` is an entry of this request's header list.
            unsafe { link_www_authenticate(ho, h) };
        }
    }
    // RFC 9110 8.6: no Content-Length on a 204 (Django sets one, 0).
    if head.status == 204 {
        ho.content_length_n = -1;
    }
    // The app decides about conditional requests, as behind proxy_pass.
    // SAFETY: r is live.
    unsafe { req::set_disable_not_modified(r, 1) };
    // nginx marks 204 and 304 header-only only when it writes the status
    // line itself; with the app's own reason phrase the body the app still
    // returned would follow the header and be read as the start of the
    // next response on a keepalive connection.
    if matches!(head.status, 204 | 304) {
        // SAFETY: as above.
        unsafe { req::set_header_only(r, 1) };
    }
    cx.mark_head_sent();
    wsgi_trace!(
        r,
        "job #{} status and headers back from thread {}: {}",
        cx.id(),
        cx.exchange()
            .thread_no
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(1),
        head.status
    );
    // SAFETY: r is live; nothing of ours borrows its headers any more.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t {
        cx.abort(rc);
        return false;
    }
    // SAFETY: as above.
    if unsafe { req::header_only(r) } != 0 {
        cx.mark_header_only();
    }
    true
}

/// Sets the response's Content-Type to `v` (pool memory).
fn set_content_type(ho: &mut ngx_http_headers_out_t, v: ngx_str_t) {
    ho.content_type = v;
    ho.content_type_len = v.len;
    ho.content_type_lowcase = ptr::null_mut();
}

/// Adds a response header to `ho` (copied into `pool`); `None` if out of
/// memory.
///
/// # Safety
/// nginx thread; `ho` is a live request's response headers, not sent yet,
/// and `pool` that request's pool.
unsafe fn push_header(
    ho: &mut ngx_http_headers_out_t,
    pool: *mut ngx_pool_t,
    name: &[u8],
    value: &[u8],
) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: the request's live, initialised header list.
    let h = unsafe { ngx_list_push(&mut ho.headers) }.cast::<ngx_table_elt_t>();
    // SAFETY: NULL or a fresh list entry.
    let h_ref = unsafe { h.as_mut() }?;
    // SAFETY: the request's live pool.
    let key = unsafe { pool_str(pool, name) }?;
    // SAFETY: as above.
    let value = unsafe { pool_str(pool, value) }?;
    h_ref.hash = 1;
    h_ref.key = key;
    h_ref.value = value;
    h_ref.lowcase_key = ptr::null_mut();
    #[cfg(nginx1_23_0)]
    {
        h_ref.next = ptr::null_mut();
    }
    Some(h)
}

/// Records a `WWW-Authenticate` header already in the list where nginx's
/// modules look for it (since 1.23 a chain of them).
///
/// # Safety
/// nginx thread; `h` is an entry of the response header list `ho` belongs
/// to, not linked yet (`next` NULL).
unsafe fn link_www_authenticate(ho: &mut ngx_http_headers_out_t, h: *mut ngx_table_elt_t) {
    #[cfg(nginx1_23_0)]
    {
        let mut link = &raw mut ho.www_authenticate;
        loop {
            // SAFETY: `link` points at the head or a live entry's `next`.
            let entry = unsafe { *link };
            if entry.is_null() {
                break;
            }
            // SAFETY: a live entry of the chain.
            link = unsafe { &raw mut (*entry).next };
        }
        // SAFETY: as above: the chain's last `next`.
        unsafe { *link = h };
    }
    #[cfg(not(nginx1_23_0))]
    if ho.www_authenticate.is_null() {
        ho.www_authenticate = h;
    }
}

/// `X-Accel-Redirect`: the app hands the request to another location (a
/// protected file, a named location). The app's body is not sent; the
/// headers nginx keeps on such a redirect behind proxy_pass are kept.
fn redirect_to(cx: &mut RequestCtx, uri: &[u8], head: &ResponseHead) {
    const KEPT: [&[u8]; 5] = [
        b"set-cookie",
        b"content-disposition",
        b"cache-control",
        b"expires",
        b"accept-ranges",
    ];
    // The app's part is over; finalizing with NGX_DONE (once control is
    // back in `request::enter`) releases the reference taken when the
    // body was read, after the redirect took its own.
    cx.abort(NGX_DONE as ngx_int_t);
    let r = cx.r();
    let pool = cx.req().pool();
    // SAFETY: r is live while its state is borrowed; its headers are not
    // sent, and this is the only reference to them (until the redirect).
    let ho = unsafe { &mut (*r).headers_out };
    for (name, value) in &head.headers {
        if eq_ignore_case(name, b"content-type") {
            // SAFETY: the request's live pool.
            if let Some(v) = unsafe { pool_str(pool, value) } {
                set_content_type(ho, v);
            }
        } else if KEPT.iter().any(|k| eq_ignore_case(name, k))
            // SAFETY: `ho` is the live request's, `pool` its pool.
            && unsafe { push_header(ho, pool, name, value) }.is_none()
        {
            cx.finalize_with(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
            return;
        }
    }
    // SAFETY: the request's live pool.
    let Some(mut uri) = (unsafe { pool_str(pool, uri) }) else {
        cx.finalize_with(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
        return;
    };
    // SAFETY: the string is in the request's pool.
    if unsafe { ngx_bytes(&uri) }.starts_with(b"@") {
        // SAFETY: r is live; nginx copies what it keeps of the name.
        unsafe { ngx_http_named_location(r, &mut uri) };
        return;
    }
    let mut args = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    let mut flags: ngx_uint_t = NGX_HTTP_LOG_UNSAFE as ngx_uint_t;
    // SAFETY: r is live; nginx parses the pool copy in place.
    if unsafe { ngx_http_parse_unsafe_uri(r, &mut uri, &mut args, &mut flags) }
        != NGX_OK as ngx_int_t
    {
        cx.finalize_with(NGX_HTTP_NOT_FOUND as ngx_int_t);
        return;
    }
    // SAFETY: r is live; no other reference to it is held here.
    let rr = unsafe { &mut *r };
    if rr.method != NGX_HTTP_HEAD as ngx_uint_t {
        rr.method = NGX_HTTP_GET as ngx_uint_t;
        // SAFETY: reading nginx's constant "GET" string.
        rr.method_name = unsafe { ngx_http_core_get_method };
    }
    // SAFETY: r is live; the redirect runs the new location's handlers.
    unsafe { ngx_http_internal_redirect(r, &mut uri, &mut args) };
}

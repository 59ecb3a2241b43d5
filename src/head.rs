//! nginx thread: the response head. The app's status and headers become
//! nginx's (hop-by-hop headers dropped, `wsgi_hide_header`), `X-Accel-*`
//! instructions are carried out (`X-Accel-Redirect` hands the request to
//! another location), and `wsgi_intercept_errors` hands an error status to
//! the location's `error_page`. Never takes the GIL.

use core::ptr;

use nginx_sys::{
    ngx_http_core_get_method, ngx_http_err_page_t, ngx_http_internal_redirect,
    ngx_http_named_location, ngx_http_parse_unsafe_uri, ngx_http_request_t, ngx_http_send_header,
    ngx_int_t, ngx_list_push, ngx_pcalloc, ngx_str_t, ngx_table_elt_t, ngx_uint_t, NGX_DONE,
    NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_LOG_UNSAFE,
    NGX_HTTP_NOT_FOUND, NGX_OK,
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
    // SAFETY: the error_page directive fills this array with
    // ngx_http_err_page_t; it lives in the configuration pool.
    let pages = unsafe {
        let a = &*pages;
        std::slice::from_raw_parts(a.elts as *const ngx_http_err_page_t, a.nelts)
    };
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
            // SAFETY: r is live; the header is copied into its pool.
            match unsafe { push_header(r, name, value) } {
                // SAFETY: as above.
                Some(h) => unsafe { link_www_authenticate(r, h) },
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
    // SAFETY: the location conf lives as long as the cycle.
    let lcf = cx.loc_conf();
    // SAFETY: r and its ctx are live.
    if intercept(cx, &head) {
        return false;
    }
    // SAFETY: r is live; every string is copied into its pool.
    unsafe {
        // X-Accel-* instructions first, as behind proxy_pass.
        let mut redirect: Option<&[u8]> = None;
        for (name, value) in &head.headers {
            if name.len() < 8 || !name[..8].eq_ignore_ascii_case(b"x-accel-") {
                continue;
            }
            let what = &name[8..];
            if what.eq_ignore_ascii_case(b"redirect") && !lcf.ignores(IGNORE_XA_REDIRECT) {
                redirect = Some(value);
            } else if what.eq_ignore_ascii_case(b"limit-rate") && !lcf.ignores(IGNORE_XA_LIMIT_RATE)
            {
                if let Some(n) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                {
                    (*r).limit_rate = n;
                    req::set_limit_rate_set(r, 1);
                }
            } else if what.eq_ignore_ascii_case(b"charset") && !lcf.ignores(IGNORE_XA_CHARSET) {
                let s = ngx_pcalloc((*r).pool, core::mem::size_of::<ngx_str_t>()) as *mut ngx_str_t;
                if let (false, Some(v)) = (s.is_null(), pool_str((*r).pool, value)) {
                    *s = v;
                    (*r).headers_out.override_charset = s;
                }
            }
        }
        if let Some(uri) = redirect {
            if !uri.is_empty() {
                redirect_to(cx, uri, &head);
                return false;
            }
        }

        let pool = (*r).pool;
        let ho = &mut (*r).headers_out;
        ho.status = head.status as usize;
        // "200" with no reason phrase: nginx writes its own ("200 OK"), or
        // the code and the space a status line needs for codes it does not
        // know; "HTTP/1.1 200" alone is not a valid status line.
        if has_reason(&head.status_line) {
            match pool_str(pool, &head.status_line) {
                Some(s) => ho.status_line = s,
                None => {
                    cx.abort(NGX_ERROR as ngx_int_t);
                    return false;
                }
            }
        }
        for (name, value) in &head.headers {
            if eq_ignore_case(name, b"content-type") {
                if !set_content_type(r, value) {
                    cx.abort(NGX_ERROR as ngx_int_t);
                    return false;
                }
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
            let Some(h) = push_header(r, name, value) else {
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
                link_www_authenticate(r, h);
            }
        }
        // The app decides about conditional requests, as behind proxy_pass.
        req::set_disable_not_modified(r, 1);

        // nginx marks 204 and 304 header-only only when it writes the
        // status line itself; with the app's own reason phrase the body
        // the app still returned would follow the header and be read as
        // the start of the next response on a keepalive connection.
        if matches!(head.status, 204 | 304) {
            req::set_header_only(r, 1);
        }
        // RFC 9110 8.6: no Content-Length on a 204 (Django sets one, 0).
        if head.status == 204 {
            ho.content_length_n = -1;
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
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t {
            cx.abort(rc);
            return false;
        }
        if req::header_only(r) != 0 {
            cx.mark_header_only();
        }
        true
    }
}

/// Sets the response's Content-Type (copied into the request pool); false if out of memory.
///
/// # Safety
/// nginx thread; `r` is a live request whose header is not sent yet.
unsafe fn set_content_type(r: *mut ngx_http_request_t, value: &[u8]) -> bool {
    // SAFETY: r is live; the value is copied into its pool.
    unsafe {
        let Some(v) = pool_str((*r).pool, value) else {
            return false;
        };
        let ho = &mut (*r).headers_out;
        ho.content_type = v;
        ho.content_type_len = v.len;
        ho.content_type_lowcase = ptr::null_mut();
        true
    }
}

/// Adds a response header (copied into the request pool); `None` if out of memory.
///
/// # Safety
/// nginx thread; `r` is a live request whose header is not sent yet.
unsafe fn push_header(
    r: *mut ngx_http_request_t,
    name: &[u8],
    value: &[u8],
) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: r is live; the header list is initialised.
    unsafe {
        let pool = (*r).pool;
        let h = ngx_list_push(&mut (*r).headers_out.headers) as *mut ngx_table_elt_t;
        if h.is_null() {
            return None;
        }
        (*h).hash = 1;
        (*h).key = pool_str(pool, name)?;
        (*h).value = pool_str(pool, value)?;
        (*h).lowcase_key = ptr::null_mut();
        #[cfg(nginx1_23_0)]
        {
            (*h).next = ptr::null_mut();
        }
        Some(h)
    }
}

/// Records a `WWW-Authenticate` header already in the list where nginx's
/// modules look for it (since 1.23 a chain of them).
///
/// # Safety
/// nginx thread; `r` is a live request and `h` an entry of its response header list.
unsafe fn link_www_authenticate(r: *mut ngx_http_request_t, h: *mut ngx_table_elt_t) {
    // SAFETY: r is live; `h` is in its header list, `next` was cleared.
    unsafe {
        let ho = &mut (*r).headers_out;
        #[cfg(nginx1_23_0)]
        {
            let mut link = &raw mut ho.www_authenticate;
            while !(*link).is_null() {
                link = &raw mut (**link).next;
            }
            *link = h;
        }
        #[cfg(not(nginx1_23_0))]
        if ho.www_authenticate.is_null() {
            ho.www_authenticate = h;
        }
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
    // SAFETY: r is live while its state is borrowed.
    unsafe {
        for (name, value) in &head.headers {
            if eq_ignore_case(name, b"content-type") {
                set_content_type(r, value);
            } else if KEPT.iter().any(|k| eq_ignore_case(name, k))
                && push_header(r, name, value).is_none()
            {
                cx.finalize_with(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
                return;
            }
        }
        let Some(mut uri) = pool_str((*r).pool, uri) else {
            cx.finalize_with(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
            return;
        };
        if ngx_bytes(&uri).starts_with(b"@") {
            ngx_http_named_location(r, &mut uri);
        } else {
            let mut args = ngx_str_t {
                len: 0,
                data: ptr::null_mut(),
            };
            let mut flags: ngx_uint_t = NGX_HTTP_LOG_UNSAFE as ngx_uint_t;
            if ngx_http_parse_unsafe_uri(r, &mut uri, &mut args, &mut flags) != NGX_OK as ngx_int_t
            {
                cx.finalize_with(NGX_HTTP_NOT_FOUND as ngx_int_t);
                return;
            }
            if (*r).method != NGX_HTTP_HEAD as ngx_uint_t {
                (*r).method = NGX_HTTP_GET as ngx_uint_t;
                (*r).method_name = ngx_http_core_get_method;
            }
            ngx_http_internal_redirect(r, &mut uri, &mut args);
        }
    }
}

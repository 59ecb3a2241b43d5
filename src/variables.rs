//! nginx thread: `$wsgi_*` variables for `log_format`, in the style of
//! `$upstream_response_time`.

use nginx_sys::{ngx_conf_t, ngx_int_t, NGX_OK};

/// Registers the module's variables (preconfiguration).
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn add_variables(_cf: *mut ngx_conf_t) -> ngx_int_t {
    NGX_OK as ngx_int_t
}

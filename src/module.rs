//! The wiring nginx reads: the HTTP module context (configuration hooks),
//! the directive table and the process hooks. The only file that names the
//! code nginx calls: directive handlers (`conf::directives`), content
//! handlers (`handler`, `status`), variables and worker start and exit.
//! lib.rs's `ngx_http_wsgi_module` is [`module`].

use core::ffi::{c_char, c_void};
use core::ptr::{self, addr_of};

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_handler_pt, ngx_http_module_t, ngx_int_t, ngx_module_t,
    ngx_str_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1,
    NGX_CONF_TAKE12, NGX_CONF_TAKE23, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF,
};
use ngx::http::HttpModule;

use crate::conf::directives::{self, guard_hook};
use crate::{check, handler, status, variables, worker, HttpWsgiModule};

/// What nginx's `ngx_http_wsgi_module` (lib.rs) holds.
pub const fn module() -> ngx_module_t {
    ngx_module_t {
        ctx: addr_of!(CTX) as _,
        commands: &raw mut COMMANDS as *mut ngx_command_t,
        type_: NGX_HTTP_MODULE as _,
        init_process: Some(worker::init_process),
        exit_process: Some(worker::exit_process),
        ..ngx_module_t::default()
    }
}

static CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(preconfiguration),
    postconfiguration: Some(postconfiguration),
    create_main_conf: Some(HttpWsgiModule::create_main_conf),
    init_main_conf: Some(HttpWsgiModule::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(HttpWsgiModule::create_loc_conf),
    merge_loc_conf: Some(directives::merge_loc_conf),
};

/// Before the http block: the `$wsgi_*` variables.
extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: nginx calls this with a valid cf.
    guard_hook(cf, "preconfiguration", || unsafe {
        variables::add_variables(cf)
    })
}

/// After the http block: the import check and the checks of the workers'
/// user and environment.
extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: nginx calls this with a valid cf, after the http block.
    guard_hook(cf, "postconfiguration", || unsafe {
        check::postconfiguration(cf)
    })
}

/// `wsgi_pass`'s content handler, handed to its directive as `post`.
static WSGI_CONTENT_HANDLER: ngx_http_handler_pt = Some(handler::content_handler);
/// `wsgi_status`'s.
static STATUS_CONTENT_HANDLER: ngx_http_handler_pt = Some(status::status_handler);

type SetFn = unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

/// One directive. Names are C strings: nginx compares them with strcmp.
const fn command(
    name: &'static core::ffi::CStr,
    type_: u32,
    set: SetFn,
    conf: usize,
) -> ngx_command_t {
    with_post(name, type_, set, conf, ptr::null_mut())
}

/// A directive whose handler gets `post`: here, the content handler it
/// installs, so that only this file names request-time code.
const fn with_post(
    name: &'static core::ffi::CStr,
    type_: u32,
    set: SetFn,
    conf: usize,
    post: *mut c_void,
) -> ngx_command_t {
    ngx_command_t {
        name: ngx_str_t {
            len: name.count_bytes(),
            data: name.as_ptr() as *mut u8,
        },
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf: conf as ngx_uint_t,
        offset: 0,
        post,
    }
}

const MAIN: u32 = NGX_HTTP_MAIN_CONF;
const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;
const MAIN_OFF: usize = NGX_HTTP_MAIN_CONF_OFFSET;
const LOC_OFF: usize = NGX_HTTP_LOC_CONF_OFFSET;

/// The directive table nginx reads (`ngx_module_t.commands`).
static mut COMMANDS: [ngx_command_t; 24] = [
    with_post(
        c"wsgi_pass",
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        directives::set_pass,
        LOC_OFF,
        (&raw const WSGI_CONTENT_HANDLER).cast_mut().cast(),
    ),
    command(
        c"wsgi_python_path",
        MAIN | NGX_CONF_1MORE,
        directives::set_python_path,
        MAIN_OFF,
    ),
    command(
        c"wsgi_python_home",
        MAIN | NGX_CONF_TAKE1,
        directives::set_python_home,
        MAIN_OFF,
    ),
    command(
        c"wsgi_threads",
        MAIN | NGX_CONF_TAKE1,
        directives::set_threads,
        MAIN_OFF,
    ),
    command(
        c"wsgi_queue_size",
        MAIN | NGX_CONF_TAKE1,
        directives::set_queue_size,
        MAIN_OFF,
    ),
    command(
        c"wsgi_queue_timeout",
        MAIN | NGX_CONF_TAKE1,
        directives::set_queue_timeout,
        MAIN_OFF,
    ),
    command(
        c"wsgi_max_requests",
        MAIN | NGX_CONF_TAKE12,
        directives::set_max_requests,
        MAIN_OFF,
    ),
    command(
        c"wsgi_import_check",
        MAIN | NGX_CONF_FLAG,
        directives::set_import_check,
        MAIN_OFF,
    ),
    command(
        c"wsgi_thread_priority",
        MAIN | NGX_CONF_TAKE1,
        directives::set_thread_priority,
        MAIN_OFF,
    ),
    command(
        c"wsgi_nginx_first",
        MAIN | NGX_CONF_FLAG,
        directives::set_nginx_first,
        MAIN_OFF,
    ),
    command(
        c"wsgi_sandbox",
        MAIN | NGX_CONF_FLAG,
        directives::set_sandbox,
        MAIN_OFF,
    ),
    command(
        c"wsgi_sandbox_read",
        MAIN | NGX_CONF_1MORE,
        directives::set_sandbox_paths,
        MAIN_OFF,
    ),
    command(
        c"wsgi_sandbox_write",
        MAIN | NGX_CONF_1MORE,
        directives::set_sandbox_paths,
        MAIN_OFF,
    ),
    command(
        c"wsgi_script_name",
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        directives::set_script_name,
        LOC_OFF,
    ),
    command(
        c"wsgi_param",
        ANY_LEVEL | NGX_CONF_TAKE23,
        directives::set_param,
        LOC_OFF,
    ),
    command(
        c"wsgi_buffer_size",
        ANY_LEVEL | NGX_CONF_TAKE1,
        directives::set_buffer_size,
        LOC_OFF,
    ),
    command(
        c"wsgi_read_timeout",
        ANY_LEVEL | NGX_CONF_TAKE1,
        directives::set_read_timeout,
        LOC_OFF,
    ),
    command(
        c"wsgi_request_buffering",
        ANY_LEVEL | NGX_CONF_FLAG,
        directives::set_request_buffering,
        LOC_OFF,
    ),
    command(
        c"wsgi_intercept_errors",
        ANY_LEVEL | NGX_CONF_FLAG,
        directives::set_intercept_errors,
        LOC_OFF,
    ),
    with_post(
        c"wsgi_status",
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        directives::set_status,
        LOC_OFF,
        (&raw const STATUS_CONTENT_HANDLER).cast_mut().cast(),
    ),
    command(
        c"wsgi_hide_header",
        ANY_LEVEL | NGX_CONF_TAKE1,
        directives::set_hide_header,
        LOC_OFF,
    ),
    command(
        c"wsgi_pass_header",
        ANY_LEVEL | NGX_CONF_TAKE1,
        directives::set_pass_header,
        LOC_OFF,
    ),
    command(
        c"wsgi_ignore_headers",
        ANY_LEVEL | NGX_CONF_1MORE,
        directives::set_ignore_headers,
        LOC_OFF,
    ),
    ngx_command_t::empty(),
];

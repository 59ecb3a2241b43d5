/*
 * nginx's static inline helpers and macros, as functions the Rust side can
 * call. Compiled with nginx's own headers (build.rs), so they touch
 * ngx_event_t's bitfields exactly where nginx's C code does; nginx-sys's
 * Rust copies of them read those bitfields through bindgen's layout.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>


void
ngx_http_wsgi_add_timer(ngx_event_t *ev, ngx_msec_t timer)
{
    ngx_add_timer(ev, timer);
}


void
ngx_http_wsgi_del_timer(ngx_event_t *ev)
{
    ngx_del_timer(ev);
}


void
ngx_http_wsgi_post_event(ngx_event_t *ev)
{
    ngx_post_event(ev, &ngx_posted_events);
}


void
ngx_http_wsgi_delete_posted_event(ngx_event_t *ev)
{
    ngx_delete_posted_event(ev);
}

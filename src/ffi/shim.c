/*
 * nginx's static inline helpers and macros, as functions the Rust side can
 * call. Compiled with nginx's own headers (build.rs), so they touch
 * ngx_event_t's bitfields exactly where nginx's C code does; nginx-sys's
 * Rust copies of them read those bitfields through bindgen's layout.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>


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


/*
 * Whether the client of a request went away while nginx is not reading
 * from it: ngx_http_test_reading()'s checks, without its finalizing.
 * Returns 0 (still there), 1 (the connection closed) or 2 (an HTTP/2 or
 * HTTP/3 stream reset); marks the connection as nginx would.
 */

ngx_int_t
ngx_http_wsgi_client_gone(ngx_http_request_t *r)
{
    int                n;
    char               buf[1];
    ngx_event_t       *rev;
    ngx_connection_t  *c;

    c = r->connection;
    rev = c->read;

#if (NGX_HTTP_V2)
    if (r->stream) {
        return c->error ? 2 : 0;
    }
#endif

#if (NGX_HTTP_V3)
    if (c->quic) {
        if (rev->error) {
            c->error = 1;
            return 2;
        }

        return 0;
    }
#endif

#if (NGX_HAVE_EPOLLRDHUP)
    if ((ngx_event_flags & NGX_USE_EPOLL_EVENT) && ngx_use_epoll_rdhup) {
        if (!rev->pending_eof) {
            return 0;
        }

        rev->eof = 1;
        c->error = 1;
        return 1;
    }
#endif

    n = recv(c->fd, buf, 1, MSG_PEEK);

    if (n > 0 || (n == -1 && ngx_socket_errno == NGX_EAGAIN)) {
        /* pipelined data, or nothing yet */
        return 0;
    }

    rev->eof = 1;
    c->error = 1;
    return 1;
}


/* Whether the request is a stream of a multiplexed connection (HTTP/2, 3). */

ngx_uint_t
ngx_http_wsgi_multiplexed(ngx_http_request_t *r)
{
#if (NGX_HTTP_V2)
    if (r->stream) {
        return 1;
    }
#endif

#if (NGX_HTTP_V3)
    if (r->connection->quic) {
        return 1;
    }
#endif

    return 0;
}

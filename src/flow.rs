//! The response's state machine, with no nginx memory in it: what each
//! reply of the app's becomes, when replies are taken and a batch goes to
//! nginx, what follows a write, and what of the held data may go. The
//! output layer (`output.rs`'s `pump` and `settle`) walks it and does the
//! nginx side of each step; the unit tests below walk it without nginx.

use nginx_sys::{ngx_int_t, NGX_AGAIN, NGX_ERROR};

use crate::message::{Chunk, FileReply, Reply, ResponseHead};

/// The most a response's last chunk may be to be copied into the request's
/// pool (see [`Step::Memory`]).
pub const COPY_MAX: usize = 1024;

/// What one reply becomes.
pub enum Step {
    /// The status and headers: to nginx before any body.
    Head(ResponseHead),
    /// Nothing to send: an empty chunk, or any body of a header-only
    /// response (HEAD, 204, 304).
    Skip,
    /// Body bytes. `copy`: the small last bytes of a response, copied into
    /// the request's pool, so the response needs nothing kept alive (and
    /// copies the backpressure bound does not count cannot pile up);
    /// otherwise held until nginx has sent them.
    Memory { data: Chunk, copy: bool },
    /// A range of a file (`wsgi.file_wrapper`), held open until sent.
    File(FileReply),
    /// The app's iterable is done: the response ends with this batch.
    Last,
    /// The app failed with `status` (a 500 if nothing went out yet).
    Fail { status: u16 },
}

/// What `reply` becomes; `end_next`: the reply after it ends the response.
pub fn step(reply: Reply, header_only: bool, end_next: bool) -> Step {
    match reply {
        Reply::Head(head) => Step::Head(head),
        Reply::Body(data) if header_only || data.is_empty() => Step::Skip,
        Reply::Body(data) => {
            let copy = data.len() <= COPY_MAX && end_next;
            Step::Memory { data, copy }
        }
        Reply::File(f) if header_only || f.len == 0 => Step::Skip,
        Reply::File(f) => Step::File(f),
        Reply::End => Step::Last,
        Reply::Error { status } => Step::Fail { status },
    }
}

/// Whether to take more replies from the app's exchange: none are left in
/// hand, the client is not behind, and less than `wsgi_buffer_size` is
/// waiting to be written. Otherwise the pool thread stays blocked on its
/// full exchange: backpressure.
pub fn may_take(
    in_hand: usize,
    waiting_on_client: bool,
    unsent: usize,
    buffer_size: usize,
) -> bool {
    in_hand == 0 && !waiting_on_client && unsent < buffer_size
}

/// Whether a batch of `bytes` goes to nginx now rather than after more
/// replies (one write per `wsgi_buffer_size` at most).
pub fn batch_full(bytes: usize, buffer_size: usize) -> bool {
    bytes >= buffer_size
}

/// What follows a write to nginx's output filters.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterWrite {
    /// The write failed: end the request, cancelling the app's side.
    Abort,
    /// The last batch went: the request ends with this rc (nginx writes
    /// what is left of it itself).
    Finish(ngx_int_t),
    /// The client cannot take more now: wait for its write event.
    WaitForClient,
    /// Take the next replies.
    More,
}

/// What follows a write that returned `rc`; `last`: the batch ended the
/// response; `busy`: nginx still holds buffers of ours.
pub fn after_write(rc: ngx_int_t, last: bool, busy: bool) -> AfterWrite {
    if rc == NGX_ERROR as ngx_int_t {
        AfterWrite::Abort
    } else if last {
        AfterWrite::Finish(rc)
    } else if rc == NGX_AGAIN as ngx_int_t || busy {
        AfterWrite::WaitForClient
    } else {
        AfterWrite::More
    }
}

/// How many held entries, oldest first, nginx is done with: the leading
/// ones with nothing left unsent (nginx writes in order).
pub fn sent_prefix(unsent: impl IntoIterator<Item = usize>) -> usize {
    unsent.into_iter().take_while(|&n| n == 0).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nginx_sys::NGX_OK;

    fn body(n: usize) -> Reply {
        Reply::Body(Chunk::from(vec![b'x'; n]))
    }

    fn file(len: u64) -> Reply {
        let fd = std::fs::File::open("/dev/null").unwrap().into();
        Reply::File(FileReply { fd, offset: 0, len })
    }

    #[test]
    fn bodies_of_header_only_responses_are_skipped() {
        assert!(matches!(step(body(10), true, false), Step::Skip));
        assert!(matches!(step(file(10), true, false), Step::Skip));
        assert!(matches!(step(body(0), false, false), Step::Skip));
        assert!(matches!(step(file(0), false, false), Step::Skip));
        assert!(matches!(step(file(10), false, false), Step::File(f) if f.len == 10));
    }

    #[test]
    fn only_a_small_last_chunk_is_copied() {
        let copy = |n, end_next| match step(body(n), false, end_next) {
            Step::Memory { data, copy } => {
                assert_eq!(data.len(), n);
                copy
            }
            _ => panic!("not memory"),
        };
        assert!(copy(COPY_MAX, true));
        assert!(!copy(COPY_MAX + 1, true));
        assert!(!copy(10, false));
    }

    #[test]
    fn end_and_error_end_the_batch() {
        assert!(matches!(step(Reply::End, false, false), Step::Last));
        assert!(matches!(step(Reply::End, true, false), Step::Last));
        assert!(matches!(
            step(Reply::Error { status: 500 }, false, false),
            Step::Fail { status: 500 }
        ));
    }

    #[test]
    fn replies_are_taken_only_with_room() {
        assert!(may_take(0, false, 0, 100));
        assert!(may_take(0, false, 99, 100));
        assert!(!may_take(1, false, 0, 100), "replies still in hand");
        assert!(!may_take(0, true, 0, 100), "client behind");
        assert!(!may_take(0, false, 100, 100), "buffer full");
        assert!(!batch_full(99, 100));
        assert!(batch_full(100, 100));
    }

    #[test]
    fn what_follows_a_write() {
        let ok = NGX_OK as ngx_int_t;
        let again = NGX_AGAIN as ngx_int_t;
        let error = NGX_ERROR as ngx_int_t;
        assert_eq!(after_write(error, true, false), AfterWrite::Abort);
        assert_eq!(after_write(error, false, true), AfterWrite::Abort);
        assert_eq!(after_write(ok, true, false), AfterWrite::Finish(ok));
        assert_eq!(after_write(again, true, true), AfterWrite::Finish(again));
        assert_eq!(after_write(again, false, false), AfterWrite::WaitForClient);
        assert_eq!(after_write(ok, false, true), AfterWrite::WaitForClient);
        assert_eq!(after_write(ok, false, false), AfterWrite::More);
    }

    #[test]
    fn only_the_sent_prefix_is_released() {
        assert_eq!(sent_prefix([]), 0);
        assert_eq!(sent_prefix([0, 0, 5, 0]), 2);
        assert_eq!(sent_prefix([3, 0]), 0);
        assert_eq!(sent_prefix([0, 0]), 2);
    }
}

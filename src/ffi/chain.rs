//! Walking nginx's buffer chains, one `unsafe` per step.

use nginx_sys::{ngx_buf_t, ngx_chain_t};

/// Calls `f` with each buffer of the chain at `cl`, in order, while it
/// returns true.
///
/// # Safety
/// `cl` is NULL or a live chain of live links and buffers, which nothing
/// but `f` (through the buffer it is given) changes meanwhile.
pub unsafe fn for_each_buf(mut cl: *mut ngx_chain_t, mut f: impl FnMut(&mut ngx_buf_t) -> bool) {
    while !cl.is_null() {
        // SAFETY: the caller's promise.
        let link = unsafe { &*cl };
        // SAFETY: as above: a live link's buffer.
        if !f(unsafe { &mut *link.buf }) {
            return;
        }
        cl = link.next;
    }
}

/// How many bytes `b` has in memory (`pos..last`); 0 for none.
pub fn mem_len(b: &ngx_buf_t) -> usize {
    if b.pos.is_null() || b.last <= b.pos {
        0
    } else {
        b.last as usize - b.pos as usize
    }
}

/// The bytes `b` has in memory (`pos..last`).
///
/// # Safety
/// `b`'s `pos..last` is live memory for `'a` (a memory buffer's).
pub unsafe fn mem_bytes<'a>(b: &ngx_buf_t) -> &'a [u8] {
    match mem_len(b) {
        0 => &[],
        // SAFETY: the caller's promise; `len` bytes from `pos`.
        len => unsafe { core::slice::from_raw_parts(b.pos, len) },
    }
}

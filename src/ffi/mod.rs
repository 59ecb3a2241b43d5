//! The FFI edge, below everything else: nginx's structs as its C compiler
//! lays them out ([`fields`], with `shim.c` and the accessors build.rs
//! generates from `fields.list`) and small raw helpers (strings, lists,
//! pool memory, argument parsing). Nothing here knows about requests of
//! ours, the pool or Python.

mod chain;
pub mod fields;
mod request;
mod util;

pub use chain::{for_each_buf, mem_bytes, mem_len};
pub use request::Request;
pub use util::*;

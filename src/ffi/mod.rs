//! The FFI edge, below everything else: nginx's structs as its C compiler
//! lays them out ([`fields`], with `shim.c` and the accessors build.rs
//! generates from `fields.list`) and small raw helpers (strings, lists,
//! pool memory, argument parsing). Nothing here knows about requests of
//! ours, the pool or Python.

pub mod fields;
mod util;

pub use util::*;

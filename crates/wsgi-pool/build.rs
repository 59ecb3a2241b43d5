//! An rpath to the embedded Python's libpython (see `python_paths.rs` at the
//! repository's root), so that this crate's test binaries find it too.

include!("../../python_paths.rs");

fn main() {
    python_paths();
}

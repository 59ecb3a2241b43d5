//! What crosses between the nginx thread and the pool threads.
//!
//! Everything here is owned data: no `ngx_*` pointer ever lives in these
//! types, and nothing here takes the GIL. The nginx thread builds a [`Job`],
//! a pool thread answers through the request's [`Exchange`], and the
//! [`Hub`] wakes the nginx thread through its eventfd.
//!
//! One file per protocol: [`request`] (the job and environ's strings),
//! [`body`] (request bodies and their memory), [`reply`] (replies and the
//! bounded per-request queue), [`hub`] (completions, the eventfd, wake-up
//! batching, counters), [`idle`] (waking idle pool threads the other way).

mod body;
mod hub;
mod idle;
mod reply;
mod request;

pub use body::*;
pub use hub::*;
pub use idle::*;
pub use reply::*;
pub use request::*;

//! Pure wire formats: no sockets, no threads, no clocks.
//!
//! - [`rpc`]: msgpack-rpc frames between kumo nodes and tools.
//! - [`memtext`]: the memcached text protocol the gateway speaks to applications.

pub mod memtext;
pub mod rpc;

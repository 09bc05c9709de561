//! Pure wire formats: no sockets, no threads, no clocks.
//!
//! - [`rpc`]: msgpack-rpc frames between kumo nodes and tools.
//! - [`cluster`]: the messages between kumo nodes, on top of `rpc`.
//! - [`memtext`]: the memcached text protocol the gateway speaks to applications.

pub mod cluster;
pub mod memtext;
pub mod rpc;

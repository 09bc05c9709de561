//! Pure wire formats: no sockets, no threads, no clocks.
//!
//! - [`rpc`]: msgpack-rpc frames between kumo nodes and tools.
//! - [`cluster`]: the messages between kumo nodes, on top of `rpc`.
//! - [`memtext`]: the memcached text protocol the gateway speaks to applications.
//! - [`memmeta`]: memcached's meta commands, which arrive on the same connections.
//! - [`membin`]: memcached's binary protocol, on its own listener.
//! - [`memcache`]: what the memcached codecs share.
//! - [`binlog`]: the records of the binary log (`-g`) that kumolog reads.
//! - [`metrics`] and [`http`]: the Prometheus text format, and the little HTTP that
//!   serves it.
//! - `msgpack`: msgpack's encodings written field by field, for `rpc` and `cluster`.

pub mod binlog;
pub mod cluster;
pub mod http;
pub mod membin;
pub mod memcache;
pub mod memmeta;
pub mod memtext;
pub mod metrics;
mod msgpack;
pub mod rpc;

//! Pure wire formats: no sockets, no threads, no clocks.
//!
//! - [`rpc`]: msgpack-rpc frames between kumo nodes and tools.

pub mod rpc;

//! # kumo
//!
//! A distributed key-value store that speaks the memcached protocol, keeps every key
//! on three servers, and keeps serving while servers join or fail. It re-implements
//! and succeeds kumofs.
//!
//! # Layout
//!
//! The layout is the architecture. Deciding logic is pure; I/O is a thin shell.
//!
//! | layer      | modules                  | what it does                                   |
//! |------------|--------------------------|------------------------------------------------|
//! | entry      | `main.rs`, [`cli`]       | picks the role from argv[0], parses options    |
//! | roles      | [`server`], [`tools`]    | state machines plus handlers, one per role     |
//! | process    | [`daemon`]               | logging, daemonizing, signals                  |
//! | I/O shell  | [`net`]                  | event loops, thread pools, timers, msgpack-rpc |
//! | pure logic | [`proto`], [`cluster`]   | wire formats, ClockTime, hash-space placement  |
//! | storage    | [`store`]                | append-only segments, index, compaction        |
//!
//! A request from another node arrives on a [`net`] worker, is framed by
//! [`proto::rpc`], and is dispatched to the role's [`net::Service`].

pub mod cli;
pub mod cluster;
pub mod daemon;
pub mod net;
pub mod proto;
pub mod server;
pub mod store;
pub mod tools;

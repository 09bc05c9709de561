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
//! | entry      | `main.rs`, [`dispatch`]  | picks the role from argv[0] and runs it        |
//! | options    | [`cli`]                  | option kinds and shared groups, parsing, help, man pages (no role; each role owns its `OPTIONS` and `Config`) |
//! | roles      | [`manager`], [`server`], [`gateway`], [`tools`], [`local`] | handlers, one module per role |
//! | process    | [`daemon`]               | logging, daemonizing, signals                  |
//! | I/O shell  | [`net`]                  | event loops, thread pools, timers, msgpack-rpc |
//! | pure logic | [`proto`], [`cluster`]   | wire formats, ClockTime, placement, write semantics, membership, replace steps |
//! | storage    | [`store`]                | append-only segments, index, compaction        |
//! | leaves     | [`record`], [`time`], [`fs`], [`sizes`], [`keyhash`] | the record every layer shares, the clock, crash-safe file writes, size syntax, the in-memory key hash |
//!
//! A memcached request arrives at the gateway ([`gateway::text`]), is parsed by
//! [`proto::memtext`], waits its turn in the connection's pipeline, and is routed
//! by the hash spaces ([`cluster::hash_space`]) to the key's servers as a message
//! of [`proto::cluster`]. There a server decides a write with [`cluster::write`],
//! stores it in its [`store`] and replicates it; a read is answered from the store.
//! The manager ([`manager`]) keeps the hash spaces with [`cluster::membership`],
//! tells every node when they change, and moves the data with
//! [`cluster::replace_run`], which decides each step of a replace, while each
//! server picks what it sends with [`cluster::replace`]. `tests/layering.rs` holds
//! the table of which module may import which.
//!
//! Every request has a deadline, set by the gateway and carried to the servers. A
//! get asks the owners in the order of [`cluster::routing`], hedging after a short
//! wait; links are watched by heartbeats ([`net::rpc_client`]), and a node that
//! finds a server unreachable reports it ([`net::report`]); the manager decides
//! from the reports which server a cut isolates ([`cluster::partition`]).

pub mod cli;
pub mod cluster;
pub mod daemon;
pub mod dispatch;
pub mod fs;
pub mod gateway;
pub mod keyhash;
pub mod local;
pub mod manager;
pub mod net;
pub mod proto;
pub mod record;
pub mod server;
pub mod sizes;
pub mod store;
pub mod time;
pub mod tools;

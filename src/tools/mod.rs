//! The command-line tools: short-lived processes that talk to nodes or files.

pub mod mergedb;

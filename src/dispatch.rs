//! The top of the house: the one place that knows every role. It takes the role
//! and its options from the command line ([`crate::cli`]) and runs it.

use crate::cli::{self, Args, Role};
use std::ffi::OsString;

/// The multicall entry point: returns the process exit status.
pub fn main(argv: Vec<OsString>) -> i32 {
    cli::start(argv, run)
}

fn run(role: Role, args: Args) -> i32 {
    match role {
        Role::Manager => crate::manager::main(args),
        Role::Server => crate::server::main(args),
        Role::Gateway => crate::gateway::main(args),
        Role::Ctl => crate::tools::ctl::main(args),
        Role::Stat => crate::tools::stat::main(args),
        Role::Hash => crate::tools::hash::main(args),
        Role::MergeDb => crate::tools::mergedb::main(args),
        Role::Local => crate::local::main(args),
    }
}

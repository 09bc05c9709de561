//! The top of the house: the one place that knows every role. It takes the role
//! and its options from the command line ([`crate::cli`]) and runs it.

use crate::cli::{self, options, Args, OptionList, Role, EXIT_USAGE};
use std::ffi::OsString;

/// The multicall entry point: returns the process exit status.
pub fn main(argv: Vec<OsString>) -> i32 {
    cli::start(argv, options_of, run)
}

/// Each role's options, which its module owns.
pub fn options_of(role: Role) -> OptionList {
    match role {
        Role::Manager => crate::manager::OPTIONS,
        Role::Server => crate::server::OPTIONS,
        Role::Gateway => crate::gateway::OPTIONS,
        Role::Ctl => crate::tools::ctl::OPTIONS,
        Role::Stat => crate::tools::stat::OPTIONS,
        Role::Top => crate::tools::top::OPTIONS,
        Role::Log => crate::tools::log::OPTIONS,
        Role::Hash => crate::tools::hash::OPTIONS,
        Role::MergeDb => crate::tools::mergedb::OPTIONS,
        Role::Local => crate::local::OPTIONS,
    }
}

/// Every man page, for `make man` and its test.
pub fn man_pages() -> Vec<(String, String)> {
    cli::man::all_pages(options_of)
}

fn run(role: Role, args: Args) -> i32 {
    // The shared secret comes first: every connection of the role presents it.
    let keyed = options::each(options_of(role)).any(|o| o.long == "cluster-key");
    if let Some(path) = keyed.then(|| args.opt_path("cluster-key")).flatten() {
        if let Err(e) = crate::net::auth::load(&path) {
            eprintln!("{}: {e}", role.program());
            return EXIT_USAGE;
        }
    }
    match role {
        Role::Manager => crate::manager::main(args),
        Role::Server => crate::server::main(args),
        Role::Gateway => crate::gateway::main(args),
        Role::Ctl => crate::tools::ctl::main(args),
        Role::Stat => crate::tools::stat::main(args),
        Role::Top => crate::tools::top::main(args),
        Role::Log => crate::tools::log::main(args),
        Role::Hash => crate::tools::hash::main(args),
        Role::MergeDb => crate::tools::mergedb::main(args),
        Role::Local => crate::local::main(args),
    }
}

#[cfg(test)]
mod tests;

//! The multicall entry point; everything else lives in the library.

fn main() {
    std::process::exit(kumo::dispatch::main(std::env::args_os().collect()));
}

//! Pins the conformance checks of tests/conformance to the real thing: starts a real
//! `memcached` (Debian package `memcached`) on a free 127.0.0.1 port and runs every
//! check against it. If the checks pass here, their expected bytes are memcached's,
//! and the same checks run against kumo's gateway prove it answers alike.
//!
//! memcached must be installed (`apt-get install -y memcached`; CI installs it). A
//! missing binary FAILS this test rather than skipping it. `MEMCACHED_BIN` may point
//! at another binary.

mod common;
mod conformance;

use common::memcached::start_memcached;

#[test]
fn memcached_conformance() {
    let mut mc = start_memcached();
    conformance::run_all(mc.addr);
    assert!(
        mc.proc.is_alive(),
        "memcached died during the run; its output:\n{}",
        mc.proc.log_text()
    );
}

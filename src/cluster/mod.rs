//! Pure cluster logic: versions and placement. No sockets, threads or clocks; the
//! time is always passed in, so a test or a simulator drives it directly.
//!
//! - [`clock`]: ClockTime, the version of every write and of every hash space.
//! - [`hash_space`]: consistent hashing, which servers own a key.
//! - [`write`]: what each memcached write does to a key's record.
//! - [`flush`]: which records a cluster-wide `flush_all` hides.
//! - [`membership`]: the manager's view: attach, detach, lost servers.
//! - [`partition`]: which servers to mark fault when nodes report broken links.
//! - [`replace`]: who sends which record where when servers join or leave.
//! - [`replace_run`]: the manager's replace, step by step: copy, settle, delete.
//! - [`routing`]: which owner a read asks next.
//! - [`sha1`]: the digest that places keys, on the SHA extensions where there are.

pub mod clock;
pub mod flush;
pub mod hash_space;
pub mod membership;
pub mod partition;
pub mod replace;
pub mod replace_run;
pub mod routing;
pub mod sha1;
pub mod write;

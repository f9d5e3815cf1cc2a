//! hpclock: an exactly-once guard over the kernel's file locks, for HPC codes.
//!
//! One module per concern: `lock` is the lock-file protocol, `wait` how a
//! busy lock is waited for, `ladder` and `lease` the cross-node lease where
//! the kernel's locks stop at the node, `record` the holder record kept in
//! the lock file, `holder` who holds a lock (read without locking),
//! `identity` who we are, `fs` what the filesystem can promise,
//! `kernel_lock` the kernel's flock and OFD locks, `lockfile` the file's I/O,
//! `status` the outcomes and errors, `handles` the handle table, `fork_safe`
//! and `lifecycle` what keeps it all usable across fork and at exit, and
//! `ffi` the thin C boundary over all of them. The design, the C API's rules
//! included, is in docs/ (docs/README.md).

// cbindgen writes the header in this order: status codes, flags, states,
// scopes and primitives.
pub mod status;
pub mod lock;
pub mod record;
pub mod identity;
pub mod holder;
pub mod fs;
mod kernel_lock;
mod lockfile;
mod handles;
mod fork_safe;
mod ladder;
mod lease;
mod lifecycle;
mod wait;
pub mod ffi;

pub use holder::{holder_info, Reading};
pub use lock::{acquire, Lock, Options, Outcome};
pub use record::{Record, State};
pub use status::{Error, Status};

#[cfg(test)]
mod header_test {
    /// The committed header must be what cbindgen makes of the source now:
    /// C and Fortran users compile against the committed one.
    #[test]
    fn committed_header_matches_generated() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/hpclock.h"));
        let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/hpclock.h");
        let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
        assert!(
            committed == generated,
            "include/hpclock.h differs from what cbindgen generates from src/: run `make header` and commit it"
        );
    }
}

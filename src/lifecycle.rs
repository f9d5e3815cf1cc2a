//! What the library owes a C program's lifecycle: it may be called at any
//! moment — from an `atexit` handler, a C++ static destructor, a thread-local
//! destructor, a child forked while other threads were inside hpclock.
//!
//! Two things must be in place before any thread can be inside hpclock, so
//! they are set up by a constructor when the library is loaded (glibc runs
//! `.init_array` entries before `main`, or inside `dlopen`, single-threaded
//! as far as this library is concerned):
//! - fork handlers (pthread_atfork) that keep the handle table consistent
//!   across `fork` and make a child forget its parent's cached start time;
//! - the page where the pid is cached, which the kernel zeroes in a child
//!   (`identity::pid`);
//! - the panic hook that keeps a caught panic silent (`ffi`).
//!
//! The rest of the library holds no lock across a system call and
//! initialises nothing lazily behind a lock (see `fork_safe`), and its thread-local
//! state has no destructor, so it stays usable after the C runtime has begun
//! tearing a thread or the process down.
//!
//! A Rust program that links the rlib and never references the C boundary
//! may leave the constructor's object out; then the first hpclock call does
//! the same set-up (`ensure_initialised`).

use std::sync::atomic::{AtomicBool, Ordering};

static INITIALISED: AtomicBool = AtomicBool::new(false);

// The process-wide mutexes, always taken in this order and never nested
// elsewhere: the handle table, then the registry of leases being renewed.
extern "C" fn before_fork() {
    crate::handles::TABLE.hold_for_fork();
    crate::lease::REGISTRY.hold_for_fork();
}

extern "C" fn after_fork_in_parent() {
    crate::lease::REGISTRY.release_after_fork(|_| {});
    crate::handles::TABLE.release_after_fork(|_| {});
}

extern "C" fn after_fork_in_child() {
    // A child holds nothing: its copies of the parent's leases are not its
    // to renew, and the parent's renewal thread does not exist here.
    crate::lease::REGISTRY.release_after_fork(crate::lease::forget_in_child);
    crate::handles::TABLE.release_after_fork(|_| {});
    crate::identity::forget_own_start_time();
    crate::wait::forget_in_child();
}

/// Idempotent: only the first caller registers anything.
pub(crate) fn ensure_initialised() {
    if INITIALISED.load(Ordering::Acquire) || INITIALISED.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: registering plain extern "C" functions that take no locks but
    // the table's own.
    unsafe {
        libc::pthread_atfork(Some(before_fork), Some(after_fork_in_parent), Some(after_fork_in_child));
    }
    crate::identity::set_up_pid_cache();
    crate::ffi::install_panic_hook();
}

extern "C" fn on_load() {
    ensure_initialised();
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

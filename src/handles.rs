//! The process-wide table behind `hpclock_handle`: small integers that are
//! never reused, so a double release or a made-up handle is found out and
//! answered HPCLOCK_E_INVALID instead of touching someone else's lock.

use crate::fork_safe::ForkSafeMutex;
use crate::lock::Lock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

// BTreeMap::new is const and needs no random seed: the table exists from
// load time, with nothing to initialise lazily. Locks are boxed: a tree node
// holds eleven entries, and eleven unboxed locks made a 6 KiB node that was
// allocated and freed on every acquire and release of a lone lock.
pub(crate) static TABLE: ForkSafeMutex<BTreeMap<u64, Box<Lock>>> = ForkSafeMutex::new(BTreeMap::new());
/// 0 is never a valid handle.
static NEXT: AtomicU64 = AtomicU64::new(1);

pub fn insert(lock: Lock) -> u64 {
    let handle = NEXT.fetch_add(1, Ordering::Relaxed);
    let lock = Box::new(lock); // allocated before the table is held
    TABLE.lock().insert(handle, lock);
    handle
}

/// Takes the lock out of the table: whoever gets it is the only one who can
/// release it, so two threads releasing one handle cannot both do so.
pub fn take(handle: u64) -> Option<Box<Lock>> {
    TABLE.lock().remove(&handle)
}

/// Takes the lock out only if `allowed` says yes; otherwise it stays, and the
/// refusal is returned.
pub fn take_if<E>(handle: u64, allowed: impl FnOnce(&Lock) -> Result<(), E>) -> Option<Result<Box<Lock>, E>> {
    let mut locks = TABLE.lock();
    let verdict = allowed(locks.get(&handle)?);
    Some(verdict.map(|()| locks.remove(&handle).expect("present under the same guard")))
}

/// `f` runs with the table held: it must make no system call.
pub fn with<R>(handle: u64, f: impl FnOnce(&Lock) -> R) -> Option<R> {
    TABLE.lock().get(&handle).map(|lock| f(lock))
}

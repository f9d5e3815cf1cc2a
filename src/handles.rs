//! The process-wide table behind `hpclock_handle`: small integers that are
//! never reused, so a double release or a made-up handle is found out and
//! answered HPCLOCK_E_INVALID instead of touching someone else's lock.

use crate::lock::Lock;
use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

static TABLE: Lazy<Mutex<HashMap<u64, Lock>>> = Lazy::new(|| Mutex::new(HashMap::new()));
/// 0 is never a valid handle.
static NEXT: AtomicU64 = AtomicU64::new(1);

/// The table is only held for a map operation, never across a system call, so
/// that a fork from another thread is unlikely to catch it held.
fn table() -> MutexGuard<'static, HashMap<u64, Lock>> {
    // A panic while holding it cannot leave the map half-changed.
    TABLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn insert(lock: Lock) -> u64 {
    let handle = NEXT.fetch_add(1, Ordering::Relaxed);
    table().insert(handle, lock);
    handle
}

/// Takes the lock out of the table: whoever gets it is the only one who can
/// release it, so two threads releasing one handle cannot both do so.
pub fn take(handle: u64) -> Option<Lock> {
    table().remove(&handle)
}

pub fn with<R>(handle: u64, f: impl FnOnce(&Lock) -> R) -> Option<R> {
    table().get(&handle).map(f)
}

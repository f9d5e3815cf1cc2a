//! Process-wide state that a `fork` from another thread cannot wedge.
//!
//! [`Published`]: a value computed once per process and then shared, without
//! a lock. `std::sync::OnceLock` and `once_cell::Lazy` block other threads while one
//! computes the value. If a C program forks while that thread is inside, the
//! child inherits a cell that says "being initialised" and no thread that will
//! ever finish it: the child's first hpclock call hangs (seen with a child
//! forked from a multithreaded parent). Here every thread that finds the cell
//! empty computes the value itself and tries to publish it with one
//! compare-and-swap; a loser drops its copy and uses the winner's. Nothing is
//! ever held, so a fork at any instant leaves a usable cell.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicPtr, Ordering};

pub(crate) struct Published<T> {
    value: AtomicPtr<T>,
}

impl<T> Published<T> {
    pub(crate) const fn new() -> Published<T> {
        Published { value: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// `compute` may run more than once (in racing threads); it must have no
    /// effect but its result.
    pub(crate) fn get_or_init(&self, compute: impl FnOnce() -> T) -> &T {
        let current = self.value.load(Ordering::Acquire);
        if !current.is_null() {
            // SAFETY: a published pointer is never freed or replaced.
            return unsafe { &*current };
        }
        let mine = Box::into_raw(Box::new(compute()));
        match self.value.compare_exchange(std::ptr::null_mut(), mine, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: we just published it, and it is never freed.
            Ok(_) => unsafe { &*mine },
            Err(theirs) => {
                // SAFETY: `mine` was never shared.
                drop(unsafe { Box::from_raw(mine) });
                unsafe { &*theirs }
            }
        }
    }
}

// SAFETY: the cell hands out shared references to a value it never changes.
unsafe impl<T: Send + Sync> Sync for Published<T> {}

/// A plain pthread mutex around a value, which the fork handlers of
/// `lifecycle` take before a fork and give back after it, in parent and child
/// alike ([`ForkSafeMutex::hold_for_fork`]). Without that, a child forked
/// while another thread holds it would inherit it locked by a thread that
/// does not exist in the child, and its first hpclock call would hang
/// (pthread_atfork(3)). Held only for a few memory operations, never across a
/// system call, so a fork never waits long.
pub(crate) struct ForkSafeMutex<T> {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is touched only while `mutex` is held.
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}

pub(crate) struct Guard<'a, T> {
    owner: &'a ForkSafeMutex<T>,
}

impl<T> ForkSafeMutex<T> {
    pub(crate) const fn new(value: T) -> ForkSafeMutex<T> {
        ForkSafeMutex { mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER), value: UnsafeCell::new(value) }
    }

    pub(crate) fn lock(&self) -> Guard<'_, T> {
        crate::lifecycle::ensure_initialised();
        // SAFETY: a statically initialised default mutex.
        unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
        Guard { owner: self }
    }

    /// Before fork: wait until no thread is inside, and keep it so.
    pub(crate) fn hold_for_fork(&self) {
        unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
    }

    /// After fork, in the parent and in the child: the forking thread took
    /// the mutex in `hold_for_fork`, and in the child it is that thread's copy
    /// that gives it back. `in_child` may change the value first.
    pub(crate) fn release_after_fork(&self, in_child: impl FnOnce(&mut T)) {
        // SAFETY: the forking thread holds the mutex.
        in_child(unsafe { &mut *self.value.get() });
        unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
    }
}

impl<T> std::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the mutex.
        unsafe { &*self.owner.value.get() }
    }
}

impl<T> std::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the mutex.
        unsafe { &mut *self.owner.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // Also on a panic inside: the value stays usable.
        unsafe { libc::pthread_mutex_unlock(self.owner.mutex.get()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn racing_threads_all_see_the_one_published_value() {
        static CELL: Published<usize> = Published::new();
        static COMPUTED: AtomicUsize = AtomicUsize::new(0);
        let seen: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| s.spawn(move || *CELL.get_or_init(|| { COMPUTED.fetch_add(1, Ordering::SeqCst); i })))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(seen.iter().all(|&v| v == seen[0]), "{seen:?}");
        assert!(COMPUTED.load(Ordering::SeqCst) >= 1);
        assert_eq!(*CELL.get_or_init(|| 99), seen[0]);
    }
}

//! Timed waits for a kernel lock someone else holds (docs/protocol.md#waiting):
//! how often to try again, and what to sleep on in between.
//!
//! - **Node-private filesystems** (ext4, xfs, tmpfs, …): every process that
//!   can hold the lock runs on this node, so this node's kernel sees every
//!   release. The waiter sleeps on inotify events of the locked inode and
//!   tries again at once when one fires: a release (hpclock writes the record,
//!   unlocks, then closes), a crash (the kernel closes the holder's
//!   descriptors) and `flock(1)` (it closes) all end with a close. The watch is
//!   made on `/proc/self/fd/N`, so it is the inode we hold open, whatever the
//!   path names meanwhile. A close is seen only when it is the last of its
//!   open file description: when a forked child (the waiter itself, often)
//!   still has the holder's descriptor, hpclock's release shows only as the
//!   write of its record, which comes microseconds *before* the unlock; so a
//!   write wakes the waiter too, and a try that fails after any event is
//!   followed by quick ones (from [`QUICK_POLL`], doubling). An unlock without
//!   a close or a write (`fcntl.flock(f, LOCK_UN)`) makes no event at all, so
//!   the waiter also polls, the interval doubling up to [`EVENT_FALLBACK_MAX`].
//!   Without inotify (no /proc, the per-user limit of inotify instances
//!   reached) it polls as 0.1 did, from 1 ms growing to [`NO_EVENT_MAX`].
//! - **Shared filesystems** (NFS, Lustre, GPFS, CephFS, BeeGFS, FUSE, …):
//!   another node's release makes no event here, and each try is a request
//!   to a server, so the waiter polls gently: from 2 ms, doubling, and from
//!   the first second on never more often than every [`SHARED_FLOOR`] (at
//!   most 10 tries a second), the interval growing with the time already
//!   waited (an eighth of it) up to [`SHARED_CEILING`] (one try a second
//!   after 8 s). Each interval is stretched by a random 0–25 %, so a job
//!   array's waiters, started together, do not try together.
//!
//! Deadlines are exact on CLOCK_MONOTONIC (`Instant`): the wait ends only when
//! the deadline has passed, after a last try. Sleeps interrupted by a signal
//! (EINTR) go on for what is left. No thread. The watch is one-shot: the
//! kernel removes it with its first event, and the wait removes it on every
//! other way out; the inotify instance itself (an O_CLOEXEC descriptor)
//! is kept idle for the next wait, because closing one costs the kernel's
//! grace period (see [`Watch`]): at most [`IDLE_SLOTS`] per process, tagged
//! with its pid so that a forked child never uses its parent's, and nothing
//! else is kept. Waits without a limit block in the kernel instead
//! (`lock::wait_for_lock`): its own wake-up is the fastest hand-off there is.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the lock file is, as far as waiting is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// All holders are processes of this node (fs::is_node_private).
    NodePrivate,
    /// Holders may be on other nodes, and each try may cost a server request.
    Shared,
}

/// First interval of every schedule but the shared one.
const FIRST_POLL: Duration = Duration::from_millis(1);
/// After an event whose try failed: the holder's write came, its unlock is
/// microseconds away.
pub(crate) const QUICK_POLL: Duration = Duration::from_micros(50);
/// Node-private, with inotify: the polls that catch releases without an event.
pub(crate) const EVENT_FALLBACK_MAX: Duration = Duration::from_millis(50);
/// Node-private, without inotify: as 0.1 polled (hand-off ≈ 2.5 ms).
pub(crate) const NO_EVENT_MAX: Duration = Duration::from_millis(5);
/// Shared filesystems: the first interval…
const SHARED_FIRST: Duration = Duration::from_millis(2);
/// …never less than this once the first second is over (≤ 10 tries a second)…
pub(crate) const SHARED_FLOOR: Duration = Duration::from_millis(100);
/// …and never more than this (before the jitter).
pub(crate) const SHARED_CEILING: Duration = Duration::from_secs(1);
/// Until then the shared schedule may be faster than the floor.
const SHARED_QUICK_PERIOD: Duration = Duration::from_secs(1);

/// The events after which a try may succeed: the last close of a
/// descriptor, read-only (flock(1), Python's open) or not; a write (hpclock's
/// release writes its record just before it unlocks, and that write is all a
/// waiter sees when the holder's descriptor lives on in a forked child);
/// attribute changes, renames and deletion of the inode (it is being replaced).
/// One-shot: the kernel removes the watch with its first event, so a waiter
/// that an event woke and whose try then succeeds has no watch left to
/// remove (inotify_rm_watch cost 8 to 15 µs of a hand-off on the
/// development VM); one whose try fails arms a new one.
const EVENTS: u32 = libc::IN_CLOSE_WRITE | libc::IN_CLOSE_NOWRITE | libc::IN_MODIFY | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_ONESHOT;

/// Tries `attempt` until it answers true (Ok(true)) or `deadline` has passed
/// (Ok(false), after a last try at or past the deadline). `fd` is the lock
/// file's descriptor, watched on node-private filesystems. The first try is
/// made before the first sleep: the caller's own try came before the watch
/// existed, and a release between the two would otherwise wait for a poll.
pub(crate) fn wait_until<E>(fd: &OwnedFd, reach: Reach, deadline: Instant,
                            mut attempt: impl FnMut() -> Result<bool, E>) -> Result<bool, E> {
    let mut watch = match reach {
        Reach::NodePrivate => Watch::on(fd),
        Reach::Shared => None,
    };
    let started = Instant::now();
    let mut schedule = Schedule::new(reach, watch.is_some(), started);
    // When the last try began: the caller's own came before this wait.
    let mut last_try = started;
    if watch.is_some() && attempt()? {
        return Ok(true);
    }
    let mut next_poll = schedule.first_poll();
    loop {
        let now = Instant::now();
        if now >= deadline {
            if last_try >= deadline {
                return Ok(false);
            }
            // The deadline passed before a try could be made at or after it
            // (a short timeout, a slow moment): one last try, then BUSY.
            return attempt();
        }
        let wake_at = next_poll.min(deadline);
        let event = match &mut watch {
            Some(watch) => watch.wait_until(wake_at),
            None => {
                sleep_until(wake_at);
                false
            }
        };
        let now = Instant::now();
        if now >= next_poll {
            next_poll = schedule.next_poll(now);
        }
        last_try = now;
        if attempt()? {
            return Ok(true);
        }
        if event {
            next_poll = schedule.quick(Instant::now());
            if let Some(watch) = &mut watch {
                watch.arm(); // if it cannot be, the polls go on alone
            }
        }
    }
}

/// When to try again without an event.
pub(crate) struct Schedule {
    reach: Reach,
    events: bool,
    started: Instant,
    interval: Duration,
    jitter: u64,
}

impl Schedule {
    pub(crate) fn new(reach: Reach, events: bool, started: Instant) -> Schedule {
        let first = if reach == Reach::Shared { SHARED_FIRST } else { FIRST_POLL };
        // Any bits will do, but each waiter its own: the jitter is what keeps
        // a thousand waiters that started together from trying together.
        let jitter = crate::identity::nonce() | 1;
        Schedule { reach, events, started, interval: first, jitter }
    }

    fn first_poll(&mut self) -> Instant {
        self.started + self.stretch(self.interval)
    }

    /// The next poll, from `now` (a poll was due).
    pub(crate) fn next_poll(&mut self, now: Instant) -> Instant {
        self.interval = self.grow(now.saturating_duration_since(self.started));
        now + self.stretch(self.interval)
    }

    /// After an event whose try failed: poll again soon, then less and less.
    fn quick(&mut self, now: Instant) -> Instant {
        self.interval = QUICK_POLL;
        now + QUICK_POLL
    }

    /// The interval after the current one, `waited` into the wait.
    fn grow(&self, waited: Duration) -> Duration {
        let doubled = self.interval.saturating_mul(2);
        match (self.reach, self.events) {
            (Reach::NodePrivate, true) => doubled.min(EVENT_FALLBACK_MAX),
            (Reach::NodePrivate, false) => doubled.min(NO_EVENT_MAX),
            (Reach::Shared, _) => {
                // An eighth of the time waited: a long wait costs at most an
                // eighth more at its end, and asks the server less and less.
                let ceiling = (waited / 8).clamp(SHARED_FLOOR, SHARED_CEILING);
                if waited >= SHARED_QUICK_PERIOD { ceiling } else { doubled.min(ceiling) }
            }
        }
    }

    /// Shared filesystems: the interval plus a random 0–25 %.
    fn stretch(&mut self, interval: Duration) -> Duration {
        if self.reach != Reach::Shared {
            return interval;
        }
        // xorshift64
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        interval + interval.mul_f64((self.jitter >> 11) as f64 / (1u64 << 53) as f64 / 4.0)
    }
}

/// Sleeps until `when` (CLOCK_MONOTONIC). std's sleep goes on after EINTR
/// for what is left.
fn sleep_until(when: Instant) {
    let left = when.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}

/// An inotify instance watching one lock file's inode, for one wait.
///
/// Instances are kept for the next wait rather than closed: closing an
/// inotify instance that ever had a watch waits for an SRCU grace period in
/// the kernel (fsnotify_destroy_group → fsnotify_wait_marks_destroyed), 5 to
/// 8 ms measured on the development VM — longer than the whole hand-off is
/// meant to take, and it would come after we already hold the lock. So a
/// process keeps up to [`IDLE_SLOTS`] idle instances (one, unless threads wait
/// at the same time), each an O_CLOEXEC descriptor with no watch left on it
/// (a watch would pin the inode); a wait takes one, or makes one.
///
/// Fork: the slots hold the creating process's pid beside the descriptor. A
/// forked child shares its parent's instances (the same open file
/// description), so it never uses an instance it did not make: entries of
/// another pid count as empty, and are overwritten but never closed (in the
/// child, that number may by now name another file). And a program may close
/// descriptors it did not open (a daemon's close-everything loop): an idle
/// instance is used again only if its number still names an inotify instance,
/// close-on-exec and without a watch, as ours are; otherwise it is forgotten,
/// never read from or closed.
struct Watch {
    fd: libc::c_int,
    /// The armed watch, -1 once its event came (or arming failed).
    wd: libc::c_int,
    /// `/proc/self/fd/N` of the lock file: the inode we hold open, whatever
    /// the path names meanwhile.
    lock: [u8; 40],
}

/// Idle instances: (pid << 32) | descriptor, 0 for none (a pid is never 0).
const IDLE_SLOTS: usize = 4;
static IDLE: [AtomicU64; IDLE_SLOTS] = [const { AtomicU64::new(0) }; IDLE_SLOTS];

fn tag(pid: u32, fd: libc::c_int) -> u64 {
    (u64::from(pid) << 32) | u64::from(fd as u32)
}

/// After a fork, in the child (`lifecycle`'s handler; the pid check would do
/// the same work later): forget the parent's instances, so that the child's
/// own can take their slots. Not closed: closing an instance that ever had a
/// watch waits for a kernel grace period, and every fork of the host program
/// would pay it; they are close-on-exec. Async-signal-safe: atomic stores only.
pub(crate) fn forget_in_child() {
    for slot in &IDLE {
        slot.store(0, Ordering::Relaxed);
    }
}

impl Watch {
    /// None when inotify cannot be had (then the wait polls): no /proc, or
    /// the per-user limits (fs.inotify.max_user_instances, 128 by default,
    /// and max_user_watches) are reached.
    fn on(lock: &OwnedFd) -> Option<Watch> {
        let me = crate::identity::pid() as u32;
        let fd = IDLE
            .iter()
            .find_map(|slot| {
                let seen = slot.load(Ordering::Acquire);
                let ours = seen != 0 && (seen >> 32) as u32 == me;
                (ours && slot.compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok())
                    .then_some((seen & 0xffff_ffff) as u32 as libc::c_int)
                    .filter(|&fd| still_an_idle_instance(fd))
            })
            .or_else(|| {
                let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
                (fd >= 0).then_some(fd)
            })?;
        let mut watch = Watch { fd, wd: -1, lock: proc_path(b"/proc/self/fd/", lock.as_raw_fd()) };
        // On failure the instance goes back idle (Drop), and the wait polls.
        watch.arm().then_some(watch)
    }

    /// A new one-shot watch. Events left from before (the last wait's, the
    /// event that fired the last watch, the IN_IGNORED of its removal) are
    /// stale: dropped before the new watch exists.
    fn arm(&mut self) -> bool {
        drain(self.fd);
        self.wd = unsafe { libc::inotify_add_watch(self.fd, self.lock.as_ptr().cast(), EVENTS) };
        self.wd >= 0
    }

    /// Sleeps until the watch fires (true: the kernel removed it, and its
    /// event is left queued — reading it now would only delay the try) or
    /// `until` passes (false).
    fn wait_until(&mut self, until: Instant) -> bool {
        if self.wd < 0 {
            sleep_until(until);
            return false;
        }
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let timeout = libc::timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            let mut poll = libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 };
            let ready = unsafe { libc::ppoll(&mut poll, 1, &timeout, std::ptr::null()) };
            if ready > 0 {
                self.wd = -1;
                return true;
            }
            if ready == 0 {
                return false;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                // ENOMEM and the like: sleep instead; the poll still comes.
                sleep_until(until);
                return false;
            }
        }
    }
}

impl Drop for Watch {
    /// Every way out of a wait: the watch is removed (removal does not wait
    /// for the kernel's grace period; only closing the instance would) and the
    /// instance goes back idle, or is closed if every slot is taken.
    fn drop(&mut self) {
        if self.wd >= 0 {
            unsafe { libc::inotify_rm_watch(self.fd, self.wd) };
        }
        let me = crate::identity::pid() as u32;
        let mine = tag(me, self.fd);
        for slot in &IDLE {
            let seen = slot.load(Ordering::Acquire);
            let free = seen == 0 || (seen >> 32) as u32 != me;
            if free && slot.compare_exchange(seen, mine, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return;
            }
        }
        unsafe { libc::close(self.fd) };
    }
}

/// `prefix` and the descriptor number, NUL-terminated.
fn proc_path(prefix: &[u8], fd: libc::c_int) -> [u8; 40] {
    let mut path = [0u8; 40];
    path[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, &d) in digits[..len].iter().rev().enumerate() {
        path[prefix.len() + i] = d;
    }
    path
}

/// Whether `fd` still is an idle instance of ours: close-on-exec, an inotify
/// instance, and no watch on it (`/proc/self/fdinfo` lists an instance's
/// watches as `inotify wd:` lines).
fn still_an_idle_instance(fd: libc::c_int) -> bool {
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || flags & libc::FD_CLOEXEC == 0 {
        return false;
    }
    let mut target = [0u8; 32];
    let link = proc_path(b"/proc/self/fd/", fd);
    let n = unsafe { libc::readlink(link.as_ptr().cast(), target.as_mut_ptr().cast(), target.len()) };
    if n < 0 || &target[..n as usize] != b"anon_inode:inotify" {
        return false;
    }
    let info = proc_path(b"/proc/self/fdinfo/", fd);
    let Ok(text) = std::fs::read(std::ffi::CStr::from_bytes_until_nul(&info).map_or("", |c| c.to_str().unwrap_or("")))
    else {
        return false;
    };
    !text.split(|&b| b == b'\n').any(|line| line.starts_with(b"inotify wd:"))
}

/// Reads and drops every queued event (the descriptor is non-blocking).
fn drain(fd: libc::c_int) {
    // Big enough for any event (a watched file's events carry no name).
    let mut buf = [0u8; 4096];
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            continue;
        }
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return; // EAGAIN: nothing more
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls in each second of a wait of `seconds`, by the schedule alone.
    fn polls_per_second(reach: Reach, events: bool, seconds: u64) -> Vec<u32> {
        let start = Instant::now();
        let mut schedule = Schedule::new(reach, events, start);
        let mut counts = vec![0u32; seconds as usize];
        let mut at = schedule.first_poll();
        while at < start + Duration::from_secs(seconds) {
            counts[(at - start).as_secs() as usize] += 1;
            at = schedule.next_poll(at);
        }
        counts
    }

    #[test]
    fn shared_waits_try_at_most_10_times_a_second_after_the_first() {
        for _ in 0..50 {
            let counts = polls_per_second(Reach::Shared, false, 30);
            assert!(counts[0] <= 20, "{counts:?}");
            assert!(counts[1..].iter().all(|&n| n <= 10), "{counts:?}");
            assert!(counts[20..].iter().all(|&n| n <= 1), "a long wait slows to one try a second: {counts:?}");
            assert!(counts[..4].iter().all(|&n| n >= 1), "{counts:?}");
        }
    }

    #[test]
    fn node_private_fallback_polls_are_capped() {
        let counts = polls_per_second(Reach::NodePrivate, true, 3);
        assert!(counts[1] >= 1000 / EVENT_FALLBACK_MAX.as_millis() as u32 - 1, "{counts:?}");
        assert!(counts[1] <= 1000 / EVENT_FALLBACK_MAX.as_millis() as u32 + 1, "{counts:?}");
        let counts = polls_per_second(Reach::NodePrivate, false, 3);
        assert!(counts[1] <= 1000 / NO_EVENT_MAX.as_millis() as u32 + 1, "{counts:?}");
    }

    #[test]
    fn jitter_spreads_waiters_that_start_together() {
        let start = Instant::now();
        let firsts: std::collections::HashSet<Instant> = (0..20)
            .map(|_| {
                let mut s = Schedule::new(Reach::Shared, false, start);
                let mut at = s.first_poll();
                for _ in 0..12 {
                    at = s.next_poll(at);
                }
                at
            })
            .collect();
        assert!(firsts.len() > 15, "waiters that started together poll together");
    }
}

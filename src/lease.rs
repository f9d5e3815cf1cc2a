//! The lease: exclusion across nodes where the kernel's locks stop at the
//! node (Lustre `localflock` or no `flock`, BeeGFS by default, NFS `nolock`
//! or `local_lock`), built on the ladder of `ladder` and on no clock shared
//! between nodes. The rules, and why each is there:
//!
//! 1. Take over only by creating the next rung (O_EXCL). EEXIST means someone
//!    else moved first: read again; never delete and retry.
//! 2. After winning rung r+1, list the ladder: a rung above r+1 means our
//!    view was stale (NFS caches lookups), and our rung says nothing: BUSY.
//! 3. The holder renews every lease/3 by creating the next rung itself; a
//!    failed create (EEXIST) or a higher rung in the listing means it was
//!    taken over. Whatever the cause, a holder whose last successful renewal
//!    *began* a lease ago (less a margin) on its own monotonic clock is LOST.
//! 4. A holder on this node (same host and boot id) is dead when its pid
//!    with its start time is gone. One on another node is dead only when we
//!    have watched the top rung stay the same for a whole lease — its own
//!    lease — on our monotonic clock. Because the holder judges itself LOST
//!    a lease after its last renewal began, and we first saw that renewal's
//!    rung after it began, it has given up before we take over. Wall clocks
//!    only decide how long a one-try call looks, never who holds the lock.
//! 5. Only a holder prunes, and only below its own rung minus one.
//! 6. Release and done are rungs too.
//! 7. Renewal runs in one thread per process while it holds a lease.
//! 8. `check` answers from what renewal learned and from the clock.

use crate::fork_safe::ForkSafeMutex;
use crate::fs::Primitive;
use crate::identity;
use crate::kernel_lock;
use crate::ladder::{Created, Ladder, RungView};
use crate::record::{LeaseFields, Record, State};
use crate::status::{quote_path, Error};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// hpclock_options.lease_ms = 0 means this: renewal every 20 s, one create,
/// one listing of a small directory and one unlink per renewal.
pub(crate) const DEFAULT_LEASE_MS: i64 = 60_000;
/// Shorter leases renew faster than a metadata server should be asked to.
pub(crate) const MIN_LEASE_MS: i64 = 100;

const NS_PER_MS: u64 = 1_000_000;

/// The margin of rule 3, a tenth of the lease: monotonic clocks of two nodes
/// may run at slightly different rates, and the holder must give up before
/// an observer's lease of watching is over.
fn margin_ns(lease_ms: i64) -> u64 {
    lease_ms as u64 * NS_PER_MS / 10
}

/// How often a watcher looks again: a tenth of the lease, between 100 ms and
/// 2 s (each look is a listing and a read on the metadata server, so at most
/// 10 looks a second, the goal of every shared-filesystem wait: `wait`),
/// stretched by a random 0–25 % so that waiters started together (a job
/// array) do not look together. A watcher must see the top rung unchanged
/// for a whole lease (rule 4): looking less often only makes it look longer.
fn poll_interval(lease_ms: i64) -> Duration {
    let base = Duration::from_millis((lease_ms / 10).clamp(100, 2000) as u64);
    let jitter = (identity::nonce() >> 11) as f64 / (1u64 << 53) as f64 / 4.0;
    base + base.mul_f64(jitter)
}

/// What a caller wants from a climb.
pub(crate) struct Climb<'a> {
    /// The record to write in our rung (state held); its generation and
    /// lease fields are filled in by the climb.
    pub mine: &'a Record,
    /// The lock file's own record, as judged under its kernel lock: the
    /// ladder's generations must exceed its own, so tokens never go back when
    /// a lock changes mode; and while the ladder is empty it is the one that
    /// says free, held or done.
    pub lock_file_record: &'a Record,
    pub lease_ms: i64,
    pub ignore_done: bool,
    /// 0: one try; < 0: wait without limit.
    pub timeout_ms: i64,
    pub deadline: Option<Instant>,
}

pub(crate) enum Climbed {
    /// We created the top rung: we hold the lease. `previous` is the top
    /// rung we climbed over (STALE: its holder was judged dead).
    Won { rung: u64, record: Record, began_ns: u64, previous: Record },
    Busy { why: String },
    Done(Record),
}

/// The top rung as judged now.
enum Verdict {
    /// Nobody holds it: free, done with IGNORE_DONE, or its holder is dead.
    /// `previous` is the top as found, `generation` the highest seen.
    Free { generation: u64, previous: Record },
    Done(Record),
    /// Held, and not to be taken over now; `recent`: a one-try call need not
    /// watch (the holder lives on this node, or renewed recently by the
    /// clocks of both nodes).
    Held { why: String, recent: bool },
}

/// The top rung we have been watching since `since_ns` (our monotonic clock).
struct Watch {
    rung: u64,
    since_ns: u64,
}

fn same_node(record: &Record) -> bool {
    !record.host.is_empty()
        && record.host == identity::host().as_bytes()
        && !record.boot_id.is_empty()
        && record.boot_id == identity::boot_id().as_bytes()
}

/// Rules 1 and 4 applied to the top rung `top` as read now. `unreadable_lease`
/// is the lease to watch an empty or torn top rung for.
fn judge(view: &RungView, top: u64, climb: &Climb, watch: &mut Option<Watch>, unreadable_lease: i64) -> Verdict {
    let now = identity::monotonic_ns();
    let floor = climb.lock_file_record.generation;
    let (lease_ms, generation, renewed, mut previous) = match view {
        RungView::Missing => {
            let record = climb.lock_file_record.clone();
            if record.state == State::Done && !climb.ignore_done {
                return Verdict::Done(record);
            }
            return Verdict::Free { generation: floor, previous: record };
        }
        RungView::Record(record) => {
            let generation = record.generation.max(floor);
            match record.state {
                State::Free | State::Stale => return Verdict::Free { generation, previous: record.clone() },
                State::Done if climb.ignore_done => return Verdict::Free { generation, previous: record.clone() },
                State::Done => return Verdict::Done(record.clone()),
                State::Held => {}
            }
            if same_node(record) {
                if crate::holder::liveness(record) == 1 {
                    return Verdict::Held {
                        why: format!("held by pid {} on this node, which is running (rule 4)", record.pid),
                        recent: true,
                    };
                }
                // Rule 4: a holder on this node is dead when its pid with
                // its start time is gone.
                let previous = Record { state: State::Stale, alive: 0, ..record.clone() };
                return Verdict::Free { generation, previous };
            }
            let lease = record.lease.as_ref().map_or(DEFAULT_LEASE_MS, |l| l.lease_ms.max(MIN_LEASE_MS));
            (lease, generation, record.lease.as_ref().map(|l| l.renewed_unix_ms), record.clone())
        }
        // An empty or torn rung: a holder that renews nothing, judged like
        // one on a dead node, for a lease that is not in it (see climb).
        RungView::Unreadable { max_generation, .. } => {
            let generation = (*max_generation).max(floor);
            (unreadable_lease, generation, None, Record { state: State::Held, generation, ..Record::default() })
        }
    };
    // The top moved while we watched: a renewal (or a take-over) was seen,
    // so someone there is alive; a one-try call answers BUSY now.
    let moved = watch.as_ref().is_some_and(|w| w.rung != top);
    let since = match watch {
        Some(w) if w.rung == top => w.since_ns,
        _ => {
            *watch = Some(Watch { rung: top, since_ns: now });
            now
        }
    };
    let watched_ms = (now - since) / NS_PER_MS;
    if watched_ms >= lease_ms as u64 {
        // Rule 4: unchanged for a whole lease of the holder's, on our clock.
        previous.state = State::Stale;
        previous.alive = -1;
        return Verdict::Free { generation, previous };
    }
    // Wall clocks decide only how long a one-try call looks: a renewal that
    // looks recent means BUSY at once; one that looks older than two leases
    // (a dead node, or a clock that is off) is watched for a lease.
    let age_ms = renewed.map(|at| identity::now_unix_ms().saturating_sub(at));
    let recent = moved || age_ms.is_some_and(|age| age < 2 * lease_ms);
    let what = match (view, age_ms) {
        (RungView::Unreadable { why, .. }, _) => format!("rung {top} is unreadable ({why})"),
        (_, Some(age)) => format!("held by pid {} on {}: its rung {top} was written {:.1} s ago by its clock",
                                  previous.pid, String::from_utf8_lossy(&previous.host), age as f64 / 1000.0),
        _ => format!("rung {top}"),
    };
    Verdict::Held {
        why: format!("{what}; watched {watched_ms} of the {lease_ms} ms it must stay unchanged before a take-over \
                      (rule 4)"),
        recent,
    }
}

/// A fresh token: who we are and a random nonce (see `LeaseFields::token`).
fn token() -> Vec<u8> {
    let host: String = identity::host().chars().filter(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c)).take(64).collect();
    let pid = identity::pid();
    format!("{host}/{}/{pid}/{}/{:016x}", identity::boot_id(), identity::own_start_time(pid), identity::nonce()).into_bytes()
}

/// Climbs the ladder: takes the lease if the top rung allows it (rules 1, 2
/// and 4), or says why not.
pub(crate) fn climb(ladder: &Ladder, climb: &Climb) -> Result<Climbed, Error> {
    let mut watch: Option<Watch> = None;
    loop {
        let rungs = ladder.rungs()?;
        let top = rungs.last().copied().unwrap_or(0);
        let view = if top == 0 { RungView::Missing } else { ladder.read(top)? };
        if top > 0 && view == RungView::Missing {
            continue; // pruned between the listing and the read: the ladder moved on
        }
        // An unreadable top rung says nothing of its writer's lease; the rung
        // below it (the top two always stay, rule 5) is most likely the same
        // holder's last renewal: watch for the longer of its lease and ours,
        // or a holder with a longer lease than ours, whose renewal write
        // failed, would be taken over while it still counts on its lease.
        let unreadable_lease = match (&view, rungs.len()) {
            (RungView::Unreadable { .. }, n) if n >= 2 => match ladder.read(rungs[n - 2])? {
                RungView::Record(below) => below.lease.as_ref().map_or(climb.lease_ms, |l| l.lease_ms.max(climb.lease_ms)),
                _ => climb.lease_ms,
            },
            _ => climb.lease_ms,
        };
        let (generation, previous) = match judge(&view, top, climb, &mut watch, unreadable_lease) {
            Verdict::Done(record) => return Ok(Climbed::Done(record)),
            Verdict::Free { generation, previous } => (generation, previous),
            Verdict::Held { why, recent } => {
                let lease = match &view {
                    RungView::Record(r) => r.lease.as_ref().map_or(climb.lease_ms, |l| l.lease_ms),
                    _ => climb.lease_ms,
                };
                if climb.timeout_ms == 0 && recent {
                    return Ok(Climbed::Busy { why });
                }
                if !pause(climb, poll_interval(lease)) {
                    return Ok(Climbed::Busy { why });
                }
                continue;
            }
        };
        let Some(generation) = generation.checked_add(1) else {
            return Err(Error::invalid(format!(
                "lease directory {} has used up its fencing tokens (generation {}): another acquisition would \
                 repeat one", quote_path(ladder.path()), u64::MAX)));
        };
        let next = next_rung(ladder, top)?;
        let record = Record {
            generation,
            lease: Some(LeaseFields {
                rung: next,
                lease_ms: climb.lease_ms,
                renewed_unix_ms: identity::now_unix_ms(),
                token: token(),
            }),
            ..climb.mine.clone()
        };
        let began_ns = identity::monotonic_ns();
        match ladder.create(next, &record)? {
            Created::Taken => continue, // someone moved first: read again
            Created::Mine => {}
        }
        // Rule 2: our create has just changed the directory, so even an NFS
        // client's listing of it is fresh.
        let rungs = ladder.rungs()?;
        if rungs.last().is_some_and(|&highest| highest > next) {
            let why = format!("rung {} exists above the rung {next} we created: our view of the ladder was stale \
                               (rule 2)", rungs.last().copied().unwrap_or(0));
            if climb.timeout_ms == 0 || !pause(climb, Duration::ZERO) {
                return Ok(Climbed::Busy { why });
            }
            continue;
        }
        ladder.prune_below(next.saturating_sub(1), &rungs);
        return Ok(Climbed::Won { rung: next, record, began_ns, previous });
    }
}

/// The rung above `rung`. A ladder at the top of the range was planted by
/// someone who may write the lease directory: refused, never wrapped to 0.
fn next_rung(ladder: &Ladder, rung: u64) -> Result<u64, Error> {
    rung.checked_add(1).ok_or_else(|| Error::invalid(format!(
        "lease directory {} holds rung {}, the top of the range: remove the directory to start again",
        quote_path(ladder.path()), u64::MAX)))
}

/// Sleeps up to `interval` within the caller's deadline; false when the
/// deadline has passed (or the call was one try).
fn pause(climb: &Climb, interval: Duration) -> bool {
    let sleep = match climb.deadline {
        _ if climb.timeout_ms < 0 => interval,
        Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => interval.min(left),
            _ => return false,
        },
        // One try: a caller that must watch (rule 4) watches, in steps.
        None => interval,
    };
    std::thread::sleep(sleep);
    true
}

// ---- a held lease ----

/// Why a lease is no longer ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Loss {
    None = 0,
    TakenOver = 1,
    HigherRung = 2,
    Lapsed = 3,
    LadderReplaced = 4,
}

impl Loss {
    fn from_u8(v: u8) -> Loss {
        match v {
            1 => Loss::TakenOver,
            2 => Loss::HigherRung,
            3 => Loss::Lapsed,
            4 => Loss::LadderReplaced,
            _ => Loss::None,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Loss::None => "",
            Loss::TakenOver => "the next rung was created by another process: the lock was taken over",
            Loss::HigherRung => "a higher rung appeared in the ladder: the lock was taken over",
            Loss::Lapsed => "no renewal succeeded for a whole lease (the process was stopped, starved, or the \
                             filesystem failed): others may have taken over",
            Loss::LadderReplaced => "the lease directory was removed or replaced: newcomers climb another ladder",
        }
    }
}

/// What changes while the lease is held, under its own mutex: renewal and
/// release must not both create the next rung. Never locked in a forked
/// child (a child holds nothing and renews nothing).
struct Progress {
    rung: u64,
    record: Record,
    finished: bool,
}

pub(crate) struct HeldLease {
    ladder: Ladder,
    lease_ms: i64,
    owner_pid: i64,
    /// The lock file's descriptor and its kernel lock, if the filesystem has
    /// one: released at once when the lease is lost, so that the node's
    /// other processes do not wait on a lock that guards nothing.
    kernel_lock: Option<(Arc<OwnedFd>, Primitive)>,
    progress: Mutex<Progress>,
    loss: AtomicU8,
    last_renewal_began_ns: AtomicU64,
    next_attempt_ns: AtomicU64,
    kernel_unlocked: AtomicBool,
}

impl HeldLease {
    pub(crate) fn new(ladder: Ladder, won_rung: u64, record: Record, began_ns: u64, lease_ms: i64,
                      kernel_lock: Option<(Arc<OwnedFd>, Primitive)>) -> Arc<HeldLease> {
        Arc::new(HeldLease {
            ladder,
            lease_ms,
            owner_pid: identity::pid(),
            kernel_lock,
            progress: Mutex::new(Progress { rung: won_rung, record, finished: false }),
            loss: AtomicU8::new(Loss::None as u8),
            last_renewal_began_ns: AtomicU64::new(began_ns),
            next_attempt_ns: AtomicU64::new(began_ns + renewal_period_ns(lease_ms)),
            kernel_unlocked: AtomicBool::new(false),
        })
    }

    pub(crate) fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    fn loss(&self) -> Loss {
        Loss::from_u8(self.loss.load(Ordering::Acquire))
    }

    fn expires_at_ns(&self) -> u64 {
        self.last_renewal_began_ns.load(Ordering::Acquire) + self.lease_ms as u64 * NS_PER_MS
            - margin_ns(self.lease_ms)
    }

    /// Marks the lease lost (the first reason stays) and lets go of the
    /// kernel lock at once.
    fn lose(&self, why: Loss) {
        let _ = self.loss.compare_exchange(Loss::None as u8, why as u8, Ordering::AcqRel, Ordering::Acquire);
        if let Some((fd, primitive)) = &self.kernel_lock {
            if !self.kernel_unlocked.swap(true, Ordering::AcqRel) && identity::pid() == self.owner_pid {
                let _ = kernel_lock::unlock(fd, *primitive);
            }
        }
    }

    /// Rule 8: OK while the lease is ours, from what renewal learned and the
    /// clock — LOST as soon as a lease (less the margin) has passed since the
    /// last successful renewal began, even before the renewal thread wakes.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.loss() == Loss::None && identity::monotonic_ns() >= self.expires_at_ns() {
            if identity::pid() == self.owner_pid {
                self.lose(Loss::Lapsed);
            } else {
                // A forked child renews nothing; its view lapses, the
                // parent's lease does not.
                return Err(self.lost_error(Loss::Lapsed));
            }
        }
        match self.loss() {
            Loss::None => Ok(()),
            loss => Err(self.lost_error(loss)),
        }
    }

    fn lost_error(&self, loss: Loss) -> Error {
        Error::lost(format!("the lease on {} is lost: {}", quote_path(self.ladder.path()), loss.words()))
    }

    /// Rule 3: one renewal — create the next rung ourselves, then list.
    fn renew(&self) {
        let Ok(mut progress) = self.progress.lock() else { return };
        if progress.finished || self.loss() != Loss::None {
            return;
        }
        let now = identity::monotonic_ns();
        if now >= self.expires_at_ns() {
            self.lose(Loss::Lapsed);
            return;
        }
        let Ok(next) = next_rung(&self.ladder, progress.rung) else {
            return self.lose(Loss::TakenOver);
        };
        let mut record = progress.record.clone();
        if let Some(lease) = record.lease.as_mut() {
            lease.rung = next;
            lease.renewed_unix_ms = identity::now_unix_ms();
        }
        let began = identity::monotonic_ns();
        match self.ladder.create(next, &record) {
            Ok(Created::Taken) => return self.lose(Loss::TakenOver),
            Err(_) => {
                // ESTALE, EIO, a full disk: try again soon; rule 3's clock
                // ends the lease if no renewal succeeds in time.
                self.next_attempt_ns.store(now + retry_period_ns(self.lease_ms), Ordering::Release);
                return;
            }
            Ok(Created::Mine) => {}
        }
        // The rung is ours whatever the listing says: never create it twice.
        progress.rung = next;
        progress.record = record;
        match self.ladder.rungs() {
            Ok(rungs) if rungs.last().is_some_and(|&highest| highest > next) => self.lose(Loss::HigherRung),
            Ok(_) if !self.ladder.still_at_its_path() => self.lose(Loss::LadderReplaced),
            Ok(rungs) => {
                self.last_renewal_began_ns.store(began, Ordering::Release);
                self.next_attempt_ns.store(began + renewal_period_ns(self.lease_ms), Ordering::Release);
                self.ladder.prune_below(next.saturating_sub(1), &rungs);
            }
            Err(_) => self.next_attempt_ns.store(now + retry_period_ns(self.lease_ms), Ordering::Release),
        }
    }

    /// Rule 6: release (`Free`) or done (`Done`) is the next rung. E_LOST if
    /// the lease was lost, or is found lost by an EEXIST now.
    pub(crate) fn finish(&self, state: State) -> Result<(), Error> {
        let result = self.finish_rung(state);
        unregister(self);
        result
    }

    fn finish_rung(&self, state: State) -> Result<(), Error> {
        let mut progress = self.progress.lock().map_err(|_| Error::invalid("lease state poisoned"))?;
        progress.finished = true;
        self.check()?;
        let next = next_rung(&self.ladder, progress.rung)?;
        let mut record = progress.record.clone();
        record.state = state;
        record.alive = 0;
        record.released_unix_ms = identity::now_unix_ms();
        if let Some(lease) = record.lease.as_mut() {
            lease.rung = next;
            lease.renewed_unix_ms = record.released_unix_ms;
        }
        match self.ladder.create(next, &record)? {
            Created::Taken => {
                self.lose(Loss::TakenOver);
                Err(self.lost_error(Loss::TakenOver))
            }
            Created::Mine => {
                progress.rung = next;
                if let Ok(rungs) = self.ladder.rungs() {
                    self.ladder.prune_below(next.saturating_sub(1), &rungs);
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeldLease {{ ladder: {:?}, lease_ms: {}, loss: {:?} }}", self.ladder.path(), self.lease_ms, self.loss())
    }
}

fn renewal_period_ns(lease_ms: i64) -> u64 {
    lease_ms as u64 * NS_PER_MS / 3
}

fn retry_period_ns(lease_ms: i64) -> u64 {
    (lease_ms as u64 * NS_PER_MS / 20).max(10 * NS_PER_MS)
}

// ---- the renewal thread (rule 7) ----

pub(crate) struct Registry {
    leases: Vec<Arc<HeldLease>>,
    renewer_running: bool,
    /// An eventfd that wakes the renewal thread when the set of leases
    /// changes; -1 when no thread runs.
    wake: libc::c_int,
}

/// The leases this process is renewing. A process-wide mutex, kept
/// consistent across fork by `lifecycle`'s handlers.
pub(crate) static REGISTRY: ForkSafeMutex<Registry> =
    ForkSafeMutex::new(Registry { leases: Vec::new(), renewer_running: false, wake: -1 });

/// In a forked child (from the atfork handler): the parent's leases are not
/// the child's to renew, and the parent's thread does not exist here. Only
/// async-signal-safe work: the list is forgotten, not freed, and the child's
/// copy of the eventfd closed.
pub(crate) fn forget_in_child(registry: &mut Registry) {
    std::mem::forget(std::mem::take(&mut registry.leases));
    registry.renewer_running = false;
    if registry.wake >= 0 {
        unsafe { libc::close(registry.wake) };
        registry.wake = -1;
    }
}

fn wake(fd: libc::c_int) {
    if fd >= 0 {
        let one: u64 = 1;
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// Starts renewing `lease`, and the renewal thread if none runs.
pub(crate) fn register(lease: Arc<HeldLease>) -> Result<(), Error> {
    let mut registry = REGISTRY.lock();
    registry.leases.push(lease);
    if registry.renewer_running {
        wake(registry.wake);
        return Ok(());
    }
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        registry.leases.pop();
        return Err(Error::os("cannot start renewing the lease of", std::path::Path::new("(eventfd)"), err));
    }
    registry.wake = fd;
    registry.renewer_running = true;
    drop(registry);
    let spawned = std::thread::Builder::new().name("hpclock-renew".into()).stack_size(256 << 10).spawn(renewer);
    if let Err(err) = spawned {
        let mut registry = REGISTRY.lock();
        let lease = registry.leases.pop();
        registry.renewer_running = false;
        registry.wake = -1;
        drop(registry);
        unsafe { libc::close(fd) };
        drop(lease);
        return Err(Error::os("cannot start the lease's renewal thread for", std::path::Path::new("(thread)"), err));
    }
    Ok(())
}

fn unregister(lease: &HeldLease) {
    let mut registry = REGISTRY.lock();
    let before = registry.leases.len();
    registry.leases.retain(|held| !std::ptr::eq(Arc::as_ptr(held), lease));
    if registry.leases.len() != before {
        wake(registry.wake);
    }
}

fn renewer() {
    loop {
        let now = identity::monotonic_ns();
        let (due, wake_fd, sleep_ns) = {
            let mut registry = REGISTRY.lock();
            registry.leases.retain(|lease| lease.loss() == Loss::None);
            if registry.leases.is_empty() {
                registry.renewer_running = false;
                let fd = std::mem::replace(&mut registry.wake, -1);
                drop(registry);
                unsafe { libc::close(fd) };
                return;
            }
            let due: Vec<Arc<HeldLease>> = registry
                .leases
                .iter()
                .filter(|l| l.next_attempt_ns.load(Ordering::Acquire) <= now || l.expires_at_ns() <= now)
                .cloned()
                .collect();
            let next = registry
                .leases
                .iter()
                .map(|l| l.next_attempt_ns.load(Ordering::Acquire).min(l.expires_at_ns()))
                .min()
                .unwrap_or(now);
            (due, registry.wake, next.saturating_sub(now))
        };
        for lease in &due {
            lease.renew();
        }
        if due.is_empty() {
            let timeout_ms = sleep_ns.div_ceil(NS_PER_MS).min(i32::MAX as u64) as i32;
            let mut poll = libc::pollfd { fd: wake_fd, events: libc::POLLIN, revents: 0 };
            unsafe { libc::poll(&mut poll, 1, timeout_ms) };
            let mut drained: u64 = 0;
            unsafe { libc::read(wake_fd, (&mut drained as *mut u64).cast(), 8) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder_in(dir: &std::path::Path) -> Ladder {
        Ladder::open(&dir.join("run.lock"), 0o644).unwrap()
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hpclock-lease-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn rung(n: u64, state: State, host: &str, pid: i64, lease_ms: i64, renewed_unix_ms: i64) -> Record {
        Record {
            state,
            pid,
            generation: 7,
            host: host.as_bytes().to_vec(),
            boot_id: identity::boot_id().as_bytes().to_vec(),
            lease: Some(LeaseFields { rung: n, lease_ms, renewed_unix_ms, token: b"t".to_vec() }),
            ..Record::default()
        }
    }

    fn try_once<'a>(mine: &'a Record, file: &'a Record, lease_ms: i64) -> Climb<'a> {
        Climb { mine, lock_file_record: file, lease_ms, ignore_done: false, timeout_ms: 0, deadline: None }
    }

    #[test]
    fn an_empty_ladder_is_climbed_at_once_above_the_lock_files_generation() {
        let dir = temp_dir("empty");
        let ladder = ladder_in(&dir);
        let mine = Record { state: State::Held, ..Record::default() };
        let file = Record { generation: 41, ..Record::default() };
        let Climbed::Won { rung, record, .. } = climb(&ladder, &try_once(&mine, &file, 1000)).unwrap() else { panic!() };
        assert_eq!((rung, record.generation), (1, 42));
        assert_eq!(ladder.rungs().unwrap(), vec![1]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_recent_remote_holder_is_busy_for_a_one_try_call_at_once() {
        let dir = temp_dir("remote");
        let ladder = ladder_in(&dir);
        let now = identity::now_unix_ms();
        assert_eq!(ladder.create(5, &rung(5, State::Held, "elsewhere", 1, 60_000, now)).unwrap(), Created::Mine);
        let mine = Record::default();
        let file = Record::default();
        let started = Instant::now();
        assert!(matches!(climb(&ladder, &try_once(&mine, &file, 1000)).unwrap(), Climbed::Busy { .. }));
        assert!(started.elapsed() < Duration::from_secs(5), "a one-try call watched a live holder");
        let mut another = rung(5, State::Held, "x", 1, 1, 1);
        another.lease.as_mut().unwrap().token = b"another".to_vec();
        assert_eq!(ladder.create(5, &another).unwrap(), Created::Taken);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_old_remote_rung_is_watched_for_its_lease_then_taken_over() {
        let dir = temp_dir("old");
        let ladder = ladder_in(&dir);
        let long_ago = identity::now_unix_ms() - 3_600_000;
        ladder.create(3, &rung(3, State::Held, "elsewhere", 1, 300, long_ago)).unwrap();
        let (mine, file) = (Record::default(), Record::default());
        let started = Instant::now();
        let Climbed::Won { rung, previous, record, .. } = climb(&ladder, &try_once(&mine, &file, 1000)).unwrap() else {
            panic!()
        };
        assert!(started.elapsed() >= Duration::from_millis(300), "took over before watching a whole lease");
        assert_eq!((rung, record.generation, previous.state, previous.alive), (4, 8, State::Stale, -1));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_dead_holder_on_this_node_is_taken_over_at_once_and_a_live_one_is_busy() {
        let dir = temp_dir("local");
        let ladder = ladder_in(&dir);
        let host = identity::host();
        let now = identity::now_unix_ms();
        ladder.create(1, &rung(1, State::Held, host, i64::from(i32::MAX), 60_000, now)).unwrap();
        let (mine, file) = (Record::default(), Record::default());
        let Climbed::Won { previous, .. } = climb(&ladder, &try_once(&mine, &file, 60_000)).unwrap() else { panic!() };
        assert_eq!((previous.state, previous.alive), (State::Stale, 0));
        let me = identity::pid();
        let mut alive = rung(3, State::Held, host, me, 60_000, now);
        alive.start_time = identity::own_start_time(me);
        ladder.create(3, &alive).unwrap();
        assert!(matches!(climb(&ladder, &try_once(&mine, &file, 60_000)).unwrap(), Climbed::Busy { .. }));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_done_rung_is_done_unless_ignored() {
        let dir = temp_dir("done");
        let ladder = ladder_in(&dir);
        ladder.create(2, &rung(2, State::Done, "elsewhere", 1, 60_000, 1)).unwrap();
        let (mine, file) = (Record::default(), Record::default());
        assert!(matches!(climb(&ladder, &try_once(&mine, &file, 1000)).unwrap(), Climbed::Done(_)));
        let ignoring = Climb { ignore_done: true, ..try_once(&mine, &file, 1000) };
        assert!(matches!(climb(&ladder, &ignoring).unwrap(), Climbed::Won { rung: 3, .. }));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! The lock-file protocol: open → fstat → lock → re-check the inode → only
//! then read the previous record and write ours; and, where the kernel's
//! locks stop at the node, the lease's ladder (`lease`) on top of it.

use crate::fs::{self, Primitive, Scope};
use crate::holder;
use crate::identity;
use crate::kernel_lock;
use crate::ladder::Ladder;
use crate::lease::{self, Climb, Climbed, HeldLease, DEFAULT_LEASE_MS, MIN_LEASE_MS};
use crate::lockfile::{c_path, check_regular, check_regular_on_mount, open_error, open_fd, pwrite_all, read_record_bytes, read_record_settled};
use crate::record::{Parsed, Record, State, MAX_LABEL_BYTES};
use crate::status::{quote_path, Error, Status};
use crate::wait::{self, Reach};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Only MPI rank 0 touches the file (rank read from the environment).
pub const HPCLOCK_RANK0_ONLY: u32 = 1u32;
/// Refuse unless the lock is known to exclude across nodes.
pub const HPCLOCK_REQUIRE_CLUSTER: u32 = 2u32;
/// Flush the holder record to stable storage on every change.
pub const HPCLOCK_SYNC: u32 = 4u32;
/// Acquire even if the record says the work is done (re-run); hpclock_release then clears DONE,
/// hpclock_complete marks it done again.
pub const HPCLOCK_IGNORE_DONE: u32 = 8u32;
/// Use the cross-node lease whatever the filesystem.
pub const HPCLOCK_LEASE: u32 = 16u32;
/// Never use the lease: kernel locks only (the 0.1 behaviour).
pub const HPCLOCK_NO_LEASE: u32 = 32u32;

const KNOWN_FLAGS: u32 = HPCLOCK_RANK0_ONLY | HPCLOCK_REQUIRE_CLUSTER | HPCLOCK_SYNC | HPCLOCK_IGNORE_DONE
    | HPCLOCK_LEASE | HPCLOCK_NO_LEASE;

/// How often the path may turn out to name another inode after locking
/// before we give up: each time means someone unlinked or replaced the file.
const MAX_REOPENS: u32 = 64;

/// Permission bits of a new lock file when the caller gives none (mode 0).
pub(crate) const DEFAULT_MODE: u32 = 0o644;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub flags: u32,
    /// 0 means the default, 0644: a lock file nobody may open would make
    /// every later run (the requeue) fail.
    pub mode: u32,
    /// 0: one try; > 0: wait up to this long; < 0: wait without limit.
    pub timeout_ms: i64,
    pub label: Vec<u8>,
    /// Create the lock file if it does not exist (the C API always does;
    /// `hpclock reset` of a mistyped path must not).
    pub create: bool,
    /// The lease period; 0 means the default, 60 s.
    pub lease_ms: i64,
}

impl Default for Options {
    fn default() -> Options {
        Options { flags: 0, mode: DEFAULT_MODE, timeout_ms: 0, label: Vec::new(), create: true, lease_ms: 0 }
    }
}

impl Options {
    fn validate(&self) -> Result<(), Error> {
        let unknown = self.flags & !KNOWN_FLAGS;
        if unknown != 0 {
            return Err(Error::invalid(format!("unknown flag bits 0x{unknown:x} in hpclock_options.flags")));
        }
        if self.flags & HPCLOCK_LEASE != 0 && self.flags & HPCLOCK_NO_LEASE != 0 {
            return Err(Error::invalid("HPCLOCK_LEASE and HPCLOCK_NO_LEASE together: choose one"));
        }
        if self.mode & !0o7777 != 0 {
            return Err(Error::invalid(format!("mode 0{:o} has bits beyond 07777", self.mode)));
        }
        if self.label.len() > MAX_LABEL_BYTES {
            return Err(Error::invalid(format!(
                "label is {} bytes; the limit is {MAX_LABEL_BYTES}: a longer label is refused, not cut", self.label.len())));
        }
        if self.flags & HPCLOCK_LEASE != 0 {
            // Forced: refused before anything is created. Otherwise the
            // period is checked only where the lease is used: it is ignored
            // without one.
            self.validate_lease()?;
        }
        Ok(())
    }

    fn validate_lease(&self) -> Result<(), Error> {
        if self.lease_ms < 0 || (self.lease_ms > 0 && self.lease_ms < MIN_LEASE_MS) {
            return Err(Error::invalid(format!(
                "lease_ms {} is not a lease period: 0 for the default ({DEFAULT_LEASE_MS}), or at least {MIN_LEASE_MS}",
                self.lease_ms)));
        }
        Ok(())
    }

    fn lease_ms(&self) -> i64 {
        if self.lease_ms == 0 { DEFAULT_LEASE_MS } else { self.lease_ms }
    }

    fn mode(&self) -> u32 {
        if self.mode == 0 { DEFAULT_MODE } else { self.mode }
    }

    fn ignore_done(&self) -> bool {
        self.flags & HPCLOCK_IGNORE_DONE != 0
    }

    /// The lease, when forced, refused, or wanted by the filesystem.
    fn wants_lease(&self, filesystem_wants_it: impl FnOnce() -> bool) -> bool {
        if self.flags & HPCLOCK_LEASE != 0 {
            true
        } else if self.flags & HPCLOCK_NO_LEASE != 0 {
            false
        } else {
            filesystem_wants_it()
        }
    }
}

/// What an acquisition came to. Only `Acquired` means "do the work".
#[derive(Debug)]
pub enum Outcome {
    Acquired(Lock),
    /// Someone else holds it (or the timeout ran out); in lease mode, the
    /// rule that judged the holder alive.
    Busy(Option<String>),
    /// The record says the work was completed earlier; this is that record.
    Done(Record),
    /// HPCLOCK_RANK0_ONLY on an MPI rank other than 0: nothing was touched.
    NotRank0,
}

/// A held lock: the open descriptor that carries the kernel lock, the lease
/// where there is one, and the records of this acquisition and of the one
/// before it.
#[derive(Debug)]
pub struct Lock {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    /// The locked inode: `check` tells when the path names another.
    dev: u64,
    ino: u64,
    owner_pid: i64,
    /// Bytes in the file now: a shorter record is padded to this length so
    /// that no tail of an older one is left behind.
    file_len: usize,
    /// The kernel lock held on `fd`, if the filesystem has one.
    primitive: Option<Primitive>,
    /// fdatasync after each record write: HPCLOCK_SYNC, or a shared
    /// filesystem, where a reader on another node must see the record.
    sync: bool,
    finished: bool,
    mine: Record,
    previous: Record,
    lease: Option<Arc<HeldLease>>,
}

pub fn acquire(path: &Path, opts: &Options) -> Result<Outcome, Error> {
    opts.validate()?;
    let cpath = c_path(path)?;
    if opts.flags & HPCLOCK_RANK0_ONLY != 0 && identity::mpi_rank() > 0 {
        // Before any filesystem call: with thousands of ranks, only one
        // process may touch the parallel filesystem's metadata server.
        return Ok(Outcome::NotRank0);
    }
    if opts.flags & HPCLOCK_REQUIRE_CLUSTER != 0 {
        // Decided before the file is created: a refusal touches nothing.
        // SPLIT and NONE hold across nodes with the lease; UNKNOWN does not
        // (whether O_EXCL is atomic there is not known).
        let info = fs::check(path)?;
        let holds = info.scope == Scope::Cluster || (info.lease && opts.flags & HPCLOCK_NO_LEASE == 0);
        if !holds {
            return Err(fs::unsafe_error(path, &info));
        }
    }
    let deadline = (opts.timeout_ms > 0)
        .then(|| Instant::now() + Duration::from_millis(opts.timeout_ms as u64));
    let mut template = None;
    for _ in 0..MAX_REOPENS {
        let (fd, dev, ino, mount) = open_lock_file(path, &cpath, opts)?;
        let magic = fs::magic_of_mount(&fd, path, mount)?;
        let lease = opts.wants_lease(|| fs::lease_wanted(&fd, magic));
        if fs::kernel_locks_refused() && !lease {
            // As on a filesystem that refuses locks (ENOSYS), without the lease.
            return Err(Error::os_errno("cannot lock", path, libc::ENOSYS,
                                       "the filesystem refuses locks (HPCLOCK_TEST_PRIMITIVE=none), and HPCLOCK_NO_LEASE \
                                        forbids the lease"));
        }
        let mut primitive = (!fs::kernel_locks_refused()).then(|| fs::primitive_for(magic));
        if let Some(kernel) = primitive {
            match try_lock(&fd, path, kernel) {
                Ok(true) => {}
                Ok(false) => {
                    // Busy, perhaps only because another copy is looking at a
                    // finished job: then the answer is DONE, and waiting is pointless.
                    let seen = busy_or_done(&fd, path, opts)?;
                    if opts.timeout_ms == 0 || !matches!(seen, Outcome::Busy(_)) {
                        return Ok(seen);
                    }
                    // Who we are is known before the wait: after it, the
                    // hand-off's latency is all that counts.
                    template = Some(my_record(opts));
                    if !wait_for_lock(&fd, path, kernel, opts.timeout_ms, deadline)? {
                        return busy_or_done(&fd, path, opts);
                    }
                }
                // A filesystem that refuses locks (Lustre without flock):
                // with the lease, the ladder alone excludes.
                Err(e) if lease && e.status == Status::NotSupported => primitive = None,
                Err(e) => return Err(e),
            }
        }
        let locked = Locked { fd: Some(Arc::new(fd)), primitive };
        if !still_names(path, &cpath, dev, ino)? {
            continue; // replaced or unlinked between our open and our lock
        }
        let sync = opts.flags & HPCLOCK_SYNC != 0 || !fs::is_node_private(magic) || lease;
        let place = Place { path, dev, ino, sync, lease, deadline };
        let template = template.take().unwrap_or_else(|| my_record(opts));
        return take_over(locked, &place, opts, template);
    }
    Err(Error {
        status: Status::Os,
        errno: libc::ESTALE,
        message: format!(
            "lock file {} was replaced or unlinked {MAX_REOPENS} times while we locked it; \
             something keeps deleting it (hpclock never does)", quote_path(path)),
    })
}

/// Someone else holds the kernel lock. Read the record without locking: a
/// valid record that says done answers DONE — learning that the work is
/// finished must not need the lock, or two requeued copies of a finished job,
/// each taking the lock for a moment to look, make each other BUSY.
fn busy_or_done(fd: &OwnedFd, path: &Path, opts: &Options) -> Result<Outcome, Error> {
    let bytes = read_record_settled(fd, path)?;
    let parsed = Record::parse_file(&bytes);
    refuse_if_not_a_lock_file(fd, path, &parsed)?;
    Ok(match parsed {
        Parsed::Record(record) if record.state == State::Done && !opts.ignore_done() => Outcome::Done(record),
        _ => Outcome::Busy(None),
    })
}

/// A lock path typed where a results file was meant must lose nothing:
/// content that is neither a record of ours, nor the legacy two-line format,
/// nor blanks, and anything longer than a record, is someone's data.
fn refuse_if_not_a_lock_file(fd: &OwnedFd, path: &Path, parsed: &Parsed) -> Result<(), Error> {
    if parsed.is_lock_file() {
        return Ok(());
    }
    let size = check_regular(fd, path).map_or(0, |st| st.st_size);
    Err(Error::invalid(format!(
        "{} is not a lock file: refusing to overwrite its {size} bytes (a lock file is empty or holds \
         an hpclock record; give hpclock a path of its own)", quote_path(path))))
}

/// A descriptor we hold the kernel lock on (if the filesystem has one), until
/// it becomes a [`Lock`]. Every other way out unlocks explicitly: closing
/// alone would not release the lock if another thread forked meanwhile, and
/// the child kept a copy.
struct Locked {
    fd: Option<Arc<OwnedFd>>,
    primitive: Option<Primitive>,
}

impl Locked {
    fn fd(&self) -> &Arc<OwnedFd> {
        self.fd.as_ref().expect("taken only by keep()")
    }

    fn keep(mut self) -> Arc<OwnedFd> {
        self.fd.take().expect("kept once")
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        if let (Some(fd), Some(primitive)) = (&self.fd, self.primitive) {
            let _ = kernel_lock::unlock(fd, primitive);
        }
    }
}

/// Where a lock was taken, and how its record is written.
struct Place<'a> {
    path: &'a Path,
    dev: u64,
    ino: u64,
    sync: bool,
    lease: bool,
    deadline: Option<Instant>,
}

/// The record an acquisition of ours writes (its generation and time set by
/// `take_over`).
fn my_record(opts: &Options) -> Record {
    let job = identity::job();
    let pid = identity::pid();
    Record {
        state: State::Held,
        alive: 1,
        pid,
        uid: identity::uid(),
        generation: 0,
        acquired_unix_ms: 0,
        released_unix_ms: 0,
        host: identity::host().as_bytes().to_vec(),
        label: opts.label.clone(),
        boot_id: identity::boot_id().as_bytes().to_vec(),
        start_time: identity::own_start_time(pid),
        mpi_rank: identity::mpi_rank(),
        job_id: job.id.as_bytes().to_vec(),
        array_task: job.array_task.as_bytes().to_vec(),
        lease: None,
    }
}

/// We hold the kernel lock on the inode the path names (or the filesystem
/// has none): read what the last holder left, climb the ladder in lease mode,
/// and write our record.
fn take_over(locked: Locked, place: &Place, opts: &Options, mut template: Record) -> Result<Outcome, Error> {
    let path = place.path;
    let fd = locked.fd();
    // We hold the lock, so no write is under way: a torn record was cut
    // short by a crash, or edited by hand.
    let old_bytes = read_record_bytes(fd, path)?;
    let parsed = Record::parse_file(&old_bytes);
    refuse_if_not_a_lock_file(fd, path, &parsed)?; // unlocked on the way out, untouched
    let highest = parsed.next_generation().ok_or_else(|| Error::invalid(format!(
        "lock file {} has used up its fencing tokens (generation {}): another acquisition would repeat one; \
         remove the file to start again from 1", quote_path(path), u64::MAX)))? - 1;
    let says_done = parsed.says_done();
    let mut previous = match parsed {
        Parsed::Record(record) => record,
        _ => Record { generation: highest, ..Record::default() },
    };
    if says_done {
        // A damaged record that still shows done counts as done: a changed
        // byte must not make finished work run again.
        previous.state = State::Done;
    } else if previous.state == State::Held {
        // The record says held, yet the kernel gave us the lock: its holder
        // died (or lost its node) without releasing.
        previous.state = State::Stale;
        previous.alive = holder::liveness(&previous);
    }
    template.acquired_unix_ms = identity::now_unix_ms();
    let (mine, previous, lease) = if place.lease {
        opts.validate_lease()?;
        let ladder = Ladder::open(path, opts.mode())?;
        let climb = Climb {
            mine: &template,
            lock_file_record: &previous,
            lease_ms: opts.lease_ms(),
            ignore_done: opts.ignore_done(),
            timeout_ms: opts.timeout_ms,
            deadline: place.deadline,
        };
        match lease::climb(&ladder, &climb)? {
            Climbed::Busy { why } => return Ok(Outcome::Busy(Some(why))), // unlocked on the way out
            Climbed::Done(record) => return Ok(Outcome::Done(record)),
            Climbed::Won { rung, record, began_ns, previous } => {
                let kernel = locked.primitive.map(|primitive| (locked.fd().clone(), primitive));
                let held = HeldLease::new(ladder, rung, record.clone(), began_ns, opts.lease_ms(), kernel);
                (record, previous, Some(held))
            }
        }
    } else {
        if previous.state == State::Done && !opts.ignore_done() {
            return Ok(Outcome::Done(previous)); // unlocked on the way out, nothing written
        }
        (Record { generation: highest + 1, ..template }, previous, None)
    };
    let written = write_record(fd, path, &mine, old_bytes.len(), Some(&old_bytes), place.sync)
        .map_err(|mut e| {
            e.message.push_str("; the lock was not taken");
            e
        });
    let started = written.and_then(|file_len| match &lease {
        Some(held) => lease::register(held.clone()).map(|()| file_len),
        None => Ok(file_len),
    });
    let file_len = match started {
        Ok(file_len) => file_len,
        Err(e) => {
            if let Some(held) = &lease {
                let _ = held.finish(State::Free); // the ladder must not say we hold it
            }
            return Err(e); // the kernel lock is released on the way out
        }
    };
    let primitive = locked.primitive;
    Ok(Outcome::Acquired(Lock {
        fd: locked.keep(),
        path: path.to_path_buf(),
        dev: place.dev,
        ino: place.ino,
        owner_pid: mine.pid,
        file_len,
        primitive,
        sync: place.sync,
        finished: false,
        mine,
        previous,
        lease,
    }))
}

impl Lock {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record this acquisition wrote; its generation is the fencing token.
    pub fn mine(&self) -> &Record {
        &self.mine
    }

    /// The record found at acquisition (`Stale`: the last holder died holding it).
    pub fn previous(&self) -> &Record {
        &self.previous
    }

    pub fn release(mut self) -> Result<(), Error> {
        self.finish(State::Free)
    }

    /// Release and record the work as done: later acquisitions answer `Done`.
    /// Refused in a forked child (see [`Lock::may_complete`]); the child's
    /// copy of the descriptor is closed all the same.
    pub fn complete(mut self) -> Result<(), Error> {
        self.may_complete()?;
        self.finish(State::Done)
    }

    /// Only the process that acquired the lock holds it. A forked child has
    /// a copy of the descriptor, not the lock: it has nothing to complete,
    /// and saying OK while writing nothing would let the work run again.
    pub fn may_complete(&self) -> Result<(), Error> {
        if self.acquired_here() {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "lock {} was acquired by pid {}, not by this process (pid {}): a forked child holds nothing to \
             complete; the parent completes it, and the child may only release its copy",
            quote_path(&self.path), self.owner_pid, identity::pid())))
    }

    fn acquired_here(&self) -> bool {
        identity::pid() == self.owner_pid
    }

    /// The lease period, when this lock is held by the lease.
    pub fn lease_ms(&self) -> Option<i64> {
        self.lease.as_ref().map(|held| held.lease_ms())
    }

    /// OK while the lock is still ours; E_LOST once it is not: the lease was
    /// taken over or lapsed, or the path no longer names the locked file
    /// (someone deleted or replaced it, and newcomers lock another file).
    /// Ask before writing what the lock protects.
    pub fn check(&self) -> Result<(), Error> {
        self.checker().check()
    }

    /// What `check` needs, taken out so that it can run without the handle
    /// table held (it makes system calls).
    pub fn checker(&self) -> Checker {
        Checker {
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
            owner_pid: self.owner_pid,
            lease: self.lease.clone(),
        }
    }

    fn finish(&mut self, state: State) -> Result<(), Error> {
        self.finished = true;
        if !self.acquired_here() {
            // A forked child shares the parent's open file description, and
            // flock(2) locks belong to that description: LOCK_UN here would
            // unlock the parent. Closing our copy (on drop) leaves it held.
            return Ok(());
        }
        // In lease mode the release is a rung; if the lease was lost, the
        // lock file's record belongs to whoever holds it now.
        let released = self.lease.as_ref().map_or(Ok(()), |held| held.finish(state));
        let written = released.and_then(|()| {
            // The lock is being given up: its record becomes the released one.
            self.mine.state = state;
            self.mine.alive = 0;
            self.mine.released_unix_ms = identity::now_unix_ms();
            write_record(&self.fd, &self.path, &self.mine, self.file_len, None, self.sync).map(drop)
        });
        // Unlock explicitly, not only by closing: a child forked while we held
        // the lock may still have the descriptor open, and the lock would
        // live on with it.
        let unlocked = self.primitive.map_or(Ok(()), |primitive| {
            kernel_lock::unlock(&self.fd, primitive).map_err(|e| Error::os("cannot unlock lock file", &self.path, e))
        });
        match (written, unlocked) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), _) if e.status == Status::Lost => Err(e),
            (Err(mut e), Ok(())) => {
                e.message.push_str("; the lock was released all the same, \
                                    and the next holder will see this one as stale");
                Err(e)
            }
            (_, Err(e)) => Err(e),
        }
    }
}

/// What `hpclock_check` looks at, apart from the handle table.
pub struct Checker {
    path: PathBuf,
    dev: u64,
    ino: u64,
    owner_pid: i64,
    lease: Option<Arc<HeldLease>>,
}

impl Checker {
    pub fn check(&self) -> Result<(), Error> {
        if identity::pid() != self.owner_pid {
            return Err(Error::invalid(format!(
                "lock {} was acquired by pid {}, not by this process: a forked child holds nothing to check",
                quote_path(&self.path), self.owner_pid)));
        }
        let cpath = c_path(&self.path)?;
        if !still_names(&self.path, &cpath, self.dev, self.ino)? {
            return Err(Error::lost(format!(
                "lock file {} was deleted or replaced: the lock held is on a file newcomers no longer open",
                quote_path(&self.path))));
        }
        self.lease.as_ref().map_or(Ok(()), |held| held.check())
    }
}

/// The descriptor that carries the kernel lock: a program that must keep the
/// lock while a child runs (the `hpclock run` command) lets the child inherit it.
impl AsRawFd for Lock {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.finish(State::Free);
        }
    }
}

/// Step 1 and 2: open read-write (NFS refuses an exclusive lock on a read-only
/// descriptor), never truncating, then refuse anything but a regular file
/// with one name.
fn open_lock_file(path: &Path, cpath: &CString, opts: &Options) -> Result<(OwnedFd, u64, u64, Option<u64>), Error> {
    let create = if opts.create { libc::O_CREAT } else { 0 };
    let flags = libc::O_RDWR | create | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK;
    // No access-time update for our reads of the record (with relatime, the
    // first read after every write would dirty the inode): O_NOATIME, where
    // the kernel allows it — the file's owner, or CAP_FOWNER; EPERM
    // otherwise, and then this process stops asking.
    static NOATIME_REFUSED: AtomicBool = AtomicBool::new(false);
    let opened = if NOATIME_REFUSED.load(Ordering::Relaxed) {
        open_fd(cpath, flags, opts.mode())
    } else {
        match open_fd(cpath, flags | libc::O_NOATIME, opts.mode()) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                NOATIME_REFUSED.store(true, Ordering::Relaxed);
                open_fd(cpath, flags, opts.mode())
            }
            other => other,
        }
    };
    let fd = opened.map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) if !opts.create => Error::os_errno("cannot open lock file", path, libc::ENOENT,
                                                               "there is no lock file at this path"),
        _ => open_error("cannot open lock file", path, e),
    })?;
    let (st, mount) = check_regular_on_mount(&fd, path)?;
    if st.st_nlink > 1 {
        // hpclock never links a lock file. A second name is what a hard link
        // planted in a shared directory looks like: writing our record would
        // overwrite the file it points to. (O_NOFOLLOW stops the symlink
        // version of the same attack.)
        return Err(Error::invalid(format!(
            "lock file {} has {} hard links; refusing to write to it (a hard link at a lock path would \
             make hpclock overwrite the file it points to)", quote_path(path), st.st_nlink)));
    }
    Ok((fd, st.st_dev as u64, st.st_ino as u64, mount))
}

/// Step 3: the exclusive lock, one try. Ok(false): held by someone else.
fn try_lock(fd: &OwnedFd, path: &Path, primitive: Primitive) -> Result<bool, Error> {
    kernel_lock::lock(fd, primitive, false).map_err(|e| lock_error(path, e))
}

/// Step 3 again, waiting: Ok(false) is "busy" when the timeout ran out.
/// Timed waits (`wait`) sleep on the lock file's inotify events where every
/// holder is on this node, and poll gently where holders may be on other
/// nodes; the deadline (Instant: CLOCK_MONOTONIC, so a clock step cannot
/// stretch or cut the wait) is exact.
fn wait_for_lock(fd: &OwnedFd, path: &Path, primitive: Primitive, timeout_ms: i64, deadline: Option<Instant>)
    -> Result<bool, Error>
{
    if timeout_ms < 0 {
        // Waiting without limit blocks in the kernel, which wakes us at the
        // unlock itself (the fastest hand-off there is; NFS and Lustre
        // clients wait on their servers' terms); EINTR is retried.
        return kernel_lock::lock(fd, primitive, true).map_err(|e| lock_error(path, e));
    }
    let Some(deadline) = deadline else { return Ok(false) };
    // Unknown is shared: polling gently is never wrong, only slower.
    let reach = match fs::magic_of(fd, path) {
        Ok(magic) if fs::is_node_private(magic) => Reach::NodePrivate,
        _ => Reach::Shared,
    };
    wait::wait_until(fd, reach, deadline, || try_lock(fd, path, primitive))
}

/// A filesystem that refuses locks gets E_NOTSUP, with the mount option that
/// would fix it where hpclock knows one (Lustre: -o flock).
fn lock_error(path: &Path, err: io::Error) -> Error {
    let errno = err.raw_os_error().unwrap_or(0);
    if !matches!(errno, libc::ENOSYS | libc::EOPNOTSUPP | libc::ENOLCK) {
        return Error::os_errno("cannot lock", path, errno, "");
    }
    let hint = match fs::check(path) {
        Ok(info) if !info.fix.is_empty() => format!("{}: {}", info.detail, info.fix),
        Ok(info) => format!("{}; the filesystem refuses locks", info.detail),
        Err(_) => "the filesystem refuses locks".to_string(),
    };
    Error::os_errno("cannot lock", path, errno, &hint)
}

/// Step 4: after locking, the path must still name the inode we locked;
/// otherwise we hold a lock on a file nobody else will open.
fn still_names(path: &Path, cpath: &CString, dev: u64, ino: u64) -> Result<bool, Error> {
    let st = match crate::lockfile::stat_without_times(libc::AT_FDCWD, cpath, libc::AT_SYMLINK_NOFOLLOW) {
        Ok((st, _)) => st,
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
        Err(err) => return Err(Error::os("cannot stat lock file", path, err)),
    };
    Ok(st.st_dev as u64 == dev && st.st_ino as u64 == ino && st.st_nlink > 0)
}

/// One pwrite at offset 0. A record shorter than what the file holds
/// (`old_len` bytes, never more than a record: longer files are refused) is
/// padded with spaces to the same length, a cheaper way than ftruncate to
/// leave no old tail behind. If the write fails, `undo` (what the file held)
/// is put back. Returns the file's new length.
fn write_record(fd: &OwnedFd, path: &Path, record: &Record, old_len: usize, undo: Option<&[u8]>, sync: bool)
    -> Result<usize, Error>
{
    let mut text = record.to_text();
    if old_len > text.len() {
        text.resize(old_len - 1, b' ');
        text.push(b'\n');
    }
    if let Err(err) = pwrite_all(fd, &text) {
        if let Some(previous) = undo {
            restore(fd, previous);
        }
        return Err(Error::os("cannot write the holder record to lock file", path, err));
    }
    if sync && unsafe { libc::fdatasync(fd.as_raw_fd()) } != 0 {
        return Err(Error::os("cannot flush lock file", path, io::Error::last_os_error()));
    }
    Ok(text.len())
}

/// After a failed write (a full disk may take part of it), puts back what the
/// file held, byte for byte: a failed acquisition loses nothing.
fn restore(fd: &OwnedFd, previous: &[u8]) {
    let _ = pwrite_all(fd, previous);
    // Shrinking needs no space, so this works on a full filesystem too.
    unsafe { libc::ftruncate(fd.as_raw_fd(), previous.len() as libc::off_t) };
}

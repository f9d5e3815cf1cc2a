//! The lock-file protocol of DESIGN §2: open → fstat → lock → re-check the
//! inode → only then read the previous record and write ours.

use crate::fs::{self, Primitive, Scope};
use crate::holder;
use crate::identity;
use crate::kernel_lock;
use crate::lockfile::{c_path, check_regular, open_error, open_fd, pwrite_all, read_record_bytes};
use crate::record::{Parsed, Record, State, MAX_LABEL_BYTES, MAX_RECORD_BYTES};
use crate::status::{quote_path, Error};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Only MPI rank 0 touches the file (rank read from the environment).
pub const HPCLOCK_RANK0_ONLY: u32 = 1u32;
/// Refuse unless the lock is known to exclude across nodes.
pub const HPCLOCK_REQUIRE_CLUSTER: u32 = 2u32;
/// Flush the holder record to stable storage on every change.
pub const HPCLOCK_SYNC: u32 = 4u32;
/// Acquire even if the record says the work is done (re-run).
pub const HPCLOCK_IGNORE_DONE: u32 = 8u32;

const KNOWN_FLAGS: u32 = HPCLOCK_RANK0_ONLY | HPCLOCK_REQUIRE_CLUSTER | HPCLOCK_SYNC | HPCLOCK_IGNORE_DONE;

/// How often the path may turn out to name another inode after locking
/// before we give up: each time means someone unlinked or replaced the file.
const MAX_REOPENS: u32 = 64;
/// Timed waits poll: start short for a fast hand-off, grow to keep a long
/// wait cheap for the filesystem, never beyond this.
const FIRST_POLL: Duration = Duration::from_millis(1);
const MAX_POLL: Duration = Duration::from_millis(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub flags: u32,
    pub mode: u32,
    /// 0: one try; > 0: wait up to this long; < 0: wait without limit.
    pub timeout_ms: i64,
    pub label: Vec<u8>,
}

impl Default for Options {
    fn default() -> Options {
        Options { flags: 0, mode: 0o644, timeout_ms: 0, label: Vec::new() }
    }
}

impl Options {
    fn validate(&self) -> Result<(), Error> {
        let unknown = self.flags & !KNOWN_FLAGS;
        if unknown != 0 {
            return Err(Error::invalid(format!("unknown flag bits 0x{unknown:x} in hpclock_options.flags")));
        }
        if self.mode & !0o7777 != 0 {
            return Err(Error::invalid(format!("mode 0{:o} has bits beyond 07777", self.mode)));
        }
        if self.label.len() > MAX_LABEL_BYTES {
            return Err(Error::invalid(format!(
                "label is {} bytes; at most {MAX_LABEL_BYTES} are kept", self.label.len())));
        }
        Ok(())
    }
}

/// What an acquisition came to. Only `Acquired` means "do the work".
#[derive(Debug)]
pub enum Outcome {
    Acquired(Lock),
    Busy,
    /// The record says the work was completed earlier; this is that record.
    Done(Record),
    /// HPCLOCK_RANK0_ONLY on an MPI rank other than 0: nothing was touched.
    NotRank0,
}

/// A held lock: the open descriptor that carries the kernel lock, and the
/// records of this acquisition and of the one before it.
#[derive(Debug)]
pub struct Lock {
    fd: OwnedFd,
    path: PathBuf,
    owner_pid: i64,
    /// Bytes in the file now: a shorter record is padded to this length so
    /// that no tail of an older one is left behind.
    file_len: usize,
    primitive: Primitive,
    /// fdatasync after each record write: HPCLOCK_SYNC, or a shared
    /// filesystem, where a reader on another node must see the record (DESIGN §3).
    sync: bool,
    finished: bool,
    mine: Record,
    previous: Record,
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
        let info = fs::check(path)?;
        if info.scope != Scope::Cluster {
            return Err(fs::unsafe_error(path, &info));
        }
    }
    let deadline = (opts.timeout_ms > 0)
        .then(|| Instant::now() + Duration::from_millis(opts.timeout_ms as u64));
    for _ in 0..MAX_REOPENS {
        let (fd, dev, ino) = open_lock_file(path, &cpath, opts.mode)?;
        let magic = fs::magic_of(&fd, path)?;
        let primitive = fs::primitive_for(magic);
        if !lock_exclusive(&fd, path, primitive, opts.timeout_ms, deadline)? {
            return Ok(Outcome::Busy);
        }
        let locked = Locked { fd: Some(fd), primitive };
        if !still_names(path, &cpath, dev, ino)? {
            continue; // replaced or unlinked between our open and our lock
        }
        let sync = opts.flags & HPCLOCK_SYNC != 0 || !fs::is_node_private(magic);
        return take_over(locked, path, opts, sync);
    }
    Err(Error {
        status: crate::status::Status::Os,
        errno: libc::ESTALE,
        message: format!(
            "lock file {} was replaced or unlinked {MAX_REOPENS} times while we locked it; \
             something keeps deleting it (hpclock never does)", quote_path(path)),
    })
}

/// A descriptor we hold the kernel lock on, until it becomes a [`Lock`]. Every
/// other way out unlocks explicitly: closing alone would not release the lock
/// if another thread forked meanwhile, and the child kept a copy.
struct Locked {
    fd: Option<OwnedFd>,
    primitive: Primitive,
}

impl Locked {
    fn fd(&self) -> &OwnedFd {
        self.fd.as_ref().expect("taken only by keep()")
    }

    fn keep(mut self) -> OwnedFd {
        self.fd.take().expect("kept once")
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        if let Some(fd) = &self.fd {
            let _ = kernel_lock::unlock(fd, self.primitive);
        }
    }
}

/// We hold the kernel lock on the inode the path names: read what the last
/// holder left, and write our record.
fn take_over(locked: Locked, path: &Path, opts: &Options, sync: bool) -> Result<Outcome, Error> {
    let fd = locked.fd();
    let old_bytes = read_record_bytes(fd, path)?;
    // Torn here means a holder died mid-write (we hold the lock, so no write
    // is under way): there is nothing more to learn from it than from no record.
    let mut previous = match Record::parse(&old_bytes) {
        Parsed::Record(record) => record,
        Parsed::Empty | Parsed::Torn(_) | Parsed::Foreign(_) => Record::default(),
    };
    if previous.state == State::Held {
        // The record says held, yet the kernel gave us the lock: its holder
        // died (or lost its node) without releasing.
        previous.state = State::Stale;
        previous.alive = holder::liveness(&previous);
    }
    if previous.state == State::Done && opts.flags & HPCLOCK_IGNORE_DONE == 0 {
        return Ok(Outcome::Done(previous)); // unlocked on the way out, nothing written
    }
    let job = identity::job();
    let pid = identity::pid();
    let mine = Record {
        state: State::Held,
        alive: 1,
        pid,
        uid: identity::uid(),
        generation: previous.generation.saturating_add(1),
        acquired_unix_ms: identity::now_unix_ms(),
        released_unix_ms: 0,
        host: identity::host().as_bytes().to_vec(),
        label: opts.label.clone(),
        boot_id: identity::boot_id().as_bytes().to_vec(),
        start_time: identity::own_start_time(pid),
        mpi_rank: identity::mpi_rank(),
        job_id: job.id.as_bytes().to_vec(),
        array_task: job.array_task.as_bytes().to_vec(),
    };
    let file_len = write_record(fd, path, &mine, old_bytes.len(), Some(&old_bytes), sync)
        .map_err(|mut e| {
            e.message.push_str("; the lock was not taken");
            e
        })?;
    let primitive = locked.primitive;
    Ok(Outcome::Acquired(Lock {
        fd: locked.keep(),
        path: path.to_path_buf(),
        owner_pid: mine.pid,
        file_len,
        primitive,
        sync,
        finished: false,
        mine,
        previous,
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
    pub fn complete(mut self) -> Result<(), Error> {
        self.finish(State::Done)
    }

    fn finish(&mut self, state: State) -> Result<(), Error> {
        self.finished = true;
        if identity::pid() != self.owner_pid {
            // A forked child shares the parent's open file description, and
            // flock(2) locks belong to that description: LOCK_UN here would
            // unlock the parent. Closing our copy (on drop) leaves it held.
            return Ok(());
        }
        let mut record = self.mine.clone();
        record.state = state;
        record.alive = 0;
        record.released_unix_ms = identity::now_unix_ms();
        let written = write_record(&self.fd, &self.path, &record, self.file_len, None, self.sync);
        // Unlock explicitly, not only by closing: a child forked while we held
        // the lock may still have the descriptor open, and the lock would
        // live on with it.
        let unlocked = kernel_lock::unlock(&self.fd, self.primitive)
            .map_err(|e| Error::os("cannot unlock lock file", &self.path, e));
        match (written, unlocked) {
            (Ok(_), Ok(())) => Ok(()),
            (Err(mut e), Ok(())) => {
                e.message.push_str("; the lock was released all the same, \
                                    and the next holder will see this one as stale");
                Err(e)
            }
            (_, Err(e)) => Err(e),
        }
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
fn open_lock_file(path: &Path, cpath: &CString, mode: u32) -> Result<(OwnedFd, u64, u64), Error> {
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW
        | libc::O_NOCTTY | libc::O_NONBLOCK;
    let fd = open_fd(cpath, flags, mode).map_err(|e| open_error("cannot open lock file", path, e))?;
    let st = check_regular(&fd, path)?;
    if st.st_nlink > 1 {
        // hpclock never links a lock file. A second name is what a hard link
        // planted in a shared directory looks like: writing our record would
        // overwrite the file it points to. (O_NOFOLLOW stops the symlink
        // version of the same attack.)
        return Err(Error::invalid(format!(
            "lock file {} has {} hard links; refusing to write to it (a hard link at a lock path would \
             make hpclock overwrite the file it points to)", quote_path(path), st.st_nlink)));
    }
    Ok((fd, st.st_dev as u64, st.st_ino as u64))
}

/// Step 3: the exclusive lock. Ok(false) is "busy" (held elsewhere, or the
/// timeout ran out).
fn lock_exclusive(fd: &OwnedFd, path: &Path, primitive: Primitive, timeout_ms: i64, deadline: Option<Instant>)
    -> Result<bool, Error>
{
    if timeout_ms < 0 {
        // Waiting without limit may block in the kernel; EINTR is retried.
        return kernel_lock::lock(fd, primitive, true).map_err(|e| lock_error(path, e));
    }
    let mut pause = FIRST_POLL;
    loop {
        if kernel_lock::lock(fd, primitive, false).map_err(|e| lock_error(path, e))? {
            return Ok(true);
        }
        // Instant is CLOCK_MONOTONIC: a clock step cannot stretch the wait.
        let Some(left) = deadline.and_then(|d| d.checked_duration_since(Instant::now())) else {
            return Ok(false);
        };
        if left.is_zero() {
            return Ok(false);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(MAX_POLL);
    }
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
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::lstat(cpath.as_ptr(), &mut st) } != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(false),
            _ => Err(Error::os("cannot stat lock file", path, err)),
        };
    }
    Ok(st.st_dev as u64 == dev && st.st_ino as u64 == ino && st.st_nlink > 0)
}

/// One pwrite at offset 0. A record shorter than what the file holds
/// (`old_len` bytes) is padded with spaces to the same length, a cheaper way
/// than ftruncate to leave no old tail behind; only a file longer than any
/// record is truncated. If the write fails, `undo` (what the file held) is
/// put back. Returns the file's new length.
fn write_record(fd: &OwnedFd, path: &Path, record: &Record, old_len: usize, undo: Option<&[u8]>, sync: bool)
    -> Result<usize, Error>
{
    let mut text = record.to_text();
    if old_len > text.len() && old_len <= MAX_RECORD_BYTES {
        text.resize(old_len - 1, b' ');
        text.push(b'\n');
    }
    if let Err(err) = pwrite_all(fd, &text) {
        if let Some(previous) = undo {
            restore(fd, previous);
        }
        return Err(Error::os("cannot write the holder record to lock file", path, err));
    }
    if old_len > text.len() && unsafe { libc::ftruncate(fd.as_raw_fd(), text.len() as libc::off_t) } != 0 {
        return Err(Error::os("cannot trim lock file", path, io::Error::last_os_error()));
    }
    if sync && unsafe { libc::fdatasync(fd.as_raw_fd()) } != 0 {
        return Err(Error::os("cannot flush lock file", path, io::Error::last_os_error()));
    }
    Ok(text.len())
}

/// After a failed write (a full disk may take part of it), puts back what the
/// file held, byte for byte: a failed acquisition loses nothing. `previous` is
/// the whole file when it is at most a record long; of a longer (foreign) file
/// only the first bytes were read, and only those can have been overwritten.
fn restore(fd: &OwnedFd, previous: &[u8]) {
    let _ = pwrite_all(fd, &previous[..previous.len().min(MAX_RECORD_BYTES)]);
    if previous.len() <= MAX_RECORD_BYTES {
        // Shrinking needs no space, so this works on a full filesystem too.
        unsafe { libc::ftruncate(fd.as_raw_fd(), previous.len() as libc::off_t) };
    }
}


//! The kernel's locks, whichever the filesystem needs (docs/filesystems.md#the-primitive): flock(2),
//! or an OFD lock (fcntl F_OFD_SETLK over the whole file) where flock is
//! node-local but fcntl locks are coherent (GPFS). Both belong to the open file
//! description: released when its last descriptor closes (or the process
//! dies), shared by a forked child, which therefore must never unlock.
//!
//! Also the other direction: asking the kernel whether a file is locked
//! without taking any lock (/proc/locks for flock, F_OFD_GETLK for OFD).

use crate::fs::Primitive;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::fd::{AsRawFd, OwnedFd};

/// Takes the exclusive lock. `wait`: block in the kernel until it is free
/// (EINTR is retried). Ok(false): held by someone else.
pub fn lock(fd: &OwnedFd, primitive: Primitive, wait: bool) -> io::Result<bool> {
    let result = match primitive {
        Primitive::Flock => retry_eintr(|| unsafe {
            libc::flock(fd.as_raw_fd(), libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB })
        }),
        Primitive::Ofd => {
            let cmd = if wait { libc::F_OFD_SETLKW } else { libc::F_OFD_SETLK };
            retry_eintr(|| unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &whole_file(libc::F_WRLCK)) })
        }
    };
    match result {
        Ok(()) => Ok(true),
        // flock says EWOULDBLOCK; fcntl says EAGAIN or EACCES (fcntl(2)).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EWOULDBLOCK | libc::EACCES)) && !wait => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn unlock(fd: &OwnedFd, primitive: Primitive) -> io::Result<()> {
    match primitive {
        Primitive::Flock => retry_eintr(|| unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) }),
        Primitive::Ofd => retry_eintr(|| unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &whole_file(libc::F_UNLCK))
        }),
    }
}

/// What this node's kernel says about a lock on the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Locked: by this pid, or by an OFD lock, which has no pid (None).
    Locked(Option<i64>),
    /// Not locked as far as this node's kernel knows.
    NotLocked,
    /// The kernel could not be asked.
    CannotTell,
}

/// Asks without taking a lock: a probe lock, even a shared one, would make a
/// concurrent acquire fail. `fd` may be read-only.
pub fn query(fd: &OwnedFd, primitive: Primitive, st: &libc::stat) -> Seen {
    match primitive {
        Primitive::Flock => {
            // /proc/locks is made afresh for every read(2) (seq_file), from
            // the position the last one ended at: if locks come and go
            // between two reads, lines shift, and one can be skipped — ours.
            // Read it in as few calls as the kernel allows (a page each), and
            // read a long table that does not show ours again.
            let mut seen = Seen::CannotTell;
            for _ in 0..PROC_LOCKS_READS {
                let Ok(table) = read_whole("/proc/locks") else { return Seen::CannotTell };
                seen = flock_holder(&table, fd, st);
                if seen != Seen::NotLocked || table.len() <= ONE_READ {
                    break;
                }
            }
            seen
        }
        Primitive::Ofd => {
            // F_OFD_GETLK reports a conflicting lock without taking one, and
            // a read-only descriptor may ask (fcntl(2)).
            let mut probe = whole_file(libc::F_WRLCK);
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) } != 0 {
                return Seen::CannotTell;
            }
            match i32::from(probe.l_type) {
                libc::F_UNLCK => Seen::NotLocked,
                // l_pid is -1 for an OFD lock, the owner's pid for a classic POSIX lock.
                _ => Seen::Locked((probe.l_pid > 0).then_some(i64::from(probe.l_pid))),
            }
        }
    }
}

const PROC_LOCKS_READS: usize = 3;

/// A file of /proc, in reads of 64 KiB: std's read_to_string starts with
/// 32-byte reads, and each read of a seq_file is a new walk of the list.
pub(crate) fn read_whole(path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
/// What /proc/locks gives in one read(2): one page.
const ONE_READ: usize = 4096;

/// The flock holder of the file `st` describes, from the text of /proc/locks.
fn flock_holder(table: &str, fd: &OwnedFd, st: &libc::stat) -> Seen {
    let ino = st.st_ino as u64;
    let same_inode: Vec<ProcLocksLine> =
        table.lines().filter_map(parse_proc_locks_line).filter(|l| l.ino == ino).collect();
    if same_inode.is_empty() {
        return Seen::NotLocked;
    }
    let st_dev = (libc::major(st.st_dev) as u64, libc::minor(st.st_dev) as u64);
    if let Some(line) = same_inode.iter().find(|l| l.dev == st_dev) {
        return Seen::Locked(Some(line.pid));
    }
    // /proc/locks names the superblock's device; stat(2) on btrfs gives the
    // subvolume's own anonymous device (and overlayfs the layer's), so the
    // two differ there. Find the superblock's through our descriptor's
    // mount. Subvolumes of one btrfs reuse inode numbers, so a line with the
    // right device and inode may still be another subvolume's file: believe
    // it only if its process really has this file locked.
    let Some(superblock) = crate::fs::superblock_dev(fd) else { return Seen::CannotTell };
    let candidates: Vec<&ProcLocksLine> = same_inode.iter().filter(|l| l.dev == superblock).collect();
    if candidates.is_empty() {
        return Seen::NotLocked;
    }
    if let Some(line) = candidates.iter().find(|l| process_has_locked(l.pid, st)) {
        return Seen::Locked(Some(line.pid));
    }
    // The locker may be gone while a process it forked keeps the lock.
    descriptor_holder(st).map_or(Seen::NotLocked, |pid| Seen::Locked(Some(pid)))
}

/// Whether `pid` has a descriptor open on the file `st` describes whose open
/// file description holds a lock: /proc/PID/fdinfo/FD lists the locks held
/// through that very description ("lock:" lines, proc(5)).
pub fn process_has_locked(pid: i64, st: &libc::stat) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(Result::ok).any(|entry| {
        let same_file = std::fs::metadata(entry.path())
            .is_ok_and(|m| m.dev() == st.st_dev as u64 && m.ino() == st.st_ino as u64);
        same_file
            && std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy()))
                .is_ok_and(|info| info.lines().any(|line| line.starts_with("lock:")))
    })
}

/// A live process that holds the lock on the file `st` describes through a
/// descriptor, found by looking at every process this user may see. The
/// kernel's lock table names the process that took the lock; when that one
/// has died and a child it forked keeps the description open, only the
/// descriptors can tell who holds it. Slow (every process's descriptors), so
/// only for that case.
pub fn descriptor_holder(st: &libc::stat) -> Option<i64> {
    let me = i64::from(unsafe { libc::getpid() });
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .filter(|&pid| pid != me)
        .find(|&pid| process_has_locked(pid, st))
}

fn whole_file(kind: i32) -> libc::flock {
    // SAFETY: plain old data; l_start = l_len = 0 with SEEK_SET is the whole file.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

fn retry_eintr(mut call: impl FnMut() -> i32) -> io::Result<()> {
    loop {
        if call() == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ProcLocksLine {
    pid: i64,
    dev: (u64, u64),
    ino: u64,
}

/// One line of /proc/locks, e.g. `1: FLOCK  ADVISORY  WRITE 4031 fd:01:1234 0 EOF`
/// (device as hex major:minor, inode in decimal; proc(5)). Lines with `->` are
/// processes waiting for a lock, not holding one.
fn parse_proc_locks_line(line: &str) -> Option<ProcLocksLine> {
    let mut fields = line.split_ascii_whitespace().skip(1);
    if fields.next()? != "FLOCK" {
        return None;
    }
    let _advisory = fields.next()?;
    let _mode = fields.next()?;
    let pid = fields.next()?.parse().ok()?;
    let mut id = fields.next()?.split(':');
    let major = u64::from_str_radix(id.next()?, 16).ok()?;
    let minor = u64::from_str_radix(id.next()?, 16).ok()?;
    let ino = id.next()?.parse().ok()?;
    Some(ProcLocksLine { pid, dev: (major, minor), ino })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_are_read_and_waiters_skipped() {
        let line = "1: FLOCK  ADVISORY  WRITE 4031 fd:01:1234 0 EOF";
        assert_eq!(parse_proc_locks_line(line), Some(ProcLocksLine { pid: 4031, dev: (0xfd, 1), ino: 1234 }));
        assert_eq!(parse_proc_locks_line("1: -> FLOCK  ADVISORY  WRITE 4032 fd:01:1234 0 EOF"), None);
        assert_eq!(parse_proc_locks_line("2: POSIX  ADVISORY  WRITE 99 00:2f:7 0 EOF"), None);
        assert_eq!(parse_proc_locks_line(""), None);
    }
}

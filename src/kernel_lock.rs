//! The kernel's locks, whichever the filesystem needs (DESIGN §4): flock(2),
//! or an OFD lock (fcntl F_OFD_SETLK over the whole file) where flock is
//! node-local but fcntl locks are coherent (GPFS). Both belong to the open file
//! description: released when its last descriptor closes (or the process
//! dies), shared by a forked child, which therefore must never unlock.
//!
//! Also the other direction: asking the kernel whether a file is locked
//! without taking any lock (/proc/locks for flock, F_OFD_GETLK for OFD).

use crate::fs::Primitive;
use std::io;
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
        Primitive::Flock => match std::fs::read_to_string("/proc/locks") {
            Ok(table) => {
                let (major, minor) = (libc::major(st.st_dev) as u64, libc::minor(st.st_dev) as u64);
                table
                    .lines()
                    .filter_map(parse_proc_locks_line)
                    .find(|l| l.dev == (major, minor) && l.ino == st.st_ino as u64)
                    .map_or(Seen::NotLocked, |l| Seen::Locked(Some(l.pid)))
            }
            Err(_) => Seen::CannotTell,
        },
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

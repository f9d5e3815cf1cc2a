//! Who holds a lock, found out without taking any lock: a probe lock, even a
//! shared one, would make a concurrent acquire fail, and then nobody does the
//! work (DESIGN §3). The record says who wrote it; the kernel's lock table, where
//! it can see, says whether anyone holds the lock now, and wins.

use crate::fs;
use crate::identity;
use crate::kernel_lock::{self, Seen};
use crate::lockfile::{c_path, check_regular, directory_of, open_error, open_fd, read_record_bytes};
use crate::record::{Parsed, Record, State};
use crate::status::{quote_path, Error};
use std::io;
use std::path::Path;
use std::time::Duration;

/// A torn record is most likely a write under way: read again this often.
const READ_ATTEMPTS: u32 = 4;
const REREAD_PAUSE: Duration = Duration::from_millis(2);

/// What `holder_info` found: the record as judged, and, when the file holds no
/// readable record, a note saying what it holds instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub record: Record,
    pub note: Option<String>,
}

/// What this node's kernel says about a lock on one inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelLock {
    /// Locked, by this pid if the kernel names one (an OFD lock has none).
    Held(Option<i64>),
    /// Not locked, and the table sees every lock on this filesystem.
    Free,
    /// Not locked here; on a shared filesystem another node may hold it.
    Unknown,
}

/// Reads the holder of `path` through a read-only descriptor, so a user who
/// may not write the lock file can still see who holds it.
pub fn holder_info(path: &Path) -> Result<Reading, Error> {
    let cpath = c_path(path)?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK;
    let fd = match open_fd(&cpath, flags, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return never_taken(path, e),
        Err(e) => return Err(open_error("cannot read lock file", path, e)),
    };
    let st = check_regular(&fd, path)?;
    let mut parsed = Record::parse(&read_record_bytes(&fd, path)?);
    for _ in 1..READ_ATTEMPTS {
        if !matches!(parsed, Parsed::Torn(_)) {
            break;
        }
        std::thread::sleep(REREAD_PAUSE);
        parsed = Record::parse(&read_record_bytes(&fd, path)?);
    }
    let magic = fs::magic_of(&fd, path)?;
    let kernel = match kernel_lock::query(&fd, fs::primitive_for(magic), &st) {
        Seen::Locked(pid) => KernelLock::Held(pid),
        // On a node-private filesystem this node's kernel sees every lock.
        Seen::NotLocked if fs::is_node_private(magic) => KernelLock::Free,
        Seen::NotLocked | Seen::CannotTell => KernelLock::Unknown,
    };
    let (record, note) = match parsed {
        Parsed::Record(record) => (record, None),
        Parsed::Empty => (Record::default(), None),
        Parsed::Torn(why) | Parsed::Foreign(why) => (
            Record::default(),
            Some(format!("lock file {} holds no readable holder record: {why}", quote_path(path))),
        ),
    };
    Ok(Reading { record: judge(record, kernel), note })
}

/// A lock never taken is free; a missing directory is an error.
fn never_taken(path: &Path, enoent: io::Error) -> Result<Reading, Error> {
    match std::fs::metadata(directory_of(path)) {
        Ok(meta) if meta.is_dir() => Ok(Reading { record: Record::default(), note: None }),
        Ok(_) => Err(Error::os("cannot read lock file", path, io::Error::from_raw_os_error(libc::ENOTDIR))),
        Err(_) => Err(Error::os("cannot read lock file", path, enoent)),
    }
}

/// The record as it stands once the kernel has had its say.
pub fn judge(mut record: Record, kernel: KernelLock) -> Record {
    match kernel {
        KernelLock::Held(pid) => {
            let record_names_holder = record.state == State::Held && pid.map_or(true, |pid| pid == record.pid);
            if !record_names_holder {
                // Locked by someone who wrote no record (flock(1), a script, or
                // an acquirer about to write its own): the kernel's pid is all
                // we know, and the lock is on this node.
                record = Record {
                    pid: pid.unwrap_or(0),
                    generation: record.generation,
                    host: identity::host().as_bytes().to_vec(),
                    boot_id: identity::boot_id().as_bytes().to_vec(),
                    ..Record::default()
                };
            }
            record.state = State::Held;
            record.alive = 1;
        }
        KernelLock::Free => {
            if record.state == State::Held {
                record.state = State::Stale; // the record outlived its lock
                record.alive = liveness(&record);
            }
        }
        KernelLock::Unknown => {
            if record.state == State::Held {
                record.alive = liveness(&record);
                if record.alive == 0 {
                    record.state = State::Stale;
                }
            }
        }
    }
    record
}

/// 1 running, 0 gone, -1 cannot tell from this node. Same host and boot: the
/// pid must be running *and* have the recorded start time, or it is another
/// process that was given the same pid.
pub fn liveness(record: &Record) -> i32 {
    let same_node = !record.host.is_empty()
        && record.host == identity::host().as_bytes()
        && !record.boot_id.is_empty()
        && record.boot_id == identity::boot_id().as_bytes();
    if !same_node || record.pid <= 0 {
        return -1;
    }
    match identity::process_stat(record.pid) {
        Some(stat) if !stat.exited && (record.start_time == 0 || stat.start_time == record.start_time) => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_here(pid: i64, start_time: u64) -> Record {
        Record {
            state: State::Held,
            pid,
            start_time,
            host: identity::host().as_bytes().to_vec(),
            boot_id: identity::boot_id().as_bytes().to_vec(),
            ..Record::default()
        }
    }

    #[test]
    fn a_reused_pid_is_not_the_holder() {
        let me = identity::pid();
        let start = identity::own_start_time(me);
        assert_eq!(liveness(&held_here(me, start)), 1);
        assert_eq!(liveness(&held_here(me, start + 1)), 0);
        let mut other_boot = held_here(me, start);
        other_boot.boot_id = b"another-boot".to_vec();
        assert_eq!(liveness(&other_boot), -1);
        let mut other_host = held_here(me, start);
        other_host.host = b"c999".to_vec();
        assert_eq!(liveness(&other_host), -1);
        assert_eq!(liveness(&held_here(i64::from(i32::MAX), 1)), 0);
    }

    #[test]
    fn the_kernel_wins_over_the_record() {
        let me = identity::pid();
        let start = identity::own_start_time(me);
        let stale = judge(held_here(me, start), KernelLock::Free);
        assert_eq!((stale.state, stale.alive), (State::Stale, 1));
        let no_record = judge(Record { generation: 4, ..Record::default() }, KernelLock::Held(Some(4031)));
        assert_eq!((no_record.state, no_record.pid, no_record.alive, no_record.generation), (State::Held, 4031, 1, 4));
        let dead = judge(held_here(i64::from(i32::MAX), 1), KernelLock::Unknown);
        assert_eq!((dead.state, dead.alive), (State::Stale, 0));
        let ofd = judge(held_here(me, start), KernelLock::Held(None));
        assert_eq!((ofd.state, ofd.pid, ofd.alive), (State::Held, me, 1));
        let done = judge(Record { state: State::Done, ..Record::default() }, KernelLock::Free);
        assert_eq!(done.state, State::Done);
    }
}

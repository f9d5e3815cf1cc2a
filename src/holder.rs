//! Who holds a lock, found out without taking any lock: a probe lock, even a
//! shared one, would make a concurrent acquire fail, and then nobody does the
//! work (docs/protocol.md#reading-who-holds-it). The record says who wrote it; the kernel's lock table, where
//! it can see, says whether anyone holds the lock now, and wins.
//!
//! The two are read in a fixed order — record, kernel, record again — and
//! only an answer from a record that did not change around the kernel's look
//! may call a holder dead: a holder that releases between our two looks has
//! rewritten the record first (release writes, then unlocks), and one that
//! acquires has locked first (acquire locks, then writes), so a record that
//! is the same before and after belongs to the moment of the kernel's answer.

use crate::fs;
use crate::identity;
use crate::kernel_lock::{self, Seen};
use crate::ladder::{Ladder, RungView};
use crate::lockfile::{c_path, check_regular, directory_of, open_error, open_fd, read_record_settled};
use crate::record::{Parsed, Record, State};
use crate::status::{quote_path, Error};
use std::io;
use std::path::Path;

/// How many times the record may change under a look at the kernel's table
/// before we answer from the record alone (the lock is then in busy use, and
/// the answer says so without declaring anyone dead).
const CONSISTENT_ATTEMPTS: u32 = 16;

/// What `holder_info` found: the record as judged, and a note when there is
/// more to say than the struct holds (no readable record; a holder that is
/// gone while a process it forked keeps the lock).
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
    let magic = fs::magic_of(&fd, path)?;
    let primitive = fs::primitive_for(magic);
    let ask_kernel = || match kernel_lock::query(&fd, primitive, &st) {
        Seen::Locked(pid) => KernelLock::Held(pid),
        // On a node-private filesystem this node's kernel sees every lock.
        Seen::NotLocked if fs::is_node_private(magic) => KernelLock::Free,
        Seen::NotLocked | Seen::CannotTell => KernelLock::Unknown,
    };
    if let Some(reading) = from_the_ladder(path, &fd, &st)? {
        return Ok(reading);
    }
    let mut before = read_record_settled(&fd, path)?;
    for attempt in 1.. {
        let kernel = ask_kernel();
        let after = read_record_settled(&fd, path)?;
        let settled = after == before;
        if settled || attempt == CONSISTENT_ATTEMPTS {
            let (record, note) = from_bytes(path, &after);
            let judged = if settled { judge(record, kernel, &st) } else { judge_without_kernel(record) };
            return Ok(Reading { record: judged.record, note: note.or(judged.note) });
        }
        before = after;
    }
    unreachable!("the loop returns at its last attempt")
}

/// In lease mode the top rung of the ladder says who holds the lock (the
/// lock file's record is a copy for people, and the kernel's table sees only
/// this node). None when the lock has no ladder, or the lock file's record is
/// newer than the ladder's top (the lock was used without the lease since).
fn from_the_ladder(path: &Path, fd: &std::os::fd::OwnedFd, st: &libc::stat) -> Result<Option<Reading>, Error> {
    let Some(ladder) = Ladder::open_existing(path)? else { return Ok(None) };
    let Some(&top) = ladder.rungs()?.last() else { return Ok(None) };
    let file_generation = match Record::parse_file(&read_record_settled(fd, path)?) {
        Parsed::Record(record) => record.generation,
        _ => 0,
    };
    let mut record = match ladder.read(top)? {
        RungView::Record(record) => record,
        RungView::Missing => return from_the_ladder(path, fd, st), // pruned while we looked: read again
        RungView::Unreadable { why, max_generation } => {
            let record = Record { state: State::Held, alive: -1, generation: max_generation, ..Record::default() };
            let note = format!("the top rung ({top}) of the lease directory {} is unreadable ({why}): a holder that \
                                died while writing it, or a write not visible here yet; an acquire watches it for a \
                                lease before taking over", quote_path(ladder.path()));
            return Ok(Some(Reading { record, note: Some(note) }));
        }
    };
    if record.generation < file_generation {
        return Ok(None);
    }
    let lease = record.lease.clone().unwrap_or_default();
    let age_ms = identity::now_unix_ms().saturating_sub(lease.renewed_unix_ms);
    let note = match record.state {
        State::Held => {
            record.alive = liveness(&record);
            match record.alive {
                1 => None,
                // This node's kernel refines the answer for holders on this
                // node: a child the holder forked may keep the lock file's
                // kernel lock (and no one renews the lease).
                0 if matches!(kernel_lock::query(fd, fs::primitive_for(fs::magic_of(fd, path)?), st),
                              Seen::Locked(_)) => {
                    let judged = held_through_an_inherited_descriptor(record, st);
                    return Ok(Some(Reading { record: judged.record, note: judged.note }));
                }
                0 => {
                    record.state = State::Stale;
                    Some(format!("the lease holder, pid {} on this node, is gone: the next acquire takes over at \
                                  once (rule 4)", record.pid))
                }
                // A holder on another node is alive until an acquirer has
                // watched its rung stay the same for a lease (rule 4); a
                // reader that only looks once cannot say more, whatever the
                // clocks suggest.
                _ => {
                    let by_the_clocks = if age_ms >= 2 * lease.lease_ms {
                        "more than two leases by the clocks: its node may be dead, or a clock is off; "
                    } else {
                        ""
                    };
                    Some(format!(
                        "held by pid {} on {} by the lease, last renewed {:.1} s ago by its clock (lease {:.1} s): \
                         {by_the_clocks}on another node, a holder counts as alive until its rung {top} stays \
                         unchanged for a whole lease (rule 4), which an acquire watches before taking over",
                        record.pid, String::from_utf8_lossy(&record.host), age_ms as f64 / 1000.0,
                        lease.lease_ms as f64 / 1000.0))
                }
            }
        }
        State::Free | State::Done | State::Stale => None,
    };
    Ok(Some(Reading { record, note }))
}

/// The record in the file, or what stands in for it, and a note when the
/// file holds no readable record.
fn from_bytes(path: &Path, bytes: &[u8]) -> (Record, Option<String>) {
    let no_record = |why: &str| Some(format!("lock file {} holds no readable holder record: {why}", quote_path(path)));
    match Record::parse_file(bytes) {
        Parsed::Record(record) => (record, None),
        Parsed::Empty => (Record::default(), None),
        // What a damaged record of ours still shows counts, as it does for
        // acquire: its highest generation, and done.
        Parsed::Torn { why, salvage } => {
            let state = if salvage.says_done { State::Done } else { State::Free };
            (Record { state, generation: salvage.max_generation, ..Record::default() }, no_record(&why))
        }
        Parsed::Foreign(why) => (Record::default(), no_record(&why)),
    }
}

/// A lock never taken is free; a missing directory is an error.
fn never_taken(path: &Path, enoent: io::Error) -> Result<Reading, Error> {
    match std::fs::metadata(directory_of(path)) {
        Ok(meta) if meta.is_dir() => Ok(Reading { record: Record::default(), note: None }),
        Ok(_) => Err(Error::os("cannot read lock file", path, io::Error::from_raw_os_error(libc::ENOTDIR))),
        Err(_) => Err(Error::os("cannot read lock file", path, enoent)),
    }
}

/// A judged record, and what the judgement has to add in words.
pub struct Judged {
    pub record: Record,
    pub note: Option<String>,
}

impl From<Record> for Judged {
    fn from(record: Record) -> Judged {
        Judged { record, note: None }
    }
}

/// The record as it stands once the kernel has had its say. `st` is the
/// lock file's stat, to find who holds the lock when the record cannot say.
pub fn judge(mut record: Record, kernel: KernelLock, st: &libc::stat) -> Judged {
    if record.state == State::Done {
        // Done stays done, even while another copy holds the lock for a
        // moment to find that out.
        return record.into();
    }
    match kernel {
        KernelLock::Held(pid) => {
            let record_names_holder = record.state == State::Held && pid.is_none_or(|pid| pid == record.pid);
            if !record_names_holder {
                // Locked by a process that wrote no record (flock(1), a
                // script): the kernel's pid is all there is to say.
                let pid = pid.or_else(|| kernel_lock::descriptor_holder(st));
                return Record {
                    state: State::Held,
                    alive: if pid.is_some() { 1 } else { -1 },
                    pid: pid.unwrap_or(0),
                    uid: pid.and_then(identity::process_uid).unwrap_or(0),
                    generation: record.generation,
                    host: identity::host().as_bytes().to_vec(),
                    boot_id: identity::boot_id().as_bytes().to_vec(),
                    ..Record::default()
                }
                .into();
            }
            record.state = State::Held;
            record.alive = 1;
            if liveness(&record) == 0 {
                return held_through_an_inherited_descriptor(record, st);
            }
            record.into()
        }
        KernelLock::Free => {
            if record.state != State::Held {
                return record.into();
            }
            record.alive = liveness(&record);
            if record.alive == 1 && kernel_lock::process_has_locked(record.pid, st) {
                // The kernel's table missed it (it is read a page at a
                // time, and may change in between); the holder's own
                // descriptors say it holds the lock.
                return record.into();
            }
            // The record outlived its lock.
            if record.alive == 1 {
                // Alive yet not holding it: its release could not rewrite
                // the record (a failing disk). Nobody holds the lock.
                let note = format!(
                    "the record says held by pid {}, which is running but no longer holds the lock \
                     (its release could not rewrite the record)", record.pid);
                record.state = State::Free;
                return Judged { record, note: Some(note) };
            }
            record.state = State::Stale;
            record.into()
        }
        KernelLock::Unknown => {
            if record.state == State::Held {
                record.alive = liveness(&record);
                if record.alive == 0 {
                    record.state = State::Stale;
                }
            }
            record.into()
        }
    }
}

/// The record kept changing while we looked at the kernel's table: the lock
/// is in busy use. Answer from the record, and call no one dead on the
/// strength of a kernel answer that belongs to another moment.
fn judge_without_kernel(mut record: Record) -> Judged {
    if record.state == State::Held {
        record.alive = liveness(&record);
    }
    record.into()
}

/// The recorded holder is dead, yet the kernel still shows the lock: a
/// process it forked (without exec) keeps the open file description, and
/// with it the lock — which is right, since that child may still be working.
/// Name the live process that holds it.
fn held_through_an_inherited_descriptor(mut record: Record, st: &libc::stat) -> Judged {
    let dead = record.pid;
    match kernel_lock::descriptor_holder(st) {
        Some(pid) => {
            record.pid = pid;
            record.uid = identity::process_uid(pid).unwrap_or(record.uid);
            record.start_time = identity::process_stat(pid).map_or(0, |s| s.start_time);
            record.alive = 1;
            let note = format!(
                "the recorded holder, pid {dead}, is gone; the lock is still held through its descriptor, \
                 inherited by pid {pid}");
            Judged { record, note: Some(note) }
        }
        None => {
            record.alive = -1;
            let note = format!(
                "the recorded holder, pid {dead}, is gone; the lock is still held through a descriptor it \
                 passed on, by a process this user cannot see");
            Judged { record, note: Some(note) }
        }
    }
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
        Some(_) => 0, // exited, or another process was given the pid since
        // /proc may not show another user's process (hidepid): only a pid
        // the kernel does not know is gone. A live holder must never be
        // judged dead, so one that cannot be checked counts as running.
        None if identity::pid_exists(record.pid) => 1,
        None => 0,
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

    fn no_file() -> libc::stat {
        // An inode no process has open: descriptor_holder finds nobody.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_ino = u64::MAX as _;
        st
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
        let st = no_file();
        let dead = i64::from(i32::MAX);
        let stale = judge(held_here(dead, 1), KernelLock::Free, &st).record;
        assert_eq!((stale.state, stale.alive), (State::Stale, 0));
        let no_record = judge(Record { generation: 4, ..Record::default() }, KernelLock::Held(Some(me)), &st).record;
        assert_eq!((no_record.state, no_record.pid, no_record.alive, no_record.generation), (State::Held, me, 1, 4));
        assert_eq!(no_record.uid, identity::uid());
        let dead_unknown = judge(held_here(dead, 1), KernelLock::Unknown, &st).record;
        assert_eq!((dead_unknown.state, dead_unknown.alive), (State::Stale, 0));
        let ofd = judge(held_here(me, start), KernelLock::Held(None), &st).record;
        assert_eq!((ofd.state, ofd.pid, ofd.alive), (State::Held, me, 1));
    }

    #[test]
    fn done_stays_done_whoever_holds_the_lock() {
        let st = no_file();
        for kernel in [KernelLock::Free, KernelLock::Held(Some(1)), KernelLock::Held(None), KernelLock::Unknown] {
            let done = judge(Record { state: State::Done, ..Record::default() }, kernel, &st).record;
            assert_eq!(done.state, State::Done, "{kernel:?}");
        }
    }

    #[test]
    fn a_live_holder_is_never_stale() {
        let me = identity::pid();
        let start = identity::own_start_time(me);
        let judged = judge(held_here(me, start), KernelLock::Free, &no_file());
        assert_eq!(judged.record.state, State::Free);
        assert!(judged.note.unwrap().contains("no longer holds the lock"));
    }

    #[test]
    fn a_dead_holder_whose_lock_lives_on_is_held_not_running() {
        let judged = judge(held_here(i64::from(i32::MAX), 1), KernelLock::Held(Some(i64::from(i32::MAX))), &no_file());
        assert_eq!((judged.record.state, judged.record.alive), (State::Held, -1));
        assert!(judged.note.unwrap().contains("is gone"));
    }
}

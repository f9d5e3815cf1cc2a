//! The lease's ladder as files: a directory `PATH.hpclock/` beside the lock
//! file, holding *rungs* — files named by their number (20 digits), each
//! created with O_EXCL, written once, flushed, closed, and never changed.
//! Whoever creates rung r+1 has moved the ladder on from rung r; the top rung
//! alone says who holds the lock.
//!
//! Creating a name that does not exist yet is the one operation that NFS
//! (an exclusive CREATE at the server), Lustre and BeeGFS (the metadata
//! server) and CephFS (the MDS) decide atomically across clients; `rename`
//! is not (it replaces its target, and RENAME_NOREPLACE is refused on NFS,
//! Lustre and Ceph), so nothing here is ever published by renaming. The rules
//! that decide when to climb are in `lease`.

use crate::lockfile::{open_error, pwrite_all};
use crate::record::{Parsed, Record, MAX_RECORD_BYTES};
use crate::status::{quote_path, Error};
use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The ladder directory of a lock file: `PATH.hpclock`.
pub(crate) fn ladder_path(lock: &Path) -> PathBuf {
    let mut name: OsString = lock.as_os_str().to_owned();
    name.push(".hpclock");
    PathBuf::from(name)
}

/// What a rung holds, as read now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RungView {
    /// Not there: pruned since it was listed, or never made.
    Missing,
    /// Empty or torn: its creator died between the create and the flush, or
    /// the write is not visible here yet. `max_generation` is what a torn
    /// rung still shows.
    Unreadable { why: String, max_generation: u64 },
    Record(Record),
}

/// The answer to an O_EXCL create of a rung.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// Our rung, with our record in it.
    Mine,
    /// Someone else created it first.
    Taken,
}

/// An open ladder directory. Rungs are reached relative to its descriptor,
/// so a rename of the path cannot send us into another directory unnoticed
/// (and [`Ladder::still_at_its_path`] tells when the path names another).
#[derive(Debug)]
pub(crate) struct Ladder {
    dir: OwnedFd,
    path: PathBuf,
    dev: u64,
    ino: u64,
}

const RUNG_DIGITS: usize = 20;

fn rung_name(rung: u64) -> CString {
    CString::new(format!("{rung:020}")).expect("digits have no NUL")
}

fn rung_number(name: &[u8]) -> Option<u64> {
    if name.len() != RUNG_DIGITS || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

fn cvt(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

/// Retries a call that EINTR interrupted.
fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

impl Ladder {
    /// Opens the ladder of `lock`, making its directory if it does not exist
    /// (`mode` is the lock file's; the directory gets x where it has r).
    pub(crate) fn open(lock: &Path, mode: u32) -> Result<Ladder, Error> {
        let path = ladder_path(lock);
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::invalid(format!("lock path {} contains a NUL byte", quote_path(lock))))?;
        let dir_mode = mode | ((mode & 0o444) >> 2);
        match cvt(unsafe { libc::mkdir(cpath.as_ptr(), dir_mode as libc::mode_t) }) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(open_error("cannot make the lease directory", &path, e)),
        }
        Self::open_dir(&path, &cpath)
    }

    /// The ladder of `lock` if it has one (for readers, who never create it).
    pub(crate) fn open_existing(lock: &Path) -> Result<Option<Ladder>, Error> {
        let path = ladder_path(lock);
        let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else { return Ok(None) };
        match Self::open_dir(&path, &cpath) {
            Ok(ladder) => Ok(Some(ladder)),
            Err(e) if e.errno == libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_dir(path: &Path, cpath: &CString) -> Result<Ladder, Error> {
        // O_NOFOLLOW: a symlink planted at PATH.hpclock must not send our
        // rungs into a directory of someone else's choosing.
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd = retry(|| cvt(unsafe { libc::open(cpath.as_ptr(), flags) }))
            .map_err(|e| open_error("cannot open the lease directory", path, e))?;
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        cvt(unsafe { libc::fstat(dir.as_raw_fd(), &mut st) })
            .map_err(|e| Error::os("cannot stat the lease directory", path, e))?;
        Ok(Ladder { dir, path: path.to_path_buf(), dev: st.st_dev as u64, ino: st.st_ino as u64 })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the ladder's path still names the directory we climb: someone
    /// who removed and remade it would have newcomers climb another ladder.
    pub(crate) fn still_at_its_path(&self) -> bool {
        std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::dev(&m) == self.dev
                && std::os::unix::fs::MetadataExt::ino(&m) == self.ino)
    }

    /// Every rung, lowest first: a listing, not a probe of r+1, r+2, … that
    /// would stop at a gap left by pruning. Made from a fresh open of the
    /// directory, so an NFS client revalidates its view of it.
    pub(crate) fn rungs(&self) -> Result<Vec<u64>, Error> {
        let listing = self.list().map_err(|e| Error::os("cannot list the lease directory", &self.path, e))?;
        let mut rungs: Vec<u64> = listing.iter().filter_map(|name| rung_number(name)).collect();
        rungs.sort_unstable();
        Ok(rungs)
    }

    fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        let fd = retry(|| cvt(unsafe { libc::openat(self.dir.as_raw_fd(), c".".as_ptr(), flags) }))?;
        // SAFETY: fdopendir takes over the descriptor, closedir closes it.
        let stream = unsafe { libc::fdopendir(fd) };
        if stream.is_null() {
            let err = io::Error::last_os_error();
            unsafe { libc::close(fd) };
            return Err(err);
        }
        let mut names = Vec::new();
        let result = loop {
            // readdir reports an error only through errno, with NULL.
            unsafe { *libc::__errno_location() = 0 };
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                let errno = unsafe { *libc::__errno_location() };
                break if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(errno)) };
            }
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            names.push(name.to_bytes().to_vec());
        };
        unsafe { libc::closedir(stream) };
        result.map(|()| names)
    }

    /// What rung `rung` holds now.
    pub(crate) fn read(&self, rung: u64) -> Result<RungView, Error> {
        let name = rung_name(rung);
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
        let fd = match retry(|| cvt(unsafe { libc::openat(self.dir.as_raw_fd(), name.as_ptr(), flags) })) {
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(RungView::Missing),
            Err(e) => return Err(Error::os("cannot read a rung of the lease directory", &self.path, e)),
        };
        let bytes = crate::lockfile::read_record_bytes(&fd, &self.path)?;
        Ok(match Record::parse(&bytes) {
            Parsed::Record(record) if record.lease.as_ref().is_some_and(|l| l.rung == rung) => RungView::Record(record),
            Parsed::Record(_) => RungView::Unreadable { why: "a record that is not this rung's".into(), max_generation: 0 },
            Parsed::Empty => RungView::Unreadable { why: "empty".into(), max_generation: 0 },
            Parsed::Torn { why, salvage } => RungView::Unreadable { why, max_generation: salvage.max_generation },
            Parsed::Foreign(why) => RungView::Unreadable { why, max_generation: 0 },
        })
    }

    /// Creates rung `rung` with `record` in it, or learns that someone else
    /// did. The create is O_EXCL; the record is written, flushed and the file
    /// closed before we believe it ours. When anything after the create
    /// fails, the rung is read back: only our own token in it makes it ours.
    /// On error our rung may stay empty or torn: others judge it like a dead
    /// holder's (`lease`, rule 4).
    pub(crate) fn create(&self, rung: u64, record: &Record) -> Result<Created, Error> {
        let name = rung_name(rung);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd = match retry(|| cvt(unsafe { libc::openat(self.dir.as_raw_fd(), name.as_ptr(), flags, 0o644) })) {
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            // Neither answer of a failed create is believed before the rung is
            // read back: an NFS create retransmitted after a lost reply says
            // EEXIST for a file it made itself.
            Err(e) => {
                return match (self.read(rung)?, e.raw_os_error()) {
                    (RungView::Record(found), _) if same_token(&found, record) => Ok(Created::Mine),
                    (_, Some(libc::EEXIST)) => Ok(Created::Taken),
                    _ => Err(Error::os("cannot create a rung in the lease directory", &self.path, e)),
                };
            }
        };
        let text = record.to_text();
        debug_assert!(text.len() <= MAX_RECORD_BYTES);
        let written = pwrite_all(&fd, &text)
            .and_then(|()| cvt(unsafe { libc::fdatasync(fd.as_raw_fd()) }).map(drop))
            // NFS reports a failed write at close: close it ourselves and look.
            .and_then(|()| cvt(unsafe { libc::close(std::os::fd::IntoRawFd::into_raw_fd(fd)) }).map(drop));
        match written {
            Ok(()) => Ok(Created::Mine),
            Err(error) => match self.read(rung)? {
                RungView::Record(found) if same_token(&found, record) => Ok(Created::Mine),
                _ => Err(Error::os("cannot write a rung of the lease directory", &self.path, error)),
            },
        }
    }

    /// Unlinks the rungs below `keep_from` (a holder keeps its own rung and
    /// the one below it). Errors are ignored: a rung left behind costs a
    /// directory entry, and the next prune tries again.
    pub(crate) fn prune_below(&self, keep_from: u64, rungs: &[u64]) {
        for &rung in rungs.iter().filter(|&&r| r < keep_from) {
            let name = rung_name(rung);
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) };
        }
    }
}

/// Whether a rung read back is the one `mine` would have written.
fn same_token(found: &Record, mine: &Record) -> bool {
    let token = |r: &Record| r.lease.as_ref().map(|l| l.token.clone());
    token(found).is_some() && token(found) == token(mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rung_names_are_twenty_digits_and_nothing_else_counts() {
        assert_eq!(rung_name(17).to_bytes(), b"00000000000000000017");
        assert_eq!(rung_number(b"00000000000000000017"), Some(17));
        assert_eq!(rung_number(&rung_name(u64::MAX).into_bytes()), Some(u64::MAX));
        assert_eq!(rung_number(b"0000000000000000017"), None);
        assert_eq!(rung_number(b"0000000000000000001x"), None);
        assert_eq!(rung_number(b".nfs000000000000001"), None);
    }

    #[test]
    fn the_ladder_is_beside_the_lock_file() {
        assert_eq!(ladder_path(Path::new("/scratch/run.lock")), Path::new("/scratch/run.lock.hpclock"));
    }
}

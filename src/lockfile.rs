//! The lock file as a file: opening it without following links, refusing
//! what is not a regular file, and reading and writing the record with
//! positioned I/O. Shared by the lock protocol and by the reader.

use crate::record::{Parsed, Record, MAX_RECORD_BYTES};
use crate::status::{quote_path, Error};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn c_path(path: &Path) -> Result<CString, Error> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid("lock path is empty"));
    }
    CString::new(bytes).map_err(|_| Error::invalid(format!("lock path {} contains a NUL byte", quote_path(path))))
}

pub(crate) fn open_fd(cpath: &CString, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    loop {
        let fd = unsafe { libc::open(cpath.as_ptr(), flags, mode as libc::c_uint) };
        if fd >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// The directory a lock file is (or would be) in: "." for a bare name.
pub(crate) fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

pub(crate) fn open_error(what: &str, path: &Path, err: io::Error) -> Error {
    let errno = err.raw_os_error().unwrap_or(0);
    // With fs.protected_symlinks, another user's symlink in a sticky directory
    // is refused with EACCES before O_NOFOLLOW's ELOOP: say what it is.
    let is_symlink = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let hint = match errno {
        libc::ELOOP | libc::EACCES if is_symlink => "the lock path is a symbolic link, which hpclock never follows",
        libc::EISDIR => "the lock path is a directory; give the path of a file inside it",
        libc::ENOENT => "the directory it would be created in does not exist",
        libc::ENOSPC | libc::EDQUOT => "the filesystem (or your quota) is full",
        libc::EROFS => "the filesystem is mounted read-only; hpclock_holder_info can still read the lock",
        libc::EACCES => "you may not write this lock file or create it in its directory; \
                         hpclock_holder_info needs only read access",
        _ => "",
    };
    Error::os_errno(what, path, errno, hint)
}

pub(crate) fn check_regular(fd: &OwnedFd, path: &Path) -> Result<libc::stat, Error> {
    check_regular_on_mount(fd, path).map(|(st, _)| st)
}

/// [`check_regular`], and the file's unique mount id where the kernel gives
/// one (see [`stat_without_times`]).
pub(crate) fn check_regular_on_mount(fd: &OwnedFd, path: &Path) -> Result<(libc::stat, Option<u64>), Error> {
    let (st, mount) = stat_without_times(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
        .map_err(|e| Error::os("cannot stat lock file", path, e))?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => return Ok((st, mount)),
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        // What opening a directory for writing says, so that reading and
        // acquiring answer alike (E_OS, EISDIR).
        libc::S_IFDIR => return Err(open_error("cannot open lock file", path, io::Error::from_raw_os_error(libc::EISDIR))),
        _ => "not a regular file",
    };
    Err(Error::invalid(format!("lock file {} is {kind}; hpclock locks only regular files", quote_path(path))))
}


/// stat(2) of what `dirfd`/`name` names, for its type, mode, link count,
/// size, device and inode only (the rest of the result is zero). It asks for
/// no time stamps: since Linux 6.13, ext4, xfs, btrfs and tmpfs give a file
/// whose change time someone *asked for* a fine-grained one at its next
/// write (multigrain timestamps), so every write of the record after our own
/// fstat and lstat updated the inode's times and dirtied it in the journal;
/// unasked, a write within the same clock tick leaves the inode alone.
/// Falls back to fstatat where statx is missing (ENOSYS: before Linux 4.11,
/// or a seccomp filter). Also the unique id of the mount it is on, where the
/// kernel gives one (STATX_MNT_ID_UNIQUE, Linux 6.8; never reused while the
/// system runs): `fs::magic_of_mount` keys its cache of filesystem types by it.
pub(crate) fn stat_without_times(dirfd: libc::c_int, name: &CStr, flags: libc::c_int)
    -> io::Result<(libc::stat, Option<u64>)>
{
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    let mask = libc::STATX_TYPE | libc::STATX_MODE | libc::STATX_NLINK | libc::STATX_INO | libc::STATX_SIZE
        | libc::STATX_MNT_ID_UNIQUE;
    if unsafe { libc::statx(dirfd, name.as_ptr(), flags, mask, &mut sx) } == 0 {
        st.st_mode = libc::mode_t::from(sx.stx_mode);
        st.st_nlink = sx.stx_nlink as libc::nlink_t;
        st.st_ino = sx.stx_ino as libc::ino_t;
        st.st_size = sx.stx_size as libc::off_t;
        st.st_dev = libc::makedev(sx.stx_dev_major, sx.stx_dev_minor);
        let mount = (sx.stx_mask & libc::STATX_MNT_ID_UNIQUE != 0).then_some(sx.stx_mnt_id);
        return Ok((st, mount));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    if unsafe { libc::fstatat(dirfd, name.as_ptr(), &mut st, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st, None))
}

/// Up to one byte more than a record may take, so that a file longer than a
/// record (foreign or hostile) can be seen to be so.
pub(crate) fn read_record_bytes(fd: &OwnedFd, path: &Path) -> Result<Vec<u8>, Error> {
    // Read into a buffer on the stack, never zeroed (zeroing 4 KiB per read
    // cost more than the parse), then keep only what the file held: a
    // record is a few hundred bytes, which the allocator hands out from its
    // per-thread cache.
    const WANTED: usize = MAX_RECORD_BYTES + 1;
    let mut buf = std::mem::MaybeUninit::<[u8; WANTED]>::uninit();
    let start = buf.as_mut_ptr().cast::<u8>();
    let mut got = 0;
    while got < WANTED {
        // SAFETY: `got < WANTED`: the kernel writes at most `WANTED - got`
        // bytes from `start + got`, inside the buffer.
        let n = unsafe { libc::pread(fd.as_raw_fd(), start.add(got).cast(), WANTED - got, got as libc::off_t) };
        match n {
            0 => break,
            n if n > 0 => {
                got += n as usize;
                // A regular file gives less than asked only at its end: no
                // second call just to be told so.
                if got < WANTED {
                    break;
                }
            }
            _ => {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINTR) {
                    return Err(Error::os("cannot read lock file", path, err));
                }
            }
        }
    }
    // SAFETY: the kernel wrote the first `got` bytes.
    Ok(unsafe { std::slice::from_raw_parts(start, got) }.to_vec())
}

/// The record as read without holding the lock: a torn record is most likely
/// a write under way, so it is read again a few times before it is believed.
pub(crate) fn read_record_settled(fd: &OwnedFd, path: &Path) -> Result<Vec<u8>, Error> {
    let mut bytes = read_record_bytes(fd, path)?;
    for _ in 1..SETTLE_ATTEMPTS {
        if !matches!(Record::parse_file(&bytes), Parsed::Torn { .. }) {
            break;
        }
        std::thread::sleep(SETTLE_PAUSE);
        bytes = read_record_bytes(fd, path)?;
    }
    Ok(bytes)
}

const SETTLE_ATTEMPTS: u32 = 4;
const SETTLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

pub(crate) fn pwrite_all(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        let n = unsafe {
            libc::pwrite(fd.as_raw_fd(), bytes[done..].as_ptr().cast(), bytes.len() - done, done as libc::off_t)
        };
        if n > 0 {
            done += n as usize;
        } else if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        } else {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    #[test]
    fn a_huge_file_is_read_no_further_than_one_record_and_a_byte() {
        let path = std::env::temp_dir().join(format!("hpclock-read-{}", std::process::id()));
        std::fs::write(&path, vec![b'x'; 10 << 20]).unwrap();
        let fd: OwnedFd = std::fs::File::open(&path).unwrap().into();
        let bytes = read_record_bytes(&fd, &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes.len(), MAX_RECORD_BYTES + 1);
    }
}

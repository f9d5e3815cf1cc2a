//! The lock file as a file: opening it without following links, refusing
//! what is not a regular file, and reading and writing the record with
//! positioned I/O. Shared by the lock protocol and by the reader.

use crate::record::{Parsed, Record, MAX_RECORD_BYTES};
use crate::status::{quote_path, Error};
use std::ffi::CString;
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
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Error::os("cannot stat lock file", path, io::Error::last_os_error()));
    }
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => return Ok(st),
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


/// Up to one byte more than a record may take, so that a file longer than a
/// record (foreign or hostile) can be seen to be so.
pub(crate) fn read_record_bytes(fd: &OwnedFd, path: &Path) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; MAX_RECORD_BYTES + 1];
    let mut got = 0;
    while got < buf.len() {
        let n = unsafe {
            libc::pread(fd.as_raw_fd(), buf[got..].as_mut_ptr().cast(), buf.len() - got, got as libc::off_t)
        };
        match n {
            0 => break,
            // A regular file gives less than asked only at its end: no
            // second call just to be told so.
            n if n > 0 && (n as usize) < buf.len() - got => {
                got += n as usize;
                break;
            }
            n if n > 0 => got += n as usize,
            _ => {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINTR) {
                    return Err(Error::os("cannot read lock file", path, err));
                }
            }
        }
    }
    buf.truncate(got);
    Ok(buf)
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

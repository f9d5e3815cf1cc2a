//! Outcomes and errors: the one table of status codes, and the error type that
//! carries a message naming the path and the OS error.

use std::fmt;
use std::io;
use std::path::Path;

/// Acquired / released / read. The only status that means "you hold it: do the work".
pub const HPCLOCK_OK: i32 = 0;
/// Another holder has it, or the timeout ran out.
pub const HPCLOCK_BUSY: i32 = 1;
/// The work was completed earlier (hpclock_complete); nothing to do.
pub const HPCLOCK_DONE: i32 = 2;
/// HPCLOCK_RANK0_ONLY on an MPI rank other than 0: nothing touched.
pub const HPCLOCK_NOT_RANK0: i32 = 3;
/// NULL/empty path, NULL out-pointer, unknown or released handle, bad flag, not a regular file.
pub const HPCLOCK_E_INVALID: i32 = -1;
/// A system call failed: hpclock_last_errno() has errno.
pub const HPCLOCK_E_OS: i32 = -2;
/// The filesystem refuses locks (ENOSYS, EOPNOTSUPP, ENOLCK).
pub const HPCLOCK_E_NOTSUP: i32 = -3;
/// HPCLOCK_REQUIRE_CLUSTER and exclusion is not known to hold across nodes.
pub const HPCLOCK_E_UNSAFE: i32 = -4;
/// A bug was caught at the boundary (Rust panic); never crashes the caller.
pub const HPCLOCK_E_INTERNAL: i32 = -5;
/// hpclock_check: the lock is no longer yours (taken over, lease lapsed, file replaced).
pub const HPCLOCK_E_LOST: i32 = -6;

/// Every outcome and error the library reports: `>= 0` is an outcome, `< 0`
/// an error (docs/api.md#statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = HPCLOCK_OK,
    Busy = HPCLOCK_BUSY,
    Done = HPCLOCK_DONE,
    NotRank0 = HPCLOCK_NOT_RANK0,
    Invalid = HPCLOCK_E_INVALID,
    Os = HPCLOCK_E_OS,
    NotSupported = HPCLOCK_E_NOTSUP,
    Unsafe = HPCLOCK_E_UNSAFE,
    Internal = HPCLOCK_E_INTERNAL,
    Lost = HPCLOCK_E_LOST,
}

/// The table behind `hpclock_status_name`: code and C name, one row each.
const STATUS_NAMES: &[(Status, &str)] = &[
    (Status::Ok, "HPCLOCK_OK\0"),
    (Status::Busy, "HPCLOCK_BUSY\0"),
    (Status::Done, "HPCLOCK_DONE\0"),
    (Status::NotRank0, "HPCLOCK_NOT_RANK0\0"),
    (Status::Invalid, "HPCLOCK_E_INVALID\0"),
    (Status::Os, "HPCLOCK_E_OS\0"),
    (Status::NotSupported, "HPCLOCK_E_NOTSUP\0"),
    (Status::Unsafe, "HPCLOCK_E_UNSAFE\0"),
    (Status::Internal, "HPCLOCK_E_INTERNAL\0"),
    (Status::Lost, "HPCLOCK_E_LOST\0"),
];
const UNKNOWN_STATUS_NAME: &str = "HPCLOCK_UNKNOWN_STATUS\0";

impl Status {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The C name, NUL-terminated so the boundary can hand it out as is.
    pub fn c_name_of(code: i32) -> &'static str {
        STATUS_NAMES
            .iter()
            .find(|(status, _)| status.code() == code)
            .map_or(UNKNOWN_STATUS_NAME, |(_, name)| name)
    }
}

/// An error: its status, the errno behind it (0 when no system call failed) and
/// a message for `hpclock_last_error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: Status,
    pub errno: i32,
    pub message: String,
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error { status: Status::Invalid, errno: 0, message: message.into() }
    }

    pub fn lost(message: impl Into<String>) -> Error {
        Error { status: Status::Lost, errno: 0, message: message.into() }
    }

    /// A failed system call on `path`: `what` says what we tried
    /// ("cannot open lock file"), the rest is the OS's own words.
    pub fn os(what: &str, path: &Path, err: io::Error) -> Error {
        let errno = err.raw_os_error().unwrap_or(0);
        Error::os_errno(what, path, errno, "")
    }

    /// Like [`Error::os`], with a hint appended after the OS error.
    pub fn os_errno(what: &str, path: &Path, errno: i32, hint: &str) -> Error {
        let status = match errno {
            // A filesystem that refuses locks is E_NOTSUP, not E_OS (docs/api.md#statuses).
            libc::ENOSYS | libc::EOPNOTSUPP | libc::ENOLCK => Status::NotSupported,
            _ => Status::Os,
        };
        let mut message = format!("{what} {}: {}", quote_path(path), describe_errno(errno));
        if !hint.is_empty() {
            message.push_str("; ");
            message.push_str(hint);
        }
        Error { status, errno, message }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// `"Permission denied (EACCES)"`: the strerror text and the errno's name, so
/// a message can be searched for and understood.
pub fn describe_errno(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    // std appends " (os error N)"; the symbolic name says more to a reader.
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    match errno_name(errno) {
        Some(name) => format!("{text} ({name})"),
        None => format!("{text} (errno {errno})"),
    }
}

/// Symbolic names of the errors a lock file can meet.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOLCK => "ENOLCK",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ESTALE => "ESTALE",
        libc::EDQUOT => "EDQUOT",
        libc::ENOTCONN => "ENOTCONN",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return None,
    };
    Some(name)
}

/// A path as a message shows it: in double quotes, valid UTF-8 as it is,
/// every other byte as `\xNN` (paths are bytes, and a message must not lie
/// about which file it means).
pub fn quote_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::from("\"");
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn status_names_cover_every_code_and_only_them() {
        for code in -6..=3 {
            assert_ne!(Status::c_name_of(code), UNKNOWN_STATUS_NAME, "code {code}");
        }
        assert_eq!(Status::c_name_of(4), UNKNOWN_STATUS_NAME);
        assert_eq!(Status::c_name_of(-7), UNKNOWN_STATUS_NAME);
        assert_eq!(Status::c_name_of(Status::Busy.code()), "HPCLOCK_BUSY\0");
    }

    #[test]
    fn os_error_names_path_text_and_errno() {
        let e = Error::os("cannot open lock file", Path::new("/scratch/run.lock"),
                          io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.status, Status::Os);
        assert_eq!(e.errno, libc::EACCES);
        assert_eq!(e.message, "cannot open lock file \"/scratch/run.lock\": Permission denied (EACCES)");
    }

    #[test]
    fn lock_refusals_are_not_supported() {
        let e = Error::os_errno("cannot lock", Path::new("/l"), libc::ENOSYS, "mount with -o flock");
        assert_eq!(e.status, Status::NotSupported);
        assert!(e.message.ends_with("; mount with -o flock"), "{}", e.message);
    }

    #[test]
    fn non_utf8_bytes_are_escaped_not_lost() {
        let p = Path::new(OsStr::from_bytes(b"/tmp/l\xffck-\xc3\xa9\"x"));
        assert_eq!(quote_path(p), "\"/tmp/l\\xffck-é\\\"x\"");
    }
}

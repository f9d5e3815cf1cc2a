//! The C boundary: pointer checks, the panic boundary and the thread's last
//! error live here, and nothing else does. Every function turns C arguments
//! into Rust ones, calls the core, and turns the answer back.

#![allow(non_camel_case_types)]

use crate::fs::{self, FsInfo};
use crate::handles;
use crate::holder;
use crate::identity;
use crate::lock::{self, Lock, Options, Outcome};
use crate::record::Record;
use crate::status::{Error, Status};
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, OsStr};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// A held lock. 0 is never a valid handle; handles are never reused.
pub type hpclock_handle = u64;

/// Options for hpclock_acquire. Initialise with hpclock_options_init().
#[repr(C)]
pub struct hpclock_options {
    /// HPCLOCK_* flags, default 0.
    pub flags: u32,
    /// Permission bits for a newly created lock file, default 0644 (umask applies); 0 means the default.
    pub mode: u32,
    /// 0: one try (default); > 0: wait up to this long; < 0: wait without limit. A timed wait
    /// polls; < 0 blocks in the kernel.
    pub timeout_ms: i64,
    /// Optional text kept in the holder record, or NULL; a label longer than 127 bytes is
    /// HPCLOCK_E_INVALID (never cut).
    pub label: *const c_char,
    /// Lease period in milliseconds (at least 100); 0 = the default, 60000; ignored without a lease.
    pub lease_ms: i64,
}

/// What hpclock_holder_info() and hpclock_handle_info() fill in.
#[repr(C)]
pub struct hpclock_holder {
    /// HPCLOCK_STATE_*.
    pub state: i32,
    /// 1 running, 0 gone, -1 cannot tell from this node.
    pub alive: i32,
    /// 0 when unknown.
    pub pid: i64,
    pub uid: u32,
    /// -1 when not launched as an MPI rank.
    pub mpi_rank: i32,
    /// Fencing token: acquisitions so far, this one included.
    pub generation: u64,
    /// 0 when unknown.
    pub acquired_unix_ms: i64,
    /// 0 while held or unknown.
    pub released_unix_ms: i64,
    /// NUL-terminated.
    pub host: [c_char; 256],
    /// Scheduler job id, e.g. "8812345" or "8812345_7"; "" when none.
    pub job_id: [c_char; 64],
    pub label: [c_char; 128],
}

/// What hpclock_fs_check() fills in: how far exclusion reaches on a filesystem.
#[repr(C)]
pub struct hpclock_fs_info {
    /// HPCLOCK_SCOPE_*.
    pub scope: i32,
    /// HPCLOCK_PRIMITIVE_*: what acquire uses on this fs.
    pub primitive: i32,
    /// statfs f_type.
    pub magic: u64,
    /// "ext4", "nfs4", "lustre", "gpfs", "fuse.sshfs", ...
    pub fs_type: [c_char; 32],
    /// One sentence: why this scope, e.g. "/scratch is lustre mounted with localflock: ...".
    pub detail: [c_char; 256],
}

/// The longest message hpclock_last_error() gives, NUL included; longer ones
/// are cut (a message names at most one path, and PATH_MAX is 4096).
const MESSAGE_CAPACITY: usize = 4608;

/// This thread's last error. Plain bytes with no destructor: a thread-local
/// that needs dropping becomes inaccessible once the C runtime begins to tear
/// the thread down (glibc runs thread-local destructors before `atexit`
/// handlers and pthread key destructors), and then a call from such a
/// handler would abort the process.
struct LastError {
    message: [u8; MESSAGE_CAPACITY],
    errno: i32,
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = const {
        RefCell::new(LastError { message: [0; MESSAGE_CAPACITY], errno: 0 })
    };
    /// How deep this thread is inside boundary(): a panic there is caught and
    /// reported through hpclock_last_error(), so the hook keeps it silent.
    static INSIDE_BOUNDARY: Cell<u32> = const { Cell::new(0) };
}

fn set_last_error_text(text: &str, errno: i32) {
    LAST_ERROR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let bytes = text.as_bytes();
        let mut n = bytes.len().min(MESSAGE_CAPACITY - 1);
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        slot.message[..n].copy_from_slice(&bytes[..n]);
        // The C string ends at the first NUL; a NUL inside the text would cut it short.
        for byte in &mut slot.message[..n] {
            if *byte == 0 {
                *byte = b'?';
            }
        }
        slot.message[n] = 0;
        slot.errno = errno;
    });
}

fn set_last_error(error: &Error) {
    set_last_error_text(&error.message, error.errno);
}

/// A remark on a successful call, kept where errors are: hpclock_last_error().
fn set_note(note: &str) {
    set_last_error_text(note, 0);
}

fn clear_last_error() {
    set_last_error_text("", 0);
}

/// What a function returns when a panic was caught in its body.
trait OnPanic {
    fn on_panic() -> Self;
}

impl OnPanic for i32 {
    fn on_panic() -> i32 {
        Status::Internal.code()
    }
}

impl OnPanic for () {
    fn on_panic() {}
}

impl OnPanic for *const c_char {
    fn on_panic() -> *const c_char {
        c"".as_ptr()
    }
}

/// Installed once, when the library is loaded (`lifecycle`): a panic inside
/// boundary() prints nothing on the caller's stderr — its message goes to
/// hpclock_last_error() — and any other panic is left to the hook before ours.
pub(crate) fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if INSIDE_BOUNDARY.with(Cell::get) == 0 {
            previous(info);
        }
    }));
}

/// The one panic boundary: no unwinding into C, which would be undefined
/// behaviour (and an abort since Rust 1.81), only an error code.
fn boundary<T: OnPanic>(name: &str, body: impl FnOnce() -> T) -> T {
    INSIDE_BOUNDARY.with(|depth| depth.set(depth.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(body));
    INSIDE_BOUNDARY.with(|depth| depth.set(depth.get() - 1));
    result.unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        set_last_error_text(&format!("internal error in {name}: {why} (a bug in hpclock; please report it)"), 0);
        T::on_panic()
    })
}

/// A call that can fail: starts with no error, ends with a status code, and
/// leaves the message of an error for hpclock_last_error().
fn status_call(name: &str, body: impl FnOnce() -> Result<Status, Error>) -> i32 {
    boundary(name, || {
        clear_last_error();
        match body() {
            Ok(status) => status.code(),
            Err(error) => {
                set_last_error(&error);
                error.status.code()
            }
        }
    })
}

/// The pointer checks, in one place.
unsafe fn path_arg<'a>(path: *const c_char) -> Result<&'a Path, Error> {
    if path.is_null() {
        return Err(Error::invalid("lock path is NULL"));
    }
    Ok(Path::new(OsStr::from_bytes(CStr::from_ptr(path).to_bytes())))
}

unsafe fn out_arg<'a, T>(out: *mut T, what: &str) -> Result<&'a mut T, Error> {
    out.as_mut().ok_or_else(|| Error::invalid(format!("{what} is NULL")))
}

unsafe fn options_arg(opts: *const hpclock_options) -> Options {
    let Some(opts) = opts.as_ref() else { return Options::default() };
    let label = if opts.label.is_null() { Vec::new() } else { CStr::from_ptr(opts.label).to_bytes().to_vec() };
    Options {
        flags: opts.flags,
        mode: opts.mode,
        timeout_ms: opts.timeout_ms,
        label,
        lease_ms: opts.lease_ms,
        ..Options::default()
    }
}

fn unknown_handle(handle: hpclock_handle) -> Error {
    Error::invalid(format!("handle {handle} is not a held lock (never acquired, or already released)"))
}

fn copy_c_string(dst: &mut [c_char], src: &[u8]) {
    let n = src.len().min(dst.len() - 1);
    for (d, &s) in dst.iter_mut().zip(&src[..n]) {
        *d = s as c_char;
    }
    dst[n..].fill(0);
}

fn holder_from(record: &Record) -> hpclock_holder {
    let mut out = hpclock_holder {
        state: record.state as i32,
        alive: record.alive,
        pid: record.pid,
        uid: record.uid,
        mpi_rank: record.mpi_rank,
        generation: record.generation,
        acquired_unix_ms: record.acquired_unix_ms,
        released_unix_ms: record.released_unix_ms,
        host: [0; 256],
        job_id: [0; 64],
        label: [0; 128],
    };
    copy_c_string(&mut out.host, &record.host);
    copy_c_string(&mut out.job_id, &record.job_id);
    copy_c_string(&mut out.label, &record.label);
    out
}

fn fs_info_from(info: &FsInfo) -> hpclock_fs_info {
    let mut out = hpclock_fs_info {
        scope: info.scope as i32,
        primitive: if info.lease { crate::fs::HPCLOCK_PRIMITIVE_LEASE } else { info.primitive as i32 },
        magic: info.magic,
        fs_type: [0; 32],
        detail: [0; 256],
    };
    copy_c_string(&mut out.fs_type, info.fs_type.as_bytes());
    copy_c_string(&mut out.detail, info.detail.as_bytes());
    out
}

/// hpclock_acquire with default options: one try, no flags, mode 0644.
#[no_mangle]
pub unsafe extern "C" fn hpclock_try_acquire(path: *const c_char, out: *mut hpclock_handle) -> i32 {
    hpclock_acquire(path, std::ptr::null(), out)
}

/// Fills *opts with the defaults: no flags, mode 0644, one try, no label.
#[no_mangle]
pub unsafe extern "C" fn hpclock_options_init(opts: *mut hpclock_options) {
    boundary("hpclock_options_init", || {
        if let Some(opts) = opts.as_mut() {
            let defaults = Options::default();
            *opts = hpclock_options {
                flags: defaults.flags,
                mode: defaults.mode,
                timeout_ms: defaults.timeout_ms,
                label: std::ptr::null(),
                lease_ms: defaults.lease_ms,
            };
        }
    })
}

/// Takes the lock on path, creating the file if needed (never truncating it).
/// HPCLOCK_OK: you hold it, *out is the handle: do the work, then release or
/// complete. HPCLOCK_BUSY: someone else holds it (see hpclock_holder_info).
/// HPCLOCK_DONE: the work was completed earlier. HPCLOCK_NOT_RANK0: the flag
/// HPCLOCK_RANK0_ONLY on an MPI rank other than 0 (nothing was touched). On
/// every outcome but HPCLOCK_OK, *out is 0. opts may be NULL for the defaults.
#[no_mangle]
pub unsafe extern "C" fn hpclock_acquire(
    path: *const c_char,
    opts: *const hpclock_options,
    out: *mut hpclock_handle,
) -> i32 {
    status_call("hpclock_acquire", || {
        let out = out_arg(out, "handle out-pointer")?;
        *out = 0;
        let path = path_arg(path)?;
        match lock::acquire(path, &options_arg(opts))? {
            Outcome::Acquired(lock) => {
                *out = handles::insert(lock);
                Ok(Status::Ok)
            }
            Outcome::Busy(why) => {
                if let Some(why) = why {
                    set_note(&why);
                }
                Ok(Status::Busy)
            }
            Outcome::Done(_) => Ok(Status::Done),
            Outcome::NotRank0 => Ok(Status::NotRank0),
        }
    })
}

/// Marks the record released, unlocks and closes. In a forked child, only
/// closes the child's descriptor: the parent keeps its lock and its record.
/// A handle can be released once; after that it is HPCLOCK_E_INVALID.
#[no_mangle]
pub extern "C" fn hpclock_release(h: hpclock_handle) -> i32 {
    status_call("hpclock_release", || {
        handles::take(h).ok_or_else(|| unknown_handle(h))?.release().map(|()| Status::Ok)
    })
}

/// Like hpclock_release, and records the work as done: later acquisitions
/// answer HPCLOCK_DONE until one passes HPCLOCK_IGNORE_DONE. In a forked
/// child, HPCLOCK_E_INVALID: the child holds nothing to complete, nothing is
/// written, and the handle stays so that the child can release its copy.
#[no_mangle]
pub extern "C" fn hpclock_complete(h: hpclock_handle) -> i32 {
    status_call("hpclock_complete", || {
        // In a forked child the handle is refused and stays, so that the
        // child can still release (close) its copy.
        handles::take_if(h, Lock::may_complete).ok_or_else(|| unknown_handle(h))??.complete().map(|()| Status::Ok)
    })
}

/// Who holds path, read without taking any lock (read-only access to the
/// file is enough). A lock file that does not exist is HPCLOCK_OK with state
/// FREE and generation 0; a missing directory is HPCLOCK_E_OS (ENOENT). Where
/// this node's kernel can tell whether the file is locked (/proc/locks), that
/// answer wins over the record. If the file holds no readable record (torn,
/// foreign), the answer is HPCLOCK_OK from what the kernel says alone, and
/// hpclock_last_error() says what the file holds instead.
#[no_mangle]
pub unsafe extern "C" fn hpclock_holder_info(path: *const c_char, out: *mut hpclock_holder) -> i32 {
    status_call("hpclock_holder_info", || {
        let out = out_arg(out, "holder out-pointer")?;
        let reading = holder::holder_info(path_arg(path)?)?;
        *out = holder_from(&reading.record);
        if let Some(note) = &reading.note {
            set_note(note);
        }
        Ok(Status::Ok)
    })
}

/// For a held handle: mine is the record this acquisition wrote (its
/// generation is the fencing token), previous the record found when it was
/// acquired (STALE there: the previous holder died holding it). Either may
/// be NULL.
#[no_mangle]
pub unsafe extern "C" fn hpclock_handle_info(
    h: hpclock_handle,
    mine: *mut hpclock_holder,
    previous: *mut hpclock_holder,
) -> i32 {
    status_call("hpclock_handle_info", || {
        let (my_record, previous_record) = handles::with(h, |lock| (holder_from(lock.mine()), holder_from(lock.previous())))
            .ok_or_else(|| unknown_handle(h))?;
        if let Some(mine) = mine.as_mut() {
            *mine = my_record;
        }
        if let Some(previous) = previous.as_mut() {
            *previous = previous_record;
        }
        Ok(Status::Ok)
    })
}

/// HPCLOCK_OK while the lock is still yours; HPCLOCK_E_LOST once it is not: in lease mode
/// when it was taken over or no renewal succeeded for a lease (even before the renewal thread
/// notices), and in every mode when the path no longer names the locked file (someone
/// deleted or replaced it, so newcomers lock another file). Call it before writing what the
/// lock protects, and stamp outputs with the generation (the fencing token). In a forked
/// child, HPCLOCK_E_INVALID: the child holds nothing.
#[no_mangle]
pub extern "C" fn hpclock_check(h: hpclock_handle) -> i32 {
    status_call("hpclock_check", || {
        // The check makes system calls: not with the handle table held.
        let checker = handles::with(h, Lock::checker).ok_or_else(|| unknown_handle(h))?;
        checker.check().map(|()| Status::Ok)
    })
}

/// Where would a lock on path hold? path is the lock file, or where it would
/// be created. scope says how far the kernel's locks reach (CLUSTER excludes
/// other nodes; SPLIT and NONE do not, and there acquire uses the lease:
/// primitive LEASE), primitive what acquire uses there, detail why, in one
/// sentence. Takes no lock and creates nothing.
#[no_mangle]
pub unsafe extern "C" fn hpclock_fs_check(path: *const c_char, out: *mut hpclock_fs_info) -> i32 {
    status_call("hpclock_fs_check", || {
        let out = out_arg(out, "fs info out-pointer")?;
        *out = fs_info_from(&fs::check(path_arg(path)?)?);
        Ok(Status::Ok)
    })
}

/// The MPI rank this process was launched as, read from the launcher's
/// environment (OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK, MV2_COMM_WORLD_RANK,
/// PALS_RANKID, ALPS_APP_PE, FLUX_TASK_RANK, SLURM_PROCID, in that order), so it
/// works before MPI_Init; -1 when not an MPI rank.
#[no_mangle]
pub extern "C" fn hpclock_mpi_rank() -> i32 {
    boundary("hpclock_mpi_rank", identity::mpi_rank)
}

/// This thread's last error message, "" if the last call that can fail did not
/// fail. Never NULL; valid until this thread's next hpclock call.
#[no_mangle]
pub extern "C" fn hpclock_last_error() -> *const c_char {
    boundary("hpclock_last_error", || LAST_ERROR.with(|slot| slot.borrow().message.as_ptr().cast()))
}

/// The errno behind this thread's last HPCLOCK_E_OS (0 if none).
#[no_mangle]
pub extern "C" fn hpclock_last_errno() -> i32 {
    boundary("hpclock_last_errno", || LAST_ERROR.with(|slot| slot.borrow().errno))
}

/// "HPCLOCK_BUSY" for HPCLOCK_BUSY; "HPCLOCK_UNKNOWN_STATUS" for any other number.
#[no_mangle]
pub extern "C" fn hpclock_status_name(status: i32) -> *const c_char {
    boundary("hpclock_status_name", || Status::c_name_of(status).as_ptr().cast())
}

/// "MAJOR.MINOR.PATCH".
#[no_mangle]
pub extern "C" fn hpclock_version() -> *const c_char {
    boundary("hpclock_version", || concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_e_internal_with_a_message() {
        let rc = status_call("hpclock_test", || panic!("invariant broken"));
        assert_eq!(rc, Status::Internal.code());
        let message = unsafe { CStr::from_ptr(hpclock_last_error()) }.to_string_lossy().into_owned();
        assert!(message.contains("hpclock_test") && message.contains("invariant broken"), "{message}");
        let pointer: *const c_char = boundary("hpclock_test", || panic!("again"));
        assert_eq!(unsafe { CStr::from_ptr(pointer) }.to_bytes(), b"");
    }

    /// Run again as a child process with --nocapture, where a panic message
    /// would reach the real stderr: a caught panic must print nothing there.
    #[test]
    fn a_caught_panic_prints_nothing_on_stderr() {
        if std::env::var_os("HPCLOCK_PANIC_CHILD").is_some() {
            assert_eq!(status_call("hpclock_test", || panic!("invariant broken")), Status::Internal.code());
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "ffi::tests::a_caught_panic_prints_nothing_on_stderr", "--nocapture", "--test-threads=1"])
            .env("HPCLOCK_PANIC_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("invariant broken"), "{stderr}");
    }

    #[test]
    fn a_successful_call_clears_the_last_error() {
        set_last_error(&Error::invalid("old"));
        assert_eq!(status_call("hpclock_test", || Ok(Status::Busy)), Status::Busy.code());
        assert_eq!(unsafe { CStr::from_ptr(hpclock_last_error()) }.to_bytes(), b"");
        assert_eq!(hpclock_last_errno(), 0);
    }

    #[test]
    fn long_host_and_label_are_cut_and_nul_terminated() {
        let record = Record { host: vec![b'h'; 300], label: b"lab".to_vec(), ..Record::default() };
        let holder = holder_from(&record);
        assert_eq!(holder.host[254], b'h' as c_char);
        assert_eq!(holder.host[255], 0);
        assert_eq!(unsafe { CStr::from_ptr(holder.label.as_ptr()) }.to_bytes(), b"lab");
    }
}

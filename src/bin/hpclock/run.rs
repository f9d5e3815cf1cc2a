//! `hpclock run`: COMMAND runs as a child that inherits the locked descriptor,
//! so the lock is held as long as either process lives — a `kill -9` of
//! hpclock cannot let a second copy start while COMMAND still runs.

use crate::report::quote_words;
use hpclock::{Error, Lock, Status};
use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

/// Passed on to COMMAND: Slurm sends SIGTERM before the time limit, a
/// terminal SIGINT, and codes use SIGUSR1/2 and SIGHUP to ask for a checkpoint.
const FORWARDED: [libc::c_int; 5] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2];

/// The child's pid, for the signal handler (0: no child).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // kill(2) is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
}

/// Blocks the forwarded signals while in scope: one that arrives before the
/// child's pid is known waits, and is passed on once it is.
struct SignalsHeld {
    previous: libc::sigset_t,
}

impl SignalsHeld {
    fn new() -> SignalsHeld {
        // SAFETY: plain sigset manipulation on local values.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in FORWARDED {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
            SignalsHeld { previous }
        }
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}

fn install_forwarding() {
    for signal in FORWARDED {
        // SAFETY: the handler only reads an atomic and calls kill(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Runs COMMAND while holding `lock`; returns COMMAND's exit status (128+N for
/// signal N, 127 if it could not be started), after releasing the lock — or,
/// with `once` and status 0, marking the work done.
pub fn hold_while_running(lock: Lock, command: &[OsString], once: bool) -> Result<u8, Error> {
    let fd = lock.as_raw_fd();
    install_forwarding();
    let held = SignalsHeld::new();
    let mut child = Command::new(&command[0]);
    child.args(&command[1..]);
    // SAFETY: between fork and exec only fcntl(2), which is async-signal-safe.
    unsafe {
        child.pre_exec(move || {
            // The lock's descriptor is close-on-exec; COMMAND alone keeps it.
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = child.spawn();
    let mut running = match spawned {
        Ok(running) => running,
        Err(error) => {
            drop(held);
            eprintln!("hpclock: cannot run {}: {error}", quote_words(command));
            lock.release()?;
            return Ok(127);
        }
    };
    CHILD.store(running.id() as i32, Ordering::SeqCst);
    drop(held); // signals that arrived meanwhile go to COMMAND now
    let status = running.wait();
    CHILD.store(0, Ordering::SeqCst);
    let status = status.map_err(|e| Error {
        status: Status::Os,
        errno: e.raw_os_error().unwrap_or(0),
        message: format!("cannot wait for {}: {e}", quote_words(command)),
    })?;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
        (None, None) => 1,
    };
    let finished = if once && code == 0 { lock.complete() } else { lock.release() };
    if let Err(error) = finished {
        eprintln!("hpclock: {error}");
    }
    Ok(code)
}

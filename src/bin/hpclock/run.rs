//! `hpclock run`: COMMAND runs as a child that inherits the locked descriptor,
//! so the lock is held as long as either process lives — a `kill -9` of
//! hpclock cannot let a second copy start while COMMAND still runs.
//!
//! COMMAND starts as it would have without hpclock: with the signal mask and
//! the ignored signals hpclock was started with (a code with a SIGTERM
//! handler must see Slurm's SIGTERM), and SIGPIPE at its default.

use crate::report::quote_words;
use hpclock::{Error, Lock, Status};
use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Passed on to COMMAND: Slurm sends SIGTERM before the time limit, a
/// terminal SIGINT, and codes use SIGUSR1/2 and SIGHUP to ask for a checkpoint.
const FORWARDED: [libc::c_int; 5] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2];

/// The child's pid, for the signal handler (0: no child).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A SIGTERM, SIGINT or SIGHUP arrived while COMMAND ran: COMMAND was asked
/// to stop, so even a clean exit does not mean the work is finished (codes
/// such as GROMACS checkpoint and exit 0 on Slurm's pre-timeout SIGTERM).
static ASKED_TO_STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    if matches!(signal, libc::SIGTERM | libc::SIGINT | libc::SIGHUP) {
        ASKED_TO_STOP.store(true, Ordering::SeqCst);
    }
    // A signal the kernel sent (si_code SI_KERNEL) came from the terminal —
    // Ctrl-C, a hangup — to the whole foreground process group, COMMAND
    // included: passing it on would deliver it twice.
    // SAFETY: the kernel hands SA_SIGINFO handlers a valid siginfo_t.
    if !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL {
        return;
    }
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // kill(2) is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
}

/// The signal mask hpclock was started with, and the forwarded signals
/// blocked on top of it while in scope: one that arrives before the child's
/// pid is known waits, and is passed on once it is.
struct SignalsHeld {
    original: libc::sigset_t,
}

impl SignalsHeld {
    fn new() -> SignalsHeld {
        // SAFETY: plain sigset manipulation on local values.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut original: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in FORWARDED {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut original);
            SignalsHeld { original }
        }
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.original, std::ptr::null_mut()) };
    }
}

/// Forwards the signals hpclock's caller did not ignore. An ignored one
/// (`nohup` ignores SIGHUP) stays ignored, here and in COMMAND, which
/// inherits the disposition.
fn install_forwarding() {
    for signal in FORWARDED {
        // SAFETY: the handler only touches atomics and calls kill(2).
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signal, std::ptr::null(), &mut current);
            if current.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction =
                forward as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Runs COMMAND while holding `lock`; returns COMMAND's exit status (128+N for
/// signal N, 127 if it could not be started), after releasing the lock — or,
/// with `once` and status 0 and no request to stop, marking the work done.
/// In lease mode, 79 if the lease was lost and COMMAND had to be stopped.
pub fn hold_while_running(lock: Lock, command: &[OsString], once: bool) -> Result<u8, Error> {
    let fd = lock.as_raw_fd();
    let lease = lock.lease_ms().is_some();
    let wrapper = unsafe { libc::getpid() };
    install_forwarding();
    let held = SignalsHeld::new();
    let original_mask = held.original;
    let mut child = Command::new(&command[0]);
    child.args(&command[1..]);
    // SAFETY: between fork and exec only fcntl(2), signal(2) and
    // sigprocmask(2), all async-signal-safe.
    unsafe {
        child.pre_exec(move || {
            // The lock's descriptor is close-on-exec; COMMAND alone keeps it.
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The Rust runtime ignores SIGPIPE; a program expects its default.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            // The mask hpclock was started with, not the one it blocks now.
            if libc::sigprocmask(libc::SIG_SETMASK, &original_mask, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The lease lives in this wrapper (its renewal thread): if the
            // wrapper dies, nobody renews, another node takes over after a
            // lease — and COMMAND must not run on unguarded.
            if lease {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != wrapper {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH)); // the wrapper died already
                }
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
    let status = if lease { wait_watching_the_lease(&mut running, &lock) } else { running.wait().map(Ended::Exited) };
    CHILD.store(0, Ordering::SeqCst);
    let status = match status {
        Ok(Ended::Exited(status)) => Ok(status),
        Ok(Ended::Stopped(why)) => {
            eprintln!("hpclock: {why}; stopped {}", quote_words(command));
            match lock.release() {
                Err(error) if error.status != Status::Lost => eprintln!("hpclock: {error}"),
                _ => {}
            }
            return Ok(crate::exit::LOST);
        }
        Err(e) => Err(e),
    };
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
    let stopped = ASKED_TO_STOP.load(Ordering::SeqCst);
    if once && code == 0 && stopped {
        eprintln!("hpclock: {} exited 0 after being asked to stop (SIGTERM, SIGINT or SIGHUP): \
                   not marking the work done", quote_words(command));
    }
    let finished = if once && code == 0 && !stopped { lock.complete() } else { lock.release() };
    if let Err(error) = finished {
        eprintln!("hpclock: {error}");
    }
    Ok(code)
}

enum Ended {
    Exited(std::process::ExitStatus),
    /// The lease was lost: COMMAND was stopped, for this reason.
    Stopped(String),
}

/// Waits for COMMAND while watching the lease: woken by COMMAND's end (a
/// pidfd) or every fifth of a lease, it asks `check`; once the lease is lost,
/// COMMAND gets SIGTERM, then SIGKILL after a grace period.
fn wait_watching_the_lease(running: &mut std::process::Child, lock: &Lock) -> io::Result<Ended> {
    let lease_ms = lock.lease_ms().unwrap_or(60_000);
    let interval = (lease_ms / 5).clamp(50, 1000) as libc::c_int;
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, running.id() as libc::pid_t, 0) } as libc::c_int;
    loop {
        if let Some(status) = running.try_wait()? {
            close_fd(pidfd);
            return Ok(Ended::Exited(status));
        }
        if let Err(lost) = lock.check() {
            close_fd(pidfd);
            let grace = std::time::Duration::from_millis(lease_ms.clamp(1000, 10_000) as u64);
            let pid = running.id() as libc::pid_t;
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let until = std::time::Instant::now() + grace;
            while running.try_wait()?.is_none() {
                if std::time::Instant::now() >= until {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    running.wait()?;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            return Ok(Ended::Stopped(lost.message));
        }
        if pidfd >= 0 {
            let mut poll = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
            unsafe { libc::poll(&mut poll, 1, interval) };
        } else {
            std::thread::sleep(std::time::Duration::from_millis(interval as u64));
        }
    }
}

fn close_fd(fd: libc::c_int) {
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
}

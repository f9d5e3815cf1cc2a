//! Who we are: host, boot, scheduler job, MPI rank, pid and process start
//! time, as they go into a holder record (docs/record.md#where-the-values-come-from).
//!
//! What cannot change under a running process (host, boot, environment set by
//! the launcher before `main`) is read once and cached. The pid and the start
//! time are per process: a forked child must never report its parent's.

use crate::fork_safe::Published;
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the environment says about the job this process belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Job {
    /// "8812345", or "8812345_7" for task 7 of an array job.
    pub id: String,
    /// The array task alone ("7"), "" when not an array task.
    pub array_task: String,
}

/// Launchers set these before `main`, so they work before MPI_Init
/// (docs/record.md#where-the-values-come-from).
const RANK_VARIABLES: &[&str] = &[
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
    "MV2_COMM_WORLD_RANK",
    "PALS_RANKID",
    "ALPS_APP_PE",
    "FLUX_TASK_RANK",
    "SLURM_PROCID",
];
const JOB_VARIABLES: &[&str] = &["SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID", "JOB_ID"];

/// The record keeps a job id in `hpclock_holder.job_id[64]`, NUL included.
pub(crate) const MAX_JOB_ID_BYTES: usize = 63;

fn read_host() -> String {
    // SAFETY: utsname is plain old data; uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = uts.nodename.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Changes at every boot: with it, a pid recorded before a reboot is not
/// taken for a process running now.
fn read_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

// Read once per process, without a lock (see `fork_safe`: a child forked while
// another thread reads them must not inherit a half-done initialisation).
static HOST: Published<String> = Published::new();
static BOOT_ID: Published<String> = Published::new();
static MPI_RANK: Published<i32> = Published::new();
static JOB: Published<Job> = Published::new();

pub fn host() -> &'static str {
    HOST.get_or_init(read_host)
}

pub fn boot_id() -> &'static str {
    BOOT_ID.get_or_init(read_boot_id)
}

/// -1 when the environment names no MPI rank.
pub fn mpi_rank() -> i32 {
    *MPI_RANK.get_or_init(|| mpi_rank_from(|name| std::env::var(name).ok()))
}

pub fn job() -> &'static Job {
    JOB.get_or_init(|| job_from(|name| std::env::var(name).ok()))
}

/// Our pid, cached where no child can inherit it: a page marked
/// MADV_WIPEONFORK reads as zeros in every child the kernel makes with its
/// own memory (fork, or clone without CLONE_VM, however it was made:
/// pthread_atfork handlers do not run for a raw clone), so a child always
/// asks the kernel for its own, and a forked child can never mistake
/// itself for the process that acquired a lock (madvise(2), Linux 4.14; the
/// same mechanism OpenSSL uses to tell a child from its parent). This spares
/// a getpid(2) on every acquire and release. Null where the kernel refuses
/// the advice: then every call asks the kernel.
static PID_PAGE: AtomicPtr<AtomicI64> = AtomicPtr::new(std::ptr::null_mut());

/// Called once, before any thread can be inside hpclock (lifecycle).
pub(crate) fn set_up_pid_cache() {
    // SAFETY: a fresh anonymous mapping, which nothing else knows of until
    // it is published; it is never unmapped.
    unsafe {
        let page = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE,
                              libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        if page == libc::MAP_FAILED {
            return;
        }
        if libc::madvise(page, 4096, libc::MADV_WIPEONFORK) != 0 {
            libc::munmap(page, 4096);
            return;
        }
        PID_PAGE.store(page.cast(), Ordering::Release);
    }
}

pub fn pid() -> i64 {
    let page = PID_PAGE.load(Ordering::Acquire);
    if page.is_null() {
        return i64::from(unsafe { libc::getpid() });
    }
    // SAFETY: a published page is mapped for the life of the process, and
    // zeroed memory is a valid AtomicI64 (0: not known yet in this process).
    let cached = unsafe { &*page };
    match cached.load(Ordering::Relaxed) {
        0 => {
            let pid = i64::from(unsafe { libc::getpid() });
            cached.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

pub fn uid() -> u32 {
    unsafe { libc::getuid() }
}

/// Wall-clock milliseconds since the epoch, for the record's timestamps (a
/// reader on another node compares them with its own clock, so not monotonic).
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// CLOCK_MONOTONIC in nanoseconds: how long something lasted on this node,
/// whatever the wall clock does (the lease never compares clocks of two nodes).
pub fn monotonic_ns() -> u64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// 64 random bits from the kernel (getrandom(2)), for the lease's tokens;
/// if the call fails, the time and the pid, which are unique enough on one node.
pub fn nonce() -> u64 {
    let mut bytes = [0u8; 8];
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if got == bytes.len() as isize {
        return u64::from_ne_bytes(bytes);
    }
    monotonic_ns() ^ (pid() as u64).rotate_left(40)
}

pub fn mpi_rank_from(var: impl Fn(&str) -> Option<String>) -> i32 {
    RANK_VARIABLES
        .iter()
        .find_map(|name| var(name).and_then(|v| v.trim().parse::<i32>().ok()).filter(|&r| r >= 0))
        .unwrap_or(-1)
}

pub fn job_from(var: impl Fn(&str) -> Option<String>) -> Job {
    let set = |name: &str| var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    // An array task has its own SLURM_JOB_ID; people know it as ARRAYJOB_TASK.
    if let (Some(array_job), Some(task)) = (set("SLURM_ARRAY_JOB_ID"), set("SLURM_ARRAY_TASK_ID")) {
        return Job { id: cap(format!("{array_job}_{task}")), array_task: cap(task) };
    }
    let id = JOB_VARIABLES.iter().find_map(|name| set(name)).unwrap_or_default();
    Job { id: cap(id), array_task: String::new() }
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_JOB_ID_BYTES {
        let mut end = MAX_JOB_ID_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// What /proc/PID/stat says of a process: its start time (clock ticks after
/// boot, field 22 of proc(5)) and whether it has already exited (a zombie).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessStat {
    pub start_time: u64,
    pub exited: bool,
}

/// The real uid of a running process (the `Uid:` line of /proc/PID/status).
pub fn process_uid(pid: i64) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("Uid:")?.split_ascii_whitespace().next()?.parse().ok())
}

/// Whether the kernel knows a process with this pid (kill(2) with signal 0:
/// EPERM means it exists but belongs to someone else).
pub fn pid_exists(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

pub fn process_stat(pid: i64) -> Option<ProcessStat> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself: fields are counted from the last ')'.
fn parse_stat(text: &[u8]) -> Option<ProcessStat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?; // field 3
    let start_time = fields.nth(18)?.parse().ok()?; // field 22
    Some(ProcessStat { start_time, exited: matches!(state, "Z" | "X" | "x") })
}

// Our own start time is cached per pid, and a fork clears the cache in the
// child (lifecycle's pthread_atfork handler), so a child can never report its
// parent's start time, nor can a grandchild that is given the dead parent's pid.
static START_TIME_PID: AtomicI64 = AtomicI64::new(0);
static START_TIME: AtomicU64 = AtomicU64::new(0);

pub(crate) fn forget_own_start_time() {
    START_TIME_PID.store(0, Ordering::SeqCst);
}

/// This process's start time (0 if /proc cannot tell); `pid` is [`pid()`],
/// which the caller has at hand.
pub fn own_start_time(pid: i64) -> u64 {
    crate::lifecycle::ensure_initialised();
    if START_TIME_PID.load(Ordering::Acquire) == pid {
        return START_TIME.load(Ordering::Relaxed);
    }
    let start = process_stat(pid).map_or(0, |s| s.start_time);
    START_TIME.store(start, Ordering::Relaxed);
    START_TIME_PID.store(pid, Ordering::Release);
    start
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn rank_variables_are_read_in_design_order() {
        assert_eq!(mpi_rank_from(env(&[])), -1);
        assert_eq!(mpi_rank_from(env(&[("SLURM_PROCID", "5")])), 5);
        assert_eq!(mpi_rank_from(env(&[("SLURM_PROCID", "5"), ("PMI_RANK", "2")])), 2);
        assert_eq!(mpi_rank_from(env(&[("OMPI_COMM_WORLD_RANK", "0"), ("PMIX_RANK", "9")])), 0);
        assert_eq!(mpi_rank_from(env(&[("PMIX_RANK", "x"), ("FLUX_TASK_RANK", "3")])), 3);
    }

    #[test]
    fn array_jobs_are_job_underscore_task() {
        let array = env(&[("SLURM_JOB_ID", "8812352"), ("SLURM_ARRAY_JOB_ID", "8812345"), ("SLURM_ARRAY_TASK_ID", "7")]);
        assert_eq!(job_from(array), Job { id: "8812345_7".into(), array_task: "7".into() });
        assert_eq!(job_from(env(&[("SLURM_JOB_ID", "8812345")])).id, "8812345");
        assert_eq!(job_from(env(&[("PBS_JOBID", "1234.pbs01"), ("JOB_ID", "9")])).id, "1234.pbs01");
        assert_eq!(job_from(env(&[])), Job::default());
        assert_eq!(job_from(env(&[("LSB_JOBID", &"9".repeat(100))])).id.len(), MAX_JOB_ID_BYTES);
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line = b"4242 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 19 20\n";
        assert_eq!(parse_stat(line), Some(ProcessStat { start_time: 987654, exited: false }));
        let zombie = b"4242 (x) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 5 19\n";
        assert!(parse_stat(zombie).unwrap().exited);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn own_start_time_matches_proc() {
        let start = own_start_time(pid());
        assert!(start > 0);
        assert_eq!(process_stat(pid()).unwrap().start_time, start);
    }
}

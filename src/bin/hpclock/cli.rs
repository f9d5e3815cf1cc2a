//! The command line of `hpclock`, as clap sees it: the one definition that
//! both the command (`main.rs`) and its manual page (`src/bin/hpclock-man.rs`,
//! run by `make` into build/man/) are made from, so the two cannot drift.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Exit codes when COMMAND did not run (sysexits.h's EX_TEMPFAIL for busy,
/// then hpclock's own). Documented in `hpclock --help` and the README.
pub mod exit {
    pub const ERROR: u8 = 70;
    pub const BUSY: u8 = 75;
    pub const DONE: u8 = 76;
    pub const NOT_RANK0: u8 = 77;
    pub const UNSAFE: u8 = 78;
    /// COMMAND ran, but the lease was lost under it (taken over, or lapsed):
    /// hpclock stopped it.
    pub const LOST: u8 = 79;
}

const EXIT_CODES: &str = "\
Exit codes when COMMAND did not run: 75 busy (another process holds the lock), 76 done
(completed earlier with --once), 77 not MPI rank 0 (with --rank0), 78 the filesystem cannot
promise exclusion across nodes (with --require-cluster), 70 any other error, 2 bad usage.
When COMMAND ran, its own exit status; 128+N if a signal N ended it; 79 if the lease was lost
while it ran and hpclock stopped it.";

const LONG_ABOUT: &str = "\
Exactly-once guard over the kernel's file locks, for job scripts.

Of all the processes that run `hpclock run LOCK -- COMMAND` on one lock file, exactly one runs
its COMMAND; the others are told at once who holds the lock. With --once, a COMMAND that exits 0
marks the work done, and later runs skip it; after a crash, the next run takes over. `hpclock
info` says who holds a lock, `hpclock check` whether a lock there keeps out other nodes, and
`hpclock reset` clears a lock whose work is done. The library behind it is hpclock(3).";

#[derive(Parser)]
#[command(name = "hpclock", version, about = "Exactly-once guard over the kernel's file locks, for job scripts",
          long_about = LONG_ABOUT, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run COMMAND only if this process gets the lock; hold it until COMMAND ends.
    #[command(after_help = concat!(
        "In a Slurm script:\n\n",
        "    #!/bin/bash\n",
        "    #SBATCH --requeue --time=12:00:00\n",
        "    # one copy at a time; a requeued job that finds the work done exits 0 at once\n",
        "    hpclock run --once --done-exit 0 /scratch/$USER/run42.lock -- ./simulate input.nml\n\n",
        "COMMAND inherits the lock: if hpclock itself is killed, the lock stays held until COMMAND\n",
        "ends. SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 are passed on to COMMAND (Slurm sends\n",
        "SIGTERM before the time limit).\n\n",
        "Where the filesystem's locks stop at the node (Lustre localflock, BeeGFS, NFS nolock), the\n",
        "lock is a lease that hpclock renews while COMMAND runs, so COMMAND is killed if hpclock is;\n",
        "if the lease is lost (this node was cut off or stopped, and another took over), COMMAND gets\n",
        "SIGTERM, then SIGKILL, and hpclock exits 79.\n\n",
        "Exit codes when COMMAND did not run: 75 busy, 76 done, 77 not rank 0, 78 unsafe\n",
        "filesystem, 70 error; otherwise COMMAND's own status (128+N for signal N), 79 lease lost."))]
    Run(RunArgs),
    /// Show who holds a lock (never takes it, not even for a moment).
    #[command(after_help = concat!(
        "In a Slurm script, before deciding what to do:\n\n",
        "    hpclock info /scratch/$USER/run42.lock            # one line for people\n",
        "    hpclock info --json /scratch/$USER/run42.lock | jq -r .state\n\n",
        "JSON fields are those of the C struct hpclock_holder, plus path (and note, if the file\n",
        "holds no readable record); state is \"free\", \"held\", \"stale\" or \"done\"."))]
    Info(InfoArgs),
    /// Say whether a lock at PATH would exclude other nodes, and why.
    #[command(after_help = concat!(
        "In a Slurm script, before relying on a lock for a multi-node job:\n\n",
        "    hpclock check /scratch/$USER/run42.lock || exit 1\n\n",
        "Exit status 0 when locks there exclude across nodes (scope cluster), 1 otherwise."))]
    Check(CheckArgs),
    /// Clear a DONE record, so that `run --once` runs the command again.
    #[command(after_help = concat!(
        "After fixing the inputs of a finished job, to let the next submission redo it:\n\n",
        "    hpclock reset /scratch/$USER/run42.lock && sbatch job.sh"))]
    Reset(LockArg),
}

#[derive(Args)]
pub struct RunArgs {
    /// Wait up to SECONDS for the lock (fractions allowed; -1 waits without limit); default: one try.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = wait_seconds)]
    pub wait: Option<f64>,
    /// Mark the lock DONE when COMMAND exits 0; later runs then skip COMMAND.
    #[arg(long)]
    pub once: bool,
    /// Only MPI rank 0 (from the launcher's environment) takes the lock and runs COMMAND.
    #[arg(long)]
    pub rank0: bool,
    /// Refuse unless the lock is known to exclude processes on other nodes.
    #[arg(long)]
    pub require_cluster: bool,
    /// Use the cross-node lease with this period (fractions allowed, at least 0.1), whatever the
    /// filesystem; by default hpclock uses it where the kernel's locks stop at the node.
    #[arg(long, value_name = "SECONDS", value_parser = lease_seconds, conflicts_with = "no_lease")]
    pub lease: Option<f64>,
    /// Never use the lease: the kernel's lock alone (exclusion may then stop at the node).
    #[arg(long)]
    pub no_lease: bool,
    /// Text kept in the holder record (at most 127 bytes: a longer one is an error); default:
    /// COMMAND's words, cut to 127 bytes.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<OsString>,
    /// Exit status when the lock is busy.
    #[arg(long, value_name = "N", default_value_t = exit::BUSY)]
    pub busy_exit: u8,
    /// Exit status when the work was done earlier.
    #[arg(long, value_name = "N", default_value_t = exit::DONE)]
    pub done_exit: u8,
    /// Exit status on MPI ranks other than 0 with --rank0.
    #[arg(long, value_name = "N", default_value_t = exit::NOT_RANK0)]
    pub not_rank0_exit: u8,
    /// The lock file.
    pub lock: PathBuf,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Args)]
pub struct InfoArgs {
    /// One JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// The lock file.
    pub lock: PathBuf,
}

#[derive(Args)]
pub struct CheckArgs {
    /// One JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// A lock file, or the directory it would be in.
    pub path: PathBuf,
}

#[derive(Args)]
pub struct LockArg {
    /// The lock file.
    pub lock: PathBuf,
}

/// A number of seconds to wait: NaN and infinities are mistakes, not "try once"
/// or "forever" (a negative number is how to say forever).
fn wait_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !seconds.is_finite() {
        return Err(format!("{text:?} is not a number of seconds (use -1 to wait without limit)"));
    }
    Ok(seconds)
}

/// A lease period: at least 0.1 s, finite.
fn lease_seconds(text: &str) -> Result<f64, String> {
    let seconds = wait_seconds(text)?;
    if seconds < 0.1 {
        return Err(format!("{text:?}: a lease is at least 0.1 seconds"));
    }
    Ok(seconds)
}

//! `hpclock`: the exactly-once guard for job scripts, over the same Rust core
//! as the library. `hpclock run LOCK -- COMMAND` runs COMMAND only if it gets
//! the lock; `info`, `check` and `reset` look at and clear a lock.

mod report;
mod run;

use clap::{Args, Parser, Subcommand};
use hpclock::lock::{
    HPCLOCK_IGNORE_DONE, HPCLOCK_LEASE, HPCLOCK_NO_LEASE, HPCLOCK_RANK0_ONLY, HPCLOCK_REQUIRE_CLUSTER,
};
use hpclock::{Options, Outcome, Status};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;

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

#[derive(Parser)]
#[command(name = "hpclock", version, about = "Exactly-once guard over the kernel's file locks, for job scripts",
          after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        "lock is a lease that hpclock renews while COMMAND runs; if it is lost (this node was cut off\n",
        "or stopped, and another took over), COMMAND gets SIGTERM, then SIGKILL, and hpclock exits 79.\n\n",
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
struct RunArgs {
    /// Wait up to SECONDS for the lock (fractions allowed; -1 waits without limit); default: one try.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = wait_seconds)]
    wait: Option<f64>,
    /// Mark the lock DONE when COMMAND exits 0; later runs then skip COMMAND.
    #[arg(long)]
    once: bool,
    /// Only MPI rank 0 (from the launcher's environment) takes the lock and runs COMMAND.
    #[arg(long)]
    rank0: bool,
    /// Refuse unless the lock is known to exclude processes on other nodes.
    #[arg(long)]
    require_cluster: bool,
    /// Use the cross-node lease with this period (fractions allowed, at least 0.1), whatever the
    /// filesystem; by default hpclock uses it where the kernel's locks stop at the node.
    #[arg(long, value_name = "SECONDS", value_parser = lease_seconds, conflicts_with = "no_lease")]
    lease: Option<f64>,
    /// Never use the lease: the kernel's lock alone (exclusion may then stop at the node).
    #[arg(long)]
    no_lease: bool,
    /// Text kept in the holder record (at most 127 bytes: a longer one is an error); default:
    /// COMMAND's words, cut to 127 bytes.
    #[arg(long, value_name = "TEXT")]
    label: Option<OsString>,
    /// Exit status when the lock is busy.
    #[arg(long, value_name = "N", default_value_t = exit::BUSY)]
    busy_exit: u8,
    /// Exit status when the work was done earlier.
    #[arg(long, value_name = "N", default_value_t = exit::DONE)]
    done_exit: u8,
    /// Exit status on MPI ranks other than 0 with --rank0.
    #[arg(long, value_name = "N", default_value_t = exit::NOT_RANK0)]
    not_rank0_exit: u8,
    /// The lock file.
    lock: PathBuf,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

#[derive(Args)]
struct InfoArgs {
    /// One JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
    /// The lock file.
    lock: PathBuf,
}

#[derive(Args)]
struct CheckArgs {
    /// One JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
    /// A lock file, or the directory it would be in.
    path: PathBuf,
}

#[derive(Args)]
struct LockArg {
    /// The lock file.
    lock: PathBuf,
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

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Run(args) => run_command(args),
        Command::Info(args) => info(args),
        Command::Check(args) => check(args),
        Command::Reset(args) => reset(args),
    };
    ExitCode::from(outcome.unwrap_or_else(|error| {
        eprintln!("hpclock: {error}");
        if error.status == Status::Unsafe { exit::UNSAFE } else { exit::ERROR }
    }))
}

fn run_command(args: RunArgs) -> Result<u8, hpclock::Error> {
    let mut flags = 0;
    if args.rank0 {
        flags |= HPCLOCK_RANK0_ONLY;
    }
    if args.require_cluster {
        flags |= HPCLOCK_REQUIRE_CLUSTER;
    }
    let mut lease_ms = 0;
    if let Some(seconds) = args.lease {
        flags |= HPCLOCK_LEASE;
        lease_ms = (seconds * 1000.0).round().min(i64::MAX as f64) as i64;
    }
    if args.no_lease {
        flags |= HPCLOCK_NO_LEASE;
    }
    let timeout_ms = match args.wait {
        None => 0,
        Some(seconds) if seconds < 0.0 => -1,
        Some(seconds) => (seconds * 1000.0).ceil() as i64,
    };
    let label = args.label.map(OsString::into_vec).unwrap_or_else(|| report::command_words(&args.command));
    let options = Options { flags, timeout_ms, label, lease_ms, ..Options::default() };
    match hpclock::acquire(&args.lock, &options)? {
        Outcome::Acquired(lock) => run::hold_while_running(lock, &args.command, args.once),
        Outcome::Busy(_) => {
            eprintln!("hpclock: {}: {}; not running {}", report::shown_path(&args.lock),
                      report::busy_line(&args.lock), report::quote_words(&args.command));
            Ok(args.busy_exit)
        }
        Outcome::Done(record) => {
            eprintln!("hpclock: {}: already done ({}); not running {}", report::shown_path(&args.lock),
                      report::done_words(&record), report::quote_words(&args.command));
            Ok(args.done_exit)
        }
        Outcome::NotRank0 => Ok(args.not_rank0_exit),
    }
}

fn info(args: InfoArgs) -> Result<u8, hpclock::Error> {
    let reading = hpclock::holder_info(&args.lock)?;
    if args.json {
        println!("{}", report::holder_json(&args.lock, &reading));
    } else {
        println!("{}: {}", report::shown_path(&args.lock), report::holder_sentence(&reading.record));
        if let Some(note) = &reading.note {
            println!("note: {}", report::shown(note.as_bytes()));
        }
    }
    Ok(0)
}

fn check(args: CheckArgs) -> Result<u8, hpclock::Error> {
    let info = hpclock::fs::check(&args.path)?;
    if args.json {
        println!("{}", report::fs_json(&args.path, &info));
    } else {
        println!("{}: {} (scope {}, {} locks): {}", report::shown_path(&args.path), report::shown(info.fs_type.as_bytes()),
                 report::scope_word(info.scope), report::primitive_word(&info), report::shown(info.detail.as_bytes()));
    }
    // The lease makes SPLIT and NONE hold across nodes too.
    Ok(if info.scope == hpclock::fs::Scope::Cluster || info.lease { 0 } else { 1 })
}

fn reset(args: LockArg) -> Result<u8, hpclock::Error> {
    // A mistyped path must not create a lock file and report it "reset".
    let options = Options { flags: HPCLOCK_IGNORE_DONE, create: false, ..Options::default() };
    match hpclock::acquire(&args.lock, &options)? {
        Outcome::Acquired(lock) => {
            let previous = lock.previous().clone();
            lock.release()?;
            println!("{}: reset (was {})", report::shown_path(&args.lock), report::holder_sentence(&previous));
            Ok(0)
        }
        Outcome::Busy(_) => {
            eprintln!("hpclock: {}: {}; not reset", report::shown_path(&args.lock), report::busy_line(&args.lock));
            Ok(exit::BUSY)
        }
        // Neither can come of IGNORE_DONE without RANK0_ONLY.
        Outcome::Done(_) | Outcome::NotRank0 => Err(hpclock::Error::invalid("unexpected answer to a reset")),
    }
}

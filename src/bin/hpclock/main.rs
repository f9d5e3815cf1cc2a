//! `hpclock`: the exactly-once guard for job scripts, over the same Rust core
//! as the library. `hpclock run LOCK -- COMMAND` runs COMMAND only if it gets
//! the lock; `info`, `check` and `reset` look at and clear a lock.

mod cli;
mod report;
mod run;

use clap::Parser;
use cli::{CheckArgs, Cli, Command, InfoArgs, LockArg, RunArgs};
/// The exit codes, defined with the command line they are documented in.
pub use cli::exit;
use hpclock::lock::{
    HPCLOCK_IGNORE_DONE, HPCLOCK_LEASE, HPCLOCK_NO_LEASE, HPCLOCK_RANK0_ONLY, HPCLOCK_REQUIRE_CLUSTER,
};
use hpclock::{Options, Outcome, Status};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

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

//! What `hpclock` says: one line for people, one JSON object for programs.

use hpclock::fs::{FsInfo, Primitive, Scope};
use hpclock::{Reading, Record, State};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The default label: COMMAND's words, cut to the 127 bytes a record keeps
/// (at a character boundary, so the record stays readable).
pub fn command_words(command: &[OsString]) -> Vec<u8> {
    let words = command.iter().map(|w| w.as_bytes()).collect::<Vec<_>>().join(&b' ');
    let mut end = words.len().min(127);
    while end > 0 && end < words.len() && (words[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    words[..end].to_vec()
}

pub fn quote_words(command: &[OsString]) -> String {
    String::from_utf8_lossy(&command.iter().map(|w| w.as_bytes()).collect::<Vec<_>>().join(&b' ')).into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// "12:01:07" today, "2026-11-25 23:10:00" on another day, local time.
pub fn local_time(unix_ms: i64) -> String {
    let stamp = |t: libc::time_t| {
        // SAFETY: localtime_r fills a plain struct and touches nothing else.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        unsafe { libc::localtime_r(&t, &mut tm) };
        tm
    };
    let then = stamp((unix_ms / 1000) as libc::time_t);
    let now = stamp(hpclock::identity::now_unix_ms() as libc::time_t / 1000);
    let clock = format!("{:02}:{:02}:{:02}", then.tm_hour, then.tm_min, then.tm_sec);
    if (then.tm_year, then.tm_yday) == (now.tm_year, now.tm_yday) {
        clock
    } else {
        format!("{:04}-{:02}-{:02} {clock}", then.tm_year + 1900, then.tm_mon + 1, then.tm_mday)
    }
}

/// "pid 4031 on c123, job 8812345_7, rank 0 (label ...)": who, as far as known.
fn who(record: &Record) -> String {
    let mut out = format!("pid {}", record.pid);
    if !record.host.is_empty() {
        out += &format!(" on {}", text(&record.host));
    }
    if !record.job_id.is_empty() {
        out += &format!(", job {}", text(&record.job_id));
    }
    if record.mpi_rank >= 0 {
        out += &format!(", MPI rank {}", record.mpi_rank);
    }
    if !record.label.is_empty() {
        out += &format!(" ({})", text(&record.label));
    }
    out
}

fn since(unix_ms: i64) -> String {
    if unix_ms > 0 { format!(", since {}", local_time(unix_ms)) } else { String::new() }
}

/// The busy message: "held by pid 4031 on c123, job 8812345_7, since 12:01:07".
pub fn busy_line(lock: &Path) -> String {
    match hpclock::holder_info(lock) {
        Ok(reading) if reading.record.pid > 0 => {
            format!("held by {}{}", who(&reading.record), since(reading.record.acquired_unix_ms))
        }
        Ok(_) => "held by another process, which left no record".to_string(),
        Err(error) => format!("held by another process (cannot read who: {error})"),
    }
}

pub fn done_words(record: &Record) -> String {
    let at = if record.released_unix_ms > 0 { format!(" at {}", local_time(record.released_unix_ms)) } else { String::new() };
    format!("completed by {}{at}", who(record))
}

pub fn holder_sentence(record: &Record) -> String {
    let generation = format!("generation {}", record.generation);
    match record.state {
        State::Free if record.generation == 0 => "free (never taken)".to_string(),
        State::Free => {
            let at = if record.released_unix_ms > 0 { format!(" at {}", local_time(record.released_unix_ms)) } else { String::new() };
            format!("free (last released by {}{at}; {generation})", who(record))
        }
        State::Held => {
            let alive = match record.alive {
                1 => "running",
                0 => "gone",
                _ => "on another node, not checked from here",
            };
            format!("held by {}{} ({alive}; {generation})", who(record), since(record.acquired_unix_ms))
        }
        State::Stale => format!("stale: {} died holding it{}; the next run takes over ({generation})",
                                who(record), since(record.acquired_unix_ms)),
        State::Done => format!("done: {} ({generation})", done_words(record)),
    }
}

pub fn state_word(state: State) -> &'static str {
    match state {
        State::Free => "free",
        State::Held => "held",
        State::Stale => "stale",
        State::Done => "done",
    }
}

/// The fields of the C struct hpclock_holder, by the same names, plus path
/// (and note, when the file holds no readable record).
pub fn holder_json(lock: &Path, reading: &Reading) -> Value {
    let r = &reading.record;
    let mut object = json!({
        "path": lock.display().to_string(),
        "state": state_word(r.state),
        "alive": r.alive,
        "pid": r.pid,
        "uid": r.uid,
        "mpi_rank": r.mpi_rank,
        "generation": r.generation,
        "acquired_unix_ms": r.acquired_unix_ms,
        "released_unix_ms": r.released_unix_ms,
        "host": text(&r.host),
        "job_id": text(&r.job_id),
        "label": text(&r.label),
    });
    if let Some(note) = &reading.note {
        object["note"] = json!(note);
    }
    object
}

pub fn scope_word(scope: Scope) -> &'static str {
    match scope {
        Scope::Unknown => "unknown",
        Scope::Node => "node",
        Scope::Cluster => "cluster",
        Scope::Split => "split",
        Scope::None => "none",
    }
}

pub fn primitive_word(primitive: Primitive) -> &'static str {
    match primitive {
        Primitive::Flock => "flock",
        Primitive::Ofd => "ofd",
    }
}

/// The fields of the C struct hpclock_fs_info, plus path.
pub fn fs_json(path: &Path, info: &FsInfo) -> Value {
    json!({
        "path": path.display().to_string(),
        "scope": scope_word(info.scope),
        "primitive": primitive_word(info.primitive),
        "magic": info.magic,
        "fs_type": info.fs_type,
        "detail": info.detail,
    })
}

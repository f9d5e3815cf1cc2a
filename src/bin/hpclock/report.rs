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
    shown(&command.iter().map(|w| w.as_bytes()).collect::<Vec<_>>().join(&b' '))
}

/// Bytes as a terminal may show them: what a record holds comes from whoever
/// wrote the lock file, and an escape sequence in a label must not reach the
/// admin's terminal. Control characters (C0, DEL and C1), backslashes and
/// bytes that are not UTF-8 are written as `\n`, `\t`, `\\`, `\xNN`, `\u{NN}`.
pub fn shown(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if (0x80..0xa0).contains(&(c as u32)) => out.push_str(&format!("\\u{{{:02x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// A path for a message, escaped like every other byte string.
pub fn shown_path(path: &Path) -> String {
    shown(path.as_os_str().as_bytes())
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
        out += &format!(" on {}", shown(&record.host));
    }
    if !record.job_id.is_empty() {
        out += &format!(", job {}", shown(&record.job_id));
    }
    if record.mpi_rank >= 0 {
        out += &format!(", MPI rank {}", record.mpi_rank);
    }
    if !record.label.is_empty() {
        out += &format!(" ({})", shown(&record.label));
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

/// `NAME` as UTF-8 text; where the bytes are not valid UTF-8, the text has
/// U+FFFD in their place and `NAME_base64` beside it has the exact bytes.
fn put_bytes(object: &mut Value, name: &str, bytes: &[u8]) {
    object[name] = json!(String::from_utf8_lossy(bytes));
    if std::str::from_utf8(bytes).is_err() {
        object[format!("{name}_base64")] = json!(base64(bytes));
    }
}

/// Standard base64 (RFC 4648, with padding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// The fields of the C struct hpclock_holder, by the same names, plus path,
/// rung, lease_ms and renewed_unix_ms in lease mode, and note when there is
/// more to say than the fields hold (in lease mode: the rule that judged).
pub fn holder_json(lock: &Path, reading: &Reading) -> Value {
    let r = &reading.record;
    let mut object = json!({
        "state": state_word(r.state),
        "alive": r.alive,
        "pid": r.pid,
        "uid": r.uid,
        "mpi_rank": r.mpi_rank,
        "generation": r.generation,
        "acquired_unix_ms": r.acquired_unix_ms,
        "released_unix_ms": r.released_unix_ms,
    });
    if let Some(lease) = &r.lease {
        // In lease mode: which rung speaks, the holder's lease, and when it
        // last renewed by its own clock.
        object["rung"] = json!(lease.rung);
        object["lease_ms"] = json!(lease.lease_ms);
        object["renewed_unix_ms"] = json!(lease.renewed_unix_ms);
    }
    put_bytes(&mut object, "path", lock.as_os_str().as_bytes());
    put_bytes(&mut object, "host", &r.host);
    put_bytes(&mut object, "job_id", &r.job_id);
    put_bytes(&mut object, "label", &r.label);
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

/// What acquire uses there: the lease where the kernel's locks stop at the
/// node, else the kernel lock.
pub fn primitive_word(info: &FsInfo) -> &'static str {
    match info.primitive {
        _ if info.lease => "lease",
        Primitive::Flock => "flock",
        Primitive::Ofd => "ofd",
    }
}

/// The fields of the C struct hpclock_fs_info, plus path.
pub fn fs_json(path: &Path, info: &FsInfo) -> Value {
    let mut object = json!({
        "scope": scope_word(info.scope),
        "primitive": primitive_word(info),
        "magic": info.magic,
        "fs_type": info.fs_type,
        "detail": info.detail,
    });
    put_bytes(&mut object, "path", path.as_os_str().as_bytes());
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        let cases = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="),
                     ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(shown(b"step\x1b[31m red\x07"), "step\\x1b[31m red\\x07");
        assert_eq!(shown("a\u{9b}b".as_bytes()), "a\\u{9b}b");
        assert_eq!(shown(b"\xff\\ \xc3\xa9"), "\\xff\\\\ \u{e9}");
    }

    #[test]
    fn json_adds_exact_bytes_only_where_utf8_fails() {
        let mut object = json!({});
        put_bytes(&mut object, "label", b"ok \xc3\xa9");
        assert!(object.get("label_base64").is_none());
        put_bytes(&mut object, "host", b"\xff");
        assert_eq!(object["host"], "\u{fffd}");
        assert_eq!(object["host_base64"], "/w==");
    }
}

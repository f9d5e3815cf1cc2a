//! The holder record: plain text in the lock file itself, so that an operator
//! can `cat` it. A version line, then `key=value` lines. Readers ignore keys
//! they do not know, so later versions can add fields.

/// The most a record may take, and the most a reader ever reads (DESIGN §3).
pub(crate) const MAX_RECORD_BYTES: usize = 4096;
/// DESIGN §1: the label kept in the record is at most 127 bytes.
pub(crate) const MAX_LABEL_BYTES: usize = 127;

const VERSION_LINE: &str = "hpclock-record 1";

/// hpclock_holder.state: nobody holds it (no record yet, or the last holder released it).
pub const HPCLOCK_STATE_FREE: i32 = 0;
/// Held now (holder alive, or on another node and not disproven).
pub const HPCLOCK_STATE_HELD: i32 = 1;
/// The record says held, but the holder is gone; the next acquire takes over.
pub const HPCLOCK_STATE_STALE: i32 = 2;
/// The work was completed (hpclock_complete).
pub const HPCLOCK_STATE_DONE: i32 = 3;

/// Whose the lock is, as the record and the reader see it. Only `Free`, `Held`
/// and `Done` are ever written; `Stale` is a reader's verdict on a `Held`
/// record whose holder is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(i32)]
pub enum State {
    #[default]
    Free = HPCLOCK_STATE_FREE,
    Held = HPCLOCK_STATE_HELD,
    Stale = HPCLOCK_STATE_STALE,
    Done = HPCLOCK_STATE_DONE,
}

impl State {
    fn as_word(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Held | State::Stale => "held",
            State::Done => "done",
        }
    }

    fn from_word(word: &str) -> Option<State> {
        match word {
            "free" => Some(State::Free),
            "held" => Some(State::Held),
            "done" => Some(State::Done),
            _ => None,
        }
    }
}

/// One holder record. `alive` is not stored: a reader works it out
/// (1 running, 0 gone, -1 cannot tell from this node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub state: State,
    pub alive: i32,
    pub pid: i64,
    pub uid: u32,
    pub generation: u64,
    pub acquired_unix_ms: i64,
    pub released_unix_ms: i64,
    pub host: Vec<u8>,
    pub label: Vec<u8>,
}

impl Default for Record {
    /// A lock never taken: free, generation 0, nothing known.
    fn default() -> Record {
        Record {
            state: State::Free,
            alive: -1,
            pid: 0,
            uid: 0,
            generation: 0,
            acquired_unix_ms: 0,
            released_unix_ms: 0,
            host: Vec::new(),
            label: Vec::new(),
        }
    }
}

/// What the bytes of a lock file turned out to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No record: a new file, or one only `flock(1)` ever used.
    Empty,
    Record(Record),
    /// Bytes that are not a record; the text says what they are.
    Unreadable(String),
}

impl Record {
    /// The record as text, at most [`MAX_RECORD_BYTES`] (the label is capped
    /// and the host name is at most 64 bytes on Linux, so it always fits).
    pub fn to_text(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(VERSION_LINE.as_bytes());
        out.push(b'\n');
        let mut field = |key: &str, value: &[u8]| {
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            escape_into(&mut out, value);
            out.push(b'\n');
        };
        field("state", self.state.as_word().as_bytes());
        field("generation", self.generation.to_string().as_bytes());
        field("pid", self.pid.to_string().as_bytes());
        field("host", &self.host);
        field("uid", self.uid.to_string().as_bytes());
        field("acquired_unix_ms", self.acquired_unix_ms.to_string().as_bytes());
        field("released_unix_ms", self.released_unix_ms.to_string().as_bytes());
        field("label", &self.label[..self.label.len().min(MAX_LABEL_BYTES)]);
        debug_assert!(out.len() <= MAX_RECORD_BYTES);
        out
    }

    /// Reads a record from the first [`MAX_RECORD_BYTES`] of `bytes`. Never
    /// fails hard: anything that is not a record is `Unreadable`, with why.
    pub fn parse(bytes: &[u8]) -> Parsed {
        let bytes = &bytes[..bytes.len().min(MAX_RECORD_BYTES)];
        // Whitespace alone is what a writer's padding leaves, or an empty file.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Parsed::Empty;
        }
        let mut lines = bytes.split(|&b| b == b'\n');
        let first = lines.next().unwrap_or_default();
        if first != VERSION_LINE.as_bytes() {
            return parse_legacy(bytes)
                .map_or_else(|| Parsed::Unreadable(describe_foreign(first)), Parsed::Record);
        }
        let mut record = Record::default();
        let mut saw_state = false;
        for line in lines {
            let line = trim_ascii(line);
            let Some(eq) = line.iter().position(|&b| b == b'=') else { continue };
            let (key, value) = (&line[..eq], unescape(&line[eq + 1..]));
            let text = std::str::from_utf8(&value).unwrap_or("");
            let ok = match key {
                b"state" => {
                    saw_state = true;
                    State::from_word(text).map(|s| record.state = s).is_some()
                }
                b"generation" => text.parse().map(|v| record.generation = v).is_ok(),
                b"pid" => text.parse().map(|v| record.pid = v).is_ok(),
                b"uid" => text.parse().map(|v| record.uid = v).is_ok(),
                b"acquired_unix_ms" => text.parse().map(|v| record.acquired_unix_ms = v).is_ok(),
                b"released_unix_ms" => text.parse().map(|v| record.released_unix_ms = v).is_ok(),
                b"host" => {
                    record.host = value;
                    true
                }
                b"label" => {
                    record.label = value;
                    true
                }
                _ => true, // a field from a later version
            };
            if !ok {
                return Parsed::Unreadable(format!(
                    "record has a bad {} line", String::from_utf8_lossy(key)));
            }
        }
        if !saw_state {
            return Parsed::Unreadable("record has no state line (torn write?)".into());
        }
        Parsed::Record(record)
    }
}

/// The seed's format, still written by existing Python scripts: `PID\nUNIX_TIME\n`.
fn parse_legacy(bytes: &[u8]) -> Option<Record> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split_whitespace();
    let pid: i64 = lines.next()?.parse().ok().filter(|&p| p > 0)?;
    let time: f64 = lines.next()?.parse().ok().filter(|t: &f64| t.is_finite() && *t >= 0.0)?;
    if lines.next().is_some() {
        return None;
    }
    Some(Record {
        state: State::Held,
        pid,
        acquired_unix_ms: (time * 1000.0) as i64,
        ..Record::default()
    })
}

fn describe_foreign(first_line: &[u8]) -> String {
    let shown: Vec<u8> = first_line.iter().take(40).copied().collect();
    let mut escaped = Vec::new();
    escape_into(&mut escaped, &shown);
    format!("not an hpclock record (first line: \"{}\")", String::from_utf8_lossy(&escaped))
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() { break; }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() { break; }
        s = rest;
    }
    s
}

/// Values stay on one line and stay readable: `\` and control bytes are escaped,
/// everything else (UTF-8 included) is kept as it is.
fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
}

fn unescape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b != b'\\' || i + 1 == value.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let (decoded, used) = match value[i + 1] {
            b'\\' => (b'\\', 2),
            b'n' => (b'\n', 2),
            b'r' => (b'\r', 2),
            b't' => (b'\t', 2),
            b'x' => match value.get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(byte) => (byte, 4),
                None => (b'\\', 1),
            },
            _ => (b'\\', 1),
        };
        out.push(decoded);
        i += used;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            state: State::Held,
            alive: -1,
            pid: 4034097,
            uid: 1000,
            generation: 7,
            acquired_unix_ms: 1_764_160_000_123,
            released_unix_ms: 0,
            host: b"c123".to_vec(),
            label: b"step 2\nof 3 \\ \xff \x01 \xc3\xa9".to_vec(),
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let r = sample();
        assert_eq!(Record::parse(&r.to_text()), Parsed::Record(r));
    }

    #[test]
    fn text_is_readable_with_cat() {
        let text = String::from_utf8_lossy(&sample().to_text()).into_owned();
        assert!(text.starts_with("hpclock-record 1\nstate=held\ngeneration=7\npid=4034097\nhost=c123\n"), "{text}");
        assert!(text.contains("label=step 2\\nof 3 \\\\ "), "{text}");
        assert_eq!(text.lines().count(), 9);
    }

    #[test]
    fn padding_and_unknown_keys_are_ignored() {
        let mut text = sample().to_text();
        text.extend_from_slice(b"boot_id=abc\n        \n");
        assert_eq!(Record::parse(&text), Parsed::Record(sample()));
    }

    #[test]
    fn empty_and_whitespace_are_no_record() {
        assert_eq!(Record::parse(b""), Parsed::Empty);
        assert_eq!(Record::parse(b"   \n \n"), Parsed::Empty);
    }

    #[test]
    fn legacy_two_line_format_is_a_record_of_that_pid() {
        let Parsed::Record(r) = Record::parse(b"4034097\n1764160000.5\n") else { panic!() };
        assert_eq!((r.state, r.pid, r.acquired_unix_ms), (State::Held, 4034097, 1_764_160_000_500));
    }

    #[test]
    fn foreign_and_torn_bytes_are_unreadable_not_errors() {
        assert!(matches!(Record::parse(b"id,value\n1,2\n"), Parsed::Unreadable(m) if m.contains("id,value")));
        assert!(matches!(Record::parse(b"hpclock-record 1\npid=12"), Parsed::Unreadable(m) if m.contains("torn")));
        assert!(matches!(Record::parse(b"hpclock-record 1\nstate=held\npid=x\n"), Parsed::Unreadable(_)));
        let huge = vec![b'a'; 10 * MAX_RECORD_BYTES];
        assert!(matches!(Record::parse(&huge), Parsed::Unreadable(_)));
    }
}

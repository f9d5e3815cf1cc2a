//! The holder record: plain text in the lock file itself, so that an operator
//! can `cat` it. A version line, then `key=value` lines. Readers ignore keys
//! they do not know, so later versions can add fields.

/// The most a record may take, and the most a reader ever reads (docs/record.md#grammar).
pub(crate) const MAX_RECORD_BYTES: usize = 4096;
/// The label kept in the record is at most 127 bytes (docs/api.md#paths-and-labels-are-bytes).
pub(crate) const MAX_LABEL_BYTES: usize = 127;
/// hpclock_holder.host is 256 bytes with its NUL.
const MAX_HOST_BYTES: usize = 255;
use crate::identity::MAX_JOB_ID_BYTES;

const VERSION_LINE: &str = "hpclock-record 1";
/// Every version's first line starts so: how a record of ours, even a torn
/// or newer one, is told from someone else's file.
const VERSION_PREFIX: &str = "hpclock-record ";

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
    /// /proc/sys/kernel/random/boot_id of the holder's node.
    pub boot_id: Vec<u8>,
    /// The holder's start time, clock ticks after boot (/proc/PID/stat field 22):
    /// a pid reused by another process has another start time.
    pub start_time: u64,
    /// -1 when not launched as an MPI rank.
    pub mpi_rank: i32,
    pub job_id: Vec<u8>,
    pub array_task: Vec<u8>,
    /// Present in a rung of the lease's ladder (and in the lock file's own
    /// record while a lease holds it).
    pub lease: Option<LeaseFields>,
}

/// What a rung of the ladder adds to a record (see `ladder`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseFields {
    /// The rung's number: rungs only order the ladder.
    pub rung: u64,
    /// The holder's lease period: an observer on another node watches the
    /// top rung this long before it may take over.
    pub lease_ms: i64,
    /// Wall-clock time the rung was written (for people, and to decide how
    /// long a one-try call looks, never who holds the lock).
    pub renewed_unix_ms: i64,
    /// Who wrote the rung: host, boot id, pid, start time and a random
    /// nonce, so a creator can recognise its own rung when an error leaves it
    /// unsure whether its create happened.
    pub token: Vec<u8>,
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
            boot_id: Vec::new(),
            start_time: 0,
            mpi_rank: -1,
            job_id: Vec::new(),
            array_task: Vec::new(),
            lease: None,
        }
    }
}

/// What the bytes of a lock file turned out to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No record: a new file, or one only `flock(1)` ever used.
    Empty,
    Record(Record),
    /// Our record (it starts with the record's first line), but not whole or
    /// not valid: a write under way, cut short by a crash, edited by hand, or
    /// of a newer format. Reading again may find it whole; `salvage` is what
    /// can still be trusted.
    Torn { why: String, salvage: Salvage },
    /// Bytes that are not a record at all; the text says what they are.
    Foreign(String),
}

/// What a damaged record still tells, read line by line: a fencing token must
/// never go back, and work once done must not run again because a byte changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Salvage {
    /// The highest `generation=` value in it (0 if none can be read).
    pub max_generation: u64,
    /// A `state=done` line is in it.
    pub says_done: bool,
}

impl Parsed {
    /// Whether these bytes may be overwritten by a record: a record of ours
    /// (whole or not), the legacy two-line format, or nothing but blanks.
    /// `Foreign` bytes are someone's data, and hpclock never touches them.
    pub fn is_lock_file(&self) -> bool {
        !matches!(self, Parsed::Foreign(_))
    }

    /// The generation the next acquisition takes: above every generation
    /// this content still shows. None when there is none left to take.
    pub fn next_generation(&self) -> Option<u64> {
        let highest = match self {
            Parsed::Record(record) => record.generation,
            Parsed::Torn { salvage, .. } => salvage.max_generation,
            Parsed::Empty | Parsed::Foreign(_) => 0,
        };
        highest.checked_add(1)
    }

    /// The record says, or a damaged one still shows, that the work was done.
    pub fn says_done(&self) -> bool {
        match self {
            Parsed::Record(record) => record.state == State::Done,
            Parsed::Torn { salvage, .. } => salvage.says_done,
            Parsed::Empty | Parsed::Foreign(_) => false,
        }
    }
}

const MAX_BOOT_ID_BYTES: usize = 64;
/// A token is at most a 64-byte host name, a boot id, a pid, a start time and
/// a nonce, with separators; the cap keeps every record within 4 KiB even when
/// every byte of every field needs escaping.
pub(crate) const MAX_TOKEN_BYTES: usize = 200;

impl Record {
    /// The record as text, at most [`MAX_RECORD_BYTES`]: every field is
    /// capped, so it always fits. Fields a person looks for come first; the
    /// last line is a CRC-32 (zlib's) of everything before it.
    pub fn to_text(&self) -> Vec<u8> {
        // Written straight into one buffer, numbers and dates by hand rather
        // than through core::fmt (which cost about half of this function):
        // this runs twice per acquire and release. The bytes are exactly what
        // `write!` made (the test `to_text_is_what_core_fmt_wrote` compares).
        let mut out = Vec::with_capacity(640);
        out.extend_from_slice(VERSION_LINE.as_bytes());
        out.extend_from_slice(b"\nstate=");
        out.extend_from_slice(self.state.as_word().as_bytes());
        number_field(&mut out, b"\npid=", Int::I(self.pid));
        out.push(b'\n');
        bytes_field(&mut out, "host", &self.host, MAX_HOST_BYTES);
        bytes_field(&mut out, "job_id", &self.job_id, MAX_JOB_ID_BYTES);
        bytes_field(&mut out, "array_task", &self.array_task, MAX_JOB_ID_BYTES);
        number_field(&mut out, b"mpi_rank=", Int::I(i64::from(self.mpi_rank)));
        out.push(b'\n');
        bytes_field(&mut out, "label", &self.label, MAX_LABEL_BYTES);
        out.extend_from_slice(b"acquired_utc=");
        Utc(self.acquired_unix_ms).write_into(&mut out);
        out.extend_from_slice(b"\nreleased_utc=");
        Utc(self.released_unix_ms).write_into(&mut out);
        number_field(&mut out, b"\ngeneration=", Int::U(self.generation));
        number_field(&mut out, b"\nuid=", Int::U(u64::from(self.uid)));
        number_field(&mut out, b"\nacquired_unix_ms=", Int::I(self.acquired_unix_ms));
        number_field(&mut out, b"\nreleased_unix_ms=", Int::I(self.released_unix_ms));
        out.push(b'\n');
        bytes_field(&mut out, "boot_id", &self.boot_id, MAX_BOOT_ID_BYTES);
        number_field(&mut out, b"start_time=", Int::U(self.start_time));
        out.push(b'\n');
        if let Some(lease) = &self.lease {
            number_field(&mut out, b"rung=", Int::U(lease.rung));
            number_field(&mut out, b"\nlease_ms=", Int::I(lease.lease_ms));
            out.extend_from_slice(b"\nrenewed_utc=");
            Utc(lease.renewed_unix_ms).write_into(&mut out);
            number_field(&mut out, b"\nrenewed_unix_ms=", Int::I(lease.renewed_unix_ms));
            out.push(b'\n');
            bytes_field(&mut out, "token", &lease.token, MAX_TOKEN_BYTES);
        }
        let sum = crc32(&out);
        out.extend_from_slice(b"checksum=crc32:");
        let mut hex = [0u8; 8];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = HEX_DIGITS[((sum >> (28 - 4 * i)) & 0xf) as usize];
        }
        out.extend_from_slice(&hex);
        out.push(b'\n');
        debug_assert!(out.len() <= MAX_RECORD_BYTES);
        out
    }

    /// What a lock file holds, from what was read of it (up to one byte more
    /// than a record): a file longer than any record is someone else's, even
    /// if it starts like one of ours.
    pub fn parse_file(bytes: &[u8]) -> Parsed {
        if bytes.len() > MAX_RECORD_BYTES {
            return Parsed::Foreign(format!("it is longer than any hpclock record ({MAX_RECORD_BYTES} bytes)"));
        }
        Record::parse(bytes)
    }

    /// Reads a record from the first [`MAX_RECORD_BYTES`] of `bytes`. Never
    /// fails hard: anything that is not a whole record is `Torn` or
    /// `Foreign`, with why.
    pub fn parse(bytes: &[u8]) -> Parsed {
        let bytes = &bytes[..bytes.len().min(MAX_RECORD_BYTES)];
        // Whitespace alone is what a writer's padding leaves, or an empty file.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Parsed::Empty;
        }
        let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        if !first.starts_with(VERSION_PREFIX.as_bytes()) {
            return parse_legacy(bytes)
                .map_or_else(|| Parsed::Foreign(describe_foreign(first)), Parsed::Record);
        }
        let torn = |why: String| Parsed::Torn { why, salvage: salvage(bytes) };
        if first != VERSION_LINE.as_bytes() {
            return torn(format!(
                "record format {} is newer than this hpclock reads",
                String::from_utf8_lossy(&first[VERSION_PREFIX.len()..first.len().min(40)])));
        }
        let body_end = match line_starting_with(bytes, b"checksum=crc32:") {
            Some(at) => at,
            None => return torn("the record has no checksum line (cut short?)".into()),
        };
        let (body, tail) = bytes.split_at(body_end);
        let sum_line = tail.split(|&b| b == b'\n').next().unwrap_or_default();
        let after_sum = &tail[(sum_line.len() + 1).min(tail.len())..];
        let written_sum = std::str::from_utf8(&sum_line[15..]).ok().and_then(|hex| u32::from_str_radix(hex, 16).ok());
        if sum_line.len() != 15 + 8 || written_sum != Some(crc32(body)) {
            return torn("the record's checksum does not match (a write under way, or damage)".into());
        }
        if !after_sum.iter().all(u8::is_ascii_whitespace) {
            return torn("bytes follow the record's checksum line".into());
        }
        parse_fields(body).map_or_else(torn, Parsed::Record)
    }
}

/// The fields of a record whose checksum matched; Err says which line is bad.
fn parse_fields(body: &[u8]) -> Result<Record, String> {
    let mut record = Record::default();
    let mut saw_state = false;
    for line in body.split(|&b| b == b'\n').skip(1) {
        let Some(eq) = line.iter().position(|&b| b == b'=') else { continue };
        let (key, raw) = (&line[..eq], &line[eq + 1..]);
        // Numbers and words are never escaped; only byte fields are unescaped.
        let text = std::str::from_utf8(raw).unwrap_or("");
        let ok = match key {
            b"state" => {
                saw_state = true;
                State::from_word(text).map(|s| record.state = s).is_some()
            }
            b"generation" => text.parse().map(|v| record.generation = v).is_ok(),
            b"pid" => text.parse().map(|v| record.pid = v).is_ok(),
            b"uid" => text.parse().map(|v| record.uid = v).is_ok(),
            b"mpi_rank" => text.parse().map(|v| record.mpi_rank = v).is_ok(),
            b"start_time" => text.parse().map(|v| record.start_time = v).is_ok(),
            b"acquired_unix_ms" => text.parse().map(|v| record.acquired_unix_ms = v).is_ok(),
            b"released_unix_ms" => text.parse().map(|v| record.released_unix_ms = v).is_ok(),
            b"host" => store(&mut record.host, raw),
            b"label" => store(&mut record.label, raw),
            b"boot_id" => store(&mut record.boot_id, raw),
            b"job_id" => store(&mut record.job_id, raw),
            b"array_task" => store(&mut record.array_task, raw),
            b"rung" => text.parse().map(|v| record.lease.get_or_insert_with(Default::default).rung = v).is_ok(),
            b"lease_ms" => text.parse().map(|v| record.lease.get_or_insert_with(Default::default).lease_ms = v).is_ok(),
            b"renewed_unix_ms" => {
                text.parse().map(|v| record.lease.get_or_insert_with(Default::default).renewed_unix_ms = v).is_ok()
            }
            b"token" => store(&mut record.lease.get_or_insert_with(Default::default).token, raw),
            _ => true, // for people (acquired_utc, ...) or from a later version
        };
        if !ok {
            return Err(format!("the record has a bad {} line", String::from_utf8_lossy(key)));
        }
    }
    if !saw_state {
        return Err("the record has no state line".into());
    }
    Ok(record)
}

/// Reads a damaged record of ours line by line for what can still be trusted.
fn salvage(bytes: &[u8]) -> Salvage {
    let mut found = Salvage::default();
    for line in bytes.split(|&b| b == b'\n') {
        if let Some(digits) = line.strip_prefix(b"generation=") {
            let digits = &digits[..digits.iter().take_while(|b| b.is_ascii_digit()).count()];
            // Too many digits for a u64 is a generation at the top of its range.
            let value = std::str::from_utf8(digits).ok().filter(|d| !d.is_empty())
                .map(|d| d.parse::<u64>().unwrap_or(u64::MAX));
            found.max_generation = found.max_generation.max(value.unwrap_or(0));
        } else if line == b"state=done" {
            found.says_done = true;
        }
    }
    found
}

fn store(field: &mut Vec<u8>, escaped: &[u8]) -> bool {
    *field = unescape(escaped);
    true
}

/// Where the first line that starts with `prefix` begins.
fn line_starting_with(text: &[u8], prefix: &[u8]) -> Option<usize> {
    let mut start = 0;
    loop {
        if text[start..].starts_with(prefix) {
            return Some(start);
        }
        start += text[start..].iter().position(|&b| b == b'\n')? + 1;
    }
}

/// CRC-32 as zlib computes it (`python3 -c 'import zlib; ...'` can check a
/// record): it runs over every record written and read, three times per
/// acquire and release. On x86-64 with PCLMULQDQ (every x86-64 CPU since
/// 2010), 64 bytes a step by carry-less multiplication (Intel, "Fast CRC
/// Computation for Generic Polynomials Using PCLMULQDQ", 2009), about four
/// times as fast as the tables on a record; elsewhere eight bytes a step
/// ("slicing-by-8", Intel 2008).
fn crc32(bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        // std caches the answer in an atomic: no lock, nothing to re-do after fork.
        if bytes.len() >= 64 && is_x86_feature_detected!("pclmulqdq") && is_x86_feature_detected!("sse4.1") {
            // SAFETY: the CPU has the instructions, as just checked.
            return unsafe { clmul::crc32(bytes) };
        }
    }
    !crc32_tables(!0, bytes)
}

/// The running (not yet inverted) CRC `crc` continued over `bytes`, eight
/// bytes a step.
fn crc32_tables(mut crc: u32, bytes: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The folding CRC-32 of the Intel paper, bit-reflected (zlib's polynomial
/// 0x04C11DB7, reflected 0xEDB88320), as the Linux kernel's crc32-pclmul does:
/// fold four 128-bit lanes by 512 bits, then one lane by 128 bits, reduce to
/// 64 and then 32 bits (Barrett), and finish the tail with the tables.
#[cfg(target_arch = "x86_64")]
mod clmul {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_clmulepi64_si128, _mm_cvtsi32_si128, _mm_extract_epi32, _mm_loadu_si128,
        _mm_set_epi32, _mm_set_epi64x, _mm_srli_si128, _mm_xor_si128,
    };

    /// x^(4·128+32) mod P and x^(4·128-32) mod P (bit-reflected, shifted
    /// left by one): folding by 512 bits.
    const K1: i64 = 0x1_5444_2bd4;
    const K2: i64 = 0x1_c6e4_1596;
    /// The same for 128 bits.
    const K3: i64 = 0x1_7519_97d0;
    const K4: i64 = 0x0_ccaa_009e;
    /// x^64 mod P: 96 bits to 64.
    const K5: i64 = 0x1_63cd_6124;
    /// P(x) and μ = x^64 / P(x), bit-reflected, for the Barrett reduction.
    const P_X: i64 = 0x1_DB71_0641;
    const U_PRIME: i64 = 0x1_F701_1641;

    /// The next 16 bytes (there are at least 16).
    #[target_feature(enable = "sse2")]
    unsafe fn next(rest: &mut &[u8]) -> __m128i {
        debug_assert!(rest.len() >= 16);
        // SAFETY: 16 bytes are there; loadu needs no alignment.
        let v = unsafe { _mm_loadu_si128(rest.as_ptr().cast()) };
        *rest = &rest[16..];
        v
    }

    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    unsafe fn fold(a: __m128i, b: __m128i, keys: __m128i) -> __m128i {
        let low = _mm_clmulepi64_si128(a, keys, 0x00);
        let high = _mm_clmulepi64_si128(a, keys, 0x11);
        _mm_xor_si128(_mm_xor_si128(b, low), high)
    }

    /// zlib's CRC-32 of `bytes` (at least 64 of them).
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    pub(super) unsafe fn crc32(bytes: &[u8]) -> u32 {
        debug_assert!(bytes.len() >= 64);
        let mut rest = bytes;
        let r = &mut rest;
        let (mut x3, mut x2, mut x1, mut x0) = (next(r), next(r), next(r), next(r));
        // The initial value ~0, folded into the first lane.
        x3 = _mm_xor_si128(x3, _mm_cvtsi32_si128(!0));
        let k1k2 = _mm_set_epi64x(K2, K1);
        while r.len() >= 64 {
            x3 = fold(x3, next(r), k1k2);
            x2 = fold(x2, next(r), k1k2);
            x1 = fold(x1, next(r), k1k2);
            x0 = fold(x0, next(r), k1k2);
        }
        let k3k4 = _mm_set_epi64x(K4, K3);
        let mut x = fold(x3, x2, k3k4);
        x = fold(x, x1, k3k4);
        x = fold(x, x0, k3k4);
        while r.len() >= 16 {
            x = fold(x, next(r), k3k4);
        }
        // 128 bits to 64.
        let x = _mm_xor_si128(_mm_clmulepi64_si128(x, k3k4, 0x10), _mm_srli_si128(x, 8));
        let low32 = _mm_set_epi32(0, 0, 0, !0);
        let x = _mm_xor_si128(
            _mm_clmulepi64_si128(_mm_and_si128(x, low32), _mm_set_epi64x(0, K5), 0x00),
            _mm_srli_si128(x, 4),
        );
        // Barrett: 64 bits to 32.
        let pu = _mm_set_epi64x(U_PRIME, P_X);
        let t1 = _mm_clmulepi64_si128(_mm_and_si128(x, low32), pu, 0x10);
        let t2 = _mm_clmulepi64_si128(_mm_and_si128(t1, low32), pu, 0x00);
        let crc = _mm_extract_epi32(_mm_xor_si128(x, t2), 1) as u32;
        // `crc` is the running value after the folded part: the tables end it.
        !super::crc32_tables(crc, rest)
    }
}

/// tables[0] is the classic byte table; tables[k][i] is tables[k-1][i] run
/// through one more zero byte.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
};

/// `2026-11-26T12:01:07.123Z`, or "" for 0 (unknown): for a person reading
/// the file; readers use the *_unix_ms fields.
struct Utc(i64);

/// The civil date and time of a moment in Unix milliseconds: year, month,
/// day, hour, minute, second, millisecond (H. Hinnant, "chrono-Compatible
/// Low-Level Date Algorithms").
fn civil(unix_ms: i64) -> [i64; 7] {
    let (days, ms_of_day) = (unix_ms.div_euclid(86_400_000), unix_ms.rem_euclid(86_400_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    [year, month, day, ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000]
}

impl Utc {
    fn write_into(&self, out: &mut Vec<u8>) {
        let unix_ms = self.0;
        if unix_ms <= 0 {
            return;
        }
        let [year, month, day, h, m, s, ms] = civil(unix_ms);
        // What `{year:04}` wrote: at least four digits (a positive time is
        // never before 1970, so no sign).
        push_digits(out, year as u64, 4);
        out.push(b'-');
        push_digits(out, month as u64, 2);
        out.push(b'-');
        push_digits(out, day as u64, 2);
        out.push(b'T');
        push_digits(out, h as u64, 2);
        out.push(b':');
        push_digits(out, m as u64, 2);
        out.push(b':');
        push_digits(out, s as u64, 2);
        out.push(b'.');
        push_digits(out, ms as u64, 3);
        out.push(b'Z');
    }
}

impl std::fmt::Display for Utc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = Vec::with_capacity(32);
        self.write_into(&mut text);
        f.write_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// An integer field's value, signed or not, as `Display` writes it.
#[derive(Clone, Copy)]
enum Int {
    I(i64),
    U(u64),
}

/// `prefix` then the number in decimal, as `{}` writes it.
fn number_field(out: &mut Vec<u8>, prefix: &[u8], value: Int) {
    out.extend_from_slice(prefix);
    match value {
        Int::U(v) => push_digits(out, v, 1),
        Int::I(v) => {
            if v < 0 {
                out.push(b'-');
            }
            push_digits(out, v.unsigned_abs(), 1);
        }
    }
}

/// `value` in decimal, left-padded with zeros to at least `width` digits.
fn push_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let start = at.min(digits.len() - width.min(digits.len()));
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod to_text_tests {
    use super::*;

    /// What `to_text` wrote with core::fmt before it formatted by hand: the
    /// format is pinned, byte for byte.
    fn to_text_with_fmt(r: &Record) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        let _ = write!(out, "{VERSION_LINE}\nstate={}\npid={}\n", r.state.as_word(), r.pid);
        bytes_field(&mut out, "host", &r.host, MAX_HOST_BYTES);
        bytes_field(&mut out, "job_id", &r.job_id, MAX_JOB_ID_BYTES);
        bytes_field(&mut out, "array_task", &r.array_task, MAX_JOB_ID_BYTES);
        let _ = writeln!(out, "mpi_rank={}", r.mpi_rank);
        bytes_field(&mut out, "label", &r.label, MAX_LABEL_BYTES);
        let utc = |ms: i64| Utc(ms).to_string();
        let _ = write!(
            out,
            "acquired_utc={}\nreleased_utc={}\ngeneration={}\nuid={}\nacquired_unix_ms={}\nreleased_unix_ms={}\n",
            utc(r.acquired_unix_ms), utc(r.released_unix_ms), r.generation, r.uid, r.acquired_unix_ms,
            r.released_unix_ms
        );
        bytes_field(&mut out, "boot_id", &r.boot_id, MAX_BOOT_ID_BYTES);
        let _ = writeln!(out, "start_time={}", r.start_time);
        if let Some(lease) = &r.lease {
            let _ = write!(out, "rung={}\nlease_ms={}\nrenewed_utc={}\nrenewed_unix_ms={}\n", lease.rung,
                           lease.lease_ms, utc(lease.renewed_unix_ms), lease.renewed_unix_ms);
            bytes_field(&mut out, "token", &lease.token, MAX_TOKEN_BYTES);
        }
        let sum = crc32(&out);
        let _ = writeln!(out, "checksum=crc32:{sum:08x}");
        out
    }

    /// The date as core::fmt wrote it, from the same civil-date arithmetic.
    fn utc_with_fmt(unix_ms: i64) -> String {
        if unix_ms <= 0 {
            return String::new();
        }
        let [year, month, day, h, m, s, ms] = civil(unix_ms);
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
    }

    #[test]
    fn every_crc32_path_is_zlibs() {
        // Lengths around every step of the folding (64, 16, the tail), bytes of
        // every value; the table-driven CRC is the reference.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for len in (0..600).chain([1000, 4095, 4096, 4097]) {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            assert_eq!(crc32(&bytes), !crc32_tables(!0, &bytes), "length {len}");
        }
        let fox = b"The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.";
        assert_eq!(crc32(&fox[..]), !crc32_tables(!0, &fox[..]));
        assert_eq!(crc32(&[0u8; 64]), 0x758D_6336); // zlib.crc32(bytes(64))
        assert_eq!(crc32(&[0xFFu8; 100]), !crc32_tables(!0, &[0xFFu8; 100]));
    }

    #[test]
    fn to_text_is_what_core_fmt_wrote() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let edges: [i64; 12] = [0, 1, -1, 9, 10, 999, 1000, i64::MIN, i64::MAX, 951_782_400_000, 253_402_300_799_999,
                                253_402_300_800_000];
        for i in 0..20_000u64 {
            let pick = |v: u64| if v % 3 == 0 { edges[(v / 3 % edges.len() as u64) as usize] } else { v as i64 >> (v % 40) };
            let bytes = |v: u64| (0..(v % 70)).map(|k| (v >> (k % 57)) as u8).collect::<Vec<u8>>();
            let r = Record {
                state: [State::Free, State::Held, State::Done, State::Stale][(i % 4) as usize],
                alive: -1,
                pid: pick(next()),
                uid: next() as u32,
                generation: next() >> (i % 64),
                acquired_unix_ms: pick(next()),
                released_unix_ms: pick(next()),
                host: bytes(next()),
                label: bytes(next()),
                boot_id: bytes(next()),
                start_time: next() >> (i % 64),
                mpi_rank: pick(next()) as i32,
                job_id: bytes(next()),
                array_task: bytes(next()),
                lease: (i % 2 == 0).then(|| LeaseFields {
                    rung: next() >> (i % 64),
                    lease_ms: pick(next()),
                    renewed_unix_ms: pick(next()),
                    token: bytes(next()),
                }),
            };
            assert_eq!(r.to_text(), to_text_with_fmt(&r), "{r:?}");
            for ms in [r.acquired_unix_ms, r.released_unix_ms] {
                assert_eq!(Utc(ms).to_string(), utc_with_fmt(ms));
            }
        }
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

/// `key=value\n`, the value cut to `cap` bytes and escaped.
fn bytes_field(out: &mut Vec<u8>, key: &str, value: &[u8], cap: usize) {
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    escape_into(out, &value[..value.len().min(cap)]);
    out.push(b'\n');
}

/// Values stay on one line and stay readable: `\` and control bytes are escaped,
/// everything else (UTF-8 included) is kept as it is.
fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = value;
    while let Some(at) = rest.iter().position(|&b| b == b'\\' || b < 0x20 || b == 0x7f) {
        out.extend_from_slice(&rest[..at]);
        match rest[at] {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b => out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]),
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
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

    pub(crate) fn sample() -> Record {
        Record {
            state: State::Held,
            alive: -1,
            pid: 4034097,
            uid: 1000,
            generation: 7,
            acquired_unix_ms: 1_764_158_467_123,
            released_unix_ms: 0,
            host: b"c123".to_vec(),
            label: b"step 2\nof 3 \\ \xff \x01 \xc3\xa9".to_vec(),
            boot_id: b"d33a3355-a384-4131-80f2-36c6b2b0b4e1".to_vec(),
            start_time: 71858,
            mpi_rank: 0,
            job_id: b"8812345_7".to_vec(),
            array_task: b"7".to_vec(),
            lease: None,
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let r = sample();
        assert_eq!(Record::parse(&r.to_text()), Parsed::Record(r));
        let lease = LeaseFields { rung: 17, lease_ms: 60000, renewed_unix_ms: 1_764_158_467_999, token: b"c1/b/4/9/x".to_vec() };
        let rung = Record { lease: Some(lease), ..sample() };
        assert_eq!(Record::parse(&rung.to_text()), Parsed::Record(rung));
    }

    #[test]
    fn text_is_readable_with_cat() {
        let text = String::from_utf8_lossy(&sample().to_text()).into_owned();
        assert!(text.starts_with("hpclock-record 1\nstate=held\npid=4034097\nhost=c123\njob_id=8812345_7\n"), "{text}");
        assert!(text.contains("\nlabel=step 2\\nof 3 \\\\ "), "{text}");
        assert!(text.contains("\nacquired_utc=2025-11-26T12:01:07.123Z\nreleased_utc=\n"), "{text}");
        let bytes = sample().to_text();
        let body = &bytes[..line_starting_with(&bytes, b"checksum=").unwrap()];
        assert!(text.ends_with(&format!("\nchecksum=crc32:{:08x}\n", crc32(body))), "{text}");
    }

    #[test]
    fn checksum_is_zlib_crc32() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn utc_text_handles_leap_years_and_unknown() {
        assert_eq!(Utc(0).to_string(), "");
        assert_eq!(Utc(951_782_400_000).to_string(), "2000-02-29T00:00:00.000Z");
        assert_eq!(Utc(1_798_761_599_999).to_string(), "2026-12-31T23:59:59.999Z");
    }

    #[test]
    fn padding_after_the_checksum_is_ignored_but_other_bytes_are_torn() {
        let mut text = sample().to_text();
        text.extend_from_slice(b"        \n");
        assert_eq!(Record::parse(&text), Parsed::Record(sample()));
        text.extend_from_slice(b"pid=1\n");
        assert!(matches!(Record::parse(&text), Parsed::Torn { .. }));
    }

    #[test]
    fn any_changed_byte_is_torn() {
        let text = sample().to_text();
        for at in 17..text.len() - 1 {
            let mut damaged = text.clone();
            damaged[at] ^= 0x01;
            assert!(!matches!(Record::parse(&damaged), Parsed::Record(_)), "byte {at} changed, still parsed");
        }
        assert!(matches!(Record::parse(&text[..text.len() / 2]), Parsed::Torn { .. }));
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
        assert_eq!(r.host, b"");
    }

    #[test]
    fn foreign_bytes_are_foreign_not_errors() {
        assert!(matches!(Record::parse(b"id,value\n1,2\n"), Parsed::Foreign(m) if m.contains("id,value")));
        assert!(matches!(Record::parse(b"hpclock-record 2\nstate=held\n"), Parsed::Torn { why, .. } if why.contains("newer")));
        let huge = vec![b'a'; 10 * MAX_RECORD_BYTES];
        assert!(matches!(Record::parse(&huge), Parsed::Foreign(_)));
    }

    #[test]
    fn only_foreign_bytes_are_not_a_lock_file() {
        assert!(Record::parse(b"").is_lock_file());
        assert!(Record::parse(b"   \n").is_lock_file());
        assert!(Record::parse(b"4034097\n1764160000.5\n").is_lock_file());
        assert!(Record::parse(&sample().to_text()[..40]).is_lock_file());
        assert!(Record::parse(b"hpclock-record 9\nwhatever").is_lock_file());
        assert!(!Record::parse(b"1\n2\n3\n").is_lock_file());
        assert!(!Record::parse(b"id,value\n").is_lock_file());
    }

    #[test]
    fn a_damaged_record_keeps_its_highest_generation_and_done() {
        let mut done = Record { state: State::Done, generation: 5, ..sample() }.to_text();
        let at = done.windows(5).position(|w| w == b"host=").unwrap() + 5;
        done[at] ^= 0x20; // one character of the host changed by hand
        let parsed = Record::parse(&done);
        assert!(matches!(parsed, Parsed::Torn { .. }), "{parsed:?}");
        assert!(parsed.says_done());
        assert_eq!(parsed.next_generation(), Some(6));

        let edited = b"hpclock-record 1\nstate=held\ngeneration=3\ngeneration=40x\nchecksum=crc32:00000000\n";
        assert_eq!(Record::parse(edited).next_generation(), Some(41));
        assert!(!Record::parse(edited).says_done());
        let huge = b"hpclock-record 1\ngeneration=99999999999999999999999\n";
        assert_eq!(Record::parse(huge).next_generation(), None);
        let top = Record { generation: u64::MAX, ..sample() }.to_text();
        assert_eq!(Record::parse(&top).next_generation(), None);
    }
}

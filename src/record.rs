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
/// What a record takes apart from its byte fields, at most: every key, every
/// number at its longest (20 characters), every date at its longest (a
/// nine-digit year), the lease's lines and the checksum — 520 bytes (the test
/// `the_fixed_part_of_a_record_is_within_its_bound` writes such a record).
const MAX_FIXED_TEXT_BYTES: usize = 640;
/// A token is at most a 64-byte host name, a boot id, a pid, a start time and
/// a nonce, with separators; the cap keeps every record within 4 KiB even when
/// every byte of every field needs escaping.
pub(crate) const MAX_TOKEN_BYTES: usize = 200;

impl Record {
    /// The record as text, at most [`MAX_RECORD_BYTES`]: every field is
    /// capped, so it always fits. Fields a person looks for come first; the
    /// last line is a CRC-32 (zlib's) of everything before it.
    pub fn to_text(&self) -> Vec<u8> {
        // Written into one buffer allocated at the record's bound, numbers
        // and dates by hand rather than through core::fmt (which cost about
        // half of this function), no append growing it: this runs on every
        // acquire and release. The bytes are exactly what `write!` made (the test
        // `to_text_is_what_core_fmt_wrote` compares).
        let mut out = Text::with_capacity(self.text_bound());
        out.put(VERSION_LINE.as_bytes());
        out.put(b"\nstate=");
        out.put(self.state.as_word().as_bytes());
        out.put(b"\npid=");
        out.signed(self.pid);
        out.byte(b'\n');
        out.field(b"host=", &self.host, MAX_HOST_BYTES);
        out.field(b"job_id=", &self.job_id, MAX_JOB_ID_BYTES);
        out.field(b"array_task=", &self.array_task, MAX_JOB_ID_BYTES);
        out.put(b"mpi_rank=");
        out.signed(i64::from(self.mpi_rank));
        out.byte(b'\n');
        out.field(b"label=", &self.label, MAX_LABEL_BYTES);
        out.put(b"acquired_utc=");
        out.utc(self.acquired_unix_ms);
        out.put(b"\nreleased_utc=");
        out.utc(self.released_unix_ms);
        out.put(b"\ngeneration=");
        out.digits(self.generation, 1);
        out.put(b"\nuid=");
        out.digits(u64::from(self.uid), 1);
        out.put(b"\nacquired_unix_ms=");
        out.signed(self.acquired_unix_ms);
        out.put(b"\nreleased_unix_ms=");
        out.signed(self.released_unix_ms);
        out.byte(b'\n');
        out.field(b"boot_id=", &self.boot_id, MAX_BOOT_ID_BYTES);
        out.put(b"start_time=");
        out.digits(self.start_time, 1);
        out.byte(b'\n');
        if let Some(lease) = &self.lease {
            out.put(b"rung=");
            out.digits(lease.rung, 1);
            out.put(b"\nlease_ms=");
            out.signed(lease.lease_ms);
            out.put(b"\nrenewed_utc=");
            out.utc(lease.renewed_unix_ms);
            out.put(b"\nrenewed_unix_ms=");
            out.signed(lease.renewed_unix_ms);
            out.byte(b'\n');
            out.field(b"token=", &lease.token, MAX_TOKEN_BYTES);
        }
        let sum = crc32(out.written());
        out.put(b"checksum=crc32:");
        let mut hex = [0u8; 8];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = HEX_DIGITS[((sum >> (28 - 4 * i)) & 0xf) as usize];
        }
        out.put(&hex);
        out.byte(b'\n');
        out.buf
    }

    /// The most `to_text` can write for this record: its fixed part at its
    /// longest, and each byte field as if every byte needed escaping. Most
    /// records are well under a kilobyte, which the allocator hands out
    /// from its per-thread cache; 4 KiB every time came from its bins.
    fn text_bound(&self) -> usize {
        let escaped = |value: &[u8], cap: usize| 4 * value.len().min(cap);
        let token = self.lease.as_ref().map_or(0, |lease| escaped(&lease.token, MAX_TOKEN_BYTES));
        let fields = escaped(&self.host, MAX_HOST_BYTES) + escaped(&self.job_id, MAX_JOB_ID_BYTES)
            + escaped(&self.array_task, MAX_JOB_ID_BYTES) + escaped(&self.label, MAX_LABEL_BYTES)
            + escaped(&self.boot_id, MAX_BOOT_ID_BYTES) + token;
        (MAX_FIXED_TEXT_BYTES + fields).min(MAX_RECORD_BYTES)
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
        // One pass over the lines: fields are read on the way to the
        // checksum line, and count only if the checksum then matches.
        let mut fields = Fields::new();
        let mut start = first.len() + 1;
        let body_end = loop {
            let Some(rest) = bytes.get(start..).filter(|rest| !rest.is_empty()) else {
                return torn("the record has no checksum line (cut short?)".into());
            };
            let line = &rest[..find_byte(rest, b'\n').unwrap_or(rest.len())];
            if line.starts_with(b"checksum=crc32:") {
                break start;
            }
            fields.read(line);
            start += line.len() + 1;
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
        fields.finish().map_or_else(torn, Parsed::Record)
    }
}

/// The fields of a record, read line by line (after its version line).
struct Fields<'a> {
    record: Record,
    saw_state: bool,
    /// The key of the first line whose value could not be read.
    bad: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    fn new() -> Fields<'a> {
        Fields { record: Record::default(), saw_state: false, bad: None }
    }

    fn read(&mut self, line: &'a [u8]) {
        let Some(eq) = line.iter().position(|&b| b == b'=') else { return };
        let (key, raw) = (&line[..eq], &line[eq + 1..]);
        let record = &mut self.record;
        // Numbers and words are never escaped; only byte fields are unescaped.
        let ok = match key {
            b"state" => {
                self.saw_state = true;
                std::str::from_utf8(raw).ok().and_then(State::from_word).map(|s| record.state = s).is_some()
            }
            b"generation" => number(raw).map(|v| record.generation = v).is_some(),
            b"pid" => number(raw).map(|v| record.pid = v).is_some(),
            b"uid" => number(raw).map(|v| record.uid = v).is_some(),
            b"mpi_rank" => number(raw).map(|v| record.mpi_rank = v).is_some(),
            b"start_time" => number(raw).map(|v| record.start_time = v).is_some(),
            b"acquired_unix_ms" => number(raw).map(|v| record.acquired_unix_ms = v).is_some(),
            b"released_unix_ms" => number(raw).map(|v| record.released_unix_ms = v).is_some(),
            b"host" => store(&mut record.host, raw),
            b"label" => store(&mut record.label, raw),
            b"boot_id" => store(&mut record.boot_id, raw),
            b"job_id" => store(&mut record.job_id, raw),
            b"array_task" => store(&mut record.array_task, raw),
            b"rung" => number(raw).map(|v| record.lease.get_or_insert_with(Default::default).rung = v).is_some(),
            b"lease_ms" => {
                number(raw).map(|v| record.lease.get_or_insert_with(Default::default).lease_ms = v).is_some()
            }
            b"renewed_unix_ms" => {
                number(raw).map(|v| record.lease.get_or_insert_with(Default::default).renewed_unix_ms = v).is_some()
            }
            b"token" => store(&mut record.lease.get_or_insert_with(Default::default).token, raw),
            _ => true, // for people (acquired_utc, ...) or from a later version
        };
        if !ok && self.bad.is_none() {
            self.bad = Some(key);
        }
    }

    /// The record, or which line is bad.
    fn finish(self) -> Result<Record, String> {
        if let Some(key) = self.bad {
            return Err(format!("the record has a bad {} line", String::from_utf8_lossy(key)));
        }
        if !self.saw_state {
            return Err("the record has no state line".into());
        }
        Ok(self.record)
    }
}

/// Where `byte` first occurs: libc's memchr, which looks at a vector of
/// bytes per step where a loop looks at one (reading a record is mostly
/// finding its line ends).
fn find_byte(haystack: &[u8], byte: u8) -> Option<usize> {
    // SAFETY: memchr reads at most `len` bytes from the slice's start.
    let found = unsafe { libc::memchr(haystack.as_ptr().cast(), i32::from(byte), haystack.len()) };
    (!found.is_null()).then(|| found as usize - haystack.as_ptr() as usize)
}

/// A decimal integer as `str::parse` reads one (an optional sign, `-` only
/// where `T` is signed, then at least one digit, no overflow), without the
/// UTF-8 check and the generic radix code: a record has eight numbers, and
/// parsing them was a quarter of reading it.
fn number<T: TryFrom<i128>>(raw: &[u8]) -> Option<T> {
    let signed = T::try_from(-1).is_ok();
    let (negative, digits) = match raw.split_first()? {
        (b'-', rest) if signed => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, raw),
    };
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: i128 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude * 10 + i128::from(b - b'0');
        if magnitude > i128::from(u64::MAX) {
            return None; // too big for any field's type
        }
    }
    T::try_from(if negative { -magnitude } else { magnitude }).ok()
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

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// "00" to "99": two digits per division halves the divisions, which were
/// most of `to_text`'s time.
const TWO_DIGITS: &[u8; 200] = b"\
0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// A record being written. Every field is capped so that a record always
/// fits in [`MAX_RECORD_BYTES`] even when every byte needs escaping, so the
/// buffer is allocated once, at the record's bound, and never grows (a bug
/// that overflowed it would panic, which the C boundary catches); its bytes
/// are written only once, never zeroed first.
struct Text {
    buf: Vec<u8>,
}

impl Text {
    /// `bound`: the most that will be written (at most MAX_RECORD_BYTES).
    fn with_capacity(bound: usize) -> Text {
        Text { buf: Vec::with_capacity(bound) }
    }

    fn written(&self) -> &[u8] {
        &self.buf
    }

    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let len = self.buf.len();
        assert!(bytes.len() <= self.buf.capacity() - len, "a record outgrew its bound");
        // SAFETY: the room was just checked, the two do not overlap, and the
        // length covers only what was written.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.buf.as_mut_ptr().add(len), bytes.len());
            self.buf.set_len(len + bytes.len());
        }
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.put(&[b]);
    }

    /// `value` in decimal, left-padded with zeros to at least `width`
    /// (at most 20) digits, as `{:0width$}` writes it.
    fn digits(&mut self, mut value: u64, width: usize) {
        let mut digits = [b'0'; 20];
        let mut at = digits.len();
        while value >= 100 {
            let pair = (value % 100) as usize * 2;
            value /= 100;
            at -= 2;
            digits[at..at + 2].copy_from_slice(&TWO_DIGITS[pair..pair + 2]);
        }
        if value >= 10 {
            at -= 2;
            digits[at..at + 2].copy_from_slice(&TWO_DIGITS[value as usize * 2..value as usize * 2 + 2]);
        } else {
            at -= 1;
            digits[at] = b'0' + value as u8;
        }
        self.put(&digits[at.min(digits.len() - width)..]);
    }

    /// As `{}` writes an i64.
    fn signed(&mut self, value: i64) {
        if value < 0 {
            self.byte(b'-');
        }
        self.digits(value.unsigned_abs(), 1);
    }

    /// `2026-11-26T12:01:07.123Z`, or nothing for 0 (unknown): for a person
    /// reading the file; readers use the *_unix_ms fields.
    fn utc(&mut self, unix_ms: i64) {
        if unix_ms <= 0 {
            return;
        }
        let [year, month, day, h, m, s, ms] = civil(unix_ms);
        // What `{year:04}` wrote: at least four digits (a positive time is
        // never before 1970, so no sign).
        self.digits(year as u64, 4);
        for (separator, value) in [(b'-', month), (b'-', day), (b'T', h), (b':', m), (b':', s)] {
            let pair = value as usize * 2;
            self.put(&[separator, TWO_DIGITS[pair], TWO_DIGITS[pair + 1]]);
        }
        self.byte(b'.');
        self.digits(ms as u64, 3);
        self.byte(b'Z');
    }

    /// `key` (with its `=`), the value cut to `cap` bytes and escaped, `\n`.
    fn field(&mut self, key: &[u8], value: &[u8], cap: usize) {
        self.put(key);
        let mut rest = &value[..value.len().min(cap)];
        while let Some(at) = rest.iter().position(|&b| needs_escape(b)) {
            self.put(&rest[..at]);
            self.put(&escaped(rest[at]));
            rest = &rest[at + 1..];
        }
        self.put(rest);
        self.byte(b'\n');
    }
}

#[cfg(test)]
mod to_text_tests {
    use super::*;

    fn utc(unix_ms: i64) -> String {
        let mut text = Text::with_capacity(MAX_RECORD_BYTES);
        text.utc(unix_ms);
        String::from_utf8(text.written().to_vec()).unwrap()
    }

    /// `key=value\n`, the value cut to `cap` bytes and escaped.
    fn bytes_field(out: &mut Vec<u8>, key: &str, value: &[u8], cap: usize) {
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        escape_into(out, &value[..value.len().min(cap)]);
        out.push(b'\n');
    }

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
                assert_eq!(utc(ms), utc_with_fmt(ms));
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

/// Values stay on one line and stay readable: `\\` and control bytes are
/// escaped, everything else (UTF-8 included) is kept as it is.
fn needs_escape(b: u8) -> bool {
    b == b'\\' || b < 0x20 || b == 0x7f
}

/// How a byte that [`needs_escape`] is written: `\\`, `\n`, `\r`, `\t`, or `\xNN`.
fn escaped(b: u8) -> Vec<u8> {
    match b {
        b'\\' => b"\\\\".to_vec(),
        b'\n' => b"\\n".to_vec(),
        b'\r' => b"\\r".to_vec(),
        b'\t' => b"\\t".to_vec(),
        b => vec![b'\\', b'x', HEX_DIGITS[usize::from(b >> 4)], HEX_DIGITS[usize::from(b & 0xf)]],
    }
}

fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        if needs_escape(b) {
            out.extend_from_slice(&escaped(b));
        } else {
            out.push(b);
        }
    }
}

fn unescape(value: &[u8]) -> Vec<u8> {
    if !value.contains(&b'\\') {
        return value.to_vec(); // what nearly every field is
    }
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
    fn the_fixed_part_of_a_record_is_within_its_bound() {
        // Every number and date at its longest, every byte field empty.
        let longest = Record {
            state: State::Stale,
            pid: i64::MIN,
            uid: u32::MAX,
            generation: u64::MAX,
            acquired_unix_ms: i64::MAX,
            released_unix_ms: i64::MAX,
            start_time: u64::MAX,
            mpi_rank: i32::MIN,
            lease: Some(LeaseFields { rung: u64::MAX, lease_ms: i64::MIN, renewed_unix_ms: i64::MAX, token: vec![] }),
            host: vec![],
            label: vec![],
            boot_id: vec![],
            job_id: vec![],
            array_task: vec![],
            ..Record::default()
        };
        let text = longest.to_text();
        assert_eq!(text.len(), 520, "{}", String::from_utf8_lossy(&text));
        assert!(text.len() <= MAX_FIXED_TEXT_BYTES);
        // Every byte field at its cap, every byte escaped as \xNN: the bound
        // holds, and so does the record's limit.
        let worst = Record {
            host: vec![1; 1000],
            label: vec![2; 1000],
            boot_id: vec![3; 1000],
            job_id: vec![4; 1000],
            array_task: vec![5; 1000],
            lease: Some(LeaseFields { token: vec![6; 1000], ..longest.lease.clone().unwrap() }),
            ..longest
        };
        assert!(worst.to_text().len() <= worst.text_bound());
        assert!(worst.text_bound() <= MAX_RECORD_BYTES);
    }

    #[test]
    fn numbers_are_read_as_str_parse_reads_them() {
        let mut cases: Vec<String> = ["", "+", "-", "0", "-0", "+0", "00", "+-1", "-+1", " 1", "1 ", "1_0", "٣",
                                      "9223372036854775807", "9223372036854775808", "-9223372036854775808",
                                      "-9223372036854775809", "18446744073709551615", "18446744073709551616",
                                      "4294967295", "4294967296", "2147483647", "-2147483648", "-2147483649",
                                      "0000000000000000000000000000000000000042", "99999999999999999999999999"]
            .iter().map(|s| s.to_string()).collect();
        let mut seed = 0x1234_5678_9ABC_DEF0u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let alphabet = b"0123456789+-x ";
            let len = (seed % 24) as usize;
            cases.push((0..len).map(|k| alphabet[((seed >> (k % 60)) % 14) as usize] as char).collect());
        }
        for case in &cases {
            let raw = case.as_bytes();
            assert_eq!(number::<u64>(raw), case.parse::<u64>().ok(), "u64 {case:?}");
            assert_eq!(number::<i64>(raw), case.parse::<i64>().ok(), "i64 {case:?}");
            assert_eq!(number::<u32>(raw), case.parse::<u32>().ok(), "u32 {case:?}");
            assert_eq!(number::<i32>(raw), case.parse::<i32>().ok(), "i32 {case:?}");
        }
    }

    #[test]
    fn utc_text_handles_leap_years_and_unknown() {
        let utc = |unix_ms| {
            let mut text = Text::with_capacity(MAX_RECORD_BYTES);
            text.utc(unix_ms);
            text.written().to_vec()
        };
        assert_eq!(utc(0), b"");
        assert_eq!(utc(951_782_400_000), b"2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_798_761_599_999), b"2026-12-31T23:59:59.999Z");
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

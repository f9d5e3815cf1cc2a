//! Property tests over the holder record's writer and parser: at least 100,000
//! generated cases per property and run. The generator is a small seeded
//! xorshift; a failure prints the seed, and HPCLOCK_PROPTEST_SEED=N replays it.
//! HPCLOCK_PROPTEST_CASES=N runs more (or, locally, fewer) cases.

use hpclock::record::{LeaseFields, Parsed, Record, State};

const DEFAULT_CASES: u64 = 100_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: fast, and good enough to reach every byte value.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.below(max_len + 1);
        // Half the time any byte, half the time bytes that mean something to the format.
        let alphabet: &[u8] = b"=\n\\x0aZ hpclock-record 1state=heldchecksum=crc32:";
        let wild = self.below(2) == 0;
        (0..len)
            .map(|_| if wild { self.next() as u8 } else { alphabet[self.below(alphabet.len() as u64) as usize] })
            .collect()
    }
    fn record(&mut self) -> Record {
        Record {
            state: [State::Free, State::Held, State::Done][self.below(3) as usize],
            alive: -1, // not stored: what a reader starts from
            pid: self.next() as i64,
            uid: self.next() as u32,
            generation: self.next(),
            acquired_unix_ms: self.next() as i64,
            released_unix_ms: self.next() as i64,
            host: self.bytes(255),
            label: self.bytes(127),
            boot_id: self.bytes(64),
            start_time: self.next(),
            mpi_rank: self.next() as i32,
            job_id: self.bytes(63),
            array_task: self.bytes(63),
            lease: (self.below(2) == 0).then(|| LeaseFields {
                rung: self.next(),
                lease_ms: self.next() as i64,
                renewed_unix_ms: self.next() as i64,
                token: self.bytes(200),
            }),
        }
    }
}

fn setting(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `property` over generated cases, naming the seed if one fails.
fn check(name: &str, property: impl Fn(&mut Rng)) {
    let seed = setting("HPCLOCK_PROPTEST_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    let cases = setting("HPCLOCK_PROPTEST_CASES").unwrap_or(DEFAULT_CASES);
    let mut rng = Rng(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..cases {
            property(&mut rng);
        }
    }));
    if let Err(panic) = outcome {
        eprintln!("{name} failed; replay with HPCLOCK_PROPTEST_SEED={seed}");
        std::panic::resume_unwind(panic);
    }
    println!("{name}: {cases} cases, seed {seed}");
}

#[test]
fn every_record_round_trips_and_fits_in_4_kib() {
    check("round trip", |rng| {
        let record = rng.record();
        let text = record.to_text();
        assert!(text.len() <= 4096, "record of {} bytes", text.len());
        assert_eq!(Record::parse(&text), Parsed::Record(record));
    });
}

#[test]
fn any_bytes_parse_to_a_record_or_a_reason_never_a_panic() {
    check("arbitrary bytes", |rng| {
        let bytes = rng.bytes(5000);
        match Record::parse(&bytes) {
            Parsed::Empty => assert!(bytes.iter().take(4096).all(u8::is_ascii_whitespace)),
            Parsed::Torn { why, .. } | Parsed::Foreign(why) => assert!(!why.is_empty()),
            Parsed::Record(_) => {}
        }
    });
}

#[test]
fn damaged_records_are_never_mistaken_for_whole_ones() {
    check("damaged records", |rng| {
        let record = rng.record();
        let mut text = record.to_text();
        let at = rng.below(text.len() as u64) as usize;
        match rng.below(3) {
            0 => text.truncate(at), // a write cut short
            1 => text[at] ^= 1 << rng.below(8),
            _ => text.splice(at..at, rng.bytes(16)).for_each(drop),
        }
        if let Parsed::Record(parsed) = Record::parse(&text) {
            // Only a change the checksum cannot see (none, or trailing
            // whitespace) may still parse, and then to the same record.
            assert_eq!(parsed, record, "damaged text parsed as another record");
        }
    });
}

#[test]
fn nothing_past_4_kib_changes_what_is_read() {
    check("bytes past 4 KiB", |rng| {
        let mut text = if rng.below(2) == 0 { rng.record().to_text() } else { rng.bytes(4096) };
        text.resize(4096, b' ');
        let head = Record::parse(&text);
        text.extend(rng.bytes(3000));
        assert_eq!(Record::parse(&text), head);
    });
}

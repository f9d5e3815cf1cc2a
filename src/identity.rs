//! Who we are: host, uid, pid and the clock, as they go into a holder record.

use once_cell::sync::Lazy;
use std::time::{SystemTime, UNIX_EPOCH};

/// The node name, read once per process: it does not change under a running
/// job, and a forked child is on the same host.
static HOST: Lazy<String> = Lazy::new(|| {
    // SAFETY: utsname is plain old data; uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = uts.nodename.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
});

pub fn host() -> &'static str {
    &HOST
}

/// Never cached: a forked child must not report its parent's pid.
pub fn pid() -> i64 {
    i64::from(unsafe { libc::getpid() })
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

//! What the filesystem under a lock file can promise. For now one question:
//! is it node-private, so that this node's kernel lock table (/proc/locks)
//! sees every lock on it? (DESIGN §4, first row.)

use std::os::fd::{AsRawFd, OwnedFd};

/// statfs f_type of the node-private filesystems of DESIGN §4: ext2/3/4, xfs,
/// btrfs, zfs, tmpfs, overlay.
const NODE_PRIVATE_MAGICS: &[u64] = &[0xEF53, 0x5846_5342, 0x9123_683E, 0x2FC1_2FC1, 0x0102_1994, 0x794C_7630];

/// True when every lock on the file is one this node's kernel holds, so that
/// /proc/locks is the whole truth about it. False when unsure.
pub fn lock_table_is_complete(fd: &OwnedFd) -> bool {
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    NODE_PRIVATE_MAGICS.contains(&(st.f_type as u64))
}

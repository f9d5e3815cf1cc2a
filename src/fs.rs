//! Where a lock holds (docs/filesystems.md): from the filesystem's magic number, its
//! mount entry and options, and BeeGFS's client config, decide how far
//! exclusion reaches (scope), which kernel lock to use (primitive), and say
//! why in one sentence a user can act on.
//!
//! The decision is a pure function, [`classify`], over those facts; gathering
//! them ([`check`]) is kept apart so that every row can be tested from fixtures.

use crate::lockfile::{c_path, directory_of, open_fd};
use crate::status::{quote_path, Error};
use crate::fork_safe::Published;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// hpclock_fs_info.scope: cannot tell (FUSE without known lock support, unknown fs).
pub const HPCLOCK_SCOPE_UNKNOWN: i32 = 0;
/// Node-private fs (ext4, xfs, tmpfs): complete among processes of this node, and other nodes see another file.
pub const HPCLOCK_SCOPE_NODE: i32 = 1;
/// Shared fs whose locks are coherent across nodes (NFS with locking, Lustre -o flock, CephFS, GPFS via OFD locks).
pub const HPCLOCK_SCOPE_CLUSTER: i32 = 2;
/// Shared fs whose locks exclude only within a node (Lustre localflock, NFS local_lock=flock|all or nolock, BeeGFS without global locks).
pub const HPCLOCK_SCOPE_SPLIT: i32 = 3;
/// The fs refuses locks (Lustre noflock).
pub const HPCLOCK_SCOPE_NONE: i32 = 4;

/// flock(2).
pub const HPCLOCK_PRIMITIVE_FLOCK: i32 = 1;
/// fcntl F_OFD_SETLK on the whole file.
pub const HPCLOCK_PRIMITIVE_OFD: i32 = 2;
/// The cross-node lease (with the kernel lock too, where the fs has one).
pub const HPCLOCK_PRIMITIVE_LEASE: i32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Scope {
    Unknown = HPCLOCK_SCOPE_UNKNOWN,
    Node = HPCLOCK_SCOPE_NODE,
    Cluster = HPCLOCK_SCOPE_CLUSTER,
    Split = HPCLOCK_SCOPE_SPLIT,
    None = HPCLOCK_SCOPE_NONE,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Primitive {
    Flock = HPCLOCK_PRIMITIVE_FLOCK,
    Ofd = HPCLOCK_PRIMITIVE_OFD,
}

/// statfs f_type values (linux/magic.h and the filesystems' own sources).
pub(crate) mod magic {
    pub(crate) const EXT: u64 = 0xEF53;
    pub(crate) const XFS: u64 = 0x5846_5342;
    pub(crate) const BTRFS: u64 = 0x9123_683E;
    pub(crate) const ZFS: u64 = 0x2FC1_2FC1;
    pub(crate) const TMPFS: u64 = 0x0102_1994;
    pub(crate) const OVERLAY: u64 = 0x794C_7630;
    pub(crate) const NFS: u64 = 0x6969;
    pub(crate) const LUSTRE: u64 = 0x0BD0_0BD0;
    pub(crate) const GPFS: u64 = 0x4750_4653;
    pub(crate) const BEEGFS: u64 = 0x1983_0326;
    pub(crate) const CEPH: u64 = 0x00C3_6400;
    pub(crate) const FUSE: u64 = 0x6573_5546;
    pub(crate) const CIFS: u64 = 0xFF53_4D42;
    pub(crate) const SMB2: u64 = 0xFE53_4D42;
}

const NODE_PRIVATE: &[(u64, &str)] = &[
    (magic::EXT, "ext4"),
    (magic::XFS, "xfs"),
    (magic::BTRFS, "btrfs"),
    (magic::ZFS, "zfs"),
    (magic::TMPFS, "tmpfs"),
    (magic::OVERLAY, "overlay"),
];

/// A test-only override of the primitive (the core's tests run under both
/// kernel locks; `none` makes a filesystem that refuses locks, so that the
/// lease alone must exclude); named in the README.
pub const PRIMITIVE_OVERRIDE_VARIABLE: &str = "HPCLOCK_TEST_PRIMITIVE";

/// What the filesystem under a path can promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub scope: Scope,
    /// The kernel lock, where there is one.
    pub primitive: Primitive,
    /// Acquire uses the lease here (scope SPLIT or NONE), unless told not to.
    pub lease: bool,
    pub magic: u64,
    pub fs_type: String,
    /// One sentence: why this scope.
    pub detail: String,
    /// What would make locks work, where the filesystem refuses them ("" if unknown).
    pub fix: &'static str,
}

/// The facts [`classify`] decides from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountFacts {
    pub magic: u64,
    /// Type from the mount table ("nfs4", "lustre", "fuse.sshfs"); "" if not found.
    pub fs_type: String,
    /// Mount point, decoded.
    pub mount_point: String,
    /// Per-mount and superblock options together, comma-separated.
    pub options: String,
    /// Text of /proc/fs/beegfs/*/config, for BeeGFS mounts.
    pub beegfs_config: Option<String>,
}

impl MountFacts {
    fn option(&self, name: &str) -> Option<&str> {
        self.options.split(',').find_map(|opt| match opt.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            None if opt == name => Some(""),
            _ => None,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.option(name).is_some()
    }
}

/// statfs f_type of the filesystem an open file is on.
pub fn magic_of(fd: &OwnedFd, path: &Path) -> Result<u64, Error> {
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Error::os("cannot statfs lock file", path, io::Error::last_os_error()));
    }
    Ok(st.f_type as u64)
}

/// statfs f_type of an open file, without the fstatfs where it is known:
/// cached by unique mount id (`lockfile::stat_without_times`; never reused
/// while the system runs, and a mount's filesystem never changes, unlike a
/// device number, which a later mount may reuse). A few entries, each
/// guarded by a sequence number rather than a lock: a reader that sees it odd
/// or changed, and a writer that finds it odd (another writer, or a fork in
/// the middle of one), simply asks the kernel.
pub fn magic_of_mount(fd: &OwnedFd, path: &Path, mount: Option<u64>) -> Result<u64, Error> {
    let Some(mount) = mount else { return magic_of(fd, path) };
    let entry = &MAGIC_CACHE[(mount % MAGIC_CACHE.len() as u64) as usize];
    let before = entry.seq.load(Ordering::Acquire);
    if before % 2 == 0 && entry.mount.load(Ordering::Acquire) == mount {
        let magic = entry.magic.load(Ordering::Acquire);
        if entry.seq.load(Ordering::Acquire) == before {
            return Ok(magic);
        }
    }
    let magic = magic_of(fd, path)?;
    let seen = entry.seq.load(Ordering::Relaxed);
    if seen % 2 == 0 && entry.seq.compare_exchange(seen, seen + 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        entry.mount.store(mount, Ordering::Release);
        entry.magic.store(magic, Ordering::Release);
        entry.seq.store(seen + 2, Ordering::Release);
    }
    Ok(magic)
}

struct MagicEntry {
    seq: AtomicU64,
    mount: AtomicU64,
    magic: AtomicU64,
}

static MAGIC_CACHE: [MagicEntry; 4] =
    [const { MagicEntry { seq: AtomicU64::new(0), mount: AtomicU64::new(0), magic: AtomicU64::new(0) } }; 4];

/// Locks on a node-private filesystem are all in this node's kernel, so its
/// lock table (/proc/locks) is the whole truth.
pub fn is_node_private(magic: u64) -> bool {
    NODE_PRIVATE.iter().any(|&(m, _)| m == magic)
}

/// The primitive acquire uses: flock, except on GPFS, where flock is
/// node-local but fcntl locks are cluster-wide (IBM Storage Scale docs).
/// Depends on the magic alone, so acquire needs no mount table.
pub fn primitive_for(magic: u64) -> Primitive {
    match primitive_override() {
        Some(Override::Ofd) => Primitive::Ofd,
        Some(Override::Flock) => Primitive::Flock,
        _ if magic == magic::GPFS => Primitive::Ofd,
        _ => Primitive::Flock,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Override {
    Flock,
    Ofd,
    /// As if the filesystem refused locks (Lustre without `flock`).
    NoLocks,
}

/// Read once per process, like the rest of the environment hpclock uses.
fn primitive_override() -> Option<Override> {
    static OVERRIDE: Published<Option<Override>> = Published::new();
    *OVERRIDE.get_or_init(|| match std::env::var(PRIMITIVE_OVERRIDE_VARIABLE).ok()?.as_str() {
        "ofd" => Some(Override::Ofd),
        "flock" => Some(Override::Flock),
        "none" => Some(Override::NoLocks),
        _ => None,
    })
}

/// The kernel takes no locks here, by the test override: only the lease
/// excludes (a real filesystem that refuses locks says so with ENOSYS).
pub fn kernel_locks_refused() -> bool {
    primitive_override() == Some(Override::NoLocks)
}

/// Whether acquire uses the lease on the filesystem of `fd` when neither
/// HPCLOCK_LEASE nor HPCLOCK_NO_LEASE says: where scope is SPLIT or NONE.
/// Only the shared filesystems whose scope depends on mount options need the
/// mount table; on all others the magic number decides at no cost.
pub fn lease_wanted(fd: &OwnedFd, magic: u64) -> bool {
    if kernel_locks_refused() {
        return true;
    }
    matches!(magic, magic::NFS | magic::LUSTRE | magic::BEEGFS) && classify_open(fd, magic).lease
}

/// The decision of docs/filesystems.md#the-table, row by row.
pub fn classify(facts: &MountFacts) -> FsInfo {
    let fs_type = if facts.fs_type.is_empty() { type_name_of(facts.magic).to_string() } else { facts.fs_type.clone() };
    let at = if facts.mount_point.is_empty() { String::new() } else { format!("{} is ", facts.mount_point) };
    let (scope, detail, fix): (Scope, String, &'static str) = match facts.magic {
        m if is_node_private(m) => (
            Scope::Node,
            format!("{at}{fs_type}, private to this node: processes on other nodes would lock a different file"),
            "",
        ),
        magic::NFS => {
            let local_lock = facts.option("local_lock").unwrap_or("none");
            if facts.has("nolock") {
                (Scope::Split, format!("{at}{fs_type} mounted with nolock: locks are kept on this node only"), "")
            } else if matches!(local_lock, "flock" | "all") {
                (Scope::Split, format!(
                    "{at}{fs_type} mounted with local_lock={local_lock}: flock locks are kept on this node only"), "")
            } else {
                (Scope::Cluster, format!(
                    "{at}{fs_type} with local_lock={local_lock}: flock is sent to the NFS server as a whole-file lock, \
                     seen by every node"), "")
            }
        }
        magic::LUSTRE => {
            if facts.has("localflock") {
                (Scope::Split, format!("{at}lustre mounted with localflock: locks exclude only within this node"),
                 "mount the Lustre client with -o flock for locks coherent across nodes")
            } else if facts.has("flock") && !facts.has("noflock") {
                (Scope::Cluster, format!("{at}lustre mounted with flock: locks are coherent across nodes"), "")
            } else {
                (Scope::None, format!("{at}lustre mounted without flock: the client refuses locks (ENOSYS)"),
                 "mount the Lustre client with -o flock")
            }
        }
        magic::GPFS => (Scope::Cluster, format!(
            "{at}gpfs: flock is node-local on GPFS but fcntl locks are cluster-wide, so hpclock uses OFD locks"), ""),
        magic::BEEGFS => {
            if beegfs_global_locks(facts) {
                (Scope::Cluster, format!("{at}beegfs with tuneUseGlobalFileLocks=true: locks are coherent across nodes"), "")
            } else {
                (Scope::Split, format!(
                    "{at}beegfs without tuneUseGlobalFileLocks=true: locks exclude only within this node"),
                 "set tuneUseGlobalFileLocks=true in beegfs-client.conf for locks coherent across nodes")
            }
        }
        magic::CEPH => (Scope::Cluster, format!(
            "{at}{fs_type}: CephFS locks are granted by the metadata server, coherent across nodes"), ""),
        magic::FUSE => (Scope::Unknown, format!(
            "{at}{fs_type} (FUSE): locks stay in this node's kernel unless the daemon implements them; \
             hpclock cannot tell whether other nodes are excluded"), ""),
        magic::CIFS | magic::SMB2 => (Scope::Unknown, format!(
            "{at}{fs_type} (SMB): its byte-range locks are mandatory and flock depends on the server and mount; \
             hpclock cannot tell whether other nodes are excluded"), ""),
        m => (Scope::Unknown, format!(
            "{at}{fs_type} (magic 0x{m:x}), a filesystem hpclock does not know: it cannot tell whether \
             other nodes are excluded"), ""),
    };
    let primitive = primitive_for(facts.magic);
    let mut detail = detail;
    let mut scope = scope;
    if kernel_locks_refused() {
        scope = Scope::None;
        detail = format!("{at}{fs_type}, as if it refused locks");
    }
    if let Some(forced) = primitive_override() {
        let what = match forced {
            Override::Flock => "flock",
            Override::Ofd => "ofd",
            Override::NoLocks => "none",
        };
        detail.push_str(&format!(" ({PRIMITIVE_OVERRIDE_VARIABLE}={what})"));
    }
    let lease = matches!(scope, Scope::Split | Scope::None);
    if lease {
        detail.push_str("; hpclock keeps exclusion across nodes with its lease (files created with O_EXCL)");
    }
    FsInfo { scope, primitive, lease, magic: facts.magic, fs_type, detail, fix }
}

fn type_name_of(magic: u64) -> &'static str {
    NODE_PRIVATE.iter().find(|&&(m, _)| m == magic).map_or(
        match magic {
            magic::NFS => "nfs",
            magic::LUSTRE => "lustre",
            magic::GPFS => "gpfs",
            magic::BEEGFS => "beegfs",
            magic::CEPH => "ceph",
            magic::FUSE => "fuse",
            magic::CIFS => "cifs",
            magic::SMB2 => "smb3",
            _ => "unknown",
        },
        |&(_, name)| name,
    )
}

/// BeeGFS's client-side switch, in its config (`tuneUseGlobalFileLocks = true`)
/// or among the mount options.
fn beegfs_global_locks(facts: &MountFacts) -> bool {
    let truthy = |v: &str| matches!(v.trim(), "true" | "1" | "yes");
    if let Some(value) = facts.option("tuneUseGlobalFileLocks") {
        return value.is_empty() || truthy(value);
    }
    facts.beegfs_config.as_deref().is_some_and(|config| {
        config.lines().any(|line| {
            line.split_once('=').is_some_and(|(key, value)| key.trim() == "tuneUseGlobalFileLocks" && truthy(value))
        })
    })
}

// ---- gathering the facts ----

/// One mount: where, what, with which options, on which device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount id, from /proc/self/mountinfo; None from /proc/mounts.
    pub id: Option<u64>,
    pub mount_point: Vec<u8>,
    pub fs_type: String,
    pub options: String,
    /// major:minor from /proc/self/mountinfo; None from /proc/mounts.
    pub dev: Option<(u64, u64)>,
}

/// A line of /proc/self/mountinfo (proc(5)): `36 35 98:0 /root /mnt opts
/// [optional fields] - fstype source superopts`.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let mut left = before.split(' ');
    let (id, _parent, dev, _root, mount_point, mount_opts) =
        (left.next()?, left.next()?, left.next()?, left.next()?, left.next()?, left.next()?);
    let mut right = after.split(' ');
    let (fs_type, _source, super_opts) = (right.next()?, right.next()?, right.next().unwrap_or(""));
    let (major, minor) = dev.split_once(':')?;
    Some(MountEntry {
        id: id.parse().ok(),
        mount_point: decode_octal(mount_point),
        fs_type: String::from_utf8_lossy(&decode_octal(fs_type)).into_owned(),
        options: format!("{mount_opts},{}", super_opts.trim_end()),
        dev: Some((major.parse().ok()?, minor.parse().ok()?)),
    })
}

/// A line of /proc/mounts: `source mountpoint fstype options 0 0`.
pub fn parse_mounts_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let (_source, mount_point, fs_type, options) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    Some(MountEntry {
        id: None,
        mount_point: decode_octal(mount_point),
        fs_type: String::from_utf8_lossy(&decode_octal(fs_type)).into_owned(),
        options: options.to_string(),
        dev: None,
    })
}

/// The kernel writes space, tab, newline and backslash in mount paths as
/// `\040`, `\011`, `\012`, `\134` (fs/proc_namespace.c, mangle()).
fn decode_octal(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], digits) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The mount a path is on: the longest mount point that is a whole-component
/// prefix of the path, preferring entries on the path's own device (several
/// mounts may share a prefix; the later one is on top).
pub fn find_mount<'a>(entries: &'a [MountEntry], path: &[u8], dev: Option<(u64, u64)>) -> Option<&'a MountEntry> {
    let covers = |mp: &[u8]| {
        path.starts_with(mp) && (mp == b"/" || path.len() == mp.len() || path[mp.len()] == b'/')
    };
    let best = |same_dev: bool| {
        entries
            .iter()
            .filter(|e| covers(&e.mount_point) && (!same_dev || (dev.is_some() && e.dev == dev)))
            .fold(None, |best: Option<&MountEntry>, e| match best {
                Some(b) if b.mount_point.len() > e.mount_point.len() => Some(b),
                _ => Some(e),
            })
    };
    // btrfs subvolumes report another st_dev than their mount entry: then
    // the longest prefix alone decides.
    best(true).or_else(|| best(false))
}

/// Gathers the facts for `path` (the lock file, or the directory it would be
/// created in) and classifies them. Opening first makes an autofs trigger
/// mount itself, so the mount table then shows the real filesystem.
pub fn check(path: &Path) -> Result<FsInfo, Error> {
    let fd = open_for_check(path)?;
    let magic = magic_of(&fd, path)?;
    Ok(classify_open(&fd, magic))
}

fn classify_open(fd: &OwnedFd, magic: u64) -> FsInfo {
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let dev = (unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } == 0)
        .then(|| (libc::major(stat.st_dev) as u64, libc::minor(stat.st_dev) as u64));
    let canonical = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    let entries = mount_table();
    let entry = find_mount(&entries, &canonical, dev);
    let facts = MountFacts {
        magic,
        fs_type: entry.map(|e| e.fs_type.clone()).unwrap_or_default(),
        mount_point: entry.map(|e| String::from_utf8_lossy(&e.mount_point).into_owned()).unwrap_or_default(),
        options: entry.map(|e| e.options.clone()).unwrap_or_default(),
        beegfs_config: (magic == magic::BEEGFS).then(read_beegfs_configs),
    };
    classify(&facts)
}

fn open_for_check(path: &Path) -> Result<OwnedFd, Error> {
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
    match open_fd(&c_path(path)?, flags, 0) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            // No lock file yet: the filesystem is the directory's.
            open_fd(&c_path(directory_of(path))?, flags | libc::O_DIRECTORY, 0)
                .map_err(|_| Error::os("cannot check the filesystem of", path, e))
        }
        Err(e) => Err(Error::os("cannot check the filesystem of", path, e)),
    }
}

/// The device of the superblock an open file is on, as /proc/locks names it:
/// the mount of the descriptor (`mnt_id` in /proc/self/fdinfo) and that
/// mount's major:minor in /proc/self/mountinfo, which is the superblock's
/// (stat(2) may say otherwise: btrfs subvolumes, overlayfs).
pub fn superblock_dev(fd: &OwnedFd) -> Option<(u64, u64)> {
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let mount_id: u64 = fdinfo.lines().find_map(|l| l.strip_prefix("mnt_id:")?.trim().parse().ok())?;
    mount_table().into_iter().find(|e| e.id == Some(mount_id))?.dev
}

fn mount_table() -> Vec<MountEntry> {
    if let Ok(text) = crate::kernel_lock::read_whole("/proc/self/mountinfo") {
        return text.lines().filter_map(parse_mountinfo_line).collect();
    }
    std::fs::read_to_string("/proc/mounts")
        .map(|text| text.lines().filter_map(parse_mounts_line).collect())
        .unwrap_or_default()
}

fn read_beegfs_configs() -> String {
    let Ok(dirs) = std::fs::read_dir("/proc/fs/beegfs") else { return String::new() };
    dirs.filter_map(|d| std::fs::read_to_string(d.ok()?.path().join("config")).ok()).collect::<Vec<_>>().join("\n")
}

/// The message of HPCLOCK_E_UNSAFE: why the lock would not exclude other nodes.
pub fn unsafe_error(path: &Path, info: &FsInfo) -> Error {
    Error {
        status: crate::status::Status::Unsafe,
        errno: 0,
        message: format!(
            "refusing to lock {} with HPCLOCK_REQUIRE_CLUSTER: {}{}",
            quote_path(path),
            info.detail,
            if info.fix.is_empty() { String::new() } else { format!("; {}", info.fix) }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(magic: u64, fs_type: &str, options: &str) -> MountFacts {
        MountFacts {
            magic,
            fs_type: fs_type.into(),
            mount_point: "/scratch".into(),
            options: options.into(),
            beegfs_config: None,
        }
    }

    fn verdict(f: &MountFacts) -> (Scope, Primitive) {
        let info = classify(f);
        assert!(info.detail.len() < 256, "detail too long for hpclock_fs_info: {}", info.detail);
        assert!(info.detail.starts_with("/scratch is "), "{}", info.detail);
        (info.scope, info.primitive)
    }

    #[test]
    fn node_private_filesystems() {
        for (magic, name) in NODE_PRIVATE {
            assert_eq!(verdict(&facts(*magic, name, "rw,relatime")), (Scope::Node, Primitive::Flock), "{name}");
        }
        let tmp = classify(&MountFacts { mount_point: "/tmp".into(), ..facts(magic::TMPFS, "tmpfs", "rw") });
        assert_eq!(tmp.detail, "/tmp is tmpfs, private to this node: processes on other nodes would lock a different file");
    }

    #[test]
    fn nfs_by_lock_options() {
        let cases = [
            ("rw,vers=3,local_lock=none,addr=10.0.0.1", Scope::Cluster),
            ("rw,vers=4.2,local_lock=none", Scope::Cluster),
            ("rw,vers=4.2", Scope::Cluster), // local_lock defaults to none
            ("rw,vers=3,local_lock=posix", Scope::Cluster), // flock still goes to the server
            ("rw,vers=3,local_lock=flock", Scope::Split),
            ("rw,vers=3,local_lock=all", Scope::Split),
            ("rw,vers=3,nolock,local_lock=all", Scope::Split),
            ("rw,vers=3,nolock", Scope::Split),
        ];
        for (options, scope) in cases {
            for fs_type in ["nfs", "nfs4"] {
                assert_eq!(verdict(&facts(magic::NFS, fs_type, options)), (scope, Primitive::Flock), "{fs_type} {options}");
            }
        }
        assert!(classify(&facts(magic::NFS, "nfs4", "rw,local_lock=flock")).detail.contains("local_lock=flock"));
    }

    #[test]
    fn lustre_by_flock_option() {
        assert_eq!(verdict(&facts(magic::LUSTRE, "lustre", "rw,flock,lazystatfs")), (Scope::Cluster, Primitive::Flock));
        assert_eq!(verdict(&facts(magic::LUSTRE, "lustre", "rw,localflock")), (Scope::Split, Primitive::Flock));
        assert_eq!(verdict(&facts(magic::LUSTRE, "lustre", "rw,noflock")), (Scope::None, Primitive::Flock));
        let neither = classify(&facts(magic::LUSTRE, "lustre", "rw,lazystatfs"));
        assert_eq!(neither.scope, Scope::None);
        assert_eq!(neither.fix, "mount the Lustre client with -o flock");
        assert!(neither.detail.contains("ENOSYS"));
    }

    #[test]
    fn gpfs_uses_ofd_locks() {
        let info = classify(&facts(magic::GPFS, "gpfs", "rw,relatime"));
        assert_eq!((info.scope, info.primitive), (Scope::Cluster, Primitive::Ofd));
        assert!(info.detail.contains("fcntl locks are cluster-wide"));
    }

    #[test]
    fn beegfs_by_global_file_locks() {
        let mut f = facts(magic::BEEGFS, "beegfs", "rw,cfgFile=/etc/beegfs/beegfs-client.conf");
        assert_eq!(verdict(&f), (Scope::Split, Primitive::Flock));
        f.beegfs_config = Some("tuneRemoteFSync               = true\ntuneUseGlobalFileLocks        = false\n".into());
        assert_eq!(verdict(&f), (Scope::Split, Primitive::Flock));
        f.beegfs_config = Some("tuneUseGlobalFileLocks        = true\n".into());
        assert_eq!(verdict(&f), (Scope::Cluster, Primitive::Flock));
        assert_eq!(verdict(&facts(magic::BEEGFS, "beegfs", "rw,tuneUseGlobalFileLocks=1")), (Scope::Cluster, Primitive::Flock));
    }

    #[test]
    fn cephfs_fuse_cifs_and_unknown() {
        assert_eq!(verdict(&facts(magic::CEPH, "ceph", "rw,name=admin")), (Scope::Cluster, Primitive::Flock));
        for fuse in ["fuse.sshfs", "fuse", "fuse.bindfs", "fuse.s3fs"] {
            let info = classify(&facts(magic::FUSE, fuse, "rw,user_id=0"));
            assert_eq!((info.scope, info.primitive), (Scope::Unknown, Primitive::Flock), "{fuse}");
            assert!(info.detail.contains(fuse), "{}", info.detail);
        }
        assert_eq!(verdict(&facts(magic::CIFS, "cifs", "rw,vers=3.0")), (Scope::Unknown, Primitive::Flock));
        assert_eq!(verdict(&facts(magic::SMB2, "smb3", "rw")), (Scope::Unknown, Primitive::Flock));
        let odd = classify(&facts(0x1234, "", ""));
        assert_eq!(odd.scope, Scope::Unknown);
        assert!(odd.detail.contains("0x1234"), "{}", odd.detail);
    }

    #[test]
    fn mountinfo_lines_are_decoded() {
        let line = "36 35 98:0 / /mnt/my\\040data rw,noatime master:1 - nfs4 srv:/export rw,vers=4.2,local_lock=flock";
        let entry = parse_mountinfo_line(line).unwrap();
        assert_eq!(entry.mount_point, b"/mnt/my data");
        assert_eq!(entry.fs_type, "nfs4");
        assert_eq!(entry.options, "rw,noatime,rw,vers=4.2,local_lock=flock");
        assert_eq!(entry.dev, Some((98, 0)));
        let no_optional = "22 1 0:21 / /proc rw,relatime - proc proc rw";
        assert_eq!(parse_mountinfo_line(no_optional).unwrap().fs_type, "proc");
        let mounts = parse_mounts_line("srv:/x /a\\134b lustre rw,flock 0 0").unwrap();
        assert_eq!((mounts.mount_point.as_slice(), mounts.options.as_str()), (&b"/a\\b"[..], "rw,flock"));
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn longest_whole_component_prefix_wins() {
        let entry = |mp: &str, dev: (u64, u64)| MountEntry {
            id: None,
            mount_point: mp.as_bytes().to_vec(),
            fs_type: mp.into(),
            options: String::new(),
            dev: Some(dev),
        };
        let table = vec![entry("/", (8, 1)), entry("/scratch", (0, 50)), entry("/scratch2", (0, 51)), entry("/scratch/sub", (0, 52))];
        let pick = |p: &str, dev| find_mount(&table, p.as_bytes(), dev).map(|e| e.fs_type.clone());
        assert_eq!(pick("/scratch/run.lock", Some((0, 50))).as_deref(), Some("/scratch"));
        assert_eq!(pick("/scratch2/run.lock", Some((0, 51))).as_deref(), Some("/scratch2"));
        assert_eq!(pick("/scratch/sub/x", Some((0, 52))).as_deref(), Some("/scratch/sub"));
        assert_eq!(pick("/home/x", Some((8, 1))).as_deref(), Some("/"));
        // a device no entry names (btrfs subvolume): the prefix decides
        assert_eq!(pick("/scratch/sub/x", Some((0, 99))).as_deref(), Some("/scratch/sub"));
        // bind mounts share a device: among those, the longest prefix
        let binds = vec![entry("/", (8, 1)), entry("/data", (8, 1))];
        assert_eq!(find_mount(&binds, b"/data/x", Some((8, 1))).unwrap().fs_type, "/data");
    }
}

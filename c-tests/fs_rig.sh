#!/usr/bin/env bash
# Runs test programs (c-tests/test_fs.c, test_faults.c, test_lease.c and
# test_lease_cli.sh) on a rig: one backing
# directory mounted twice with bindfs (FUSE) without lock forwarding — two
# "nodes" whose flock is node-local, like Lustre localflock — and twice with
# --enable-lock-forwarding — coherent, like Lustre -o flock; plus a fresh tmpfs,
# a loop-mounted ext4 and a subvolume of a loop-mounted btrfs as node-private
# filesystems (a btrfs subvolume's st_dev is not its superblock's); a tiny
# tmpfs for the tests to fill up, and a read-only bind mount. The lease's
# tests (test_lease.c) get a third pair without lock forwarding and with
# FUSE's caches off, as NFS revalidates on every open: a rung written through
# one "node" must not look empty through the other for a second.
#
# Everything is mounted inside a private mount and pid namespace (unshare), so
# every mount vanishes with it on every exit path, kill -9 included: when this
# script (pid 1 there) ends, the kernel ends the bindfs daemons too.
#
# Usage: fs_rig.sh TEST_PROGRAM...
# Without root, unshare, bindfs or /dev/fuse the programs run without the rig,
# and their rig tests say SKIPPED (or fail, with CI=true).
set -u

# run_all PROGRAM...: each one, whatever the others did; under
# $HPCLOCK_RIG_RUNNER (e.g. valgrind and its options) if that is set.
run_all() {
  local status=0 program
  for program; do
    echo "== $program"
    ${HPCLOCK_RIG_RUNNER:-} "$program" || status=1
  done
  return $status
}

if [ "${1:-}" != --inside ]; then
  missing=()
  [ "$(id -u)" = 0 ] || missing+=("root")
  [ -c /dev/fuse ] || missing+=("/dev/fuse")
  for tool in unshare bindfs mkfs.ext4 mkfs.btrfs btrfs; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    HPCLOCK_RIG_MISSING="${missing[*]}" run_all "$@"
    exit
  fi
  exec unshare --mount --pid --fork --mount-proc --propagation private -- "$0" --inside "$@"
fi
shift
root=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-rig-XXXXXX") || exit 2
mounts=()
cleanup() {
  local m
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    m=${mounts[i]}
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
  rm -rf "$root"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_or_die() { # mount_or_die MOUNTPOINT COMMAND...
  local point=$1
  shift
  mkdir -p "$point"
  if ! "$@"; then
    echo "fs_rig.sh: cannot mount $point: $*" >&2
    exit 2
  fi
  mounts+=("$point")
}

mkdir -p "$root/backing"
# A /dev/shm of the rig's own. faketime(1) names its semaphore and shared
# memory after its pid and leaves them behind when it is killed (as the lease
# tests kill agents); a new pid namespace hands out the same small pids again,
# so the next run's faketime found its name taken ("sem_open: File exists")
# and the agent under it never started.
mount_or_die /dev/shm mount -t tmpfs -o size=16m,mode=1777 hpclock-rig-shm /dev/shm
mount_or_die "$root/tmpfs" mount -t tmpfs -o size=16m hpclock-rig "$root/tmpfs"
truncate -s 16M "$root/ext4.img" && mkfs.ext4 -q -F "$root/ext4.img" || exit 2
mount_or_die "$root/ext4" mount -o loop "$root/ext4.img" "$root/ext4"
# btrfs wants about 114 MiB at least; the image is sparse.
truncate -s 128M "$root/btrfs.img" && mkfs.btrfs -q -f "$root/btrfs.img" >/dev/null || exit 2
mount_or_die "$root/btrfs" mount -o loop "$root/btrfs.img" "$root/btrfs"
btrfs subvolume create "$root/btrfs/subvolume" >/dev/null || { echo "fs_rig.sh: cannot create a btrfs subvolume" >&2; exit 2; }
mount_or_die "$root/split-a" bindfs "$root/backing" "$root/split-a"
mount_or_die "$root/split-b" bindfs "$root/backing" "$root/split-b"
# bindfs needs --multithreaded for lock forwarding (bindfs(1)).
mount_or_die "$root/shared-a" bindfs --multithreaded --enable-lock-forwarding "$root/backing" "$root/shared-a"
mount_or_die "$root/shared-b" bindfs --multithreaded --enable-lock-forwarding "$root/backing" "$root/shared-b"
no_cache=attr_timeout=0,entry_timeout=0,negative_timeout=0
mount_or_die "$root/lease-a" bindfs -o "$no_cache" "$root/backing" "$root/lease-a"
mount_or_die "$root/lease-b" bindfs -o "$no_cache" "$root/backing" "$root/lease-b"
mount_or_die "$root/small" mount -t tmpfs -o size=256k,nr_inodes=64 hpclock-small "$root/small"
mkdir -p "$root/ro-source"
mount_or_die "$root/ro" mount --bind "$root/ro-source" "$root/ro"
mount -o remount,bind,ro "$root/ro" || { echo "fs_rig.sh: cannot make $root/ro read-only" >&2; exit 2; }

HPCLOCK_RIG_TMPFS=$root/tmpfs \
HPCLOCK_RIG_EXT4=$root/ext4 \
HPCLOCK_RIG_BTRFS=$root/btrfs/subvolume \
HPCLOCK_RIG_SPLIT_A=$root/split-a \
HPCLOCK_RIG_SPLIT_B=$root/split-b \
HPCLOCK_RIG_LEASE_A=$root/lease-a \
HPCLOCK_RIG_LEASE_B=$root/lease-b \
HPCLOCK_RIG_BACKING=$root/backing \
HPCLOCK_RIG_SHARED_A=$root/shared-a \
HPCLOCK_RIG_SHARED_B=$root/shared-b \
HPCLOCK_RIG_SMALL=$root/small \
HPCLOCK_RIG_RO=$root/ro \
HPCLOCK_RIG_RO_SOURCE=$root/ro-source \
  run_all "$@"

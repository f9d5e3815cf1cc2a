#!/usr/bin/env bash
# `make dist`: the release tarball hpclock-VERSION.tar.gz, which builds and
# installs with no network at all (`tar xf …; cd hpclock-VERSION; make;
# make install PREFIX=…`):
# - the sources: every file git tracks (and new files it does not ignore),
#   as they are in the work tree; the committed header include/hpclock.h
#   among them;
# - the manual pages, man1 as `make man` generated them (man3 is in the
#   sources);
# - every crate Cargo.lock names, in vendor/ (`cargo vendor`), and a
#   .cargo/config.toml that makes cargo build from there and never go online.
#
# Usage: make_dist.sh VERSION MANDIR TARBALL   (from the repository's top)
set -euo pipefail
version=$1 mandir=$2 tarball=$3
name=hpclock-$version
work=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-dist-XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/$name
mkdir -p "$stage"

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Deleted-but-tracked files are skipped, and so are a patch's leftovers;
  # the tarball is the work tree.
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do
        case $f in *.orig | *.rej | *~) continue ;; esac
        [ -f "$f" ] && printf '%s\0' "$f"
      done \
    | tar --null -T - -cf - | tar -xf - -C "$stage"
else
  # A tree unpacked from a tarball: everything but what builds produce.
  tar --exclude=./target --exclude=./build --exclude=./vendor --exclude=./.cargo -cf - . | tar -xf - -C "$stage"
fi

mkdir -p "$stage/man/man1"
cp "$mandir"/man1/*.1 "$stage/man/man1/"

# cargo vendor prints the configuration that uses what it vendored; ours
# also keeps cargo offline, so that a build never waits on a network.
(cd "$stage" && cargo vendor --locked --versioned-dirs --quiet vendor >/dev/null)
mkdir -p "$stage/.cargo"
cat > "$stage/.cargo/config.toml" <<'EOF'
# Written by `make dist`: cargo builds from the crates in vendor/ and never
# goes online, so that the release builds where there is no network.
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "vendor"

[net]
offline = true
EOF

mkdir -p "$(dirname "$tarball")"
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner -czf "$tarball.tmp" "$name"
mv -f "$tarball.tmp" "$tarball"
echo "$tarball: $(du -h "$tarball" | cut -f1), $(tar -tzf "$tarball" | wc -l) files"

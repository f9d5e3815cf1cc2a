#!/usr/bin/env bash
# The project as it is documented and shipped:
#   links  — every link in a tracked file resolves inside the repository, and
#            every docs/ anchor it names exists (Markdown links, and plain
#            "docs/<file>.md#<anchor>" mentions in source comments); nothing
#            refers to a design document outside the repository;
#   man    — the manual pages lint clean with mandoc, render with man, and
#            cover every exported function and every constant of the header;
#   dist   — the release tarball of `make dist` builds and installs in a
#            network namespace with no interfaces, and what it installed works.
#
# Usage (from the repository's top, after `make`):
#   test_docs.sh links man          MAN1="hpclock.1 …" as the Makefile installs
#   test_docs.sh dist TARBALL
# Tools that are missing (python3, mandoc, man, nm, unshare, root for it) make
# their tests SKIPPED here, and failures with CI=true.
set -u
. "$(dirname "$0")/harness.sh"
repo=$(pwd)
root=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-docs-XXXXXX")
trap 'rm -rf "$root"' EXIT
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
abi=$(echo "$version" | awk -F. '{ print ($1 == 0) ? $1 "." $2 : $1 }')
mandir=$repo/build/man

# The files the repository holds: what git tracks and the new files it does
# not ignore (they are what the next commit tracks), or, in an unpacked
# release, everything but what builds and `cargo vendor` produce.
tracked_files() {
  if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$repo" ls-files -z --cached --others --exclude-standard
  else
    (cd "$repo" && find . \( -path ./target -o -path ./build -o -path ./vendor -o -path ./.git \) -prune \
       -o -type f -printf '%P\0')
  fi
}

# ---- links ----

links_and_docs_anchors_resolve() {
  need python3 || return
  local script
  script=$(cat <<'EOF'
import os, re, sys, unicodedata

repo = os.path.realpath(sys.argv[1])
files = [f for f in sys.stdin.read().split('\0') if f]
problems = []

def slug(text):
    """GitHub's anchor for a heading: its text as rendered, lowercased, with
    everything but letters, digits, marks, '_', '-' and spaces removed, and
    spaces made hyphens."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', text)   # links: their text
    text = re.sub(r'<[^>]+>', '', text)                       # inline HTML
    text = text.replace('`', '').replace('*', '')
    out = []
    for c in text.strip().lower():
        cat = unicodedata.category(c)
        if c == ' ':
            out.append('-')
        elif c in '-_' or cat[0] in 'LMN' or cat == 'Pc':
            out.append(c)
    return ''.join(out)

anchor_cache = {}
def anchors(path):
    if path not in anchor_cache:
        found, seen, fenced = set(), {}, False
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                if re.match(r'^\s*(```|~~~)', line):
                    fenced = not fenced
                    continue
                if fenced:
                    continue
                m = re.match(r'^(#{1,6})\s+(.*?)\s*#*\s*$', line)
                if m:
                    base = slug(m.group(2))
                    n = seen.get(base, 0)
                    seen[base] = n + 1
                    found.add(base if n == 0 else f'{base}-{n}')
                for a in re.findall(r'<a\s+(?:id|name)="([^"]+)"', line):
                    found.add(a)
        anchor_cache[path] = found
    return anchor_cache[path]

def check_target(where, base_dir, target):
    if re.match(r'^[a-z][a-z0-9+.-]*:', target):       # http:, https:, mailto:
        if target.startswith('file:'):
            problems.append(f'{where}: {target}: a link to a file outside the repository')
        return
    path, _, anchor = target.partition('#')
    if path.startswith('/'):
        problems.append(f'{where}: {target}: an absolute path, outside the repository')
        return
    full = os.path.realpath(os.path.join(base_dir, path)) if path else None
    if full is not None:
        if full != repo and not full.startswith(repo + os.sep):
            problems.append(f'{where}: {target}: points outside the repository')
            return
        if not os.path.exists(full):
            problems.append(f'{where}: {target}: no such file in the repository')
            return
    if anchor:
        md = full if full is not None else None
        if md is None or not md.endswith('.md') or os.path.isdir(md):
            return
        if anchor not in anchors(md):
            problems.append(f'{where}: {target}: no heading in {os.path.relpath(md, repo)} has the anchor #{anchor}')

link = re.compile(r'!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
refdef = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$')
# A plain mention, in a comment or in prose: docs/<file>.md or docs/<file>.md#<anchor>.
mention = re.compile(r'(?<![\w./-])(docs/[A-Za-z0-9_.-]+\.md)(#[A-Za-z0-9_-]+)?')

for rel in files:
    full = os.path.join(repo, rel)
    if not os.path.isfile(full) or os.path.islink(full):
        continue
    try:
        text = open(full, encoding='utf-8').read()
    except UnicodeDecodeError:
        continue
    base = os.path.dirname(full)
    is_md = rel.endswith('.md')
    fenced = False
    for no, line in enumerate(text.split('\n'), 1):
        where = f'{rel}:{no}'
        if is_md:
            if re.match(r'^\s*(```|~~~)', line):
                fenced = not fenced
                continue
            if not fenced:
                prose = re.sub(r'`[^`]*`', '', line)     # code spans are not links
                for target in link.findall(prose):
                    check_target(where, base, target)
                m = refdef.match(prose)
                if m:
                    check_target(where, base, m.group(1))
        for path, anchor in mention.findall(line):
            check_target(where, repo, path + anchor)

for p in dict.fromkeys(problems):        # once each, in order
    print('    ' + p)
print(f'    {len(files)} files checked')
sys.exit(1 if problems else 0)
EOF
)
  tracked_files | python3 -c "$script" "$repo"
}

# The contract this project was first built from lived outside it; the
# repository must stand on its own, so no file may cite it (its name or its
# section numbers) or any path beside the repository.
# (The patterns are spelled in pieces so that this file does not match them.)
nothing_refers_outside_the_repository() {
  local design='DESI''GN' section='§' shared='shar''ed/' found
  found=$(tracked_files | (cd "$repo" && xargs -0 grep -n -I -E \
            -e "${design}(\.md| ?${section})" -e "\.\./${shared}" -e "(^|[^[:alnum:]_])${shared}${design}" \
            -e "${section} ?[0-9]" 2>/dev/null))
  # .ci/run may name a path beside the repository where CI needs one (none does today).
  found=$(echo "$found" | grep -v '^\.ci/run:' | grep -v '^$')
  [ -z "$found" ] && return 0
  echo "    references outside the repository (point into docs/ instead):"
  echo "$found" | head -40 | sed 's/^/      /'
  return 1
}

no_tracked_file_names_shared() {
  local shared='shar''ed/' found
  found=$(tracked_files | (cd "$repo" && xargs -0 grep -n -I "$shared" 2>/dev/null) | grep -v '^\.ci/run:')
  [ -z "$found" ] && return 0
  echo "    '$shared' in tracked files:"
  echo "$found" | head -20 | sed 's/^/      /'
  return 1
}

# ---- manual pages ----

pages() {
  ls "$mandir"/man1/*.1 "$mandir"/man3/hpclock.3 2>/dev/null
}

aliases() {
  local page
  for page in "$mandir"/man3/*.3; do [ "$(basename "$page")" = hpclock.3 ] || echo "$page"; done
}

manual_pages_are_built_as_make_installs_them() {
  [ -d "$mandir/man1" ] && [ -f "$mandir/man3/hpclock.3" ] || { echo "    $mandir is not built: make man"; return 1; }
  local made expected
  made=$(cd "$mandir/man1" && ls | sort | tr '\n' ' ')
  expected=$(echo "${MAN1:-}" | tr ' ' '\n' | grep . | sort | tr '\n' ' ')
  [ "$made" = "$expected" ] && return 0
  echo "    hpclock-man made: $made"
  echo "    the Makefile's MAN1 (what install and uninstall handle): $expected"
  return 1
}

manual_pages_lint_clean_with_mandoc() {
  need mandoc || return
  local page out status=0
  for page in $(pages); do
    out=$(mandoc -Tlint -W warning "$page" 2>&1) || true
    [ -z "$out" ] || { echo "$out" | sed 's/^/    /'; status=1; }
  done
  # An alias is one line, `.so man3/hpclock.3`, resolved from the top of the
  # manual hierarchy as man(1) resolves it (mandoc calls .so "fragile", a
  # warning, so aliases are held to errors only).
  for page in $(aliases); do
    if [ "$(cat "$page")" != ".so man3/hpclock.3" ]; then
      echo "    $page is not the alias line '.so man3/hpclock.3'"; status=1; continue
    fi
    out=$(cd "$mandir" && mandoc -Tlint -W error "man3/$(basename "$page")" 2>&1) || true
    [ -z "$out" ] || { echo "$out" | sed 's/^/    /'; status=1; }
  done
  return $status
}

manual_pages_render_with_man() {
  need man || return
  local page out err status=0
  for page in $(cd "$mandir" && ls man1/*.1 man3/*.3); do
    out=$(cd "$mandir" && MANWIDTH=80 MANPAGER=cat man -l "$page" 2>"$root/err") || status=1
    err=$(grep -v -i 'mandoc.db' "$root/err")
    if [ -n "$err" ] || [ "$(echo "$out" | wc -l)" -lt 10 ]; then
      echo "    man -l $page: $(echo "$out" | wc -l) lines; $err"; status=1
    fi
  done
  return $status
}

# Every function the library exports has its alias page and its entry in
# hpclock(3), and every alias names an exported function.
every_exported_function_has_a_page() {
  need nm || return
  local so=$repo/build/lib/libhpclock.so.$version symbols status=0 f
  [ -f "$so" ] || { echo "    $so is not built: make"; return 1; }
  symbols=$(nm -D --defined-only "$so" | awk '$2 == "T" && $3 ~ /^hpclock_/ { print $3 }' | sort)
  [ -n "$symbols" ] || { echo "    no hpclock_* symbols in $so"; return 1; }
  for f in $symbols; do
    [ -f "$mandir/man3/$f.3" ] || { echo "    $f: no alias page man3/$f.3"; status=1; }
    grep -q "^\.Nm $f\( ,\)\?$" "$mandir/man3/hpclock.3" || { echo "    $f: not in the NAME section of hpclock(3)"; status=1; }
    grep -q "^\.Fn $f " "$mandir/man3/hpclock.3" || { echo "    $f: not in the SYNOPSIS of hpclock(3)"; status=1; }
  done
  for page in $(aliases); do
    f=$(basename "$page" .3)
    echo "$symbols" | grep -qx "$f" || { echo "    man3/$f.3: the library exports no $f"; status=1; }
  done
  echo "    $(echo "$symbols" | wc -l) exported functions"
  return $status
}

# Every HPCLOCK_* constant of the header is described in hpclock(3), and so is
# every field of its structs.
every_constant_and_field_is_in_hpclock_3() {
  local header=$repo/include/hpclock.h page=$mandir/man3/hpclock.3 name status=0 count=0
  for name in $(sed -n 's/^#define \(HPCLOCK_[A-Z0-9_]*\) .*/\1/p' "$header"); do
    count=$((count + 1))
    grep -q "Dv $name\b" "$page" || { echo "    $name: not in hpclock(3)"; status=1; }
  done
  [ "$count" -gt 20 ] || { echo "    only $count constants found in $header"; return 1; }
  local fields
  fields=$(awk '/^typedef struct hpclock_[a-z_]* \{/ { s = $3; inside = 1; next }
                inside && /^\}/ { inside = 0 }
                inside && /^  [a-z].*;$/ { f = $NF; sub(/;$/, "", f); sub(/\[.*/, "", f); sub(/^\*/, "", f); print s "." f }' "$header")
  [ -n "$fields" ] || { echo "    no struct fields found in $header"; return 1; }
  for name in $fields; do
    grep -q "[ *]${name#*.}\(\[[0-9]*\]\)\?;" "$page" || { echo "    $name: not in hpclock(3)"; status=1; }
  done
  echo "    $count constants, $(echo "$fields" | wc -l) struct fields"
  return $status
}

# hpclock(3) is written by hand: its footer must name this ABI version.
hpclock_3_names_this_version() {
  grep -qx "\.Os hpclock $abi" "$mandir/man3/hpclock.3" && return 0
  echo "    hpclock(3) says '$(grep '^\.Os' "$mandir/man3/hpclock.3")'; this is hpclock $abi (.Os hpclock $abi)"
  return 1
}

# ---- the release tarball ----

tarball=${2:-}

release_tarball_holds_sources_header_pages_and_crates() {
  [ -f "$tarball" ] || { echo "    $tarball is not built: make dist"; return 1; }
  local listing name=hpclock-$version f status=0
  listing=$(tar -tzf "$tarball")
  for f in Makefile Cargo.toml Cargo.lock include/hpclock.h include/hpclock.f90 src/lib.rs \
           man/man1/hpclock.1 man/man3/hpclock.3 man/man3/hpclock_acquire.3 docs/README.md CHANGELOG.md \
           README.md .cargo/config.toml vendor/; do
    echo "$listing" | grep -qx "$name/$f" || { echo "    $name/$f is not in the tarball"; status=1; }
  done
  echo "    $(echo "$listing" | wc -l) entries, $(echo "$listing" | grep -c '/vendor/[^/]*/$') crates vendored"
  return $status
}

# tar xf; cd hpclock-VERSION; make; make install PREFIX=… — in a network
# namespace with no interfaces, with an empty cargo home (no registry cache to
# fall back on) and CARGO_NET_OFFLINE=true.
release_tarball_builds_and_installs_offline() {
  [ -f "$tarball" ] || { echo "    $tarball is not built: make dist"; return 1; }
  need unshare || return
  if [ "$(id -u)" != 0 ]; then missing "root (for unshare -n)"; return; fi
  local build=$root/offline prefix=$root/offline/prefix start elapsed
  mkdir -p "$build/cargo-home"
  tar -xzf "$tarball" -C "$build" || return 1
  start=$EPOCHREALTIME
  if ! unshare -n -- env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR -u RUSTC_WRAPPER \
         CARGO_HOME="$build/cargo-home" CARGO_NET_OFFLINE=true PREFIX="$prefix" BUILD="$build" \
         bash -c 'if timeout 5 bash -c "exec 3<>/dev/tcp/1.1.1.1/443" 2>/dev/null; then
                    echo "the namespace reaches the network"; exit 1
                  fi
                  cd "$BUILD/hpclock-'"$version"'" && make && make install PREFIX="$PREFIX"' \
         >"$build/log" 2>&1 </dev/null; then
    tail -30 "$build/log" | sed 's/^/    /'
    return 1
  fi
  elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
  echo "    built and installed offline in ${elapsed}s"
  [ -z "$(ls -A "$build/cargo-home/registry" 2>/dev/null)" ] || { echo "    cargo used a registry"; return 1; }
  echo "$prefix" > "$root/prefix"
}

installed_command_library_and_pages_work() {
  [ -f "$root/prefix" ] || { echo "    nothing was installed (the offline build failed or was skipped)"; return 1; }
  local prefix
  prefix=$(cat "$root/prefix")
  local out
  out=$("$prefix/bin/hpclock" --version) || return 1
  [ "$out" = "hpclock $version" ] || { echo "    hpclock --version: $out"; return 1; }
  cat > "$root/prog.c" <<'EOF'
#include <hpclock.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    (void)argc;
    hpclock_handle h = 0, h2 = 0;
    int32_t rc = hpclock_try_acquire(argv[1], &h);
    if (rc != HPCLOCK_OK) { fprintf(stderr, "%s: %s\n", hpclock_status_name(rc), hpclock_last_error()); return 1; }
    if (hpclock_try_acquire(argv[1], &h2) != HPCLOCK_BUSY) { fprintf(stderr, "second acquire not busy\n"); return 1; }
    if (hpclock_complete(h) != HPCLOCK_OK) return 1;
    if (hpclock_try_acquire(argv[1], &h2) != HPCLOCK_DONE) { fprintf(stderr, "not done\n"); return 1; }
    printf("%s\n", hpclock_version());
    return strcmp(hpclock_version(), argv[2]) != 0;
}
EOF
  need cc || return
  cc -std=c11 -Wall -Wextra -Werror -I"$prefix/include" "$root/prog.c" -o "$root/prog" \
     -L"$prefix/lib" -lhpclock -Wl,-rpath,"$prefix/lib" || return 1
  ldd "$root/prog" | grep -q "$prefix/lib/libhpclock.so.$abi" || { echo "    not linked to the installed library"; return 1; }
  quietly "$root/prog" "$root/prog.lock" "$version" || return 1
  # Each installed page renders with man -l (from the top of the hierarchy,
  # where man resolves the aliases' .so), and man finds them by name.
  need man || return
  local page status=0
  for page in $(cd "$prefix/share/man" && ls man1/*.1 man3/*.3); do
    out=$(cd "$prefix/share/man" && MANWIDTH=80 MANPAGER=cat man -l "$page" 2>/dev/null)
    [ "$(echo "$out" | wc -l)" -ge 10 ] || { echo "    man -l $page does not render"; status=1; }
  done
  out=$(MANPATH="$prefix/share/man" MANWIDTH=80 MANPAGER=cat man 3 hpclock_fs_check 2>/dev/null)
  echo "$out" | grep -q 'hpclock_fs_check' || { echo "    man 3 hpclock_fs_check does not find it"; status=1; }
  out=$(MANPATH="$prefix/share/man" MANWIDTH=80 MANPAGER=cat man 1 hpclock-run 2>/dev/null)
  echo "$out" | grep -q -- '--once' || { echo "    man 1 hpclock-run does not find it"; status=1; }
  echo "    $(cd "$prefix/share/man" && ls man1/*.1 man3/*.3 | wc -l) pages render"
  return $status
}

tests=()
for group in "$@"; do
  case $group in
    links) tests+=(links_and_docs_anchors_resolve nothing_refers_outside_the_repository no_tracked_file_names_shared) ;;
    man) tests+=(manual_pages_are_built_as_make_installs_them manual_pages_lint_clean_with_mandoc
                 manual_pages_render_with_man every_exported_function_has_a_page
                 every_constant_and_field_is_in_hpclock_3 hpclock_3_names_this_version) ;;
    dist) tests+=(release_tarball_holds_sources_header_pages_and_crates release_tarball_builds_and_installs_offline
                  installed_command_library_and_pages_work)
          break ;;
    *) ;;
  esac
done
[ ${#tests[@]} -gt 0 ] || { echo "usage: test_docs.sh links man | dist TARBALL" >&2; exit 2; }
run_tests "${tests[@]}"

#!/usr/bin/env bash
# Planted symlinks are never followed. A symlink at <state>/partial/<hex>.partial, at
# its .journal, and at a partial path in the .prepull-partial of a layout on another
# filesystem, each pointing at a victim file: the pull either succeeds (the link
# replaced) or fails with one clear line naming the path, and the victim is untouched.
# A state dir that other users may change is refused with one clear line, exit 1: one
# writable by others, one owned by another user, one below a world-writable directory
# without the sticky bit; and one whose format version is newer than this prepull's.
source "$(dirname "$0")/lib.sh"
need_prepull
[ "$(id -u)" = 0 ] || cannot_run "needs root (a tmpfs, chown)"

start_registry
mkimage "$T/src" v1 --layer random:none:2M:41
push_layout "$T/src" v1 "$REG_ADDR/test/links:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
HEX=${BIG#sha256:}
REF=$REG_ADDR/test/links:v1

# victim NAME -> a file with known content outside every dir prepull may write
mkdir -p "$T/victims"
victim() {
  printf 'precious %s\n' "$1" >"$T/victims/$1"
  echo "$T/victims/$1"
}
assert_victim() { # NAME WHAT
  assert_eq "precious $1" "$(cat "$T/victims/$1")" "$2: the victim $1 is untouched"
}

# check_outcome WHAT LINK — exit 0 with the link replaced, or exit 1 with one clear
# error line that names the path.
check_outcome() {
  local what=$1 link=$2 lines
  if [ "$RC" -eq 0 ]; then
    [ ! -L "$link" ] || fail "$what: exit 0, yet $link is still a symlink"
    ok "$what: the pull succeeded and replaced the link"
  else
    assert_eq 1 "$RC" "$what: exit 1"
    lines=$(printf '%s\n' "$ERR" | grep -i 'error' || true)
    assert_eq 1 "$(printf '%s\n' "$lines" | grep -c .)" "$what: one error line"
    assert_contains "$lines" "${link##*/}.*symbolic link" "$what: the line names the path and says it is a symbolic link"
  fi
}

# ---- a symlink at <state>/partial/<hex>.partial
mkdir -p -m 700 "$T/state/partial"
ln -s "$(victim partial)" "$T/state/partial/$HEX.partial"
run_prepull pull --store "oci:$T/oci" --state-dir "$T/state" "$REF"
assert_victim partial "symlink at the partial file"
check_outcome "symlink at the partial file" "$T/state/partial/$HEX.partial"
assert_store_clean "$T/oci" "symlink at the partial file"
if [ "$RC" -ne 0 ]; then
  # Once the link is gone, the pull completes.
  rm "$T/state/partial/$HEX.partial"
  prepull_ok "without the link the pull completes" pull --store "oci:$T/oci" --state-dir "$T/state" "$REF"
fi
assert_victim partial "after the pull"

# ---- a symlink at the journal
mkdir -p -m 700 "$T/state2/partial"
ln -s "$(victim journal)" "$T/state2/partial/$HEX.journal"
run_prepull pull --store "oci:$T/oci2" --state-dir "$T/state2" "$REF"
assert_victim journal "symlink at the journal"
check_outcome "symlink at the journal" "$T/state2/partial/$HEX.journal"

# ---- a layout on another filesystem: a symlink in its .prepull-partial
mount_tmpfs "$T/fs" 32m
mkdir -p "$T/fs/oci/.prepull-partial"
ln -s "$(victim shared)" "$T/fs/oci/.prepull-partial/$HEX.partial"
run_prepull pull --store "oci:$T/fs/oci" --state-dir "$T/state3" "$REF"
assert_victim shared "symlink in the layout's .prepull-partial"
check_outcome "symlink in the layout's .prepull-partial" "$T/fs/oci/.prepull-partial/$HEX.partial"
assert_store_clean "$T/fs/oci" "symlink in the layout's .prepull-partial"

# ---- state dirs that others may change: refused, nothing fetched
refused() { # WHAT DIR REGEX
  run_prepull pull --store "oci:$T/oci-refused" --state-dir "$2" "$REF"
  assert_eq 1 "$RC" "$1: exit 1"
  local lines
  lines=$(printf '%s\n' "$ERR" | grep -i 'error' || true)
  assert_eq 1 "$(printf '%s\n' "$lines" | grep -c .)" "$1: one error line"
  assert_contains "$lines" "state dir $2.*$3" "$1: the line names the dir and says why"
  assert_eq 0 "$(blob_count "$T/oci-refused")" "$1: nothing fetched"
}
mkdir -m 777 "$T/ww"
refused "world-writable state dir" "$T/ww" "writable by other users"
mkdir -m 770 "$T/gw"
refused "group-writable state dir" "$T/gw" "writable by other users"
mkdir -m 700 "$T/theirs"
chown 65534:65534 "$T/theirs"
refused "state dir owned by another user" "$T/theirs" "owned by uid 65534"
refused "state dir below a world-writable dir" "$T/ww/state" "$T/ww is writable by other users"
assert_eq "" "$(ls -A "$T/ww")" "nothing was created below the world-writable dir"
mkdir -m 1777 "$T/sticky"
prepull_ok "a state dir below a sticky world-writable dir (like /tmp) is fine" \
  pull --store "oci:$T/oci-sticky" --state-dir "$T/sticky/state" "$REF"
mkdir -m 700 "$T/newer"
echo 2 >"$T/newer/version"
refused "state dir of a newer format" "$T/newer" "format version 2, newer than this prepull"

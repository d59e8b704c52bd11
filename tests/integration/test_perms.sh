#!/usr/bin/env bash
# Private layers stay private: a pull stopped midway (--deadline) leaves partial files
# and journals, in <state>/partial and, for a layout on another filesystem, in the
# layout's .prepull-partial. The state dir and those dirs are 0700, the files 0600, and
# another user (nobody, through runuser) can list or read nothing there. Once committed,
# a blob of an OCI layout is 0644 and readable by that user, like every file of the
# layout; the state dir records its format version.
source "$(dirname "$0")/lib.sh"
need_prepull
[ "$(id -u)" = 0 ] || cannot_run "needs root (runuser, a tmpfs)"
command -v runuser >/dev/null || cannot_run "runuser is missing"

start_registry
mkimage "$T/src" v1 --layer random:none:12M:23
push_layout "$T/src" v1 "$REG_ADDR/test/perms:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
HEX=${BIG#sha256:}
start_faultserver --rate $((1024 * 1024)) # 4 x 1 MiB/s: the 12 MiB blob takes ~3 s
REF=$FS_ADDR/test/perms:v1

# nobody may walk into $T (not list it), as into any directory on the way to a store.
chmod 711 "$T"
as_nobody() { runuser -u nobody -- "$@" >/dev/null 2>&1; }

# assert_private DIR WHAT — DIR and every dir below it 0700, partial files and journals
# 0600 (bookkeeping such as `version` may be 0644 inside), and nobody lists or reads any.
assert_private() {
  local dir=$1 what=$2 f mode n=0
  while IFS= read -r f; do
    n=$((n + 1))
    mode=$(stat -c %a "$f")
    if [ -d "$f" ]; then
      [ "$mode" = 700 ] || fail "$what: directory $f is $mode, not 700"
      if as_nobody ls "$f"; then fail "$what: nobody can list $f"; fi
    else
      case $f in
      *.partial | *.journal) [ "$mode" = 600 ] || fail "$what: file $f is $mode, not 600" ;;
      esac
      if as_nobody cat "$f"; then fail "$what: nobody can read $f"; fi
    fi
  done < <(find "$dir" -name oci -prune -o -print)
  ok "$what: $n entries, dirs 0700, partials and journals 0600, nobody can list or read any"
}

# ---- state dir and store on one filesystem: partials in <state>/partial
run_prepull pull --store "oci:$T/oci" --state-dir "$T/state" -j 4 --chunk-size 1M --deadline 1s "$REF"
assert_eq 3 "$RC" "stopped at the deadline"
assert_file "$T/state/partial/$HEX.partial" "the partial blob is kept"
assert_file "$T/state/partial/$HEX.journal" "its journal is kept"
assert_private "$T/state" "state dir after a stopped pull"
assert_eq 1 "$(cat "$T/state/version")" "the state dir records format version 1"

# ---- a layout on another filesystem: partials beside it, in .prepull-partial
mount_tmpfs "$T/fs" 64m
chmod 755 "$T/fs"
run_prepull pull --store "oci:$T/fs/oci" --state-dir "$T/state2" -j 4 --chunk-size 1M --deadline 1s "$REF"
assert_eq 3 "$RC" "stopped at the deadline (layout on a tmpfs)"
assert_file "$T/fs/oci/.prepull-partial/$HEX.partial" "the partial blob is kept beside the layout"
assert_private "$T/fs/oci/.prepull-partial" "the layout's .prepull-partial"
assert_private "$T/state2" "state dir of the tmpfs run"

# ---- committed: 0644 in the layout, readable by another user
fs_rules '{"rules": [], "rate": 0}'
prepull_ok "the pull completes" pull --store "oci:$T/oci" --state-dir "$T/state" "$REF"
prepull_ok "the pull into the tmpfs layout completes" pull --store "oci:$T/fs/oci" --state-dir "$T/state2" "$REF"
for layout in "$T/oci" "$T/fs/oci"; do
  n=0
  for f in "$layout"/blobs/sha256/*; do
    n=$((n + 1))
    assert_eq 644 "$(stat -c %a "$f")" "$(basename "$layout"): blob ${f##*/} is 0644"
  done
  assert_num "$n" -ge 3 "$layout: manifest, config and layer committed"
  got=$(runuser -u nobody -- sha256sum "$layout/blobs/sha256/$HEX" | cut -d' ' -f1)
  assert_eq "$HEX" "$got" "$layout: nobody reads the committed layer"
  runuser -u nobody -- cat "$layout/index.json" >/dev/null || fail "nobody cannot read $layout/index.json"
  ok "$layout: nobody reads index.json"
done
assert_private "$T/state" "state dir after the pull"

#!/usr/bin/env bash
# A store reached through a bind mount of the state dir's own filesystem: the
# two directories have the same st_dev, yet rename(2) from one mount to the
# other fails with EXDEV.  The staging dir must be chosen by a real rename,
# so the pull succeeds and the layout is complete.
# The test runs in a private mount namespace: the bind mount vanishes with it.
if [ -z "${PP_BINDMOUNT_NS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "FAIL: $(basename "$0") cannot run here: needs root (mount --bind)"; exit 1; }
  command -v unshare >/dev/null || { echo "FAIL: $(basename "$0") cannot run here: unshare is missing"; exit 1; }
  PP_BINDMOUNT_NS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer random:gzip:3M:1
push_layout "$T/src" v1 "$REG_ADDR/test/bind:v1"
REF=$REG_ADDR/test/bind:v1
D1=$(img_field v1 'o["digest"]')

STATE=$T/state
REAL=$T/real
BIND=$T/bind
mkdir -p "$STATE" "$REAL" "$BIND"
mount --bind "$REAL" "$BIND" || fail "mount --bind $REAL $BIND"
# lib.sh removes $T on exit: unmount first so nothing is busy.
_unmount_then_cleanup() {
  local rc=$?
  umount -l "$BIND" 2>/dev/null || true
  set +e
  (exit "$rc")
  _cleanup
}
trap _unmount_then_cleanup EXIT

assert_eq "$(stat -c %d "$STATE")" "$(stat -c %d "$BIND")" "state dir and bind mount share a device"
# The premise: a rename across the two mounts fails although st_dev matches.
touch "$STATE/probe"
"$PY" -c 'import os,sys; os.rename(sys.argv[1], sys.argv[2])' "$STATE/probe" "$BIND/probe" \
  2>"$T/logs/rename.err" || true
assert_contains "$(cat "$T/logs/rename.err")" "Invalid cross-device link" "rename across the bind mount is EXDEV"
rm -f "$STATE/probe" "$BIND/probe"

prepull_ok "pull into oci:$BIND" pull --store "oci:$BIND" --state-dir "$STATE" "$REF"
verify_layout "$BIND" v1
missing=$(layout_has_image "$BIND" "$D1" "")
assert_eq "" "$missing" "every blob of the image is in the layout"
# Staging moved into the store, and the state dir knows where (for `prepull status`).
assert_contains "$(cat "$STATE/stage-dirs" 2>/dev/null)" "^$BIND/.prepull-partial\$" "staging dir inside the store is recorded"
assert_eq "" "$(find "$STATE/partial" "$BIND/.prepull-partial" -type f 2>/dev/null)" "no partial file left"
assert_eq "" "$(find "$BIND/blobs/sha256" -name '.*' 2>/dev/null)" "no probe file left in the blob dir"

# A second run finds everything in place.
prepull_ok "second pull into oci:$BIND" pull --store "oci:$BIND" --state-dir "$STATE" "$REF"
verify_layout "$BIND" v1

#!/usr/bin/env bash
# A full disk while prepull applies a layer into containerd's snapshot: the
# overlayfs snapshotter's directory is a 64 MiB tmpfs that a filler file leaves
# about 24 MiB of (room for the busybox layer and containerd's metadata), and the top
# layer is 48 MiB of text
# (about 14 MB gzipped, so its blob lands in the content store, on another disk, and
# only the unpacking runs out).
#   - the pull fails (exit 1) with an error line that says the disk is full and names
#     the layer;
#   - no committed snapshot for that layer, no image record, every blob in the content
#     store hashes to its name (the top layer's verified blob kept for the next run),
#     and no active snapshot of prepull's is left;
#   - after the filler is removed the next run completes without fetching that blob
#     again (--json: the bottom layer already-unpacked, the top one prepull-from-store),
#     and `ctr run` reads the whole file.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull
ORACLE=("$PY" "$IT_DIR/unpack_oracle.py")

start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer text:gzip:48M:7
push_layout "$T/src" v1 "$REG_ADDR/test/diskfull:v1"
read -r CONFIG LAYERS < <(img_field v1 \
  '" ".join([o["platforms"]["linux/amd64"]["config"]] + o["platforms"]["linux/amd64"]["layers"])')
TOP=${LAYERS##* }
DIFF_IDS=$("$PY" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["rootfs"]["diff_ids"]))' \
  "$T/src/blobs/sha256/${CONFIG#sha256:}")
# shellcheck disable=SC2086
TOP_CHAIN=$("${ORACLE[@]}" chain $DIFF_IDS)
# 1 MB/s per connection: the apply keeps up with the bytes, so the disk fills while the
# layer is still arriving (the path that once removed the snapshot and prepared another
# on the same full disk).
start_faultserver --rate 1000000
REF=$FS_ADDR/test/diskfull:v1

# The snapshotter's directory on a small tmpfs, mounted before containerd starts.
SNAPS=$T/containerd/root/io.containerd.snapshotter.v1.overlayfs
mount_tmpfs "$SNAPS" 64m
dd if=/dev/zero of="$SNAPS/filler" bs=1M count=40 status=none || fail "cannot write the filler"
log "tmpfs free with the filler: $(df -k --output=avail "$SNAPS" | tail -n 1) KiB"
start_containerd
NS=full
ARGS=(pull -v --json --store "containerd:$CTD_SOCK" --namespace "$NS" --state-dir "$T/state"
  -j 4 --chunk-size 1M "$REF")

run_prepull "${ARGS[@]}"
assert_eq 1 "$RC" "disk full while unpacking: exit 1"
log "what the failed run said: $(grep -v 'debug: blob' <<<"$ERR" | grep -E 'layer|error|warn' || true)"
errl=$(printf '%s\n' "$ERR" | grep "error" | grep -F "test/diskfull" || true)
assert_ne "" "$errl" "an error line names the image"
assert_contains "$errl" "[Nn]o space left|disk is full" "the error says the disk is full"
assert_contains "$errl" "${TOP:7:12}" "the error names the layer"
assert_contains "$errl" "snapshot extract-prepull-[^ ]+ sha256:[0-9a-f]{64} \($SNAPS/snapshots/[0-9]+/fs\)" \
  "the error names the snapshot and its directory"
assert_contains "$errl" "stopped after [0-9.]+ [KMG]i?B" "the error says how far the apply got"
assert_not_contains "$ERR" "containerd applies it" "containerd's apply is not tried on the full disk"
assert_not_contains "$ERR" "applying it as it arrives failed" "no other snapshot is tried on the full disk"
assert_eq "" "$(json_events "$OUT" image_done)" "--json: no image_done"
assert_ne "" "$(json_events "$OUT" error)" "--json: an error event"

snaps=$(ctr_ -n "$NS" snapshots ls)
log "snapshots after the failure: $snaps"
if grep -F "$TOP_CHAIN" <<<"$snaps" | grep -qw Committed; then
  fail "the top layer's chain was committed"
fi
ok "no committed snapshot for the layer that did not fit"
assert_eq "" "$(ctr_ -n "$NS" images ls -q)" "no image registered"
bad=$(verify_blob_hashes "$CTD_ROOT/io.containerd.content.v1.content")
assert_eq "" "$bad" "every blob in the content store hashes to its name"
[ -e "$CTD_ROOT/io.containerd.content.v1.content/blobs/sha256/${TOP#sha256:}" ] ||
  fail "the top layer's verified blob was not kept"
ok "the top layer's verified blob is kept for the next run"
active=$(grep '^extract-prepull' <<<"$snaps" | grep -w Active || true)
assert_eq "" "$active" "the active snapshot was removed"

rm -f "$SNAPS/filler"
ok "filler removed"
fs_reset_log
prepull_ok "after the space was freed, the next run completes" "${ARGS[@]}"
settle
assert_eq 0 "$(fs_blob_bytes "$TOP")" "the kept blob was not fetched again"
# --json: the bottom layer was committed by the failed run, the top one is applied
# from the kept blob.
by=$(printf '%s\n' "$OUT" | "$PY" -c '
import json, sys
print(" ".join(e["unpacked_by"] for e in map(json.loads, filter(str.strip, sys.stdin))
               if e["event"] == "layer_unpacked"))')
assert_eq "already-unpacked prepull-from-store" "$by" "--json: unpacked_by of each layer in the second run"
check=$(ctr_ -n "$NS" images check "name==$REF")
assert_contains "$check" "complete \(([0-9]+)/\1\)" "ctr images check: complete"
out=$(ctr_run "$NS" "$REF" /bin/sh -c 'wc -c </data/text-7.txt')
assert_eq "$((48 * 1024 * 1024))" "$(tr -d ' ' <<<"$out")" "ctr run reads the whole 48 MiB file"
active=$(ctr_ -n "$NS" snapshots ls | grep '^extract-prepull' | grep -w Active || true)
assert_eq "" "$active" "no active snapshot of prepull's is left"

#!/usr/bin/env bash
# A full disk: state dir and store on a 64 MiB tmpfs, an image with a 20 MiB and a
# 100 MiB layer. The pull fails with exit 1 and a clear line naming the path and the
# bytes needed; nothing corrupt is committed (the 20 MiB layer may be, verified), no
# index entry, no partial file left eating the space. After the tmpfs is grown the next
# run completes and does not fetch the committed layer again.
source "$(dirname "$0")/lib.sh"
need_prepull

DISK=$T/disk
mount_tmpfs "$DISK" 64m

start_registry
mkimage "$T/src" v1 --layer random:none:20M:121 --layer random:none:100M:122
push_layout "$T/src" v1 "$REG_ADDR/test/disk:v1"
SMALL=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][1]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
D=$(img_field v1 'o["digest"]')
start_faultserver
REF=$FS_ADDR/test/disk:v1
ARGS=(pull --store "oci:$DISK/oci" --state-dir "$DISK/state" -j 4 --chunk-size 4M "$REF")

run_prepull "${ARGS[@]}"
assert_eq 1 "$RC" "layer larger than the free space: exit 1"
# "Found before any download starts": the server sent (almost) nothing of the big blob.
settle
big_sent=$(fs_blob_bytes "$BIG")
log "big blob bytes served in the failed run: $big_sent"
assert_num "$big_sent" -le 65536 "full disk: found before the big blob's download started (server side)"
errl=$(printf '%s\n' "$ERR" | grep -i "error" | grep -F "test/disk" || true)
assert_ne "" "$errl" "an error line names the image"
assert_contains "$errl" "space|ENOSPC|full" "the error says the disk is full"
assert_contains "$errl" "$DISK" "the error names the path ($DISK/...)"
assert_contains "$errl" "$BIG_SIZE|100(\.0)? ?MiB|10[45](\.[0-9])? ?MB" "the error says how many bytes are needed ($BIG_SIZE)"
assert_contains "$errl" "${BIG:7:12}" "the error names the blob"
assert_store_clean "$DISK/oci" "full disk"
[ ! -e "$DISK/oci/blobs/sha256/${BIG#sha256:}" ] || fail "full disk: the big blob is in the store"
ok "full disk: the big blob is not in the store"
assert_no_index_entry "$DISK/oci" "full disk"
used=$(df -k --output=used "$DISK" | tail -n 1 | tr -d ' ')
log "tmpfs use after the failure: ${used} KiB"
assert_num "$used" -le $((30 * 1024)) "full disk: no partial file left holding the space (${used} KiB used)"
small_in_store=0
[ -e "$DISK/oci/blobs/sha256/${SMALL#sha256:}" ] && small_in_store=1
log "20 MiB layer committed in the failed run: $small_in_store"

mount -o remount,size=256m "$DISK" || fail "cannot grow the tmpfs"
ok "tmpfs grown to 256 MiB"
fs_reset_log
prepull_ok "after the space was freed, the next run completes" "${ARGS[@]}"
verify_layout "$DISK/oci" v1
assert_eq "$D" "$(index_entries "$DISK/oci" | cut -d' ' -f1)" "index entry has the image digest"
settle
if [ "$small_in_store" = 1 ]; then
  assert_eq 0 "$(fs_blob_bytes "$SMALL")" "the layer committed before the failure was not fetched again"
fi
leftover=$(find "$DISK" -name '*.partial' 2>/dev/null | head -n 3)
assert_eq "" "$leftover" "no partial files left"

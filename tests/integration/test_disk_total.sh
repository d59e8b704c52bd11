#!/usr/bin/env bash
# "A full disk is found before any download starts" when blobs are preallocated only as
# they start: two 40 MiB layers on a 64 MiB tmpfs, one connection (so one blob open at
# a time), a slow server. Each layer fits alone, both do not: the up-front check of the
# total (statvfs) fails the second one at once, while the first is still downloading,
# with a line naming the path, the blob and the bytes. The first layer is fetched and
# committed; the second was never requested.
source "$(dirname "$0")/lib.sh"
need_prepull

DISK=$T/disk
mount_tmpfs "$DISK" 64m
start_registry
mkimage "$T/src" v1 --layer random:none:40M:181 --layer random:none:40M:182
push_layout "$T/src" v1 "$REG_ADDR/test/total:v1"
L1=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
L2=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][1]')
L2_SIZE=$(stat -c %s "$T/src/blobs/sha256/${L2#sha256:}")
start_faultserver --rate $((8 * 1024 * 1024)) # one connection: 40 MiB in ~5 s

start_prepull_bg pull --store "oci:$DISK/oci" --state-dir "$DISK/state" -j 1 "$FS_ADDR/test/total:v1"
wait_until 20 grep -q "no space left" "$PP_ERRF" || fail "no 'no space left' line within 20 s: $(tail -n 5 "$PP_ERRF")"
served=$(fs_live_bytes "${L1#sha256:}")
log "first layer bytes served when the space error came: $served"
assert_num "$served" -lt $((40 * 1024 * 1024)) "the space error came while the first layer was still downloading"
wait_prepull 60
assert_eq 1 "$RC" "the image does not fit: exit 1"
errl=$(printf '%s\n' "$ERR" | grep -i "error" | grep -F "test/total" || true)
assert_contains "$errl" "no space left" "the error says the disk is full"
assert_contains "$errl" "$DISK" "the error names the path"
assert_contains "$errl" "${L2:7:12}" "the error names the blob that does not fit"
assert_contains "$errl" "$L2_SIZE" "the error says how many bytes it needs"
settle
assert_eq 0 "$(fs_blob_bytes "$L2")" "the blob that does not fit was never requested"
[ -e "$DISK/oci/blobs/sha256/${L1#sha256:}" ] || fail "the first layer was not committed"
ok "the first layer, which fits, was fetched and committed"
assert_store_clean "$DISK/oci" "full disk"
assert_no_index_entry "$DISK/oci" "full disk"

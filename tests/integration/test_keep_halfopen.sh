#!/usr/bin/env bash
# A blob that cannot be opened all the way keeps what an earlier run left. A run
# stopped by --deadline leaves a partial file and journal; the journal is then made
# immutable (chattr +i: even root cannot open it for appending), so the next run
# resumes from it but cannot extend it: that blob fails, and its partial file must
# stay (it was deleted once, losing every byte). With the journal writable again, a
# third run fetches only what the first did not. (ext4 or another filesystem with
# chattr; the test's temp dir is used.)
source "$(dirname "$0")/lib.sh"
need_prepull

touch "$T/probe"
chattr +i "$T/probe" 2>/dev/null || cannot_run "chattr +i does not work on $T's filesystem"
chattr -i "$T/probe"

start_registry
mkimage "$T/src" v1 --layer random:none:12M:221
push_layout "$T/src" v1 "$REG_ADDR/test/halfopen:v1"
BLOB=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
start_faultserver --rate $((512 * 1024)) # 4 x 512 KiB/s: the blob takes 6 s
ARGS=(pull --store "oci:$T/oci" --state-dir "$T/state" -j 4 --chunk-size 1M "$FS_ADDR/test/halfopen:v1")

P=$T/state/partial/${BLOB#sha256:}.partial
J=${P%.partial}.journal
# On a loaded machine (a sanitizer build, three tests at once) a run can spend its
# first second before the blob's first byte: the deadline is then doubled, up to 4 s
# (the blob takes 6 s at full speed, so a run that long still stops part-way).
for d in 1 2 4; do
  run_prepull "${ARGS[@]}" --deadline ${d}s
  assert_eq 3 "$RC" "the first run stops at the deadline (${d}s)"
  [ -e "$P" ] && break
  log "no partial file after a ${d}s deadline: the machine is slow, again with a longer one"
done
[ -e "$P" ] && [ -e "$J" ] || fail "the stopped run left no partial file and journal"
run_prepull status --state-dir "$T/state"
kept=$(grep -F "$BLOB" <<<"$OUT" | awk '{ print int($2) }')
log "kept by the first run: $kept%"
assert_num "$kept" -gt 0 "the first run kept some of the blob"

chattr +i "$J"
add_exit_hook "chattr -i '$J' 2>/dev/null"
run_prepull "${ARGS[@]}"
chattr -i "$J"
assert_eq 1 "$RC" "a journal that cannot be extended fails the blob: exit 1"
assert_contains "$ERR" "${BLOB:7:12}" "the error names the blob"
[ -e "$P" ] || fail "the partial file an earlier run left was deleted when its journal could not be opened"
ok "the partial file an earlier run left is still there"

fs_reset_log
prepull_ok "with the journal writable again, the next run completes" "${ARGS[@]}"
verify_layout "$T/oci" v1
settle
sent=$(fs_blob_bytes "$BLOB")
size=$(stat -c %s "$T/src/blobs/sha256/${BLOB#sha256:}")
log "bytes fetched by the last run: $sent of $size"
assert_num "$sent" -lt "$size" "the last run resumed (fetched $sent of $size bytes)"

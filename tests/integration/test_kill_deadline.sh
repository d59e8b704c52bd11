#!/usr/bin/env bash
# --deadline on a slow pull: prepull stops at the deadline with exit 3, a clear line,
# nothing unverified committed, progress kept; `prepull status` shows the partial
# blob with a percentage; the next run completes without refetching what was done.
source "$(dirname "$0")/lib.sh"
need_prepull

CONNS=4
CHUNK=2M
start_registry
mkimage "$T/src" v1 --layer random:none:40M:101
push_layout "$T/src" v1 "$REG_ADDR/test/deadline:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
D=$(img_field v1 'o["digest"]')
start_faultserver --rate $((2 * 1024 * 1024)) # 4 x 2 MiB/s: ~5 s for the blob
REF=$FS_ADDR/test/deadline:v1
ARGS=(pull --store "oci:$T/oci" --state-dir "$T/state" -j "$CONNS" --chunk-size "$CHUNK" "$REF")

t0=$(date +%s.%N)
run_prepull "${ARGS[@]}" --deadline 2s
secs=$(elapsed_since "$t0")
settle
sent1=$(fs_live_bytes "$BIG")
log "deadline run: exit $RC after ${secs}s, $sent1 of $BIG_SIZE bytes served"
assert_eq 3 "$RC" "--deadline 2s on a ~5 s pull: exit 3"
assert_contains "$ERR" "deadline" "the message says the deadline was reached"
assert_num "$(awk -v s="$secs" 'BEGIN { print (s >= 1.9 && s < 4.5) }')" -eq 1 "stopped at the deadline (${secs}s)"
assert_num "$sent1" -lt "$BIG_SIZE" "the blob was not complete at the deadline"
assert_store_clean "$T/oci" "after the deadline"
assert_no_index_entry "$T/oci" "after the deadline"
partial=$(find "$T/state" "$T/oci" -path '*partial*' -name "*${BIG:7:12}*" 2>/dev/null | head -n 1)
assert_ne "" "$partial" "after the deadline: the partial blob is kept"

run_prepull status --state-dir "$T/state"
STATUS_RC=$RC
STATUS_OUT="$OUT$ERR"

prepull_ok "the run after the deadline completes" "${ARGS[@]}"
verify_layout "$T/oci" v1
assert_eq "$D" "$(index_entries "$T/oci" | cut -d' ' -f1)" "index entry has the image digest"
settle
total=$(fs_live_bytes "$BIG")
log "served $sent1 before the deadline, $((total - sent1)) after; $total in all"
assert_eq 0 "$STATUS_RC" "prepull status exits 0"
assert_contains "$STATUS_OUT" "${BIG:7:12}" "prepull status lists the partial blob"
assert_contains "$STATUS_OUT" "[0-9]+(\.[0-9]+)? ?%" "prepull status shows a percentage [$(printf '%s' "$STATUS_OUT" | head -n 3 | tr '\n' '|')]"
# What was done before the deadline is not fetched again: the second run needs at most
# the rest plus the chunks that were in flight (4 x 2 MiB).
assert_num "$((total - sent1))" -le $((BIG_SIZE - sent1 + CONNS * 2 * 1024 * 1024 + 65536)) "the second run fetched only what was missing (+ in-flight chunks)"

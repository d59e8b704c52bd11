#!/usr/bin/env bash
# Two prepull runs at once on the same state dir and store, for the same image behind a
# throttled server: the second waits for the blobs the first holds, saying so with the
# first run's pid. Neither corrupts anything: both end with exit 0; the store is valid;
# the blob is downloaded about once.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
mkimage "$T/src" v1 --layer random:none:32M:111
push_layout "$T/src" v1 "$REG_ADDR/test/conc:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
D=$(img_field v1 'o["digest"]')
start_faultserver --rate $((1024 * 1024)) # 4 x 1 MiB/s: ~8 s, time for the second run to start under load
REF=$FS_ADDR/test/conc:v1
ARGS=(pull --store "oci:$T/oci" --state-dir "$T/state" -j 4 --chunk-size 2M "$REF")

started() { [ "$(fs_live_bytes "$BIG")" -ge $((BIG_SIZE / 10)) ]; }
start_prepull_bg "${ARGS[@]}"
A_PID=$PP_PID A_OUT=$PP_OUTF A_ERR=$PP_ERRF
wait_until 30 started || fail "first run did not start fetching"
start_prepull_bg "${ARGS[@]}"
B_PID=$PP_PID B_OUT=$PP_OUTF B_ERR=$PP_ERRF

PP_PID=$A_PID PP_OUTF=$A_OUT PP_ERRF=$A_ERR
wait_prepull 90
RC_A=$RC
PP_PID=$B_PID PP_OUTF=$B_OUT PP_ERRF=$B_ERR
wait_prepull 90
RC_B=$RC
ERR_B=$ERR
log "first run: exit $RC_A; second run: exit $RC_B"
assert_eq 0 "$RC_A" "the first run completes"
# Nothing corrupt, whatever the second run did.
verify_layout "$T/oci" v1
assert_eq "$D" "$(index_entries "$T/oci" | cut -d' ' -f1)" "one index entry with the image digest"
cmp -s "$T/oci/blobs/sha256/${BIG#sha256:}" "$T/src/blobs/sha256/${BIG#sha256:}" ||
  fail "committed blob differs from the pushed one"
ok "committed blob is byte-identical to the pushed one"
# The README's promise: the second run waits for the blob the first holds, and says so.
assert_eq 0 "$RC_B" "the second run waited and completed"
assert_contains "$ERR_B" "blob ${BIG:0:19} is being fetched by another prepull run \(pid $A_PID\); waiting for it" \
  "the second run says it waits for the first (pid $A_PID)"
settle
total=$(fs_live_bytes "$BIG")
log "served $total bytes for a $BIG_SIZE-byte blob"
assert_num "$total" -le $((BIG_SIZE * 11 / 10)) "the blob was downloaded about once, not by both runs (<= 1.1x)"
leftover=$(find "$T/state" "$T/oci" -name '*.partial' 2>/dev/null | head -n 3)
assert_eq "" "$leftover" "no partial files left"

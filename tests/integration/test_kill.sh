#!/usr/bin/env bash
# SIGKILL at about half of a throttled 210 MiB blob, then run again: the blob
# completes, verifies, and the fault server (no faults, just a per-connection rate
# limit: 4 x 8 MiB/s) sent at most 1.1 x the blob size over both runs. While killed,
# nothing unverified is in the store and no index entry exists.
source "$(dirname "$0")/lib.sh"
need_prepull

SIZE=${KILL_SIZE:-210M}
CONNS=4
CHUNK=16M # long chunks: a kill lands mid-chunk, where only the checkpoints keep bytes
RATE=$((8 * 1024 * 1024)) # per connection

start_registry
mkimage "$T/src" v1 --layer "random:none:$SIZE:71"
push_layout "$T/src" v1 "$REG_ADDR/test/kill:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
D=$(img_field v1 'o["digest"]')
start_faultserver --rate "$RATE"
REF=$FS_ADDR/test/kill:v1
ARGS=(pull --store "oci:$T/oci" --state-dir "$T/state" -j "$CONNS" --chunk-size "$CHUNK" "$REF")
log "blob ${BIG:0:19} is $BIG_SIZE bytes"

half_served() { [ "$(fs_live_bytes "$BIG")" -ge $((BIG_SIZE / 2)) ]; }

start_prepull_bg "${ARGS[@]}"
wait_until 60 half_served || fail "the server did not send half of the blob within 60 s"
kill_prepull KILL
sent1=$(fs_live_bytes "$BIG")
log "killed at $sent1 of $BIG_SIZE bytes served (exit $RC)"
assert_eq 137 "$RC" "prepull died of SIGKILL"
assert_store_clean "$T/oci" "after SIGKILL"
[ ! -e "$T/oci/blobs/sha256/${BIG#sha256:}" ] || fail "after SIGKILL: the half-fetched blob is in the store"
ok "after SIGKILL: the half-fetched blob is not in the store"
assert_no_index_entry "$T/oci" "after SIGKILL"
partial=$(find "$T/state" "$T/oci" -name "*${BIG:7:12}*" -path '*partial*' 2>/dev/null | head -n 1)
assert_ne "" "$partial" "after SIGKILL: the partial blob is kept for the next run"

prepull_ok "second run after SIGKILL" "${ARGS[@]}"
verify_layout "$T/oci" v1
assert_eq "$D" "$(index_entries "$T/oci" | cut -d' ' -f1)" "index entry has the image digest"
cmp -s "$T/oci/blobs/sha256/${BIG#sha256:}" "$T/src/blobs/sha256/${BIG#sha256:}" ||
  fail "committed blob differs from the pushed one"
ok "committed blob is byte-identical to the pushed one"
settle
total=$(fs_live_bytes "$BIG")
log "bytes served for the blob: $sent1 before the kill, $((total - sent1)) after, $total in all ($(awk -v a="$total" -v b="$BIG_SIZE" 'BEGIN { printf "%.2f", a / b }') x the blob)"
assert_num "$total" -le $((BIG_SIZE * 11 / 10)) "both runs together: the server sent <= 1.1 x the blob size"
# What the kill cost: each open request loses at most what came since its last
# journal checkpoint. A checkpoint records what the hash workers have hashed: they get a
# chunk's bytes a 1 MiB slice at a time (HASH_SLICE, engine_int.h) and checkpoint every
# max(size / 8192, 1 MiB) (partial_checkpoint_every), so up to a slice plus an interval
# is not yet vouched for, plus what was on the wire (a paced 64 KiB piece or two per
# connection). Without checkpoints inside a chunk a lane would lose 8 MiB on average.
CKPT=$((BIG_SIZE / 8192 > 1048576 ? BIG_SIZE / 8192 : 1048576))
SLICE=1048576
lost=$((total - BIG_SIZE))
assert_num "$lost" -le $((CONNS * (CKPT + SLICE + 384 * 1024))) "SIGKILL lost at most $CONNS lanes x (hash slice + checkpoint interval + 384 KiB) (server count: $lost bytes sent twice)"
leftover=$(find "$T/state" "$T/oci" -name '*.partial' 2>/dev/null | head -n 3)
assert_eq "" "$leftover" "no partial files left after success"

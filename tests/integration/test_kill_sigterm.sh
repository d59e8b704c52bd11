#!/usr/bin/env bash
# SIGTERM (and SIGINT) while a throttled blob is being fetched: prepull stops cleanly,
# exits 1 with "interrupted; run again to resume", commits nothing unverified, keeps the
# partial blob; `prepull status` lists that blob with a percentage; the next run
# completes without fetching again what was done (<= 1.1 x the blob over both runs).
source "$(dirname "$0")/lib.sh"
need_prepull

CONNS=4
CHUNK=2M
start_registry
mkimage "$T/src" v1 --layer random:none:40M:91
push_layout "$T/src" v1 "$REG_ADDR/test/term:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
D=$(img_field v1 'o["digest"]')
start_faultserver --rate $((2 * 1024 * 1024)) # 4 x 2 MiB/s: ~5 s for the blob
REF=$FS_ADDR/test/term:v1

some_served() { [ "$(fs_live_bytes "$BIG")" -ge $((BIG_SIZE * 4 / 10)) ]; }

for sig in TERM INT; do
  S=$T/state-$sig
  O=$T/oci-$sig
  ARGS=(pull --store "oci:$O" --state-dir "$S" -j "$CONNS" --chunk-size "$CHUNK" "$REF")
  curl -sf -X POST "$FS_URL/_stats/reset" >/dev/null
  start_prepull_bg "${ARGS[@]}"
  wait_until 60 some_served || fail "SIG$sig: the server did not send 40% of the blob within 60 s"
  t0=$(date +%s.%N)
  kill_prepull "$sig"
  stop_secs=$(elapsed_since "$t0")
  sent1=$(fs_live_bytes "$BIG")
  log "SIG$sig at $sent1 of $BIG_SIZE bytes served: exit $RC after ${stop_secs}s"
  assert_eq 1 "$RC" "SIG$sig: exit 1"
  assert_contains "$ERR" "interrupted; run again to resume" "SIG$sig: says \"interrupted; run again to resume\""
  assert_num "$(awk -v s="$stop_secs" 'BEGIN { print (s < 5) }')" -eq 1 "SIG$sig: stopped promptly (${stop_secs}s)"
  assert_store_clean "$O" "SIG$sig"
  [ ! -e "$O/blobs/sha256/${BIG#sha256:}" ] || fail "SIG$sig: the unfinished blob is in the store"
  ok "SIG$sig: the unfinished blob is not in the store"
  assert_no_index_entry "$O" "SIG$sig"

  # While the blob is pending, `prepull status` shows it with a percentage.
  run_prepull status --state-dir "$S"
  STATUS_RC=$RC
  STATUS_OUT="$OUT$ERR"

  prepull_ok "SIG$sig: the next run completes" "${ARGS[@]}"
  verify_layout "$O" v1
  assert_eq "$D" "$(index_entries "$O" | cut -d' ' -f1)" "SIG$sig: index entry has the image digest"
  settle
  total=$(fs_live_bytes "$BIG")
  log "SIG$sig: served $sent1 before the signal, $total in all ($(awk -v a="$total" -v b="$BIG_SIZE" 'BEGIN { printf "%.2f", a / b }') x the blob)"
  assert_eq 0 "$STATUS_RC" "SIG$sig: prepull status exits 0"
  assert_contains "$STATUS_OUT" "${BIG:7:12}" "SIG$sig: prepull status lists the partial blob"
  assert_contains "$STATUS_OUT" "[0-9]+(\.[0-9]+)? ?%" "SIG$sig: prepull status shows a percentage [$(printf '%s' "$STATUS_OUT" | head -n 3 | tr '\n' '|')]"
  assert_num "$total" -le $((BIG_SIZE * 11 / 10)) "SIG$sig: the resumed run did not fetch the done chunks again (<= 1.1 x over both runs)"
  # A clean stop checkpoints every open request: it loses only what was on the wire (a
  # paced 64 KiB piece or two per connection), far less than the checkpoint interval.
  lost=$((total - BIG_SIZE))
  assert_num "$lost" -le $((CONNS * 384 * 1024)) "SIG$sig: lost at most $CONNS lanes x 384 KiB (server count: $lost bytes sent twice)"
done

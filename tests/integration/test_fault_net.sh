#!/usr/bin/env bash
# Connection-level faults from tests/integration/faultserver.py, in front of a real
# registry: a reset mid-body, a body shorter than its Content-Length, and stalls
# (headers then silence; some bytes then silence). Each time the pull must end with
# a verified blob, the chunk resumed from the last byte written (not refetched from its
# start), and the bytes served close to the blob size. A stall must be cancelled after
# --stall-timeout (2s here) and its chunk re-queued at once.
source "$(dirname "$0")/lib.sh"
need_prepull

CHUNK=2M
CHUNK_B=$((2 * 1024 * 1024))
CONNS=4

start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer random:none:24M:31
push_layout "$T/src" v1 "$REG_ADDR/test/net:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][1]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
D=$(img_field v1 'o["digest"]')
start_faultserver
REF=$FS_ADDR/test/net:v1
log "large blob ${BIG:0:19} is $BIG_SIZE bytes"

N=0
# pull_with RULES WHAT [PREPULL OPTIONS...] -> pull into a fresh store; sets STORE, SECS
pull_with() {
  local rules=$1 what=$2
  shift 2
  N=$((N + 1))
  STORE=$T/oci-$N
  fs_rules "$rules"
  fs_reset_log
  local t0
  t0=$(date +%s.%N)
  run_prepull pull --store "oci:$STORE" --state-dir "$T/state-$N" --json -j "$CONNS" \
    --chunk-size "$CHUNK" "$@" "$REF"
  SECS=$(elapsed_since "$t0")
  settle
  log "$what: exit $RC after ${SECS}s; rules fired: $(fs_applied)"
}

# expect_recovered WHAT FIRED_MIN MAX_BYTES
expect_recovered() {
  assert_eq 0 "$RC" "$1: the pull succeeds (stderr: $(printf '%s' "$ERR" | tail -n 2))"
  verify_layout "$STORE" v1
  assert_eq "$D" "$(index_entries "$STORE" | cut -d' ' -f1)" "$1: index entry has the image digest"
  cmp -s "$STORE/blobs/sha256/${BIG#sha256:}" "$T/src/blobs/sha256/${BIG#sha256:}" ||
    fail "$1: committed blob differs from the pushed one"
  ok "$1: committed blob is byte-identical to the pushed one"
  local fired
  fired=$(fs_applied | tr ' ' '+')
  assert_num "$((fired))" -ge "$2" "$1: the fault was injected"
  local sent
  sent=$(fs_blob_bytes "$BIG")
  log "$1: served $sent bytes for a $BIG_SIZE-byte blob"
  assert_num "$sent" -le "$3" "$1: bytes served for the blob stay bounded"
  local clean
  clean=$(fs_query 'sum(r["bytes"] for r in L if r["method"] == "GET" and r["path"].endswith(A[0]) and not r["fault"])' "$BIG")
  assert_num "$clean" -le "$BIG_SIZE" "$1: outside the faulted requests no blob byte was served twice"
  leftover=$(find "$STORE" "$T/state-$N" -name '*.partial' 2>/dev/null | head -n 3)
  assert_eq "" "$leftover" "$1: no partial files left"
}

# Requests for BIG whose Range does not start on a chunk boundary: resumed chunks.
resumed_requests() {
  fs_query 'sum(1 for r in L if r["path"].endswith(A[0]) and r["range"] and int(r["range"][6:].split("-")[0]) % int(A[1]) != 0)' "$BIG" "$CHUNK_B"
}

# check_stall WHAT — timing of the (single) stalled request, from the server's log:
# prepull closed it about 2 s (--stall-timeout) after its last byte, and asked for the
# rest of that chunk again right after (same range end, start = where it stopped).
check_stall() {
  local q='[r for r in L if r["path"].endswith(A[0]) and r["fault"] == "stall"][0]'
  local t0 t1 gone held rend retry gap
  t0=$(fs_query "$q[\"t\"]" "$BIG")
  t1=$(fs_query "$q[\"t_end\"]" "$BIG")
  gone=$(fs_query "$q[\"client_gone\"]" "$BIG")
  rend=$(fs_query "$q[\"range\"].split(\"-\")[1]" "$BIG")
  assert_eq True "$gone" "$1: prepull closed the stalled connection (not the server)"
  held=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  log "$1: stalled request held open for ${held}s"
  assert_num "$(awk -v h="$held" 'BEGIN { print (h >= 1.5) }')" -eq 1 "$1: not cancelled before the stall timeout (${held}s >= 1.5s)"
  assert_num "$(awk -v h="$held" 'BEGIN { print (h <= 4.0) }')" -eq 1 "$1: cancelled within the 2s stall timeout + 2s (${held}s <= 4s)"
  retry=$(fs_query 'min([r["t"] for r in L if r["path"].endswith(A[0]) and r["t"] >= float(A[1]) and r["range"] and r["range"].split("-")[1] == A[2]] or [0])' "$BIG" "$t1" "$rend")
  gap=$(awk -v a="$t1" -v b="$retry" 'BEGIN { printf "%.2f", b - a }')
  log "$1: chunk asked for again ${gap}s after the cancel"
  assert_num "$(awk -v g="$gap" 'BEGIN { print (g >= 0 && g <= 1.5) }')" -eq 1 "$1: chunk re-queued promptly after the cancel (${gap}s <= 1.5s)"
}

# ---- connection reset mid-body, on 3 requests
pull_with "{\"rules\": [{\"fault\": \"reset\", \"path\": \"$BIG\", \"count\": 3, \"after\": 262144}]}" "reset"
expect_recovered "reset mid-body x3" 3 $((BIG_SIZE * 11 / 10))
assert_num "$(resumed_requests)" -ge 1 "reset: a retried chunk resumed from the last byte written"

# ---- body shorter than Content-Length, then a clean close, on 3 requests
pull_with "{\"rules\": [{\"fault\": \"short\", \"path\": \"$BIG\", \"count\": 3, \"skip\": 2, \"after\": 262144}]}" "short body"
expect_recovered "short body x3" 3 $((BIG_SIZE * 11 / 10))
assert_num "$(resumed_requests)" -ge 1 "short body: a retried chunk resumed from the last byte written"

# ---- stall: headers, then nothing for 30 s, on the request covering offset 5 MiB
STALL_OFF=$((5 * 1024 * 1024 + 1000))
pull_with "{\"rules\": [{\"fault\": \"stall\", \"path\": \"$BIG\", \"offset\": $STALL_OFF, \"seconds\": 30}]}" \
  "stall (headers, no body)" --stall-timeout 2s
expect_recovered "stall after headers" 1 $((BIG_SIZE * 11 / 10))
check_stall "stall after headers"

# ---- stall mid-body: 300 KB, then nothing
pull_with "{\"rules\": [{\"fault\": \"stall\", \"path\": \"$BIG\", \"skip\": 3, \"after\": 300000, \"seconds\": 30}]}" \
  "stall (mid-body)" --stall-timeout 2s
expect_recovered "stall mid-body" 1 $((BIG_SIZE * 11 / 10))
check_stall "stall mid-body"
assert_num "$(resumed_requests)" -ge 1 "stall mid-body: the chunk resumed from the last byte written"
assert_num "$(awk -v s="$SECS" 'BEGIN { print (s < 15) }')" -eq 1 "stall mid-body: the whole pull took ${SECS}s (< 15s)"

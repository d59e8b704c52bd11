#!/usr/bin/env bash
# Faults in what a 206 carries (tests/integration/faultserver.py in front of a real
# registry): one flipped byte, Range ignored (200 with the whole blob), a wrong
# Content-Range. A bad byte must never be committed: the pull recovers by fetching
# again, or fails with exit 1 naming the blob; every file in blobs/sha256 always hashes
# to its name.
source "$(dirname "$0")/lib.sh"
need_prepull
use_direct_python

CHUNK=2M
CONNS=4
start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer random:none:12M:51
push_layout "$T/src" v1 "$REG_ADDR/test/content:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][1]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
D=$(img_field v1 'o["digest"]')
start_faultserver
REF=$FS_ADDR/test/content:v1

N=0
pull_with() { # RULES WHAT [OPTIONS...]
  local rules=$1 what=$2
  shift 2
  N=$((N + 1))
  STORE=$T/oci-$N
  fs_rules "$rules"
  fs_reset_log
  local t0
  t0=$(date +%s.%N)
  run_prepull pull --store "oci:$STORE" --state-dir "$T/state-$N" -j "$CONNS" --chunk-size "$CHUNK" "$@" "$REF"
  SECS=$(elapsed_since "$t0")
  settle
  log "$what: exit $RC after ${SECS}s; rules fired: $(fs_applied); served $(fs_blob_bytes "$BIG") of $BIG_SIZE bytes"
}

expect_recovered() { # WHAT MAX_BYTES
  assert_eq 0 "$RC" "$1: the pull succeeds"
  verify_layout "$STORE" v1
  assert_eq "$D" "$(index_entries "$STORE" | cut -d' ' -f1)" "$1: index entry has the image digest"
  cmp -s "$STORE/blobs/sha256/${BIG#sha256:}" "$T/src/blobs/sha256/${BIG#sha256:}" ||
    fail "$1: committed blob differs from the pushed one"
  ok "$1: committed blob is byte-identical to the pushed one"
  assert_num "$(fs_blob_bytes "$BIG")" -le "$2" "$1: bytes served for the blob stay bounded"
  # A faulted response may have been sent whole before prepull dropped it; outside
  # those, no byte is sent twice (unless the whole blob had to be fetched again).
  local clean
  clean=$(fs_query 'sum(r["bytes"] for r in L if r["method"] == "GET" and r["path"].endswith(A[0]) and not r["fault"])' "$BIG")
  assert_num "$clean" -le "${3:-$2}" "$1: bytes served outside the faulted responses"
}

expect_failed_clearly() { # WHAT
  assert_eq 1 "$RC" "$1: exit 1"
  local errl
  errl=$(printf '%s\n' "$ERR" | grep -i "error" | grep -F "${BIG:7:12}" | grep -F "test/content" || true)
  assert_ne "" "$errl" "$1: one error line names the image and the blob"
  [ ! -e "$STORE/blobs/sha256/${BIG#sha256:}" ] || fail "$1: the blob was committed"
  ok "$1: the blob was not committed"
  assert_store_clean "$STORE" "$1"
  assert_no_index_entry "$STORE" "$1"
}

# ---- one flipped byte in one 206 body (the chunk at offset 5 MiB)
OFF=$((5 * 1024 * 1024 + 5))
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF}]}" "one flipped byte"
assert_eq 1 "$(fs_applied)" "flip: the byte was flipped in one response"
if [ "$RC" -eq 0 ]; then
  # Recovery may re-fetch chunks to find the bad one: at most the blob once more.
  expect_recovered "flipped byte, recovered" $((BIG_SIZE * 21 / 10))
  refetched=$(fs_query 'sum(1 for r in L if r["path"].endswith(A[0]) and r["range"] and int(r["range"][6:].split("-")[0]) <= int(A[1]) <= int(r["range"].split("-")[1]))' "$BIG" "$OFF")
  assert_num "$refetched" -ge 2 "flip: the chunk with the bad byte was fetched again"
else
  expect_failed_clearly "flipped byte, not recovered"
fi

# ---- a flipped byte in every response: can never verify -> exit 1, bounded work
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF, \"count\": -1}]}" "a flipped byte for ever"
expect_failed_clearly "flipped byte for ever"
assert_contains "$ERR" "hash|digest|verif|sha256" "flipped byte for ever: the error says the content did not verify"
assert_num "$(fs_blob_bytes "$BIG")" -le $((BIG_SIZE * 4)) "flipped byte for ever: gave up after a bounded number of refetches (<= 4x the blob)"
assert_num "$(awk -v s="$SECS" 'BEGIN { print (s < 30) }')" -eq 1 "flipped byte for ever: gave up in ${SECS}s (< 30s)"

# ---- Range ignored for this blob: 200 with the whole body every time
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"norange\", \"count\": -1}]}" "Range ignored"
expect_recovered "Range ignored (one stream)" $((BIG_SIZE * 2)) "$BIG_SIZE"
assert_contains "$ERR" "Range|one stream|single" "Range ignored: prepull says it falls back to one stream"

# ---- wrong Content-Range on two responses (the right bytes, shifted header)
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"badrange\", \"count\": 2, \"skip\": 1}]}" "wrong Content-Range x2"
assert_eq 2 "$(fs_applied)" "wrong Content-Range sent twice"
expect_recovered "wrong Content-Range, retried" $((BIG_SIZE * 15 / 10)) "$BIG_SIZE"
assert_contains "$ERR" "Content-Range" "wrong Content-Range: the warning names Content-Range"

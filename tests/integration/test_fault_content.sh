#!/usr/bin/env bash
# Faults in what a 206 carries (tests/integration/faultserver.py in front of a real
# registry): flipped bytes, Range ignored (200 with the whole blob), a wrong
# Content-Range. A bad byte must never be committed: the pull recovers by fetching
# again, or fails with exit 1 naming the blob; every file in blobs/sha256 always hashes
# to its name. A digest mismatch is repaired chunk by chunk, and the tests bound what
# that fetches again: the chunks up to the bad one, not the blob.
source "$(dirname "$0")/lib.sh"
need_prepull

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

# ---- one flipped byte in one 206 body.  The whole-blob check fails; the repair fetches
# chunks again in order and replaces the one whose sha256 changed, then tries the file.
# With 1 MiB chunks (13 of them) and the flip in chunk 2, it needs chunks 0-2 again, not
# the blob: 4 MiB more (chunk 3 may be in flight), and 1 MiB of slack for a retry.
MIB=$((1024 * 1024))
OFF=$((2 * MIB + MIB / 2))
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF}]}" "one flipped byte" --chunk-size 1M -v
assert_eq 1 "$(fs_applied)" "flip: the byte was flipped in one response"
expect_recovered "flipped byte, repaired" $((BIG_SIZE + 5 * MIB))
assert_contains "$ERR" "chunk 2 came back different" "flip: the repair names the chunk it replaced"
assert_contains "$ERR" "repaired; 1 chunk" "flip: the blob was repaired from one replaced chunk"
refetched=$(fs_query 'sum(1 for r in L if r["path"].endswith(A[0]) and r["range"] and int(r["range"][6:].split("-")[0]) <= int(A[1]) <= int(r["range"].split("-")[1]))' "$BIG" "$OFF")
assert_num "$refetched" -ge 2 "flip: the chunk with the bad byte was fetched again"
# Bytes asked for from 4 MiB on, over all requests: each once.  (Counted in bytes, not
# requests: one request may cover several chunks when the measured round trip is long.)
late=$(fs_query 'sum(max(0, min(int(r["range"].split("-")[1]), int(A[1]) - 1) - max(int(r["range"][6:].split("-")[0]), 4 * 1048576) + 1) for r in L if r["path"].endswith(A[0]) and r["range"])' "$BIG" "$BIG_SIZE")
assert_eq $((BIG_SIZE - 4 * MIB)) "$late" "flip: the bytes from 4 MiB on were asked for once, not again"

# ---- flipped bytes in two chunks (2 and 8): the first try after chunk 2 fails, the
# repair goes on to chunk 8 and stops there.
OFF2=$((8 * MIB + MIB / 2))
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF}, {\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF2}]}" "two flipped bytes" --chunk-size 1M -v
assert_eq "1 1" "$(fs_applied)" "two flips: a byte was flipped in two responses"
expect_recovered "two flipped bytes, repaired" $((BIG_SIZE + 11 * MIB))
assert_contains "$ERR" "repaired; 2 chunk" "two flips: the blob was repaired from two replaced chunks"

# ---- a flipped byte in every response: can never verify -> exit 1, bounded work
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF, \"count\": -1}]}" "a flipped byte for ever"
expect_failed_clearly "flipped byte for ever"
assert_contains "$ERR" "error: .*blob $BIG from .*: content hashes to sha256:[0-9a-f]{64}" "flipped byte for ever: the error says the content did not verify"
assert_num "$(fs_blob_bytes "$BIG")" -le $((BIG_SIZE * 4)) "flipped byte for ever: gave up after a bounded number of refetches (<= 4x the blob)"
assert_num "$(awk -v s="$SECS" 'BEGIN { print (s < 30) }')" -eq 1 "flipped byte for ever: gave up in ${SECS}s (< 30s)"

# ---- chunk 0 arrives whole but its response fails (Content-Length one byte longer than
# the body), and the retry brings a flipped byte. The bytes of the failed response were
# already in the blob hash (chunk 0 is at its frontier): they must leave it with the
# chunk, or the hash would vouch for the good bytes while the file holds the bad ones.
OFF0=$((MIB / 2))
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"overlong\", \"offset\": $OFF0}, {\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF0}]}" "whole chunk then failure, then a flipped byte" --chunk-size 1M -v
assert_eq "1 1" "$(fs_applied)" "overlong then flip: both faults were served"
expect_recovered "overlong then flip, repaired" $((BIG_SIZE + 3 * MIB))
assert_contains "$ERR" "chunk 0 came back different" "overlong then flip: the flipped chunk was found and replaced"

# ---- a different bad byte in chunk 8 every time: each repair pass replaces the chunk, and
# the blob never verifies.  prepull stops after its bounded number of repair passes (2),
# naming the blob and the source; the blob was fetched at most 3 times.
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF2, \"at\": 10}, {\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF2, \"at\": 20}, {\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF2, \"at\": 30, \"count\": -1}]}" "a new bad byte each time" --chunk-size 1M
expect_failed_clearly "a new bad byte each time"
assert_contains "$ERR" "after 2 repair passes" "new bad byte each time: the error says how many repair passes failed"
assert_contains "$ERR" "from http://$FS_ADDR/v2/test/content/blobs/$BIG" "new bad byte each time: the error names the source URL"
assert_eq "1 1 1" "$(fs_applied)" "new bad byte each time: chunk 8 was corrupted on each of its 3 fetches"
assert_num "$(fs_blob_bytes "$BIG")" -le $((BIG_SIZE * 3 + 2 * MIB)) "new bad byte each time: at most 3 fetches of the blob"

# ---- the bad bytes come from a redirect target: the error names the registry URL and
# the target's host, not the target's URL (which may be signed).
pull_with "{\"rules\": [{\"path\": \"^/v2/.*/blobs/$BIG\$\", \"fault\": \"redirect\", \"uses\": 1000, \"count\": -1}, {\"path\": \"^/_cdn/.*$BIG\", \"fault\": \"flip\", \"offset\": $OFF, \"count\": -1}]}" "a flipped byte from a redirect target" --chunk-size 1M
expect_failed_clearly "flipped byte from a redirect target"
assert_contains "$ERR" "from http://$FS_ADDR/v2/test/content/blobs/$BIG \\(redirected to 127\\.0\\.0\\.1\\)" "redirect target: the error names the registry URL and the redirect's host"
assert_not_contains "$ERR" "/_cdn/" "redirect target: the redirect URL itself is not printed"

# ---- SIGKILL in the middle of a repair pass (throttled so the kill lands in it), then a
# clean run: the store never holds the bad blob, and the second run verifies what is on
# disk, repairs chunk 9 and commits, fetching less than the blob again.
N=$((N + 1))
STORE=$T/oci-$N
OFF9=$((9 * MIB + MIB / 2))
fs_rules "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"flip\", \"offset\": $OFF9}], \"rate\": $((4 * MIB))}"
fs_reset_log
KARGS=(pull --store "oci:$STORE" --state-dir "$T/state-$N" -j "$CONNS" --chunk-size 1M -v "$REF")
base=$(fs_live_bytes "$BIG")
start_prepull_bg "${KARGS[@]}"
in_repair() { [ "$(fs_live_bytes "$BIG")" -ge $((base + BIG_SIZE + 3 * MIB)) ]; }
wait_until 60 in_repair || fail "kill in repair: the repair pass did not get 3 MiB in within 60 s"
kill_prepull KILL
sent1=$(($(fs_live_bytes "$BIG") - base))
log "kill in repair: killed at $sent1 bytes served for a $BIG_SIZE-byte blob"
assert_eq 137 "$RC" "kill in repair: prepull died of SIGKILL"
assert_contains "$ERR" "fetching its chunks again" "kill in repair: the kill came during the repair pass"
assert_not_contains "$ERR" "repaired;" "kill in repair: the repair had not finished"
[ ! -e "$STORE/blobs/sha256/${BIG#sha256:}" ] || fail "kill in repair: the bad blob is in the store"
ok "kill in repair: the bad blob is not in the store"
assert_store_clean "$STORE" "kill in repair"
fs_rules '{"rules": [], "rate": 0}'
run_prepull "${KARGS[@]}"
assert_eq 0 "$RC" "kill in repair: the next run succeeds"
cmp -s "$STORE/blobs/sha256/${BIG#sha256:}" "$T/src/blobs/sha256/${BIG#sha256:}" ||
  fail "kill in repair: committed blob differs from the pushed one"
ok "kill in repair: committed blob is byte-identical to the pushed one"
assert_contains "$ERR" "chunk 9 came back different" "kill in repair: the next run replaced the bad chunk"
settle
sent2=$(($(fs_live_bytes "$BIG") - base - sent1))
log "kill in repair: the second run was served $sent2 bytes"
assert_num "$sent2" -le $((11 * MIB)) "kill in repair: the second run fetched chunks 0-9 again at most (plus one in flight), not the blob"

# ---- Range ignored for this blob: 200 with the whole body every time
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"norange\", \"count\": -1}]}" "Range ignored"
# The requests in flight when the first 200 came are cut off; what each carried is what
# the kernel's socket buffers took before prepull hung up (3.8-3.9 MB each in a CI run
# under load, 28 MB in all), so bytes bound them only loosely: the counts below are the
# check that prepull did not go on asking for ranges or start the stream twice.
expect_recovered "Range ignored (one stream)" $((BIG_SIZE * (1 + CONNS))) "$BIG_SIZE"
whole=$(fs_query 'sum(1 for r in L if r["path"].endswith(A[0]) and r["status"] == 200 and r["bytes"] == int(A[1]) and not r["client_gone"])' "$BIG" "$BIG_SIZE")
cut=$(fs_query 'sum(1 for r in L if r["method"] == "GET" and r["path"].endswith(A[0]) and r["client_gone"])' "$BIG")
asked=$(fs_query 'sum(1 for r in L if r["method"] == "GET" and r["path"].endswith(A[0]))' "$BIG")
log "Range ignored: $asked GETs of the blob: $whole whole, $cut cut off"
assert_eq 1 "$whole" "Range ignored: the blob was sent whole once, as one stream"
assert_num "$cut" -le "$CONNS" "Range ignored: only the requests in flight when the first 200 came were cut off"
assert_eq $((whole + cut)) "$asked" "Range ignored: no other request for the blob"
assert_contains "$ERR" "blob ${BIG:0:19}: server ignored Range; fetching it as one stream" "Range ignored: prepull says it falls back to one stream"

# ---- wrong Content-Range on two responses (the right bytes, shifted header)
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"badrange\", \"count\": 2, \"skip\": 1}]}" "wrong Content-Range x2"
assert_eq 2 "$(fs_applied)" "wrong Content-Range sent twice"
expect_recovered "wrong Content-Range, retried" $((BIG_SIZE * 15 / 10)) "$BIG_SIZE"
assert_contains "$ERR" "Content-Range" "wrong Content-Range: the warning names Content-Range"

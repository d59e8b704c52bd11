#!/usr/bin/env bash
# HTTP-status faults on blob range requests (tests/integration/faultserver.py in front
# of a real registry): 503 and 429 with Retry-After (seconds and HTTP-date) must be
# honoured (the server's log shows the wait), transient 500/502 are retried, and a
# registry that keeps answering 503 makes the pull fail with exit 1 and one line naming
# the blob once --give-up-after (5s here) passed without progress, with nothing wrong
# committed and no index entry; "Retry-After: 0" does not make it retry in a tight loop
# (the backoff is the least wait).
source "$(dirname "$0")/lib.sh"
need_prepull

CHUNK=2M
CONNS=4
start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer random:none:16M:41
push_layout "$T/src" v1 "$REG_ADDR/test/http:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][1]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
D=$(img_field v1 'o["digest"]')
start_faultserver
REF=$FS_ADDR/test/http:v1

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
  log "$what: exit $RC after ${SECS}s; rules fired: $(fs_applied)"
}

expect_recovered() { # WHAT
  assert_eq 0 "$RC" "$1: the pull succeeds"
  verify_layout "$STORE" v1
  assert_eq "$D" "$(index_entries "$STORE" | cut -d' ' -f1)" "$1: index entry has the image digest"
  local sent
  sent=$(fs_blob_bytes "$BIG")
  assert_num "$sent" -le $((BIG_SIZE * 11 / 10)) "$1: bytes served for the blob <= 1.1x its size"
}

# gaps OFFSET -> for each faulted request covering OFFSET, the seconds from its end to
# the next request covering OFFSET (space separated)
gaps() {
  fs_query '" ".join("%.2f" % (min([q["t"] for q in L if q["path"].endswith(A[0]) and q["t"] >= r["t_end"] and q is not r and q["range"] and int(q["range"][6:].split("-")[0]) <= int(A[1]) <= int(q["range"].split("-")[1])] or [0]) - r["t_end"]) for r in L if r["path"].endswith(A[0]) and r["fault"] == "status" and r["range"] and int(r["range"][6:].split("-")[0]) <= int(A[1]) <= int(r["range"].split("-")[1]))' "$BIG" "$1"
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
rule() { # FAULT-FIELDS (JSON members) -> one rule on BIG
  printf '{"path": "%s", %s}' "$BIG" "$1"
}

# ---- Retry-After, three chunks at once: 503 + "Retry-After: 3"; 429 + "Retry-After: 2"
# twice in a row; 429 + Retry-After as an HTTP-date 4 s ahead (1 s resolution: >= 3 s).
O1=$((1 * 1024 * 1024 + 77))
O2=$((6 * 1024 * 1024 + 77))
O3=$((11 * 1024 * 1024 + 77))
pull_with "{\"rules\": [$(rule "\"fault\": \"status\", \"status\": 503, \"retry_after\": 3, \"offset\": $O1"),
  $(rule "\"fault\": \"status\", \"status\": 429, \"retry_after\": 2, \"count\": 2, \"offset\": $O2"),
  $(rule "\"fault\": \"status\", \"status\": 429, \"retry_after\": \"+4\", \"offset\": $O3")]}" "Retry-After"
expect_recovered "503/429 with Retry-After"
assert_eq "1 2 1" "$(fs_applied)" "Retry-After: every fault was injected"
g=$(gaps "$O1")
log "503 -> retry gap: ${g}s"
ge "$g" 2.95 && ok "503: Retry-After: 3 honoured (retry came ${g}s later)" || fail "503: retry came after ${g}s, Retry-After said 3"
ge 4.5 "$g" && ok "503: retried soon after Retry-After (${g}s <= 4.5s)" || fail "503: retry only after ${g}s"
g2=$(gaps "$O2")
log "429 (x2) -> retry gaps: ${g2}s"
for g in $g2; do
  ge "$g" 1.95 && ok "429: Retry-After: 2 honoured (retry came ${g}s later)" || fail "429: retry came after ${g}s, Retry-After said 2"
done
g=$(gaps "$O3")
log "429 (HTTP-date) -> retry gap: ${g}s"
ge "$g" 2.95 && ok "429: Retry-After HTTP-date honoured (retry came ${g}s later)" || fail "429: retry came after ${g}s, Retry-After date was 4 s ahead"

# ---- transient 500 and 502 (two each), on any blob range request
pull_with "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"status\", \"status\": 500, \"count\": 2}, {\"path\": \"$BIG\", \"fault\": \"status\", \"status\": 502, \"count\": 2, \"skip\": 1}]}" "500 x2, 502 x2"
expect_recovered "transient 500 x2 and 502 x2"
assert_eq "2 2" "$(fs_applied)" "500 and 502 were each sent twice"

# ---- 503 for ever (Retry-After: 0) with --give-up-after 5s: exit 1, clear error
pull_with "{\"rules\": [$(rule "\"fault\": \"status\", \"status\": 503, \"retry_after\": 0, \"count\": -1")]}" "503 for ever" --json --give-up-after 5s
assert_eq 1 "$RC" "persistent 503: exit 1"
errl=$(printf '%s\n' "$ERR" | grep -i "error" | grep -F "${BIG:7:12}" | grep -F "test/http" || true)
assert_ne "" "$errl" "persistent 503: one error line names both the image and the blob (${BIG:7:12})"
assert_contains "$errl" "503" "persistent 503: the error line says what the server answered"
[ ! -e "$STORE/blobs/sha256/${BIG#sha256:}" ] || fail "persistent 503: blob committed although it was never served"
ok "persistent 503: the blob was not committed"
assert_store_clean "$STORE" "persistent 503"
assert_no_index_entry "$STORE" "persistent 503"
assert_num "$(awk -v s="$SECS" 'BEGIN { print (s >= 5 && s < 20) }')" -eq 1 "persistent 503 with --give-up-after 5s gives up in ${SECS}s (5 s to one backoff later)"
assert_contains "$errl" "give-up-after" "persistent 503: the error line names the rule that gave up"
n=$(fs_query 'sum(1 for r in L if r["path"].endswith(A[0]) and r["fault"] == "status")' "$BIG")
# 16 MiB in 2 MiB chunks, 4 at a time: backoff from 0.5 s doubling means at most 6
# requests per chunk in 5 s (and one backoff more); Retry-After: 0 must not shorten it.
assert_num "$n" -le 48 "persistent 503 with Retry-After: 0: no tight retry loop ($n faulted requests)"

# ---- an absurd Retry-After: the wait is capped (120 s) and a stop cuts it short, both
# for a blob range (the engine) and for the config (a registry request).  An image
# stopped before its config arrived is not registered: nothing (no empty config) is
# written for it.
CONFIG=$(img_field v1 'o["platforms"]["linux/amd64"]["config"]')
for what in blob config; do
  target=$BIG
  [ "$what" = config ] && target=$CONFIG
  N=$((N + 1))
  fs_rules "{\"rules\": [{\"path\": \"$target\", \"fault\": \"status\", \"status\": 503, \"retry_after\": 99999999999, \"count\": -1}]}"
  start_prepull_bg pull --store "oci:$T/oci-$N" --state-dir "$T/state-$N" -j "$CONNS" --chunk-size "$CHUNK" "$REF"
  wait_until 20 grep -q "retry" "$PP_ERRF" || fail "Retry-After $what: no retry announced"
  assert_contains "$(cat "$PP_ERRF")" "in 120\.0 s" "Retry-After $what: the wait is capped at 120 s"
  t0=$(date +%s.%N)
  kill_prepull TERM
  secs=$(elapsed_since "$t0")
  assert_eq 1 "$RC" "Retry-After $what: SIGTERM during the wait exits 1"
  assert_num "$(awk -v s="$secs" 'BEGIN { print (s < 3) }')" -eq 1 "Retry-After $what: stopped ${secs}s after SIGTERM (< 3 s)"
  assert_store_clean "$T/oci-$N" "Retry-After $what"
  assert_no_index_entry "$T/oci-$N" "Retry-After $what"
  assert_not_contains "$(cat "$PP_ERRF")" ": done" "Retry-After $what: the stopped image is not reported done"
done

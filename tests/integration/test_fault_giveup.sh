#!/usr/bin/env bash
# Faults that never go away (tests/integration/faultserver.py): every range request for
# a blob answered 500, or with a wrong Content-Range, or reset mid-body, or with every
# byte of the range but one byte short of its Content-Length ("overlong": the chunk's
# bytes all arrive, yet the response fails, so none of them may be kept). None of these
# brings new verified bytes, so with --give-up-after 5s the blob gives up at the first
# failed request 5 s or more after it started (backoff from 0.5 s doubling: by ~16 s),
# with exit 1 and one line naming the image, the blob and the rule; nothing of that blob
# committed, no index entry, the store clean, and no partial file left holding the space
# (none of its bytes was kept). The four run at the same time.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
declare -A BLOB
for k in e500 crange reset overlong; do
  seed=$((${#k} * 7 + 3))
  [ "$k" = reset ] && seed=99
  mkimage "$T/src" "$k" --layer "random:none:3M:$seed" --label "$k"
  push_layout "$T/src" "$k" "$REG_ADDR/test/giveup-$k:v1"
  BLOB[$k]=$(img_field "$k" 'o["platforms"]["linux/amd64"]["layers"][0]')
done
start_faultserver
fs_rules "{\"rules\": [
  {\"path\": \"${BLOB[e500]}\", \"fault\": \"status\", \"status\": 500, \"count\": -1},
  {\"path\": \"${BLOB[crange]}\", \"fault\": \"badrange\", \"count\": -1},
  {\"path\": \"${BLOB[reset]}\", \"fault\": \"reset\", \"after\": 0, \"count\": -1},
  {\"path\": \"${BLOB[overlong]}\", \"fault\": \"overlong\", \"count\": -1}]}"

declare -A PPID_ PPERR
t0=$(date +%s.%N)
for k in e500 crange reset overlong; do
  start_prepull_bg pull --store "oci:$T/oci-$k" --state-dir "$T/state-$k" -j 4 --chunk-size 1M --give-up-after 5s "$FS_ADDR/test/giveup-$k:v1"
  PPID_[$k]=$PP_PID
  PPERR[$k]=$PP_ERRF
done
for k in e500 crange reset overlong; do
  PP_PID=${PPID_[$k]}
  PP_OUTF=${PPERR[$k]%.err}.out
  PP_ERRF=${PPERR[$k]}
  wait_prepull 60
  secs=$(elapsed_since "$t0")
  log "$k: exit $RC after ${secs}s"
  assert_num "$(awk -v s="$secs" 'BEGIN { print (s >= 5 && s < 25) }')" -eq 1 "$k for ever: gave up after ${secs}s (--give-up-after 5s: 5 s to one backoff later)"
  b=${BLOB[$k]}
  assert_eq 1 "$RC" "$k for ever: exit 1"
  errl=$(printf '%s\n' "$ERR" | grep -i "error" | grep -F "test/giveup-$k" | grep -F "${b:7:12}" || true)
  assert_ne "" "$errl" "$k for ever: one error line names the image and the blob"
  assert_contains "$errl" "give-up-after" "$k for ever: the error line names the rule that gave up"
  log "$k: $(printf '%s\n' "$errl" | tail -n 1)"
  [ ! -e "$T/oci-$k/blobs/sha256/${b#sha256:}" ] || fail "$k for ever: the blob was committed"
  ok "$k for ever: the blob was not committed"
  assert_store_clean "$T/oci-$k" "$k for ever"
  assert_no_index_entry "$T/oci-$k" "$k for ever"
  # Not one byte of it was kept (every response failed), so nothing holds the space
  # the partial file was preallocated with (test_prune: a failure with bytes kept).
  [ ! -e "$T/state-$k/partial/${b#sha256:}.partial" ] || fail "$k for ever: an empty partial file holds the blob's space"
  ok "$k for ever: no partial file without a verified byte is left"
  run_prepull status --state-dir "$T/state-$k"
  assert_contains "$OUT" "no partial downloads" "$k for ever: prepull status lists nothing partial"
done
assert_contains "$(cat "${PPERR[e500]}")" "500" "500 for ever: the error says HTTP 500"
assert_contains "$(cat "${PPERR[crange]}")" "Content-Range" "wrong Content-Range for ever: the error names Content-Range"
# Backoff from 0.5 s doubling (jitter over the upper half): a failure 5 s or more after
# the start comes by the 6th request of a chunk; 4 chunks (3 MiB + a tail).
settle
for k in e500 crange reset overlong; do
  n=$(fs_query 'sum(1 for r in L if r["path"].endswith(A[0]) and r["fault"])' "${BLOB[$k]}")
  assert_num "$n" -le 24 "$k for ever: bounded retries ($n faulted requests for 4 chunks, at most 6 each)"
  assert_num "$n" -ge 12 "$k for ever: retried until the give-up time ($n faulted requests for 4 chunks)"
done
# The backoff, timed from the server's log: retry k of a chunk waits between
# 0.25 * 2^(k-1) and 0.5 * 2^(k-1) s (util.c pp_backoff); a chunk's requests share the
# range's end.  Every gap at least the backoff's lower bound, and not much more than
# its upper one.
for k in e500 crange reset overlong; do
  res=$("$PY" - "$FS_LOG" "${BLOB[$k]}" <<'PYEOF'
import json, sys
log, blob = sys.argv[1], sys.argv[2]
per = {}
for line in open(log):
    r = json.loads(line)
    if r["method"] == "GET" and r["path"].endswith(blob) and r["fault"] and r["range"]:
        per.setdefault(r["range"].split("-")[1], []).append(r)
short = long = ""
for v in per.values():
    v.sort(key=lambda r: r["t"])
    for i in range(1, len(v)):
        lo, hi = 0.25 * 2 ** (i - 1), 0.5 * 2 ** (i - 1)
        gap_start = v[i]["t"] - v[i - 1]["t"]
        gap_end = v[i]["t"] - v[i - 1]["t_end"]
        if gap_start < lo - 0.02:
            short += " retry %d after %.2fs (< %.2fs)" % (i, gap_start, lo)
        if gap_end > hi * 1.2 + 1.0:
            long += " retry %d after %.2fs (> %.2fs)" % (i, gap_end, hi)
print("%s|%s" % (short, long))
PYEOF
)
  IFS='|' read -r early late <<<"$res"
  assert_eq "" "$early" "$k for ever: every retry waited at least the backoff"
  assert_eq "" "$late" "$k for ever: no retry waited much longer than the backoff"
done

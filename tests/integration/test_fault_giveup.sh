#!/usr/bin/env bash
# Faults that never go away (tests/integration/faultserver.py): every range request for
# a blob answered 500, or with a wrong Content-Range, or reset mid-body, or with every
# byte of the range but one byte short of its Content-Length ("overlong": the chunk's
# bytes all arrive, yet the response fails, so none of them may be kept). The pull must
# give up after its bounded retries (7 attempts per chunk, backoff from 0.25-0.5 s) with
# exit 1 and one line naming the image and the blob; nothing of that blob committed, no
# index entry, the store clean. The four run at the same time (the backoff alone takes
# 30-60 s per run).
source "$(dirname "$0")/lib.sh"
need_prepull
use_direct_python

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
  start_prepull_bg pull --store "oci:$T/oci-$k" --state-dir "$T/state-$k" -j 4 --chunk-size 1M "$FS_ADDR/test/giveup-$k:v1"
  PPID_[$k]=$PP_PID
  PPERR[$k]=$PP_ERRF
done
for k in e500 crange reset overlong; do
  PP_PID=${PPID_[$k]}
  PP_OUTF=${PPERR[$k]%.err}.out
  PP_ERRF=${PPERR[$k]}
  wait_prepull 100
  secs=$(elapsed_since "$t0")
  log "$k: exit $RC after ${secs}s"
  b=${BLOB[$k]}
  assert_eq 1 "$RC" "$k for ever: exit 1"
  errl=$(printf '%s\n' "$ERR" | grep -i "error" | grep -F "test/giveup-$k" | grep -F "${b:7:12}" || true)
  assert_ne "" "$errl" "$k for ever: one error line names the image and the blob"
  log "$k: $(printf '%s\n' "$errl" | tail -n 1)"
  [ ! -e "$T/oci-$k/blobs/sha256/${b#sha256:}" ] || fail "$k for ever: the blob was committed"
  ok "$k for ever: the blob was not committed"
  assert_store_clean "$T/oci-$k" "$k for ever"
  assert_no_index_entry "$T/oci-$k" "$k for ever"
done
assert_contains "$(cat "${PPERR[e500]}")" "500" "500 for ever: the error says HTTP 500"
assert_contains "$(cat "${PPERR[crange]}")" "Content-Range" "wrong Content-Range for ever: the error names Content-Range"
# 7 attempts per chunk (engine.c CHUNK_ATTEMPTS), with a backoff between them: attempt
# k+1 waits between 0.25 * 2^k and 0.5 * 2^k s (util.c pp_backoff).  Per chunk (a
# chunk's requests share the range's end): no chunk tried more than 7 times, and the
# one that failed the blob was tried all 7 (a pull that never retries fails this);
# every gap at least the backoff's lower bound, and not much more than its upper one.
settle
ATTEMPTS=7
for k in e500 crange reset overlong; do
  res=$("$PY" - "$FS_LOG" "${BLOB[$k]}" <<'PYEOF'
import json, sys
log, blob = sys.argv[1], sys.argv[2]
per = {}
for line in open(log):
    r = json.loads(line)
    if r["method"] == "GET" and r["path"].endswith(blob) and r["fault"] and r["range"]:
        per.setdefault(r["range"].split("-")[1], []).append(r)
most = max((len(v) for v in per.values()), default=0)
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
print("%d %d|%s|%s" % (len(per), most, short, long))
PYEOF
)
  log "$k: chunks, most attempts | early retries | late retries: $res"
  IFS='|' read -r counts early late <<<"$res"
  assert_eq "$ATTEMPTS" "${counts#* }" "$k for ever: the chunk that failed the blob was tried exactly $ATTEMPTS times"
  assert_eq "" "$early" "$k for ever: every retry waited at least the backoff"
  assert_eq "" "$late" "$k for ever: no retry waited much longer than the backoff"
done

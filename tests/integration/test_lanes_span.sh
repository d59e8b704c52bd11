#!/usr/bin/env bash
# No idle round trip per chunk: behind a server that takes 0.1 s before the first byte
# of every blob request (the fault server's "delay", standing in for a far registry)
# and sends 4 MB/s per connection, a request covers many round trips of data (several
# chunks, each still hashed on its own), so the lanes' idle time, measured from the
# server's log (request start, end and connection), stays a small part of their busy
# time. One request per 1 MiB chunk would idle 0.1 s per 0.26 s of bytes.
source "$(dirname "$0")/lib.sh"
need_prepull

RATE=4000000
DELAY=0.1
start_registry
start_faultserver --rate "$RATE"
mkimage "$T/src" span --layer "random:none:48M:5"
push_layout "$T/src" span "$REG_ADDR/test/lanes:span"
BIG=$(img_field span 'o["platforms"]["linux/amd64"]["layers"][0]')
SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
fs_rules "{\"rules\": [{\"fault\": \"delay\", \"seconds\": $DELAY, \"path\": \"/blobs/$BIG\", \"count\": -1}]}"
fs_reset_log

REF=$FS_ADDR/test/lanes:span
prepull_ok "pull behind a ${DELAY}s first-byte delay" \
  pull --store "oci:$T/oci" --state-dir "$T/state" --plain-http --json -v --chunk-size 1M -j 4 "$REF"
verify_layout "$T/oci" span
printf '%s\n' "$ERR" | grep -E 'chunks [0-9]+-[0-9]+: GET|lane [0-9]' | sed 's/^/#   /' | head -n 20

chunks=$(( (SIZE + 1048575) / 1048576 ))
reqs=$(fs_query 'len([r for r in L if r["method"] == "GET" and r["path"].endswith(A[0])])' "$BIG")
assert_num "$reqs" -le $((chunks / 2)) "requests cover several chunks ($reqs requests for $chunks chunks)"
assert_contains "$ERR" "chunks [0-9]+-[0-9]+: GET" "-v names the chunks a request covers"
# Per connection, from the server's log: idle is the delay of each request plus the
# gaps between one request's end and the next one's start; busy is the rest.
frac=$(fs_query '
(lambda R: (lambda conns: round(
  sum(len(v) * float(A[1]) + sum(max(0, b["t"] - a["t_end"]) for a, b in zip(v, v[1:])) for v in conns.values()) /
  sum(sum(r["t_end"] - r["t"] - float(A[1]) for r in v) for v in conns.values()), 3))(
  {c: sorted([r for r in R if r["conn"] == c], key=lambda r: r["t"]) for c in set(r["conn"] for r in R)}))(
  [r for r in L if r["method"] == "GET" and r["path"].endswith(A[0])])' "$BIG" "$DELAY")
log "idle / busy over the lanes: $frac"
assert_num "$("$PY" -c "print(int($frac < 0.25))")" -eq 1 "the lanes idle under 25% of their busy time ($frac)"
assert_eq "$SIZE" "$(fs_blob_bytes "$BIG")" "every byte served once"

#!/usr/bin/env bash
# A raced request that recovers: the frontier chunk of a layer is fetched by a request
# covering several chunks (a span), slow at first, so it is raced by a second request.
# The racer waits 1.8 s for its first byte, and meanwhile the span speeds up, finishes
# the chunk itself and goes on to its next chunk.  The racer is then dropped: taken for
# the winner when it ended, it once stopped the span in the middle of a chunk nothing
# else would fetch, and the pull waited forever with every other byte in (a --deadline
# ends that here).
source "$(dirname "$0")/lib.sh"
need_prepull

RATE=1000000
start_registry
start_faultserver --rate "$RATE"
# A first layer, so that by the second one's turn transfers have finished and a
# request may cover several chunks (spans need a measured rate and round trip).
mkimage "$T/src" moot --layer "random:none:8M:1" --layer "random:none:24M:2"
push_layout "$T/src" moot "$REG_ADDR/test/lanes:moot"
BIG=$(img_field moot 'o["platforms"]["linux/amd64"]["layers"][1]')
SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
# 1. The first request of the second layer (it covers offset 0 and, at this rate and
#    round trip, 4-6 chunks): 400 KB at 200 KB/s, then the server's 1 MB/s.  Under a
#    third of its peers' rate, it is raced after about 1 s.
# 2. The racer asks for the rest of chunk 0 (it covers 900000): 1.8 s before its first
#    byte (silent, it is not judged slow), then all of them at once (50 MB/s, between
#    two of the lanes' looks, so never judged slow either): it ends at about 3.1 s.  The
#    span finishes chunk 0 at about 2.6 s and ends after 5.6 s: the racer ends in the
#    middle of the span.
# 3. Every other blob request: 0.4 s before the first byte, a far registry's round trip.
fs_rules "{\"rules\": [
  {\"fault\": \"slow\", \"rate\": 200000, \"after\": 400000, \"path\": \"/blobs/$BIG\", \"offset\": 0},
  {\"fault\": \"delay\", \"seconds\": 1.8, \"rate\": 50000000, \"path\": \"/blobs/$BIG\", \"offset\": 900000},
  {\"fault\": \"delay\", \"seconds\": 0.4, \"count\": -1}]}"
fs_reset_log

REF=$FS_ADDR/test/lanes:moot
prepull_ok "pull with a raced span that recovers" \
  pull --store "oci:$T/oci" --state-dir "$T/state" --plain-http --json -v --chunk-size 1M -j 4 \
  --deadline 30s "$REF"
verify_layout "$T/oci" moot
L2="blob ${BIG:0:19}"
printf '%s\n' "$ERR" | grep -E "$L2: chunks? 0|lanes: " | sed 's/^/#   /' | head -n 20

first=$(fs_query '[r["range"] for r in L if r["method"] == "GET" and r["path"].endswith(A[0]) and r["fault"] == "slow"]' "$BIG")
log "the slow request: $first"
assert_contains "$ERR" "$L2: chunks 0-[0-9]+: GET" "the layer's first request covers several chunks"
assert_contains "$ERR" "$L2: chunk 0: the frontier chunk is slow" "the slow frontier chunk was raced"
assert_contains "$ERR" "$L2: chunk 0: the first request finished it first; dropping the racer" \
  "the span finished the chunk first and the racer was dropped"
assert_not_contains "$ERR" "$L2: chunk 0: the racer won" "the dropped racer was not taken for the winner"
lanes_ev=$(json_events "$OUT" lanes)
[ -n "$lanes_ev" ] || fail "no lanes event in --json output"
assert_num "$(printf '%s' "$lanes_ev" | jget - 'o["raced"]')" -ge 1 "--json counts the race"
assert_eq 0 "$(printf '%s' "$lanes_ev" | jget - 'o["races_won"]')" "--json: no race won"
assert_eq 0 "$(printf '%s' "$lanes_ev" | jget - 'o["racers_left"]')" "no racer is counted once every transfer is over"
served=$(fs_blob_bytes "$BIG")
assert_num "$served" -le $((SIZE + 1048576)) "the layer was served once, plus at most the racer's chunk ($served of $SIZE bytes)"

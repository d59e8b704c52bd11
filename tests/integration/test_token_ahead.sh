#!/usr/bin/env bash
# Bearer tokens are renewed before they expire (README: "cached per repository and
# renewed before they expire during a long download"), not only after a 401.
# The fault server issues tokens with expires_in=60 and accepts each for 6 real
# seconds; prepull runs with its monotonic clock 10 times as fast (fast_clock.c), so
# its 60 s are the server's 6 and its renewal margin (30 s) is 3 real seconds.  A pull
# of ~10 s must ask for new tokens as the old ones age, each before the old one
# expires, and no request may carry an expired token (no 401 to an authorized request).
source "$(dirname "$0")/lib.sh"
need_prepull

SPEED=10
LIFE=6 # real seconds: expires_in 60 on prepull's clock
FC=$T/fast_clock.so
cc -shared -fPIC -O2 -o "$FC" "$IT_DIR/fast_clock.c" -ldl 2>"$T/logs/cc.log" ||
  cannot_run "cannot build fast_clock.c: $(cat "$T/logs/cc.log")"
PRELOAD=$FC
asan=$(ldd "$PREPULL" | awk '/libasan/ { print $3 }')
[ -z "$asan" ] || PRELOAD=$asan:$FC

start_registry
mkimage "$T/src" v1 --layer random:none:40M:171
push_layout "$T/src" v1 "$REG_ADDR/test/ahead:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
start_faultserver --auth bearer --token-expires-in 60 --token-lifetime "$LIFE" \
  --rate $((1024 * 1024)) # 4 x 1 MiB/s: ~10 s for the layer
REF=$FS_ADDR/test/ahead:v1

PP_CLOCK_SPEED=$SPEED LD_PRELOAD=$PRELOAD start_prepull_bg pull --store "oci:$T/oci" \
  --state-dir "$T/state" -j 4 --chunk-size 1M "$REF"
wait_prepull 90
assert_eq 0 "$RC" "the pull completes"
verify_layout "$T/oci" v1
settle

res=$("$PY" - "$FS_LOG" "$LIFE" <<'PYEOF'
import json, sys
L = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
life = float(sys.argv[2])
tokens = sorted(r["t"] for r in L if r["path"] == "/_token")
gaps = [b - a for a, b in zip(tokens, tokens[1:])]
refused = sum(1 for r in L if r["path"].startswith("/v2/") and r.get("auth") and r["status"] == 401)
blob = [r for r in L if "/blobs/" in r["path"] and r["method"] == "GET" and r["status"] in (200, 206)]
span = max(r["t_end"] for r in blob) - min(r["t"] for r in blob) if blob else 0
print("tokens=%d refused=%d span=%.1f min_gap=%.2f max_gap=%.2f" % (
    len(tokens), refused, span, min(gaps or [0]), max(gaps or [0])))
PYEOF
)
log "server side: $res"
assert_num "$(awk -v s="$(stat_field "$res" span)" -v l="$LIFE" 'BEGIN { print (s > l) }')" -eq 1 \
  "the blob download outlasted a token's life ($(stat_field "$res" span) s > $LIFE s), or the test proves nothing"
assert_num "$(stat_field "$res" tokens)" -ge 2 "prepull asked for a new token during the pull"
assert_eq 0 "$(stat_field "$res" refused)" "no request carried an expired token (no 401 to an authorized request)"
assert_num "$(awk -v g="$(stat_field "$res" max_gap)" -v l="$LIFE" 'BEGIN { print (g < l) }')" -eq 1 \
  "each new token came before the last one expired (longest gap $(stat_field "$res" max_gap) s < $LIFE s)"
assert_num "$(awk -v g="$(stat_field "$res" min_gap)" -v l="$LIFE" 'BEGIN { print (g >= l / 2 - 0.5) }')" -eq 1 \
  "and not much before the renewal margin: tokens are reused (shortest gap $(stat_field "$res" min_gap) s)"

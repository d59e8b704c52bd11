#!/usr/bin/env bash
# A ~200 MiB incompressible layer through nginx with a per-connection rate limit:
# many distinct Range requests on several connections, each byte sent about once,
# blob verified.
source "$(dirname "$0")/lib.sh"
need_prepull

SIZE=${LARGE_SIZE:-200M}
RATE_MB=${LARGE_RATE_MB:-40}   # per connection, MiB/s
CHUNK=8M
CONNS=8

start_registry
NP=$(free_port)
nginx_conf_proxy "$T/ngx" "$NP" "$REG_ADDR" "${RATE_MB}m"
start_nginx "$T/ngx/nginx.conf" "$NP"

mkimage "$T/src" big --layer busybox:gzip --layer "random:zstd:$SIZE:42"
push_layout "$T/src" big "$REG_ADDR/test/large:big"
BIG=$(img_field big 'o["platforms"]["linux/amd64"]["layers"][1]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
log "large blob ${BIG:0:19} is $BIG_SIZE bytes"

REF=127.0.0.1:$NP/test/large:big
start=$(date +%s.%N)
prepull_ok "pull $REF with --chunk-size $CHUNK -j $CONNS" \
  pull --store "oci:$T/oci" --state-dir "$T/state" --json --chunk-size "$CHUNK" -j "$CONNS" "$REF"
elapsed=$("$PY" -c "print(round($(date +%s.%N) - $start, 2))")
verify_layout "$T/oci" big
settle

st=$(log_stats "$T/ngx/access.log" "/blobs/$BIG\$")
log "large blob, server side: $st (client took ${elapsed}s)"
min_chunks=$((BIG_SIZE / (8 * 1024 * 1024) / 2))
assert_num "$(stat_field "$st" distinct_ranges)" -ge "$min_chunks" "many distinct Range requests for the large blob"
assert_num "$(stat_field "$st" conns)" -ge 4 "Range requests on several distinct connections"
# Fewer connections than chunks (25), or they were not reused: the lanes and a
# few spares (a lane whose connection the server closed opens another).
assert_num "$(stat_field "$st" conns)" -le $((CONNS + 4)) "connections are reused, not one per chunk ($(stat_field "$st" distinct_ranges) chunks)"
sent=$(stat_field "$st" bytes)
status=$(stat_field "$st" status)
SLACK=1 assert_served_once "$sent" "$BIG_SIZE" "$OUT" "large blob"
# A request prepull closed early (a race's loser, a retired lane) is logged as 499.
if [ "$RACED" = 0 ] && [ "$RETIRED" = 0 ]; then
  assert_contains "$status" "^206:[0-9]+$" "every large-blob response was 206 Partial Content ($status)"
else
  assert_contains "$status" "^206:[0-9]+(,499:[0-9]+)?$" "every large-blob response was a 206, or a 499 for a request prepull closed ($status)"
fi

# Speed is the benchmark's business (scripts/bench.sh), not this test's.

done_ev=$(json_events "$OUT" blob_done | grep "$BIG" || true)
assert_eq "$BIG_SIZE" "$(printf '%s' "$done_ev" | jget - 'o["size"]')" "blob_done reports the blob's size"
assert_eq "$BIG_SIZE" "$(printf '%s' "$done_ev" | jget - 'o["fetched"]')" "blob_done reports fetched = size"
leftover=$(find "$T/state" "$T/oci" -name '*.partial' 2>/dev/null | head -n 3)
assert_eq "" "$leftover" "no partial files left after success"

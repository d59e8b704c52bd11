#!/usr/bin/env bash
# Bearer tokens that expire in the middle of a download: the token server says
# expires_in=60 (so prepull caches the token for the whole pull and never renews it
# ahead of time), but the JWT's exp makes the registry refuse it after a few seconds.
# A ~48 MiB layer behind a rate-limited nginx takes over two token lifetimes, so blob
# range GETs get 401 (error="invalid_token") mid-pull; prepull must drop the cached
# token, ask the token server again and finish with a verified blob.
#
# Without renewal the registry would answer 401 to every further range request with
# the stale token, each chunk would burn its attempts and the pull would exit 1; and
# the token server would have issued exactly one token for the repository.
source "$(dirname "$0")/lib.sh"
need_prepull

PASS='renew-Secret-9321-pass'
REPO=private/renew
SIZE=${RENEW_SIZE:-48M}
RATE=${RENEW_RATE:-1200k}  # per connection: 4 x 1.17 MiB/s -> ~10 s for 48 MiB
CONNS=4
CHUNK=2M
# distribution 2.x accepts a token until exp + 60 s (registry/auth/token: Leeway), so
# exp = now - 55 makes a token the registry refuses 4-5 s after it was issued, while
# expires_in stays 60 (prepull renews ahead of time only 30 s before that).
JWT_EXP_OFFSET=${RENEW_JWT_EXP_OFFSET:--55}

start_token_server --user "alice:$PASS" --expiry 60 --jwt-exp-offset "$JWT_EXP_OFFSET" \
  --counts-file "$T/token-counts.json"
start_registry --token "$TOK_REALM" "$TOK_SERVICE" "$TOK_ISSUER" "$TOK_BUNDLE"
NP=$(free_port)
nginx_conf_proxy "$T/ngx" "$NP" "$REG_ADDR" "$RATE"
start_nginx "$T/ngx/nginx.conf" "$NP"

# The premise, part 1: a fresh token opens the registry, and its JSON says 60 s.
tok_json=$(curl -sf -u "alice:$PASS" "$TOK_REALM?service=$TOK_SERVICE&scope=repository:$REPO:pull")
probe_tok=$(printf '%s' "$tok_json" | jget - 'o["token"]')
assert_eq 60 "$(printf '%s' "$tok_json" | jget - 'o["expires_in"]')" "token server claims expires_in=60"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $probe_tok" "http://$REG_ADDR/v2/")
assert_eq 200 "$code" "a fresh token gets 200 from the registry"
probe_issued=$(date +%s)

mkimage "$T/src" v1 --layer busybox:gzip --layer "random:zstd:$SIZE:77"
push_layout "$T/src" v1 "$REG_ADDR/$REPO:v1" "alice:$PASS"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][1]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
D=$(img_field v1 'o["digest"]')
log "large blob ${BIG:0:19} is $BIG_SIZE bytes"

write_docker_config "$T/dc" "127.0.0.1:$NP" alice "$PASS"
reset_log "$T/logs/token.log"
reset_log "$T/ngx/access.log"
: >"$T/logs/registry.log"
REF=127.0.0.1:$NP/$REPO:v1
start=$(date +%s.%N)
DOCKER_CONFIG=$T/dc prepull_ok "pull $REF (-j $CONNS --chunk-size $CHUNK) with tokens that expire mid-pull" \
  pull --store "oci:$T/oci" --state-dir "$T/state" --json -j "$CONNS" --chunk-size "$CHUNK" "$REF"
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
log "pull took ${elapsed}s"
verify_layout "$T/oci" v1
assert_eq "$D" "$(index_entries "$T/oci" | cut -d' ' -f1)" "index entry digest"
assert_eq "" "$(layout_has_image "$T/oci" "$D" linux/amd64)" "every blob of the image is in the layout"
assert_eq "$BIG_SIZE" "$(stat -c %s "$T/oci/blobs/sha256/${BIG#sha256:}")" "large blob has its full size"
settle

# The premise, part 2: the pull outlived a token, or the test proves nothing. The
# probe token (issued before mkimage + push) must be refused by now, at least 8 s on.
awk -v e="$elapsed" 'BEGIN { exit !(e > 8) }' ||
  fail "the pull took only ${elapsed}s: shorter than two token lifetimes, nothing to renew"
ok "the pull (${elapsed}s) lasted longer than two token lifetimes"
while [ $(($(date +%s) - probe_issued)) -lt 9 ]; do sleep 0.5; done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $probe_tok" "http://$REG_ADDR/v2/")
assert_eq 401 "$code" "the registry refuses a token from this server some seconds after its issue"

# Token server: more than one token for the repository during the pull.
issued=$(grep -c "issued for user='alice' access=.*\"$REPO\".*pull" "$T/logs/token.log" || true)
log "tokens issued for $REPO during the pull: $issued"
assert_num "$issued" -gt 1 "the token server issued more than one token for $REPO"
assert_eq 0 "$(grep -c "bad credentials" "$T/logs/token.log" || true)" "the token server never saw bad credentials"

# nginx: at least one 401 on a GET of the large blob, followed by successful 206s.
order=$("$PY" - "$T/ngx/access.log" "/v2/$REPO/blobs/$BIG" <<'EOF'
import sys
f, uri = sys.argv[1], sys.argv[2]
seq = []
for line in open(f):
    kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
    if kv.get("m") == "GET" and kv.get("u") == uri:
        seq.append(kv.get("s"))
first401 = seq.index("401") if "401" in seq else -1
after = seq[first401 + 1:] if first401 >= 0 else []
print("n401=%d n206=%d n206_after_first_401=%d last=%s other=%d" % (
    seq.count("401"), seq.count("206"), after.count("206"), seq[-1] if seq else "-",
    len([s for s in seq if s not in ("401", "206")])))
EOF
)
log "large blob GETs at nginx: $order"
assert_num "$(stat_field "$order" n401)" -ge 1 "nginx saw at least one 401 for a GET of the large blob"
assert_num "$(stat_field "$order" n206_after_first_401)" -ge 2 "successful 206 range responses followed the first 401"
assert_eq 206 "$(stat_field "$order" last)" "the last large-blob GET was a 206"
assert_eq 0 "$(stat_field "$order" other)" "large-blob GETs were only 206 or 401"
# Every 401 is one chunk attempt; all of them together stay far below what a
# non-renewing client would burn (8 attempts per chunk until a blob fails).
assert_num "$(stat_field "$order" n401)" -le $((CONNS * 4)) "few 401s (each is answered by a new token)"
assert_contains "$(cat "$T/logs/registry.log")" "invalid token" "the registry logged the refused (expired) token"

st=$(log_stats "$T/ngx/access.log" "/blobs/$BIG\$")
log "large blob, server side: $st"
sent=$(stat_field "$st" bytes)
assert_num "$sent" -ge "$BIG_SIZE" "server sent at least the blob size"
assert_num "$sent" -le $((BIG_SIZE * 105 / 100)) "server sent at most 1.05x the blob size"

done_ev=$(json_events "$OUT" blob_done | grep "$BIG" || true)
assert_eq "$BIG_SIZE" "$(printf '%s' "$done_ev" | jget - 'o["size"]')" "blob_done reports the blob's size"
leftover=$(find "$T/state" "$T/oci" -name '*.partial' 2>/dev/null | head -n 3)
assert_eq "" "$leftover" "no partial files left after success"

# Secrets stay secret.
assert_not_contains "$OUT$ERR" "$PASS" "password not in prepull's stdout/stderr"
assert_not_contains "$OUT$ERR" "$(printf 'alice:%s' "$PASS" | base64)" "basic credentials not in prepull's output"
assert_not_contains "$(cat "$T/logs/token.log")" "$PASS" "password not in the token server's log"

#!/usr/bin/env bash
# A token server that answers 503 now and then: token requests are retried like
# any registry request (Retry-After honoured, bounded), so neither the first
# token of a pull nor a renewal in the middle of one fails the pull.
#
# 1. The first two token requests of a pull get 503 with Retry-After: 1: the pull
#    succeeds, and it waited the two seconds it was told to.
# 2. Tokens the registry refuses ~5 s after their issue (JWT exp in the past, as in
#    test_token_renew) and a paced download that outlives them: the renewal's first
#    two token requests get 503; the pull still succeeds with every blob verified.
# 3. A token server that always answers 503: the pull fails after a bounded number
#    of tries, with a message naming the token request and the status.
# 4. One that asks for 60 s pauses: --deadline still stops the pull on time.
source "$(dirname "$0")/lib.sh"
need_prepull

PASS='retry-Secret-5150-pass'
REPO=private/retry
start_token_server --user "alice:$PASS" --expiry 60 --jwt-exp-offset -55
start_registry --token "$TOK_REALM" "$TOK_SERVICE" "$TOK_ISSUER" "$TOK_BUNDLE"
NP=$(free_port)
nginx_conf_proxy "$T/ngx" "$NP" "$REG_ADDR" 800k
start_nginx "$T/ngx/nginx.conf" "$NP"
TOK_BASE=http://127.0.0.1:$TOK_PORT

arm_failures() { # QUERY
  curl -sf -X POST "$TOK_BASE/_fail?$1" >/dev/null || fail "cannot arm the token server ($1)"
}
injected() { grep -c "token: injected" "$T/logs/token.log" || true; }

mkimage "$T/src" small --layer busybox:gzip
push_layout "$T/src" small "$REG_ADDR/$REPO:small" "alice:$PASS"
mkimage "$T/src" big --layer busybox:gzip --layer "random:zstd:24M:83"
push_layout "$T/src" big "$REG_ADDR/$REPO:big" "alice:$PASS"
BIG=$(img_field big 'o["platforms"]["linux/amd64"]["layers"][1]')
write_docker_config "$T/dc" "127.0.0.1:$NP" alice "$PASS"
export DOCKER_CONFIG=$T/dc

# ---- 1: the first token request fails twice
reset_log "$T/logs/token.log"
arm_failures "count=2&status=503&retry_after=1"
start=$(date +%s.%N)
prepull_ok "pull with two 503s from the token server first" \
  pull --store "oci:$T/oci1" --json "127.0.0.1:$NP/$REPO:small"
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
verify_layout "$T/oci1" small
assert_eq 2 "$(injected)" "the token server answered 503 twice"
assert_contains "$(cat "$T/logs/token.log")" "issued for user='alice' access=.*$REPO" "then it issued a token"
assert_contains "$ERR" "token request to http://127.0.0.1:$TOK_PORT/token: .*503.*retrying in 1\.0 s" \
  "prepull says it retries the token request, after the server's Retry-After"
awk -v e="$elapsed" 'BEGIN { exit !(e >= 2) }' || fail "the pull took ${elapsed}s: Retry-After: 1 (twice) not honoured"
ok "the pull took ${elapsed}s: it waited Retry-After twice"

# ---- 2: a renewal in the middle of a download fails twice
reset_log "$T/logs/token.log"
reset_log "$T/ngx/access.log"
# The pull's first token request goes through; the next two (the renewal once the
# registry refuses the first token) fail.
arm_failures "skip=1&count=2&status=503"
start=$(date +%s.%N)
prepull_ok "pull that outlives its token, with a renewal that gets 503 twice" \
  pull --store "oci:$T/oci2" --state-dir "$T/state2" --json -j 4 --chunk-size 2M "127.0.0.1:$NP/$REPO:big"
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
log "pull took ${elapsed}s"
verify_layout "$T/oci2" big
issued=$(grep -c "issued for user='alice' access=.*\"$REPO\"" "$T/logs/token.log" || true)
assert_num "$issued" -ge 2 "the token was renewed during the pull"
assert_eq 2 "$(injected)" "the renewal got 503 twice"
n401=$(grep -c "s=401 m=GET u=/v2/$REPO/blobs/$BIG" "$T/ngx/access.log" || true)
assert_num "$n401" -ge 1 "the registry refused the first token during the large blob's download"
assert_eq "" "$(find "$T/state2" "$T/oci2" -name '*.partial' 2>/dev/null | head -n 3)" "no partial files left"

# ---- 3: always 503: bounded
reset_log "$T/logs/token.log"
arm_failures "count=1000&status=503"
start=$(date +%s)
run_prepull pull --store "oci:$T/oci3" "127.0.0.1:$NP/$REPO:small"
took=$(($(date +%s) - start))
assert_eq 1 "$RC" "a token server that always answers 503: exit 1"
assert_contains "$ERR" "token request to http://127.0.0.1:$TOK_PORT/token: .*503" "the message names the token request and the status"
assert_eq 5 "$(injected)" "five token requests, then prepull gave up"
assert_num "$took" -le 30 "it gave up within 30 s (took ${took}s)"


# ---- 4: a long Retry-After does not outlast the deadline
reset_log "$T/logs/token.log"
arm_failures "count=1000&status=503&retry_after=60"
start=$(date +%s)
run_prepull pull --store "oci:$T/oci4" --deadline 3s "127.0.0.1:$NP/$REPO:small"
took=$(($(date +%s) - start))
assert_eq 3 "$RC" "token server asking for 60 s pauses, --deadline 3s: exit 3"
assert_num "$took" -le 10 "the deadline cut the token request's retry pause short (took ${took}s)"
assert_num "$(injected)" -le 2 "no further token request after the deadline"

assert_not_contains "$OUT$ERR" "$PASS" "password not in prepull's output"

#!/usr/bin/env bash
# An identity token (docker login with a token-based account) goes to the token
# server in the body of the OAuth2 refresh-token POST.  A 307 or 308 redirect to
# another host must not carry that body there; a redirect on the same server may.
#
# Token server A (the registry's realm, 127.0.0.1) redirects POSTs on demand; B is a
# second token server on another host name and port (localhost) that would accept
# the identity token, so without the refusal the pull would even succeed: B's log is
# what tells.
source "$(dirname "$0")/lib.sh"
need_prepull

IDTOK='idtok-Secret-6174-refresh'
REPO=private/idtok
start_token_server --user "alice:alice-pass" --refresh-token "$IDTOK:alice" --expiry 300
A=http://127.0.0.1:$TOK_PORT
BP=$(free_port)
bg token-b "$PY" "$IT_DIR/token_server.py" --port "$BP" --bind localhost --key "$T/token/key.pem" \
  --cert "$T/token/cert.pem" --issuer "$TOK_ISSUER" --service "$TOK_SERVICE" \
  --refresh-token "$IDTOK:alice" --expiry 300
wait_http "http://localhost:$BP/healthz" "$LAST_PID"
start_registry --token "$TOK_REALM" "$TOK_SERVICE" "$TOK_ISSUER" "$TOK_BUNDLE"

mkimage "$T/src" v1 --layer busybox:gzip
push_layout "$T/src" v1 "$REG_ADDR/$REPO:v1" "alice:alice-pass"
mkdir -p "$T/dc"
printf '{"auths":{"%s":{"identitytoken":"%s"}}}\n' "$REG_ADDR" "$IDTOK" >"$T/dc/config.json"
export DOCKER_CONFIG=$T/dc

redirect() { # URL STATUS
  curl -sf -X POST "$A/_redirect?to=$1&status=$2" >/dev/null || fail "cannot set the redirect"
}
posts_at_b() { grep -c "token: POST /token" "$T/logs/token-b.log" || true; }

# ---- the identity token works (no redirect): the premise
reset_log "$T/logs/token.log"
prepull_ok "pull with an identity token" pull --store "oci:$T/oci0" "$REG_ADDR/$REPO:v1"
verify_layout "$T/oci0" v1
assert_contains "$(cat "$T/logs/token.log")" "POST /token with fields .*'refresh_token'" "the token came from a refresh-token POST"
assert_contains "$(cat "$T/logs/token.log")" "issued for user='alice'" "issued to the identity token's user"

# ---- same server, 307 to another path: followed, the body goes along
reset_log "$T/logs/token.log"
redirect "$A/token2" 307
prepull_ok "pull with a same-server 307 of the refresh-token POST" pull --store "oci:$T/oci1" "$REG_ADDR/$REPO:v1"
verify_layout "$T/oci1" v1
assert_contains "$(cat "$T/logs/token.log")" "POST /token2 with fields .*'refresh_token'" "the POST was repeated at the redirect target on the same server"

# ---- another host: 307 and 308 are refused, B never sees the body
for status in 307 308; do
  reset_log "$T/logs/token.log"
  redirect "http://localhost:$BP/token" "$status"
  run_prepull pull --store "oci:$T/oci-$status" "$REG_ADDR/$REPO:v1"
  assert_eq 1 "$RC" "$status to another host: exit 1"
  assert_contains "$ERR" "redirected the refresh-token request to another host \(localhost:$BP\)" \
    "$status: the message says the request was redirected to another host"
  assert_contains "$(cat "$T/logs/token.log")" "POST redirected \($status\)" "$status: token server A redirected"
  assert_eq 0 "$(posts_at_b)" "$status: token server B on another host never got the POST"
  assert_not_contains "$OUT$ERR" "$IDTOK" "$status: identity token not in prepull's output"
done
assert_not_contains "$(cat "$T/logs/token-b.log")" "issued" "token server B issued nothing"

#!/usr/bin/env bash
# A registry reached over HTTPS whose Bearer realm is a plain http:// URL: the
# Basic credentials for the token request would cross the network in clear.
# prepull refuses with a clear error and sends the token server nothing.
# Anonymous token requests (nothing secret in them) still go there, and a
# plain-HTTP registry may use an http realm with credentials (they are in clear
# on its own connection anyway).
source "$(dirname "$0")/lib.sh"
need_prepull

PASS='realm-Secret-2718-pass'
make_ca "$T/pki" good
make_ca "$T/pki" bad
start_token_server --public public/img --user "alice:$PASS" --expiry 300
start_registry --token "$TOK_REALM" "$TOK_SERVICE" "$TOK_ISSUER" "$TOK_BUNDLE"
SP=$(free_port)
BP=$(free_port)
nginx_conf_tls "$T/ngx" "$SP" "$BP" "$REG_ADDR" 64m "$T/pki/good-server.pem" "$T/pki/good-server.key" \
  "$T/pki/bad-server.pem" "$T/pki/bad-server.key"
start_nginx "$T/ngx/nginx.conf" "$SP"
wait_http "https://127.0.0.1:$SP/v2/" "$NGINX_PID"
assert_contains "$TOK_REALM" "^http://" "the realm is plain http"

mkimage "$T/src" v1 --layer busybox:gzip
push_layout "$T/src" v1 "$REG_ADDR/private/img:v1" "alice:$PASS"
push_layout "$T/src" v1 "$REG_ADDR/public/img:v1" "alice:$PASS"
write_docker_config "$T/dc" "127.0.0.1:$SP" alice "$PASS"
write_docker_config "$T/dc-plain" "$REG_ADDR" alice "$PASS"
token_requests() { grep -c "GET /token" "$T/logs/token.log" || true; }

# ---- HTTPS registry, http realm, credentials: refused, nothing sent
reset_log "$T/logs/token.log"
DOCKER_CONFIG=$T/dc run_prepull pull --store "oci:$T/oci-tls" --ca-cert "$T/pki/good-ca.pem" \
  "127.0.0.1:$SP/private/img:v1"
assert_eq 1 "$RC" "https registry with an http realm and credentials: exit 1"
assert_contains "$ERR" "127.0.0.1:$SP is an https registry but its token server $TOK_REALM is plain http: not sending the credentials" \
  "the message says why the credentials were not sent"
assert_eq 0 "$(token_requests)" "the token server got no request at all"
assert_not_contains "$OUT$ERR" "$PASS" "password not in prepull's output"

# ---- the same registry, anonymous, public repository: allowed
reset_log "$T/logs/token.log"
prepull_ok "https registry with an http realm, anonymous pull of a public repository" \
  pull --store "oci:$T/oci-anon" --ca-cert "$T/pki/good-ca.pem" "127.0.0.1:$SP/public/img:v1"
verify_layout "$T/oci-anon" v1
assert_contains "$(cat "$T/logs/token.log")" "issued for user='' access=.*public/img" "an anonymous token was issued"

# ---- plain-HTTP registry, http realm, credentials: allowed
reset_log "$T/logs/token.log"
DOCKER_CONFIG=$T/dc-plain prepull_ok "plain-http registry with an http realm and credentials" \
  pull --store "oci:$T/oci-plain" "$REG_ADDR/private/img:v1"
verify_layout "$T/oci-plain" v1
assert_contains "$(cat "$T/logs/token.log")" "issued for user='alice' access=.*private/img" "a token was issued to alice"

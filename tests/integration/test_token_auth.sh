#!/usr/bin/env bash
# A registry with `auth: token` and our token server: anonymous pull of a public
# repository, a private one with credentials from config.json, and a clear failure
# for the private one without credentials.
source "$(dirname "$0")/lib.sh"
need_prepull

PASS='tok-Secret-4711-pass'
start_token_server --public public/img --user "alice:$PASS" --expiry 60 --counts-file "$T/token-counts.json"
start_registry --token "$TOK_REALM" "$TOK_SERVICE" "$TOK_ISSUER" "$TOK_BUNDLE"

# Prove the token server by hand: a token it issues opens the registry.
tok=$(curl -sf -u "alice:$PASS" "$TOK_REALM?service=$TOK_SERVICE&scope=repository:private/img:pull" | jget - 'o["token"]')
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" "http://$REG_ADDR/v2/")
assert_eq 200 "$code" "a token from the token server gets 200 from the registry"

mkimage "$T/src" v1 --layer busybox:gzip --layer random:zstd:1M:31
push_layout "$T/src" v1 "$REG_ADDR/public/img:v1" "alice:$PASS"
push_layout "$T/src" v1 "$REG_ADDR/private/img:v1" "alice:$PASS"
D=$(img_field v1 'o["digest"]')

# ---- anonymous, public repository
reset_log "$T/logs/token.log"
prepull_ok "anonymous pull of public/img" pull --store "oci:$T/oci-pub" --json "$REG_ADDR/public/img:v1"
verify_layout "$T/oci-pub" v1
assert_eq "$D" "$(index_entries "$T/oci-pub" | cut -d' ' -f1)" "public: index entry digest"
assert_contains "$(cat "$T/logs/token.log")" "issued for user='' access=.*public/img.*pull" "public: an anonymous pull token was issued"

# ---- private repository with credentials
write_docker_config "$T/dc" "$REG_ADDR" alice "$PASS"
reset_log "$T/logs/token.log"
DOCKER_CONFIG=$T/dc prepull_ok "private/img with credentials from config.json" pull --store "oci:$T/oci-priv" --json "$REG_ADDR/private/img:v1"
verify_layout "$T/oci-priv" v1
assert_contains "$(cat "$T/logs/token.log")" "issued for user='alice' access=.*private/img.*pull" "private: a token was issued to alice"
assert_not_contains "$OUT$ERR" "$PASS" "private: password not in prepull's output"

# ---- private repository without credentials
run_prepull pull --store "oci:$T/oci-anon" "$REG_ADDR/private/img:v1"
assert_eq 1 "$RC" "private/img without credentials exits 1"
assert_contains "$ERR" "private/img" "the message names the image"
assert_contains "$ERR" "auth|unauthori[sz]ed|denied|401|403|credential|insufficient" "the message says it is about authorization"

# ---- wrong credentials: the token server refuses
write_docker_config "$T/dc-bad" "$REG_ADDR" alice "nope"
DOCKER_CONFIG=$T/dc-bad run_prepull pull --store "oci:$T/oci-bad" "$REG_ADDR/private/img:v1"
assert_eq 1 "$RC" "wrong credentials exit 1"
assert_contains "$ERR" "auth|unauthori[sz]ed|denied|401|403|credential" "wrong credentials: message about authentication"

#!/usr/bin/env bash
# A registry with htpasswd Basic auth: credentials from $DOCKER_CONFIG/config.json
# (auths, and credHelpers), a clear error without them, and the password never shown.
source "$(dirname "$0")/lib.sh"
need_prepull

USER_=puller
PASS='Pw-9f3kQ-secret-xyzzy'
make_htpasswd "$T/htpasswd" "$USER_" "$PASS"
start_registry --htpasswd "$T/htpasswd"
mkimage "$T/src" v1 --layer busybox:gzip --layer random:zstd:1M:21
push_layout "$T/src" v1 "$REG_ADDR/private/img:v1" "$USER_:$PASS"
D=$(img_field v1 'o["digest"]')
REF=$REG_ADDR/private/img:v1
B64=$(printf '%s:%s' "$USER_" "$PASS" | base64 -w0)

no_secret() { # WHAT
  local all
  all="$OUT$ERR"
  assert_not_contains "$all" "$PASS" "$1: password not in prepull's output"
  assert_not_contains "$all" "$B64" "$1: base64 credentials not in prepull's output"
}

# ---- auths entry
write_docker_config "$T/dc-auths" "$REG_ADDR" "$USER_" "$PASS"
DOCKER_CONFIG=$T/dc-auths prepull_ok "pull with an auths entry" pull --store "oci:$T/oci" --state-dir "$T/state" --json "$REF"
verify_layout "$T/oci" v1
assert_eq "$D" "$(index_entries "$T/oci" | cut -d' ' -f1)" "index entry has the image digest"
no_secret "auths"
DOCKER_CONFIG=$T/dc-auths prepull_ok "pull again, verbose-free human output" pull --store "oci:$T/oci-h" "$REF"
no_secret "human output"
if grep -rqF -- "$PASS" "$T/state" "$T/oci" "$T/oci-h" 2>/dev/null; then
  fail "password written to the state dir or the layout"
fi
ok "password not written to the state dir or the layout"

# ---- credHelpers: docker-credential-NAME get reads the server on stdin
mkdir -p "$T/bin" "$T/dc-helper"
cat >"$T/bin/docker-credential-pptest" <<HELPER
#!/bin/sh
[ "\$1" = get ] || exit 1
read -r server
echo "\$server" >>"$T/helper-calls"
printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}\n' "\$server" "$USER_" "$PASS"
HELPER
chmod +x "$T/bin/docker-credential-pptest"
printf '{"credHelpers": {"%s": "pptest"}}\n' "$REG_ADDR" >"$T/dc-helper/config.json"
PATH=$T/bin:$PATH DOCKER_CONFIG=$T/dc-helper prepull_ok "pull with a credHelpers entry" pull --store "oci:$T/oci-helper" "$REF"
verify_layout "$T/oci-helper" v1
assert_contains "$(cat "$T/helper-calls" 2>/dev/null)" "$REG_ADDR" "the helper was asked for $REG_ADDR"
no_secret "credHelpers"

# ---- no credentials
DOCKER_CONFIG=$T/docker-empty run_prepull pull --store "oci:$T/oci-anon" "$REF"
assert_eq 1 "$RC" "without credentials: exit 1"
assert_contains "$ERR" "auth|unauthori[sz]ed|401|credential|denied" "without credentials: the message says it is about authentication"
assert_contains "$ERR" "private/img" "without credentials: the message names the image"
assert_eq "" "$(index_entries "$T/oci-anon" 2>/dev/null || true)" "without credentials: nothing registered in the layout"

# ---- wrong password
write_docker_config "$T/dc-wrong" "$REG_ADDR" "$USER_" "wrong-$PASS"
DOCKER_CONFIG=$T/dc-wrong run_prepull pull --store "oci:$T/oci-wrong" "$REF"
assert_eq 1 "$RC" "wrong password: exit 1"
assert_contains "$ERR" "auth|unauthori[sz]ed|401|credential|denied" "wrong password: the message says it is about authentication"
assert_not_contains "$OUT$ERR" "wrong-$PASS" "wrong password: not echoed"

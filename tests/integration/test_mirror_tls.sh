#!/usr/bin/env bash
# A mirror's own TLS settings from hosts.toml: an HTTPS mirror (nginx in front of the
# test registry) whose certificate is signed by a test CA, and a second port whose
# certificate no CA here vouches for.
#   - ca = "relative.pem" (relative to the hosts.toml's directory): the mirror is used,
#     its access log shows the blob requests, each with ?ns=;
#   - no ca: certificate verification fails, the mirror is passed over, the registry
#     serves (the mirror's log has no request at all: the handshake failed) and the
#     pull succeeds;
#   - skip_verify = true on the port with the unknown certificate: it is used;
#   - a header from [host."URL".header] reaches the mirror.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
mkimage "$T/src" v1 --layer random:gzip:1M:11 --layer random:gzip:1M:12
push_layout "$T/src" v1 "$REG_ADDR/test/tls:v1"
REF=$REG_ADDR/test/tls:v1

make_ca "$T/pki" a
make_ca "$T/pki" b
P=$(free_port)
BADP=$(free_port)
nginx_conf_tls "$T/ngx" "$P" "$BADP" "$REG_ADDR" 0 "$T/pki/a-server.pem" "$T/pki/a-server.key" \
  "$T/pki/b-server.pem" "$T/pki/b-server.key"
# Log the header hosts.toml sets, too.
sed -i 's/p=\$server_protocol/p=$server_protocol h=$http_x_mirror_test/' "$T/ngx/nginx.conf"
start_nginx "$T/ngx/nginx.conf" "$P" "$BADP"
GOOD_LOG=$T/ngx/access.log BAD_LOG=$T/ngx/bad.log

HOSTS=$T/certs.d
mkdir -p "$HOSTS/$REG_ADDR"
cp "$T/pki/a-ca.pem" "$HOSTS/$REG_ADDR/mirror-ca.pem"
hosts() { # EXTRA-LINES-FOR-THE-HOST [PORT]
  printf 'server = "http://%s"\n\n[host."https://127.0.0.1:%s"]\n  capabilities = ["pull", "resolve"]\n%s\n' \
    "$REG_ADDR" "${2:-$P}" "$1" >"$HOSTS/$REG_ADDR/hosts.toml"
}
blob_lines() { grep -c "u=/v2/test/tls/blobs/sha256:.*?ns=$REG_ADDR " "$1" || true; }

N=0
pull() {
  N=$((N + 1))
  prepull_ok "$1" pull --store "oci:$T/oci-$N" --state-dir "$T/state-$N" --hosts-dir "$HOSTS" -v "$REF"
  verify_layout "$T/oci-$N" v1
}

# ---- ca relative to the directory, and a header
hosts '  ca = "mirror-ca.pem"
[host."https://127.0.0.1:'"$P"'".header]
  X-Mirror-Test = "from-hosts-toml"'
pull "pull through an HTTPS mirror trusted by its hosts.toml ca"
assert_num "$(blob_lines "$GOOD_LOG")" -ge 2 "the mirror served the blobs, with ?ns="
assert_has "$(cat "$GOOD_LOG")" "h=from-hosts-toml" "the hosts.toml header reached the mirror"

# ---- no ca: the mirror is not trusted, the registry serves
: >"$GOOD_LOG"
hosts ''
pull "pull with an HTTPS mirror nobody vouches for"
assert_eq 0 "$(grep -c . "$GOOD_LOG" || true)" "the untrusted mirror got no request"
assert_contains "$ERR" "mirror 127.0.0.1:$P" "-v names the mirror passed over"

# ---- skip_verify: the unknown certificate is accepted
hosts '  skip_verify = true' "$BADP"
pull "pull through a mirror with skip_verify"
assert_num "$(blob_lines "$BAD_LOG")" -ge 2 "the skip_verify mirror served the blobs"

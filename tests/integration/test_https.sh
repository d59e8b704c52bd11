#!/usr/bin/env bash
# nginx with TLS + HTTP/2 in front of the registry, certificate from a test CA.
# --ca-cert makes it trusted; chunks of one blob travel on separate TCP connections,
# over HTTP/1.1 (not multiplexed onto one HTTP/2 connection); an untrusted certificate
# fails clearly.
#
# On loopback prepull tries HTTPS first and falls back to plain HTTP (as docker
# does for local registries), so the server is addressed as 127.0.0.1 here.
source "$(dirname "$0")/lib.sh"
need_prepull

HOST=127.0.0.1
IP=127.0.0.1
log "HTTPS host name $HOST -> $IP"

make_ca "$T/pki" good "$HOST"
make_ca "$T/pki" bad "$HOST"
start_registry
SP=$(free_port)
BP=$(free_port)
nginx_conf_tls "$T/ngx" "$SP" "$BP" "$REG_ADDR" 16m "$T/pki/good-server.pem" "$T/pki/good-server.key" \
  "$T/pki/bad-server.pem" "$T/pki/bad-server.key" "$IP"
start_nginx "$T/ngx/nginx.conf"
wait_http "https://$HOST:$SP/v2/" "$NGINX_PID"

v=$(curl -s -o /dev/null -w '%{http_version}' --cacert "$T/pki/good-ca.pem" "https://$HOST:$SP/v2/")
assert_eq 2 "$v" "the server speaks HTTP/2 (curl with the test CA)"

mkimage "$T/src" s1 --layer busybox:gzip --layer random:zstd:24M:61
push_layout "$T/src" s1 "$REG_ADDR/test/tls:s1"
BIG=$(img_field s1 'o["platforms"]["linux/amd64"]["layers"][1]')

REF=$HOST:$SP/test/tls:s1
prepull_ok "pull $REF with --ca-cert" pull --store "oci:$T/oci" --json --ca-cert "$T/pki/good-ca.pem" \
  --chunk-size 4M -j 6 "$REF"
verify_layout "$T/oci" s1
settle
st=$(log_stats "$T/ngx/access.log" "/blobs/$BIG\$")
log "large blob over TLS: $st"
assert_num "$(stat_field "$st" distinct_ranges)" -ge 3 "several Range requests for the large blob"
assert_num "$(stat_field "$st" conns)" -gt 1 "blob ranges on more than one TCP connection (not multiplexed)"
blob_lines=$(grep -F "/blobs/$BIG" "$T/ngx/access.log" || true)
assert_contains "$blob_lines" "p=HTTP/1.1" "blob ranges go over HTTP/1.1 (one range per connection: HTTP/2 framing would only cost CPU)"
assert_not_contains "$blob_lines" "p=HTTP/2.0" "no blob range went over HTTP/2"
assert_contains "$(grep -F "/manifests/" "$T/ngx/access.log" || true)" "p=HTTP/2.0" "registry API calls still negotiate HTTP/2"

# The image name holds "tls": match the message itself, with the URL it was about.
tls_re() { # PORT
  echo "TLS error talking to https://127\\.0\\.0\\.1:$1/v2/test/tls/manifests/s1: SSL certificate problem: .*--ca-cert FILE"
}

run_prepull pull --store "oci:$T/oci-noca" "$REF"
assert_eq 1 "$RC" "without --ca-cert: exit 1"
assert_contains "$ERR" "$(tls_re "$SP")" "without --ca-cert: the message is about the certificate/TLS"
assert_contains "$ERR" "test/tls" "without --ca-cert: the message names the image"

run_prepull pull --store "oci:$T/oci-bad" --ca-cert "$T/pki/good-ca.pem" "$HOST:$BP/test/tls:s1"
assert_eq 1 "$RC" "untrusted-CA server: exit 1"
assert_contains "$ERR" "$(tls_re "$BP")" "untrusted-CA server: the message is about the certificate/TLS"

prepull_ok "--insecure skips verification" pull --store "oci:$T/oci-insecure" --insecure "$HOST:$BP/test/tls:s1"
verify_layout "$T/oci-insecure" s1

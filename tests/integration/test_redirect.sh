#!/usr/bin/env bash
# Registry (Basic auth) behind nginx with a per-connection limit_rate; blob GETs are
# redirected (307) to a CDN-like server block. The pull follows the redirects, the CDN
# sees Range requests, and never receives the registry's Authorization header.
source "$(dirname "$0")/lib.sh"
need_prepull

USER_=cdnuser
PASS='redirect-Secret-55'
make_htpasswd "$T/htpasswd" "$USER_" "$PASS"
start_registry --htpasswd "$T/htpasswd"
NP=$(free_port)
CP=$(free_port)
nginx_conf_redirect "$T/ngx" "$NP" "$CP" "$REG_ADDR" "$REG_ROOT" 32m
start_nginx "$T/ngx/nginx.conf" "$NP" "$CP"

mkimage "$T/src" r1 --layer busybox:gzip --layer random:zstd:24M:51
push_layout "$T/src" r1 "$REG_ADDR/test/redir:r1" "$USER_:$PASS"
BIG=$(img_field r1 'o["platforms"]["linux/amd64"]["layers"][1]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")

# The front answers blob GETs with 307 only to authorised callers.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NP/v2/test/redir/blobs/$BIG")
assert_eq 401 "$code" "front: an unauthenticated blob GET gets 401"
code=$(curl -s -o /dev/null -w '%{http_code}' -u "$USER_:$PASS" "http://127.0.0.1:$NP/v2/test/redir/blobs/$BIG")
assert_eq 307 "$code" "front: an authenticated blob GET gets 307"
reset_log "$T/ngx/access.log"
reset_log "$T/ngx/cdn.log"

write_docker_config "$T/dc" "127.0.0.1:$NP" "$USER_" "$PASS"
REF=127.0.0.1:$NP/test/redir:r1
DOCKER_CONFIG=$T/dc prepull_ok "pull $REF via 307 redirects" \
  pull --store "oci:$T/oci" --json --chunk-size 4M -j 6 "$REF"
verify_layout "$T/oci" r1
settle

front=$(log_stats "$T/ngx/access.log")
cdn=$(log_stats "$T/ngx/cdn.log")
cdn_big=$(log_stats "$T/ngx/cdn.log" "/${BIG#sha256:}/data\$")
log "front: $front"
log "cdn:   $cdn"
assert_contains "$(stat_field "$front" status)" "307:" "front answered blob GETs with 307"
assert_num "$(stat_field "$cdn_big" distinct_ranges)" -ge 2 "CDN saw several Range requests for the large blob"
assert_num "$(stat_field "$cdn" auth)" -eq 0 "CDN never received an Authorization header"
assert_num "$(stat_field "$cdn_big" bytes)" -ge "$BIG_SIZE" "CDN served the whole large blob"
assert_num "$(stat_field "$cdn_big" bytes)" -le $((BIG_SIZE * 101 / 100)) "CDN served it about once (<= 1.01x)"
assert_not_contains "$OUT$ERR" "$PASS" "password not in prepull's output"

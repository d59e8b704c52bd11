#!/usr/bin/env bash
# A real pull-through cache: a second distribution registry in proxy mode
# (proxy: remoteurl:) in front of the test registry, configured for prepull the
# containerd way (hosts.toml in the "host_port_" directory, as containerd names it).
#   - the first pull goes through the cache: the image is valid, the cache's access
#     log shows the blobs, each request with ?ns=<the registry>, and the registry
#     (nginx in front of it logs what it serves) copied each layer to the cache for at
#     most two of prepull's requests, not one per chunk;
#   - the registry is stopped; a second pull (fresh state dir and store) still
#     succeeds, from the cache alone;
#   - with the cache stopped too, the pull fails (the registry is the last host, and
#     it is down): so the second pull really came from the cache.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer random:gzip:2M:7 --layer random:zstd:1M:8
push_layout "$T/src" v1 "$REG_ADDR/test/cached:v1"
LAYERS=($(img_field v1 '" ".join(o["platforms"]["linux/amd64"]["layers"])'))
REG_PID0=$REG_PID
# The registry as the cache and prepull see it: nginx in front of it, whose access
# log counts what the registry served.
NP=$(free_port)
nginx_conf_proxy "$T/ngx" "$NP" "$REG_ADDR" 0
start_nginx "$T/ngx/nginx.conf" "$NP"
UP_ADDR=127.0.0.1:$NP UP_PID=$NGINX_PID UP_LOG=$T/ngx/access.log
# Whole-blob GETs (no Range): the cache's copies.  prepull's own requests to the
# registry, a source of the blob's chunks beside the cache, always carry a Range.
gets() { grep -c "m=GET u=/v2/test/cached/blobs/$1 r=- " "$UP_LOG" || true; }

# The cache: the distribution registry with proxy.remoteurl, its access log on.
CACHE_ROOT=$T/cache
mkdir -p "$CACHE_ROOT"
_TRIES=0
while :; do
  CACHE_PORT=$(free_port)
  CACHE_ADDR=127.0.0.1:$CACHE_PORT
  cat >"$T/cache.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $CACHE_ROOT
http:
  addr: $CACHE_ADDR
  secret: prepull-test-secret
proxy:
  remoteurl: http://$UP_ADDR
EOF
  bg cache docker-registry serve "$T/cache.yml"
  CACHE_PID=$LAST_PID
  _wait_ours "http://$CACHE_ADDR/v2/" "$CACHE_PID" && break
  _started_again "cache" "$CACHE_PID" || fail "the cache died at start-up: $(tail -n 3 "$T/logs/cache.log")"
done
log "pull-through cache on $CACHE_ADDR (pid $CACHE_PID)"
CACHE_LOG=$T/logs/cache.log

# containerd's name for host:port directories is host_port_.
HOSTS=$T/certs.d
DIR=$HOSTS/${UP_ADDR%:*}_${UP_ADDR##*:}_
mkdir -p "$DIR"
cat >"$DIR/hosts.toml" <<EOF
server = "http://$UP_ADDR"

[host."http://$CACHE_ADDR"]
  capabilities = ["pull", "resolve"]
EOF

REF=$UP_ADDR/test/cached:v1
prepull_ok "first pull through the cache" pull --store "oci:$T/oci-1" --state-dir "$T/state-1" \
  --hosts-dir "$HOSTS" -j 8 --chunk-size 256K "$REF"
verify_layout "$T/oci-1" v1
CONFIG=$(img_field v1 'o["platforms"]["linux/amd64"]["config"]')
CONFIG_GETS=$(gets "$CONFIG")
assert_num "$CONFIG_GETS" -ge 1 "the cache fetched the config from the registry"
for l in "${LAYERS[@]}"; do
  assert_has "$(cat "$CACHE_LOG")" "/v2/test/cached/blobs/$l?ns=$UP_ADDR" "the cache was asked for layer ${l:7:12}, with ?ns="
  # The cache copies a blob it lacks from the registry for every request that asks
  # for it meanwhile, ignoring Range (two GETs per request here: one to serve, one to
  # store, as the config, asked for once, shows).  prepull sends a mirror one request
  # per blob until it answers one with a range, and one that ignores Range is left
  # alone for a backoff while the registry carries the blob: at most two copies
  # reach the registry, not one per chunk (8 chunks, -j 8).
  n=$(gets "$l")
  assert_num "$n" -le $((2 * CONFIG_GETS)) "the registry served layer ${l:7:12} for at most two requests"
done
assert_has "$(cat "$CACHE_LOG")" "/v2/test/cached/manifests/v1?ns=$UP_ADDR" "the tag was resolved at the cache"

# ---- the registry goes away; the cache still serves the image
kill "$UP_PID" "$REG_PID0"
wait "$UP_PID" "$REG_PID0" 2>/dev/null || true
curl -s -o /dev/null --max-time 2 "http://$UP_ADDR/v2/" && fail "the registry still answers"
prepull_ok "second pull, registry stopped, from the cache" pull --store "oci:$T/oci-2" \
  --state-dir "$T/state-2" --hosts-dir "$HOSTS" -j 4 "$REF"
verify_layout "$T/oci-2" v1

# ---- and with the cache gone too, nothing is left to pull from
kill "$CACHE_PID"
wait "$CACHE_PID" 2>/dev/null || true
run_prepull pull --store "oci:$T/oci-3" --state-dir "$T/state-3" --hosts-dir "$HOSTS" \
  --give-up-after 2s "$REF"
assert_eq 1 "$RC" "with the registry and the cache down the pull fails"

#!/usr/bin/env bash
# A real pull-through cache: a second distribution registry in proxy mode
# (proxy: remoteurl:) in front of the test registry, configured for prepull the
# containerd way (hosts.toml in the "host_port_" directory, as containerd names it).
#   - the first pull goes through the cache: the image is valid, the cache's access
#     log shows the blobs, each request with ?ns=<the registry>;
#   - the registry is stopped; a second pull (fresh state dir and store) still
#     succeeds, from the cache alone;
#   - with the cache stopped too, the pull fails (the registry is the last host, and
#     it is down): so the second pull really came from the cache.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
UP_ADDR=$REG_ADDR UP_PID=$REG_PID
mkimage "$T/src" v1 --layer busybox:gzip --layer random:gzip:2M:7 --layer random:zstd:1M:8
push_layout "$T/src" v1 "$UP_ADDR/test/cached:v1"
LAYERS=($(img_field v1 '" ".join(o["platforms"]["linux/amd64"]["layers"])'))

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
  --hosts-dir "$HOSTS" -j 4 "$REF"
verify_layout "$T/oci-1" v1
for l in "${LAYERS[@]}"; do
  assert_has "$(cat "$CACHE_LOG")" "/v2/test/cached/blobs/$l?ns=$UP_ADDR" "the cache was asked for layer ${l:7:12}, with ?ns="
done
assert_has "$(cat "$CACHE_LOG")" "/v2/test/cached/manifests/v1?ns=$UP_ADDR" "the tag was resolved at the cache"

# ---- the registry goes away; the cache still serves the image
kill "$UP_PID"
wait "$UP_PID" 2>/dev/null || true
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

#!/usr/bin/env bash
# fleet-sim: a fleet of prepull agents pulling one image at the same moment, with and
# without a cache between them and the registry (by hand, a benchmark, not a test;
# needs root):
#   bash scripts/fleet-sim.sh [--agents 1,4,8] [--caches none,distribution,nginx]
#        [--size 256M] [--uplink 400mbit] [--jobs 8] [--slice 4m] [--timeout 600]
#        [--prepull PATH] [-- PREPULL_PULL_ARGS...]
#   (--caches also takes distribution+wait and nginx+wait; 16 agents: --agents 1,4,8,16)
#
# The network (network namespaces this script creates, private addresses only; nothing
# leaves them):
#   pfNNN-reg   the "registry" namespace: a bridge (10.231.0.1) that every other
#               namespace is joined to by a veth pair; the cache listens here
#   pfNNN-up    the upstream registry (docker-registry, 10.231.0.2:5000) behind its
#               uplink: an htb class capping its egress at --uplink (default 400mbit
#               = 50 MB/s; tc units: mbit megabits, mbps megabytes). The class's byte
#               counter is the upstream egress the table reports (wire bytes: MTU 9000,
#               so headers add under 1%)
#   pfNNN-aK    agent K (10.231.0.(10+K)); uncapped, like the cache
# Caches (a fresh one for every row, empty):
#   none          agents pull from the upstream directly
#   distribution  docker-registry with `proxy: remoteurl:` (10.231.0.1:5001)
#   nginx         nginx proxy_cache + slice (--slice) + proxy_cache_lock (10.231.0.1:5002)
#   CACHE+wait    that cache, and each agent first asks it for one byte of every layer
#                 (curl; again after 0.5, 1, 2, 4, 8, 8... s, each wait jittered
#                 down to half; up to 2 min per layer) until it answers 206 (it
#                 has the layer, or serves ranges of it), then runs prepull: the
#                 emulation that prepull's own wait (--cache-fill wait, the default
#                 now) was modelled on; `-- --cache-fill bypass` gives agents that
#                 do not wait (the wait counts in the agent's time)
# Agents reach a cache with `--mirror 10.231.0.2:5000=http://CACHE` (prepull asks the
# mirror first, the upstream after it). Every agent: `prepull pull --store oci:DIR
# --state-dir DIR -j JOBS`, its own empty temp dirs; all are released at once (one
# FIFO line each) and each times itself from its release to its exit.
#
# The image (tests/integration/mkimage.py): busybox (gzip) + one --size layer of random
# bytes (uncompressed tar, so nothing is spent compressing it). Reported per row:
# upstream egress / image bytes, the upstream's blob GETs (its access log), agent time
# p50 / p99 (nearest rank: p99 is the slowest agent below 100 agents), failed agents,
# and the load average when the row ended (the machine may be shared).
#
# Only processes this script started are stopped (by PID; then any process still in
# one of its namespaces); its namespaces, with their veths and bridge, are removed on
# any exit. Environment: PREPULL (binary; default build/prepull), KEEP_TMP=1.
set -euo pipefail

AGENTS=1,4,8
CACHES=none,distribution,nginx
SIZE=256M
UPLINK=400mbit
JOBS=8
SLICE=4m
RUN_TIMEOUT=600
EXTRA=()

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}
while [ $# -gt 0 ]; do
  case $1 in
  --agents) AGENTS=$2; shift 2 ;;
  --caches) CACHES=$2; shift 2 ;;
  --size) SIZE=$2; shift 2 ;;
  --uplink) UPLINK=$2; shift 2 ;;
  --jobs) JOBS=$2; shift 2 ;;
  --slice) SLICE=$2; shift 2 ;;
  --timeout) RUN_TIMEOUT=$2; shift 2 ;;
  --prepull) PREPULL=$2; shift 2 ;;
  --) shift; EXTRA=("$@"); break ;;
  -h | --help) usage 0 ;;
  *) echo "fleet-sim.sh: unknown option $1" >&2; usage 2 >&2 ;;
  esac
done
[[ $AGENTS =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "fleet-sim.sh: --agents N[,N...]" >&2; exit 2; }
IFS=, read -r -a AGENT_LIST <<<"$AGENTS"
IFS=, read -r -a CACHE_LIST <<<"$CACHES"
MAX_AGENTS=0
for n in "${AGENT_LIST[@]}"; do
  if [ "$n" -lt 1 ] || [ "$n" -gt 200 ]; then echo "fleet-sim.sh: 1 to 200 agents" >&2; exit 2; fi
  [ "$n" -gt "$MAX_AGENTS" ] && MAX_AGENTS=$n
done
for c in "${CACHE_LIST[@]}"; do
  case $c in none | distribution | distribution+wait | nginx | nginx+wait) ;; *) echo "fleet-sim.sh: unknown cache $c" >&2; exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "fleet-sim.sh: needs root" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${PREPULL:=$ROOT/build/prepull}"
PREPULL=$(readlink -f "$PREPULL")
export PREPULL PREPULL_SRC=$ROOT
# The test harness: temp dir $T, mkimage, PID bookkeeping (bg, PIDS); its EXIT trap is
# replaced by ours.
# shellcheck source=/dev/null
source "$ROOT/tests/integration/lib.sh"
log() { echo "# $*" >&2; }
T0=$(date +%s)
say() { printf '# [%5ds] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
# div, bytes_of
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

PFX=pf$$
REG_NS=$PFX-reg
UP_NS=$PFX-up
NSES=() # every namespace this script created
BR_IP=10.231.0.1
UP_IP=10.231.0.2
UP_ADDR=$UP_IP:5000
MTU=9000

_fleet_cleanup() {
  local rc=$? pid ns
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  # Anything still inside a namespace of ours was started by us (a child that
  # outlived its parent): by PID, then the namespace goes with its veths.
  for ns in "${NSES[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns delete "$ns" 2>/dev/null
  done
  rm -rf "$T/src" "$T/upstream" "$T/run"
  if [ "$rc" -ne 0 ]; then
    echo "fleet-sim.sh: failed (rc=$rc); logs in $T" >&2
    _dump_logs >&2
  elif [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "# logs kept in $T" >&2
  else
    rm -rf "$T"
  fi
  exit "$rc"
}
trap _fleet_cleanup EXIT

in_ns() { # NS CMD...
  local ns=$1
  shift
  nsenter --net="/run/netns/$ns" -- "$@"
}

# ---------------------------------------------------------------- requirements
need_prepull
for c in docker-registry nginx skopeo curl nsenter ip tc; do
  command -v "$c" >/dev/null || fail "$c is not installed (scripts/deps.sh --test)"
done
nginx -V 2>&1 | grep -q -- --with-http_slice_module || fail "this nginx has no slice module"
SIZE_B=$(bytes_of "$SIZE")
need=$((SIZE_B * (MAX_AGENTS + 4)))
avail=$(($(df -Pk "$T" | awk 'NR==2{print $4}') * 1024))
[ "$avail" -gt "$need" ] || fail "need about $((need >> 20)) MiB free in $T, have $((avail >> 20)) MiB"

# ---------------------------------------------------------------- the network
mkns() {
  ip netns add "$1" || fail "cannot create namespace $1"
  NSES+=("$1")
  ip -n "$1" link set lo up
}
mkns "$REG_NS"
ip -n "$REG_NS" link add br0 type bridge
ip -n "$REG_NS" link set br0 mtu $MTU up
ip -n "$REG_NS" addr add $BR_IP/24 dev br0
# join NS IP: a veth pair, NAME-b on the bridge, eth0 in NS with IP.
join() {
  local ns=$1 ip=$2 port=$3
  ip -n "$REG_NS" link add "$port" mtu $MTU type veth peer name eth0 netns "$ns" mtu $MTU
  ip -n "$REG_NS" link set "$port" master br0 up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
}
mkns "$UP_NS"
join "$UP_NS" "$UP_IP" up-b
# The upstream's uplink: everything it sends leaves through this one class.
ip netns exec "$UP_NS" tc qdisc add dev eth0 root handle 1: htb default 10
ip netns exec "$UP_NS" tc class add dev eth0 parent 1: classid 1:10 htb rate "$UPLINK" ceil "$UPLINK" \
  burst 256k cburst 256k quantum 60000
up_bytes() {
  ip netns exec "$UP_NS" tc -s class show dev eth0 classid 1:10 | awk '$1 == "Sent" { print $2; exit }'
}
for k in $(seq 1 "$MAX_AGENTS"); do
  mkns "$PFX-a$k"
  join "$PFX-a$k" "10.231.0.$((10 + k))" "a$k-b"
done
say "namespaces: $REG_NS (bridge, caches), $UP_NS (upstream, uplink $UPLINK), $PFX-a1..a$MAX_AGENTS"

# ---------------------------------------------------------------- the upstream and the image
UP_LOG=$T/logs/upstream.log
mkdir -p "$T/upstream" "$T/run"
cat >"$T/upstream.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $T/upstream
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $UP_ADDR
  secret: prepull-fleet-secret
EOF
bg upstream nsenter --net="/run/netns/$UP_NS" -- docker-registry serve "$T/upstream.yml"
UP_PID=$LAST_PID
wait_ns_http() { # NS URL PID
  for _ in $(seq 1 100); do
    kill -0 "$3" 2>/dev/null || fail "the server for $2 died at start-up"
    in_ns "$1" curl -s -o /dev/null --max-time 2 "$2" && return 0
    sleep 0.1
  done
  fail "$2 not ready after 10 s"
}
wait_ns_http "$REG_NS" "http://$UP_ADDR/v2/" "$UP_PID"

say "building the image: busybox + $SIZE random (uncompressed tar)"
mkimage "$T/src" v1 --layer busybox:gzip --layer "random:none:$SIZE:4242"
IMG_BYTES=$(img_field v1 'o["bytes"]')
REF=$UP_ADDR/fleet/img:v1
in_ns "$REG_NS" skopeo copy --quiet --dest-tls-verify=false --preserve-digests --dest-no-creds \
  "oci:$T/src:v1" "docker://$REF" >"$T/logs/skopeo.log" 2>&1 ||
  fail "push to the upstream failed: $(tail -n 3 "$T/logs/skopeo.log")"
read -r -a LAYERS <<<"$(img_field v1 '" ".join(o["platforms"]["linux/amd64"]["layers"])')"
rm -rf "$T/src"
say "image $REF: $IMG_BYTES bytes ($((IMG_BYTES >> 20)) MiB) in all blobs"

# ---------------------------------------------------------------- caches
CACHE_PID=""
start_cache() { # KIND DIR -> sets CACHE_PID, MIRROR
  local kind=$1 d=$2
  mkdir -p "$d"
  case $kind in
  none) MIRROR="" ;;
  distribution)
    cat >"$d/cache.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $d/root
http:
  addr: $BR_IP:5001
  secret: prepull-fleet-secret
proxy:
  remoteurl: http://$UP_ADDR
EOF
    bg cache-distribution nsenter --net="/run/netns/$REG_NS" -- docker-registry serve "$d/cache.yml"
    CACHE_PID=$LAST_PID
    wait_ns_http "$REG_NS" "http://$BR_IP:5001/v2/" "$CACHE_PID"
    MIRROR=http://$BR_IP:5001
    ;;
  nginx)
    mkdir -p "$d/tmp" "$d/cache"
    # Blob GETs are cut into --slice pieces, each cached under the blob's path (no
    # ?ns=) and its range; a miss taken by one request holds the others for that
    # piece (proxy_cache_lock) until it is in the cache, however long that takes.
    # Everything else (tags, manifests) goes through uncached.
    cat >"$d/nginx.conf" <<EOF
$(_nginx_user)
worker_processes 2;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  default_type application/octet-stream;
  sendfile on;
  keepalive_requests 10000;
  log_format pp 's=\$status m=\$request_method u=\$uri r=\$http_range b=\$body_bytes_sent c=\$upstream_cache_status';
  proxy_cache_path $d/cache levels=1:2 keys_zone=blobs:16m max_size=100g inactive=1h use_temp_path=off;
  upstream upstream_registry { server $UP_ADDR; keepalive 64; }
  server {
    listen $BR_IP:5002;
    access_log $d/access.log pp;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_read_timeout 600s;
    location ~ "^/v2/.+/blobs/sha256:[0-9a-f]{64}\$" {
      slice $SLICE;
      proxy_cache blobs;
      proxy_cache_key \$uri\$slice_range;
      proxy_set_header Range \$slice_range;
      proxy_cache_valid 200 206 1h;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 10m;
      proxy_cache_lock_age 10m;
      proxy_pass http://upstream_registry;
    }
    location / {
      proxy_pass http://upstream_registry;
    }
  }
}
EOF
    in_ns "$REG_NS" nginx -t -q -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$T/logs/nginx-t.log" 2>&1 ||
      fail "nginx config invalid: $(cat "$T/logs/nginx-t.log")"
    bg cache-nginx nsenter --net="/run/netns/$REG_NS" -- nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf"
    CACHE_PID=$LAST_PID
    wait_ns_http "$REG_NS" "http://$BR_IP:5002/v2/" "$CACHE_PID"
    MIRROR=http://$BR_IP:5002
    ;;
  esac
}
stop_cache() {
  [ -n "$CACHE_PID" ] || return 0
  kill "$CACHE_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$CACHE_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$CACHE_PID" 2>/dev/null || true
  wait "$CACHE_PID" 2>/dev/null || true
  _forget_pid "$CACHE_PID"
  CACHE_PID=""
}

# Upstream egress stops moving: a cache may still be filling after its clients left.
settle_upstream() {
  local a b
  b=$(up_bytes)
  for _ in $(seq 1 60); do
    sleep 1
    a=$b
    b=$(up_bytes)
    [ "$a" = "$b" ] && break
  done
  echo "$b"
}

# ---------------------------------------------------------------- one row
ROWS=()
run_row() { # N CACHE
  local n=$1 cache=$2 d=$T/run/$2-$1 k pids=() b0 b1 g0 g1 l0 fails=0 rc s e tlist=()
  rm -rf "$d"
  mkdir -p "$d"
  start_cache "${cache%+wait}" "$d/cache"
  local mirror=() probes="" l
  [ -n "$MIRROR" ] && mirror=(--mirror "$UP_ADDR=$MIRROR")
  # +wait: each agent first asks the cache for one byte of every layer, backing off
  # (see the top), until it answers 206: the cache has the layer. What prepull could
  # do towards a cache that fills a blob whole before it serves ranges. Every probe
  # the distribution proxy cannot serve from its disk starts one more upstream copy,
  # cut off when curl hangs up: probing often steals the uplink from the fill.
  if [ "${cache%+wait}" != "$cache" ]; then
    for l in "${LAYERS[@]}"; do probes+=" $MIRROR/v2/fleet/img/blobs/$l?ns=$UP_ADDR"; done
  fi
  rm -f "$d/go"
  mkfifo "$d/go"
  exec 9<>"$d/go"
  for k in $(seq 1 "$n"); do
    mkdir -p "$d/a$k"
    # Released by one line on the FIFO; times itself from then to its exit.
    # shellcheck disable=SC2016 # expanded by the agent's shell
    nsenter --net="/run/netns/$PFX-a$k" -- env XDG_CACHE_HOME="$d/a$k/xdg" PROBES="$probes" bash -c '
      read -r _ <"$1"; s=$EPOCHREALTIME
      for u in $PROBES; do
        w=250 waited=0
        while [ "$waited" -lt 120000 ]; do
          [ "$(curl -s -r 0-0 --max-filesize 1 -o /dev/null -w "%{http_code}" "$u")" = 206 ] && break
          [ "$w" -lt 8000 ] && w=$((w * 2))
          j=$((w / 2 + RANDOM % (w / 2)))
          sleep "$((j / 1000)).$(printf %03d $((j % 1000)))"
          waited=$((waited + j))
        done
      done
      timeout -k 10 "$2" "$3" pull --plain-http --store "oci:$4/oci" --state-dir "$4/state" \
        -j "$5" "${@:6}" >"$4/out" 2>"$4/err" </dev/null
      rc=$?; echo "$rc $s $EPOCHREALTIME" >"$4/result"' _ \
      "$d/go" "$RUN_TIMEOUT" "$PREPULL" "$d/a$k" "$JOBS" "${mirror[@]}" "${EXTRA[@]}" "$REF" &
    pids+=($!)
    PIDS+=($!)
  done
  sleep 0.5
  b0=$(settle_upstream)
  g0=$(grep -c '"GET /v2/[^ ]*/blobs/' "$UP_LOG" || true)
  l0=$(wc -l <"$UP_LOG")
  printf '\n%.0s' $(seq 1 "$n") >&9
  for k in "${!pids[@]}"; do
    wait "${pids[$k]}" 2>/dev/null || true
    _forget_pid "${pids[$k]}"
  done
  exec 9>&-
  b1=$(settle_upstream)
  g1=$(grep -c '"GET /v2/[^ ]*/blobs/' "$UP_LOG" || true)
  tail -n "+$((l0 + 1))" "$UP_LOG" >"$T/logs/upstream-$cache-$n.log"
  stop_cache
  for k in $(seq 1 "$n"); do
    rc=1 s=0 e=0
    [ -f "$d/a$k/result" ] && read -r rc s e <"$d/a$k/result"
    if [ "$rc" -ne 0 ] || [ "${KEEP_TMP:-0}" = 1 ]; then
      cp "$d/a$k/err" "$T/logs/$cache-$n-a$k.err" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ]; then
      fails=$((fails + 1))
      continue
    fi
    for l in "${LAYERS[@]}"; do
      [ -f "$d/a$k/oci/blobs/sha256/${l#sha256:}" ] || { fails=$((fails + 1)); continue 2; }
    done
    tlist+=("$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }')")
  done
  local p50 p99 ratio load
  read -r p50 p99 < <(printf '%s\n' "${tlist[@]}" | sort -n | awk '{ t[NR] = $1 }
    END { if (NR == 0) { print "- -"; exit }
          i = int(NR * 0.5); if (i < NR * 0.5) i++; j = int(NR * 0.99); if (j < NR * 0.99) j++
          printf "%.1f %.1f\n", t[i], t[j] }')
  ratio=$(div "$((b1 - b0))" "$IMG_BYTES")
  load=$(cut -d' ' -f1 /proc/loadavg)
  ROWS+=("| $cache | $n | $ratio | $((g1 - g0)) | $p50 | $p99 | $fails | $load |")
  say "$cache, $n agents: upstream sent $(((b1 - b0) >> 20)) MiB = ${ratio}x the image, $((g1 - g0)) blob GETs there; p50 $p50 s, p99 $p99 s; $fails failed; load $load"
  rm -rf "$d"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for n in "${AGENT_LIST[@]}"; do
  for c in "${CACHE_LIST[@]}"; do
    run_row "$n" "$c"
  done
done

# ---------------------------------------------------------------- report
echo
echo "Fleet: busybox + $SIZE random layer ($IMG_BYTES bytes in all blobs); upstream uplink $UPLINK;"
echo "agents -j $JOBS${EXTRA[*]:+ ${EXTRA[*]}}; nginx slice $SLICE; load average at start $LOAD0 ($(nproc) CPUs);"
echo "prepull $("$PREPULL" --version 2>&1 | head -n 1)."
echo
echo "| cache | agents | upstream egress / image | upstream blob GETs | agent p50 s | agent p99 s | failed | load |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"

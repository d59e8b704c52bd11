#!/usr/bin/env bash
# A far registry: 100 ms round trip (tests/tools/latency_proxy.c) in front of nginx,
# every TCP connection capped at 8 MB/s (scripts/netsim.sh), all inside a network
# namespace of the test's own.  The lanes must stay busy across the round trip: per
# connection, the idle time between one request's end and the next one's start stays
# under 10% of the time the connection spends serving requests — measured from the
# server's log (nginx: $connection, $msec at the end, $request_time), not from
# prepull's own accounting.  Prints the measured ratio.  Then a pull without -j: the
# automatic count starts higher for a registry that far (its round trip, from -v).
#
# Needs root (a network namespace); runs itself again inside the namespace it makes.
set -euo pipefail
SRC=${PREPULL_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
RTT_MS=${FAR_RTT_MS:-100}
RATE=${FAR_RATE:-64mbit} # 8 MB/s per connection
BLOB=${FAR_BLOB:-160M}
JOBS=${FAR_JOBS:-4}
MAX_IDLE=${FAR_MAX_IDLE:-0.10}

if [ -z "${FAR_NETNS:-}" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "FAIL: test_far_registry cannot run here: needs root (a network namespace)"
    exit 1
  fi
  # shellcheck source=scripts/netsim.sh
  source "$SRC/scripts/netsim.sh"
  NS=ppfar-$$
  netsim_create "$NS" --rate "$RATE" || { echo "FAIL: test_far_registry: netsim create failed"; exit 1; }
  trap 'netsim_destroy "$NS"' EXIT
  set +e
  netsim_exec "$NS" env FAR_NETNS="$NS" PREPULL_SRC="$SRC" bash "$0" "$@"
  exit $?
fi

source "$(dirname "$0")/lib.sh"
source "$PREPULL_SRC/tests/tools/latency.sh"
# shellcheck source=scripts/netsim.sh
source "$PREPULL_SRC/scripts/netsim.sh"
need_prepull
NS=$FAR_NETNS

start_registry
mkimage "$T/src" far --layer busybox:gzip --layer "random:none:$BLOB:83"
push_layout "$T/src" far "$REG_ADDR/test/far:far"
BIG=$(img_field far 'o["platforms"]["linux/amd64"]["layers"][1]')

NP=$(free_port)
D=$T/ngx
mkdir -p "$D/tmp"
{
  _nginx_head "$D"
  cat <<EOF
  # Per request: its connection, the time its log line is written (the end), how long
  # it took (from the request's first byte read), the bytes of the body sent.
  log_format far 'c=\$connection end=\$msec rt=\$request_time b=\$body_bytes_sent s=\$status '
                 'm=\$request_method u=\$request_uri r=\$http_range';
  server {
    # A small send buffer, so a request ends in the log when its last bytes leave for
    # the wire, not 4 MB (half a second) earlier into an autotuned buffer: that
    # would count the drain as idle time.
    listen 127.0.0.1:$NP sndbuf=64k;
    access_log $D/access.log far;
    location / {
$(_nginx_proxy_location "$REG_ADDR" 0)
    }
  }
}
EOF
} >"$D/nginx.conf"
start_nginx "$D/nginx.conf" "$NP"
netsim_cap "$NS" "$NP" || fail "cannot cap nginx's port $NP"
start_latency_proxy far-rtt "127.0.0.1:$NP" $((RTT_MS / 2))

t0=$(date +%s.%N)
prepull_ok "pull through ${RTT_MS} ms RTT, $RATE per connection, -j $JOBS" \
  pull -v --plain-http --store "oci:$T/oci" -j "$JOBS" "$LP_ADDR/test/far:far"
el=$(elapsed_since "$t0")
verify_layout "$T/oci" far
settle 0.5

# Busy and idle time per connection, from the server's log (the big blob's GETs).
"$PY" - "$D/access.log" "/blobs/$BIG" >"$T/idle.txt" <<'EOF'
import sys
path, want = sys.argv[1], sys.argv[2]
per = {}
for line in open(path):
    kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
    if kv.get("m") != "GET" or want not in kv.get("u", "") or kv.get("s") not in ("200", "206"):
        continue
    end, rt = float(kv["end"]), float(kv["rt"])
    per.setdefault(kv["c"], []).append((end - rt, end, int(kv["b"])))
busy = idle = 0.0
nbytes = nreq = 0
for c, reqs in sorted(per.items(), key=lambda x: int(x[0])):
    reqs.sort()
    b = sum(e - s for s, e, _ in reqs)
    i = sum(max(0.0, reqs[k + 1][0] - reqs[k][1]) for k in range(len(reqs) - 1))
    busy += b
    idle += i
    nbytes += sum(x for _, _, x in reqs)
    nreq += len(reqs)
    print("conn %s: %d requests, %d bytes, busy %.2f s, idle between requests %.2f s" % (
        c, len(reqs), sum(x for _, _, x in reqs), b, i))
print("TOTAL conns=%d requests=%d bytes=%d busy=%.3f idle=%.3f ratio=%.4f" % (
    len(per), nreq, nbytes, busy, idle, idle / busy if busy > 0 else 0))
EOF
sed 's/^/# /' "$T/idle.txt"
tot=$(tail -n 1 "$T/idle.txt")
field() { sed -E "s/.* $1=([^ ]*).*/\1/" <<<"$tot"; }
size=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
ratio=$(field ratio)
echo "# far registry (${RTT_MS} ms RTT, $RATE per connection, -j $JOBS, $BLOB blob): pull $el s;" \
  "idle / busy = $ratio over $(field conns) connections, $(field requests) requests"

assert_num "$(field bytes)" -ge "$size" "the server sent the whole blob ($(field bytes) of $size bytes)"
assert_num "$(field conns)" -ge 2 "the blob came over several connections ($(field conns))"
awk -v b="$(field busy)" -v e="$el" -v n="$(field conns)" 'BEGIN { exit !(b > 0 && b <= e * n) }' ||
  fail "busy time $(field busy) s does not fit $(field conns) connections in a pull of $el s"
awk -v r="$ratio" -v m="$MAX_IDLE" 'BEGIN { exit !(r < m) }' ||
  fail "lanes idle between requests for $ratio of their busy time at ${RTT_MS} ms RTT (limit $MAX_IDLE)"
ok "lanes idle between requests for $ratio of their busy time at ${RTT_MS} ms RTT (< $MAX_IDLE)"

# Without -j, the automatic count starts from the registry's round trip (its manifest
# and config requests): 8 x RTT / 25 ms, at most half of --max-connections (64), so 32
# here where a near registry starts at 8.
prepull_ok "pull through ${RTT_MS} ms RTT without -j" \
  pull -v --plain-http --store "oci:$T/oci2" --state-dir "$T/state2" "$LP_ADDR/test/far:far"
verify_layout "$T/oci2" far
start=$(grep -m1 "lanes: the registry answers in" <<<"$ERR" || true)
[ -n "$start" ] || fail "-v does not say where the automatic count started"
log "$start"
ms=$(sed -E 's/.*answers in ([0-9]+) ms.*/\1/' <<<"$start")
n=$(sed -E 's/.*starting at ([0-9]+) connections.*/\1/' <<<"$start")
assert_num "$ms" -ge $((RTT_MS * 9 / 10)) "the round trip seen is at least the proxy's ($ms ms)"
assert_num "$ms" -le $((RTT_MS * 4)) "the round trip seen is not far past the proxy's ($ms ms)"
assert_num "$n" -ge 24 "the count started at $n connections, far above 8"
assert_num "$n" -le 32 "the count started at $n connections, at most half of 64"

#!/usr/bin/env bash
# The latency model (tests/tools/latency_proxy.c) in front of nginx: a request
# through it at 100 ms round trip takes at least that long (and a new connection one
# round trip more, for the TCP handshake), but not much longer; the bytes arrive
# intact, also through a delay line smaller than the file (bounded buffering) and for
# connections running at the same time (which must overlap, not queue).
source "$(dirname "$0")/lib.sh"
source "$PREPULL_SRC/tests/tools/latency.sh"

command -v nginx >/dev/null || cannot_run "nginx is not installed (scripts/deps.sh --test)"

mkdir -p "$T/www" "$T/ngx/tmp"
head -c $((24 << 20)) /dev/urandom >"$T/www/blob"
echo hello >"$T/www/small"
NP=$(free_port)
{
  _nginx_head "$T/ngx"
  cat <<EOF
  server {
    listen 127.0.0.1:$NP;
    access_log $T/ngx/access.log pp;
    root $T/www;
  }
}
EOF
} >"$T/ngx/nginx.conf"
start_nginx "$T/ngx/nginx.conf" "$NP"

# 50 ms each way: 100 ms round trip.
start_latency_proxy lp "127.0.0.1:$NP" 50
LP=$LP_ADDR
start_latency_proxy lp-nc "127.0.0.1:$NP" 50 --no-connect-rtt
NC=$LP_ADDR
start_latency_proxy lp-small "127.0.0.1:$NP" 50 --queue-bytes 65536
SMALL=$LP_ADDR

# time_starttransfer and time_total of one GET (seconds).
timed_get() { # URL OUT
  curl -sS -o "$2" -w '%{time_starttransfer} %{time_total}\n' "$1"
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# Direct, for reference: well under a millisecond or so.
read -r st tt < <(timed_get "http://127.0.0.1:$NP/small" "$T/direct")
log "direct: first byte after $st s"

# The fastest of three: a busy machine only ever adds time, so the
# upper bound (less than two round trips: nothing is delayed twice) is
# judged on the least disturbed sample.
st=
for _ in 1 2 3; do
  read -r s1 tt < <(timed_get "http://$NC/small" "$T/nc")
  log "no connect RTT: first byte after $s1 s, total $tt s"
  ge "$s1" 0.100 || fail "a request at 100 ms RTT answered after $s1 s (< 0.100)"
  if [ -z "$st" ] || lt "$s1" "$st"; then st=$s1; fi
done
lt "$st" 0.195 || fail "a request at 100 ms RTT answered after $st s at best (>= 0.195: delayed too much)"
ok "one request at 100 ms RTT takes one round trip ($st s)"
assert_eq hello "$(cat "$T/nc")" "the small answer came through intact"

read -r st tt < <(timed_get "http://$LP/small" "$T/lp")
log "with the handshake's RTT: first byte after $st s"
ge "$st" 0.200 || fail "a new connection's first answer after $st s (< 0.200: the handshake's RTT missing)"
lt "$st" 0.280 || fail "a new connection's first answer after $st s (>= 0.280)"
ok "a new connection pays one round trip more for the handshake ($st s)"

# Two requests on one connection: the second costs one round trip, no handshake.
out=$(curl -sS -o "$T/k1" -o "$T/k2" -w '%{time_starttransfer} %{num_connects}\n' \
  "http://$NC/small" "http://$NC/small")
second=$(sed -n 2p <<<"$out")
assert_eq 0 "$(cut -d' ' -f2 <<<"$second")" "the second request reused the connection"
st=$(cut -d' ' -f1 <<<"$second")
ge "$st" 0.100 || fail "the second request on a connection answered after $st s (< 0.100)"
ok "a request on a kept connection still takes a round trip ($st s)"

read -r st tt < <(timed_get "http://$LP/blob" "$T/big")
cmp -s "$T/www/blob" "$T/big" || fail "24 MiB through the proxy differ from the file"
ok "24 MiB through the proxy arrive intact (total $tt s)"

# A 64 KiB delay line lets at most 64 KiB be read per 50 ms: 1 MiB takes >= 0.8 s
# (the default 8 MiB line: about one round trip), and arrives intact.
head -c $((1 << 20)) "$T/www/blob" >"$T/www/mib"
read -r st tt2 < <(timed_get "http://$SMALL/mib" "$T/mib-small")
cmp -s "$T/www/mib" "$T/mib-small" || fail "1 MiB through a 64 KiB delay line differs from the file"
ge "$tt2" 0.6 || fail "1 MiB through a 64 KiB delay line took $tt2 s: the queue bound does not pace reads"
ok "a 64 KiB delay line keeps the bytes intact and paces the sender ($tt2 s for 1 MiB)"

# Eight new connections at once, each two round trips to its first byte: together
# they take about as long as one (queued one after another: 1.6 s).
t0=$(date +%s.%N)
pids=()
for i in $(seq 1 8); do
  curl -sS -o "$T/par-small-$i" "http://$LP/small" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a parallel GET through the proxy failed"; done
el=$(elapsed_since "$t0")
ge "$el" 0.2 || fail "8 parallel requests took $el s (< 0.2: no delay?)"
lt "$el" 1.0 || fail "8 parallel requests took $el s: the connections did not overlap"
ok "parallel connections overlap ($el s for 8 requests of 0.2 s each)"

# And carry bytes intact at the same time.
pids=()
for i in $(seq 1 8); do
  curl -sS -o "$T/par-$i" "http://$LP/blob" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a parallel GET through the proxy failed"; done
for i in $(seq 1 8); do
  cmp -s "$T/www/blob" "$T/par-$i" || fail "parallel GET $i: bytes differ"
done
ok "8 parallel 24 MiB GETs through the proxy arrive intact"
kill -0 "$LP_PID" || fail "the proxy died"

# Closed connections are closed on both sides and forgotten: the proxy holds only its
# listening socket and epoll (and stdio) again.
proxy_sockets() { find "/proc/$LP_PID/fd" -lname 'socket:*' 2>/dev/null | wc -l; }
one_socket() { [ "$(proxy_sockets)" -le 1 ]; }
wait_until 5 one_socket || fail "the proxy still holds $(proxy_sockets) sockets after every client left"
ok "the proxy closed both sides of every finished connection"

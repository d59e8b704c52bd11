#!/usr/bin/env bash
# TLS session sharing: every connection of a run after the first resumes a TLS
# session (an abbreviated handshake) instead of negotiating a new one, as the
# server sees it ($ssl_session_reused in nginx's log); -v counts the same
# connections and handshakes ("connections opened N, TLS handshakes N (M resumed)"),
# never more handshakes than connections.  nginx speaks TLS 1.3 and keeps a session
# cache, as production fronts do (without it, 2-4 of 7 connections opened at the same
# instant got full handshakes here; not traced further).
source "$(dirname "$0")/lib.sh"
need_prepull

make_ca "$T/pki" good
start_registry
SP=$(free_port)
D=$T/ngx
mkdir -p "$D/tmp"
{
  _nginx_head "$D"
  cat <<NGX
  log_format tls 'c=\$connection sr=\$ssl_session_reused m=\$request_method u=\$request_uri s=\$status';
  server {
    listen 127.0.0.1:$SP ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:PPTLS:1m;
    ssl_certificate $T/pki/good-server.pem;
    ssl_certificate_key $T/pki/good-server.key;
    access_log $D/access.log tls;
    location / {
$(_nginx_proxy_location "$REG_ADDR" 0)
    }
  }
}
NGX
} >"$D/nginx.conf"
start_nginx "$D/nginx.conf" "$SP"

mkimage "$T/src" s1 --layer busybox:gzip --layer random:zstd:16M:71
push_layout "$T/src" s1 "$REG_ADDR/test/tlsresume:s1"

# Small chunks and a short keep-alive pool make many new connections: -j 4 and a
# chunk per request, 1 MiB each.
prepull_ok "pull over TLS with -v" pull -v --store "oci:$T/oci" --ca-cert "$T/pki/good-ca.pem" \
  --chunk-size 1M -j 4 "127.0.0.1:$SP/test/tlsresume:s1"
verify_layout "$T/oci" s1
settle

# Per TCP connection (nginx's $connection) whether its TLS session was resumed.
read -r conns full resumed < <(awk '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
    if (!(v["c"] in seen)) { seen[v["c"]] = 1; n++; if (v["sr"] == "r") r++; else f++ }
  } END { print n + 0, f + 0, r + 0 }' "$D/access.log")
log "server: $conns TLS connections, $full full handshakes, $resumed resumed"
assert_num "$conns" -ge 4 "the run opened several TLS connections ($conns)"
# Idle, one full handshake of 7; under a loaded CI run up to 4 of 7 were
# full (connections the engine opens at one instant, before any session is
# stored).  Without the share every one is full: that is what this guards.
assert_num "$full" -le $((conns - 3)) "connections after the first resume its TLS session ($full full of $conns)"
assert_num "$resumed" -ge 3 "at least three connections resume a session ($resumed of $conns)"

line=$(grep -E 'connections opened [0-9]+, TLS handshakes [0-9]+ \([0-9]+ resumed\)' <<<"$ERR" | tail -n 1)
[ -n "$line" ] || fail "-v prints no connection/handshake count: $(tail -n 5 <<<"$ERR")"
log "prepull -v: ${line#*] }"
c=$(sed -E 's/.*connections opened ([0-9]+).*/\1/' <<<"$line")
h=$(sed -E 's/.*TLS handshakes ([0-9]+).*/\1/' <<<"$line")
r=$(sed -E 's/.*\(([0-9]+) resumed\).*/\1/' <<<"$line")
assert_num "$h" -le "$c" "no more TLS handshakes ($h) than connections ($c)"
assert_num "$h" -ge "$conns" "every connection the server logged counted as a handshake ($h >= $conns)"
assert_eq "$full" "$((h - r))" "full handshakes counted by prepull match the server's"

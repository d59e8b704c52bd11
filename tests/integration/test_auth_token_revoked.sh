#!/usr/bin/env bash
# A token that has been working for a while is then refused with a 401 whose
# challenge carries no error="invalid_token" (a revoked token, a rotated signing
# key, a registry that does not say why).  A fresh token can be had, so the blob
# must not fail: prepull drops the refused token and fetches a new one.  A token
# refused at once (access denied) still fails quickly and clearly.
#
# In front of the token-auth registry sits a small proxy (below) that paces
# responses and refuses any bearer token it first saw more than REVOKE seconds
# ago, with a bare challenge.  REVOKE is longer than prepull's window for "a new
# token refused at once means denied" (5 s), shorter than the pull.
source "$(dirname "$0")/lib.sh"
need_prepull

PASS='revoke-Secret-1414-pass'
REPO=private/revoked
REVOKE=${REVOKE_SECONDS:-6}
RATE=${REVOKE_RATE:-262144} # bytes/s per response

cat >"$T/revoke_proxy.py" <<'EOF'
import http.client, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, upstream, revoke, rate, realm, service = sys.argv[1:7]
revoke, rate = float(revoke), int(rate)
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
first_seen, lock = {}, threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("proxy: " + (fmt % args) + "\n")

    def do_HEAD(self):
        self.forward()

    def do_GET(self):
        self.forward()

    def forward(self):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            with lock:
                t0 = first_seen.setdefault(auth[7:], time.time())
            if time.time() - t0 > revoke:
                repo = self.path.split("/")[2:4]
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                sys.stderr.write("proxy: revoked token refused for %s\n" % self.path)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="%s",service="%s",scope="repository:%s:pull"'
                                 % (realm, service, "/".join(repo)))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                return
        conn = http.client.HTTPConnection(upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, headers=headers)
        r = conn.getresponse()
        body = r.read() if self.command != "HEAD" else b""
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", r.getheader("Content-Length") if self.command == "HEAD"
                         else str(len(body)))
        self.end_headers()
        conn.close()
        start = time.time()
        for off in range(0, len(body), 16384):
            self.wfile.write(body[off:off + 16384])
            ahead = (off + 16384) / rate - (time.time() - start)
            if ahead > 0:
                time.sleep(ahead)

srv = ThreadingHTTPServer(("127.0.0.1", int(port)), H)
srv.daemon_threads = True
sys.stderr.write("proxy: listening on %s\n" % port)
srv.serve_forever()
EOF

start_token_server --user "alice:$PASS" --expiry 300
start_registry --token "$TOK_REALM" "$TOK_SERVICE" "$TOK_ISSUER" "$TOK_BUNDLE"
PP=$(free_port)
bg proxy "$PY" "$T/revoke_proxy.py" "$PP" "$REG_ADDR" "$REVOKE" "$RATE" "$TOK_REALM" "$TOK_SERVICE"
wait_http "http://127.0.0.1:$PP/v2/" "$LAST_PID"

mkimage "$T/src" v1 --layer busybox:gzip --layer "random:zstd:5M:97"
push_layout "$T/src" v1 "$REG_ADDR/$REPO:v1" "alice:$PASS"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][1]')
D=$(img_field v1 'o["digest"]')

# ---- a token refused after it worked for a while: a new one is fetched
write_docker_config "$T/dc" "127.0.0.1:$PP" alice "$PASS"
reset_log "$T/logs/token.log"
reset_log "$T/logs/proxy.log"
start=$(date +%s.%N)
DOCKER_CONFIG=$T/dc prepull_ok "pull through tokens revoked ${REVOKE}s after their first use" \
  pull --store "oci:$T/oci" --state-dir "$T/state" --json -j 2 --chunk-size 1M "127.0.0.1:$PP/$REPO:v1"
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
log "pull took ${elapsed}s"
verify_layout "$T/oci" v1
assert_eq "$D" "$(index_entries "$T/oci" | cut -d' ' -f1)" "index entry digest"
revoked=$(grep -ac "revoked token refused" "$T/logs/proxy.log" || true)
assert_num "$revoked" -ge 1 "the proxy refused a token that had worked for ${REVOKE}s, without invalid_token"
assert_contains "$(grep -a "revoked token refused" "$T/logs/proxy.log")" "/blobs/$BIG" "the refusal hit the large blob's download"
issued=$(grep -c "issued for user='alice' access=.*\"$REPO\"" "$T/logs/token.log" || true)
assert_num "$issued" -ge 2 "prepull fetched a new token after the refusal"
assert_num "$issued" -le $((revoked + 1)) "one new token per refusal at most"
assert_not_contains "$ERR" "denied access" "no 'denied access' for a token that had been working"

# ---- a token refused at once still means "denied", quickly
reset_log "$T/logs/token.log"
start=$(date +%s)
run_prepull pull --store "oci:$T/oci-anon" "127.0.0.1:$PP/$REPO:v1"
assert_eq 1 "$RC" "anonymous pull of the private repository: exit 1"
assert_contains "$ERR" "denied access to $REPO" "it says access was denied"
anon=$(grep -c "issued for user=''" "$T/logs/token.log" || true)
assert_num "$anon" -le 2 "few token requests before giving up ($anon)"
assert_num "$(($(date +%s) - start))" -le 10 "and it gave up quickly"
assert_not_contains "$OUT$ERR" "$PASS" "password not in prepull's output"

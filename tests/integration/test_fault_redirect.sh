#!/usr/bin/env bash
# Redirects and authentication going stale mid-download (tests/integration/faultserver.py
# in front of a real registry):
#  - blob GETs answered by 307 to a URL on the fault server that works once and then
#    answers 403 (an expiring signed URL): prepull must go back to the registry for a
#    new URL and finish with a verified blob, fetching each byte about once;
#  - bearer auth (the fault server issues tokens at /_token) and, mid-download, a 401
#    with error="invalid_token" that also revokes every token: prepull must get a new
#    token and finish;
#  - Basic auth (credentials from config.json) and a 401 mid-download: prepull either
#    retries and finishes, or fails with exit 1 and a clear line; nothing wrong committed.
source "$(dirname "$0")/lib.sh"
need_prepull

CHUNK=2M
CONNS=4
start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer random:none:16M:61
push_layout "$T/src" v1 "$REG_ADDR/test/redir:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][1]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
D=$(img_field v1 'o["digest"]')

expect_recovered() { # WHAT STORE
  assert_eq 0 "$RC" "$1: the pull succeeds"
  verify_layout "$2" v1
  assert_eq "$D" "$(index_entries "$2" | cut -d' ' -f1)" "$1: index entry has the image digest"
  cmp -s "$2/blobs/sha256/${BIG#sha256:}" "$T/src/blobs/sha256/${BIG#sha256:}" ||
    fail "$1: committed blob differs from the pushed one"
  ok "$1: committed blob is byte-identical to the pushed one"
}

# ---- expiring redirect targets
start_faultserver
fs_rules "{\"rules\": [{\"path\": \"^/v2/.*/blobs/$BIG\$\", \"fault\": \"redirect\", \"uses\": 1, \"count\": -1}]}"
fs_reset_log
run_prepull pull --store "oci:$T/oci-r" --state-dir "$T/state-r" -j "$CONNS" --chunk-size "$CHUNK" "$FS_ADDR/test/redir:v1"
settle
expect_recovered "expiring redirect URLs" "$T/oci-r"
redirects=$(fs_query 'sum(1 for r in L if r["path"].startswith("/v2/") and r["path"].endswith(A[0]) and r["status"] == 307)' "$BIG")
expired=$(fs_query 'sum(1 for r in L if r["path"].startswith("/_cdn/") and r["status"] == 403)')
cdn_bytes=$(fs_query 'sum(r["bytes"] for r in L if r["path"].startswith("/_cdn/") and r["status"] in (200, 206))')
log "redirects: $redirects, expired-URL answers: $expired, bytes from redirect targets: $cdn_bytes"
assert_num "$redirects" -ge 2 "the registry was asked again for a redirect"
assert_num "$expired" -ge 1 "prepull did reuse a redirect URL that had expired (403)"
# After each 403 from a redirect target, the next request for that chunk goes to the registry.
back=$(fs_query 'all(any(q["t"] >= r["t_end"] and q["path"].startswith("/v2/") and q["range"] == r["range"] for q in L) for r in L if r["path"].startswith("/_cdn/") and r["status"] == 403)')
assert_eq True "$back" "after every 403 from a redirect target, the chunk was asked for at the registry"
assert_num "$cdn_bytes" -ge "$BIG_SIZE" "the redirect targets served the whole blob"
assert_num "$cdn_bytes" -le $((BIG_SIZE * 101 / 100)) "each byte was served about once (<= 1.01x)"
ERR_R=$ERR
assert_not_contains "$ERR_R" "error" "expiring redirects: no error printed"
kill "$FS_PID"
wait "$FS_PID" 2>/dev/null || true
_forget_pid "$FS_PID"

# ---- bearer tokens revoked mid-download
start_faultserver --auth bearer
code=$(curl -s -o /dev/null -w '%{http_code}' "$FS_URL/v2/")
assert_eq 401 "$code" "bearer mode: /v2/ without a token gets 401"
fs_rules "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"unauth\", \"skip\": 3, \"count\": 1}]}"
fs_reset_log
run_prepull pull --store "oci:$T/oci-b" --state-dir "$T/state-b" -j "$CONNS" --chunk-size "$CHUNK" "$FS_ADDR/test/redir:v1"
settle
expect_recovered "token revoked mid-download" "$T/oci-b"
assert_eq 1 "$(fs_applied)" "the mid-download 401 was sent"
issued=$(fs_tokens_issued)
log "tokens issued: $issued"
assert_num "$issued" -ge 2 "prepull asked for a new token after the 401"
sent=$(fs_blob_bytes "$BIG")
assert_num "$sent" -le $((BIG_SIZE * 11 / 10)) "token renewal: bytes served for the blob <= 1.1x"
kill "$FS_PID"
wait "$FS_PID" 2>/dev/null || true
_forget_pid "$FS_PID"

# ---- Basic auth and a 401 mid-download
start_faultserver --auth basic:fsuser:fs-Secret-77
write_docker_config "$T/dc" "$FS_ADDR" fsuser fs-Secret-77
fs_rules "{\"rules\": [{\"path\": \"$BIG\", \"fault\": \"unauth\", \"skip\": 3, \"count\": 1}]}"
fs_reset_log
DOCKER_CONFIG=$T/dc run_prepull pull --store "oci:$T/oci-basic" --state-dir "$T/state-basic" -j "$CONNS" --chunk-size "$CHUNK" "$FS_ADDR/test/redir:v1"
settle
assert_eq 1 "$(fs_applied)" "basic: the mid-download 401 was sent"
if [ "$RC" -eq 0 ]; then
  expect_recovered "basic auth, 401 mid-download" "$T/oci-basic"
else
  assert_eq 1 "$RC" "basic auth, 401 mid-download: exit 1 when not retried"
  errl=$(printf '%s\n' "$ERR" | grep -i "error" | grep -F "test/redir" | grep -F "${BIG:7:12}" || true)
  assert_ne "" "$errl" "basic auth, 401 mid-download: one error line names the image and the blob"
  assert_store_clean "$T/oci-basic" "basic auth, 401 mid-download"
  assert_no_index_entry "$T/oci-basic" "basic auth, 401 mid-download"
fi
assert_not_contains "$OUT$ERR" "fs-Secret-77" "basic: the password is not printed"

# ---- a redirect target answers 401 with a challenge of its own (registry on Basic auth).
# Following it would send the registry's credentials to the token realm the target names;
# prepull must take it as a plain 401 from the redirect target, and ask no realm.
CONFIG=$(img_field v1 'o["platforms"]["linux/amd64"]["config"]')
fs_rules '{"rules": []}'
fs_canned "{\"routes\": {
  \"/v2/test/redir/blobs/$CONFIG\": {\"status\": 307, \"headers\": {\"Location\": \"http://$FS_ADDR/elsewhere/config\"}},
  \"/elsewhere/config\": {\"status\": 401, \"headers\": {\"WWW-Authenticate\": \"Bearer realm=\\\"http://$FS_ADDR/steal/token\\\",service=\\\"elsewhere\\\"\"}},
  \"/steal/token\": {\"status\": 200, \"content_type\": \"application/json\", \"body\": \"{\\\"token\\\": \\\"stolen\\\"}\"}}}"
fs_reset_log
DOCKER_CONFIG=$T/dc run_prepull pull --store "oci:$T/oci-steal" --state-dir "$T/state-steal" "$FS_ADDR/test/redir:v1"
settle
assert_num "$(fs_query 'sum(1 for r in L if r["path"] == "/elsewhere/config")')" -ge 1 "challenge: the redirect target was asked for the config"
assert_eq 0 "$(fs_query 'sum(1 for r in L if r["path"].startswith("/steal/"))')" "challenge: the realm a redirect target named was never asked (no credentials sent there)"
assert_eq 1 "$RC" "challenge: exit 1"
assert_contains "$ERR" "401" "challenge: the error says 401"
assert_not_contains "$OUT$ERR" "fs-Secret-77" "challenge: the password is not printed"

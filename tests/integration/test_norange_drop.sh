#!/usr/bin/env bash
# A server that ignores Range and drops every connection mid-body (faultserver.py
# "norange" with "after": 200 with the whole blob, reset after 1 MiB). The blob cannot
# be resumed there, so each broken stream starts it over; that is bounded: a backoff
# between restarts, and the give-up rule (--give-up-after 5s: bytes fetched again are
# not progress). Exit 1 within 5 s to one backoff later, one line naming the image, the
# blob and why, a bounded number of requests, nothing committed. With the fault gone,
# the next run completes.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
mkimage "$T/src" v1 --layer random:none:3M:171
push_layout "$T/src" v1 "$REG_ADDR/test/norange:v1"
BLOB=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
D=$(img_field v1 'o["digest"]')
start_faultserver
fs_rules "{\"rules\": [{\"path\": \"$BLOB\", \"fault\": \"norange\", \"after\": 1048576, \"count\": -1}]}"
ARGS=(pull --store "oci:$T/oci" --state-dir "$T/state" -j 4 --chunk-size 1M "$FS_ADDR/test/norange:v1")

t0=$(date +%s.%N)
start_prepull_bg "${ARGS[@]}" --give-up-after 5s
wait_prepull 60
secs=$(elapsed_since "$t0")
log "exit $RC after ${secs}s"
assert_eq 1 "$RC" "Range ignored and every stream broken: exit 1"
# The give-up comes at the first failure 5 s after the last progress: after a backoff
# of up to 8 s and a request that may crawl under a loaded sanitizer build.
assert_num "$(awk -v s="$secs" 'BEGIN { print (s >= 5 && s < 40) }')" -eq 1 "gave up after ${secs}s (--give-up-after 5s)"
errl=$(printf '%s\n' "$ERR" | grep -i "error" | grep -F "test/norange" | grep -F "${BLOB:7:12}" || true)
assert_ne "" "$errl" "one error line names the image and the blob"
assert_contains "$errl" "ignores Range" "the error says the server ignores Range"
assert_contains "$ERR" "starting it over in [0-9.]+ s" "each restart waits (backoff)"
settle
n=$(fs_query 'sum(1 for r in L if r["path"].endswith(A[0]))' "$BLOB")
log "$n requests for the blob"
# Each broken stream costs two requests (the stream from 0, then a Range request the
# server answers with 200 from 0); backoff 0.5 s doubling: a handful in ~5-16 s.
assert_num "$n" -le 30 "bounded requests for the blob ($n)"
assert_num "$n" -ge 4 "the blob was retried before giving up ($n requests)"
[ ! -e "$T/oci/blobs/sha256/${BLOB#sha256:}" ] || fail "the blob was committed"
ok "the blob was not committed"
assert_store_clean "$T/oci" "Range ignored"
assert_no_index_entry "$T/oci" "Range ignored"

fs_rules '{"rules": []}'
prepull_ok "with the fault gone, the next run completes" "${ARGS[@]}"
verify_layout "$T/oci" v1
assert_eq "$D" "$(index_entries "$T/oci" | cut -d' ' -f1)" "index entry has the image digest"

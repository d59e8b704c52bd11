#!/usr/bin/env bash
# The docker store against a real (private) dockerd with the classic image store:
# after `prepull pull --store docker:SOCK`, `docker run --pull=never` starts the image
# with the registry gone; the image ID is the config digest; a second run loads
# nothing; a missing tag is put back without a load; --store auto picks docker.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dockerd.sh"
need_prepull
# The interpreter itself, not a version-manager shim: these tests call Python often.
PY=$("$PY" -c 'import sys; print(sys.executable)' 2>/dev/null || echo "$PY")

start_registry
start_dockerd

mkimage "$T/src" v1 --layer busybox:gzip --layer file:gzip:/etc/motd=hello-from-prepull \
  --layer random:gzip:1M:7 --label docker-basic
push_layout "$T/src" v1 "$REG_ADDR/test/dk:v1"
# Through the fault server (no faults): it counts what each run was sent.
start_faultserver
REF=$FS_ADDR/test/dk:v1
CONFIG=$(img_field v1 'o["platforms"]["linux/amd64"]["config"]')
STATE=$T/state

# ---- first pull: loaded
t0=$(docker_now)
prepull_ok "pull $REF into docker:$DOCKER_SOCK" pull --store "docker:$DOCKER_SOCK" \
  --state-dir "$STATE" --json "$REF"
assert_json_lines "$OUT" "--json stdout is one JSON event per line"
assert_eq "prepull: store docker:$DOCKER_SOCK" "$(printf '%s\n' "$ERR" | head -n 1)" \
  "first line names the store"
assert_contains "$ERR" "loaded into docker as ${CONFIG:0:19}" "stderr says the image was loaded"
assert_eq "1 0" "$(json_events "$OUT" summary | jget - '"%d %d" % (o["images"], o["failed"])')" \
  "summary: 1 image, 0 failed"
t1=$(docker_now)
assert_eq "$CONFIG" "$("${DOCKER[@]}" image inspect --format '{{.Id}}' "$REF")" \
  "docker image inspect: ID is the config digest"
ev=$(docker_image_events "$t0" "$t1")
log "events of the first run: ${ev//$'\n'/; }"
assert_contains "$ev" "^load " "the daemon saw one load"
assert_eq "" "$(find "$STATE/docker/blobs/sha256" -type f)" \
  "blobs of the loaded image removed from the state dir"

# ---- second run: nothing loaded, nothing fetched
blob_get_bytes() { # [EXCEPT_DIGEST]
  fs_query 'sum(r["bytes"] for r in L if r["method"] == "GET" and "/blobs/" in r["path"] and not (A and r["path"].endswith(A[0])))' "$@"
}
settle
assert_num "$(blob_get_bytes)" -gt 1048576 "first run: the server sent the blobs"
fs_reset_log
t0=$(docker_now)
prepull_ok "second pull of $REF" pull --store "docker:$DOCKER_SOCK" --state-dir "$STATE" \
  --json "$REF"
t1=$(docker_now)
assert_contains "$ERR" "already in docker as ${CONFIG:0:19}; nothing to load" \
  "second run: stderr says it is already there"
assert_eq 0 "$(json_events "$OUT" summary | jget - 'o["fetched"]')" "second run: 0 bytes fetched"
settle
# The config (under 1 KiB) is read again to check the image; no layer byte is sent.
assert_eq 0 "$(blob_get_bytes "$CONFIG")" "second run: the server sent no layer byte"
assert_num "$(fs_blob_bytes "$CONFIG")" -le "$(stat -c %s "$T/src/blobs/sha256/${CONFIG#sha256:}")" \
  "second run: at most the config, once"
assert_eq "" "$(json_events "$OUT" blob_done)" "second run: no blob downloaded"
assert_contains "$(json_events "$OUT" image_done)" "$REF" "second run: image_done"
assert_eq "" "$(docker_image_events "$t0" "$t1")" "second run: no image event at all in the daemon"

# ---- the tag is gone but the image is there: tagged again, not loaded
"${DOCKER[@]}" tag "$REF" keep/other:x
"${DOCKER[@]}" rmi "$REF" >/dev/null
t0=$(docker_now)
prepull_ok "pull after the tag was removed" pull --store "docker:$DOCKER_SOCK" \
  --state-dir "$STATE" "$REF"
t1=$(docker_now)
ev=$(docker_image_events "$t0" "$t1")
assert_contains "$ERR" "tagged $REF" "stderr says the tag was put back"
assert_contains "$ev" "^tag " "the daemon saw a tag event"
assert_not_contains "$ev" "load " "and no load"
assert_eq "$CONFIG" "$("${DOCKER[@]}" image inspect --format '{{.Id}}' "$REF")" \
  "tag points at the image again"

# ---- --store auto chooses docker when its socket answers (DOCKER_HOST)
"${DOCKER[@]}" rmi "$REF" keep/other:x >/dev/null
DOCKER_HOST=unix://$DOCKER_SOCK prepull_ok "pull with --store auto" pull --state-dir "$STATE" "$REF"
assert_eq "prepull: store docker:$DOCKER_SOCK" "$(printf '%s\n' "$ERR" | head -n 1)" \
  "auto: the first line says docker"
assert_eq "$CONFIG" "$("${DOCKER[@]}" image inspect --format '{{.Id}}' "$REF")" \
  "auto: image loaded"

# ---- it runs, without the registry
kill "$REG_PID"
_wait_gone "$REG_PID" 50
curl -s -o /dev/null --max-time 2 "http://$REG_ADDR/v2/" && fail "registry still answers"
ok "registry stopped"
set +e
run_out=$("${DOCKER[@]}" run --rm --pull=never --network none "$REF" /bin/echo ok 2>&1)
rc=$?
motd=$("${DOCKER[@]}" run --rm --pull=never --network none "$REF" /bin/cat /etc/motd 2>&1)
set -e
assert_eq "0 ok" "$rc $run_out" "docker run --pull=never --network none IMAGE /bin/echo ok"
assert_eq "hello-from-prepull" "$motd" "the file from the second layer is there"

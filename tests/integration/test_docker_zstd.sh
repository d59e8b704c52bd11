#!/usr/bin/env bash
# An image with gzip and zstd layers on Debian's dockerd 20.10, which cannot read
# zstd layers: `docker pull` of it fails, while after `prepull pull --store docker`
# (zstd layers decompressed while the load streams) it runs, with the config digest
# as its ID. Then Docker goes down: prepull says so clearly and exits 1.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dockerd.sh"
need_prepull
# The interpreter itself, not a version-manager shim: these tests call Python often.
PY=$("$PY" -c 'import sys; print(sys.executable)' 2>/dev/null || echo "$PY")

start_registry
start_dockerd

mkimage "$T/src" z1 --layer busybox:gzip --layer random:zstd:3M:5 \
  --layer file:zstd:/etc/motd=zstd-layer-ok --layer file:gzip:/etc/issue=gzip-on-top \
  --label docker-zstd
push_layout "$T/src" z1 "$REG_ADDR/test/zst:z1"
REF=$REG_ADDR/test/zst:z1
CONFIG=$(img_field z1 'o["platforms"]["linux/amd64"]["config"]')
STATE=$T/state
ver=$("${DOCKER[@]}" version --format '{{.Server.Version}}')
[ "${ver%%.*}" -lt 23 ] || skip_all "dockerd $ver reads zstd layers itself; this test is for < 23"

# ---- docker pull of the same image fails on this daemon (the point of the feature)
set +e
pull_out=$(timeout 60 "${DOCKER[@]}" pull "$REF" 2>&1)
pull_rc=$?
set -e
log "docker pull: rc=$pull_rc: $(printf '%s' "$pull_out" | tail -n 2)"
assert_ne 0 "$pull_rc" "docker pull of the zstd image fails on dockerd $ver"
assert_contains "$pull_out" "invalid tar header|unexpected EOF|archive/tar|unsupported" \
  "docker pull fails reading the zstd layer"
"${DOCKER[@]}" image inspect "$REF" >/dev/null 2>&1 && fail "docker pull left the image behind"
ok "no image after the failed docker pull"

# ---- prepull loads it
prepull_ok "pull $REF into docker" pull --store "docker:$DOCKER_SOCK" --state-dir "$STATE" \
  --json "$REF"
assert_contains "$ERR" "cannot read zstd layers: 2 layers decompressed" \
  "stderr says two zstd layers were decompressed"
assert_eq "$CONFIG" "$("${DOCKER[@]}" image inspect --format '{{.Id}}' "$REF")" \
  "image ID is the config digest (DiffIDs unchanged by decompression)"
want_layers=$(img_field z1 'len(o["platforms"]["linux/amd64"]["layers"])')
assert_eq "$want_layers" "$("${DOCKER[@]}" image inspect --format '{{len .RootFS.Layers}}' "$REF")" \
  "every layer is in the image"

kill "$REG_PID"
_wait_gone "$REG_PID" 50
set +e
echo_out=$("${DOCKER[@]}" run --rm --pull=never --network none "$REF" /bin/echo ok 2>&1)
files=$("${DOCKER[@]}" run --rm --pull=never --network none "$REF" \
  /bin/sh -c 'cat /etc/motd; echo; cat /etc/issue; echo; wc -c < /data/random-5.bin' 2>&1)
set -e
assert_eq "ok" "$echo_out" "docker run --pull=never IMAGE /bin/echo ok (registry stopped)"
assert_eq "zstd-layer-ok gzip-on-top 3145728" "${files//$'\n'/ }" \
  "files from the zstd and gzip layers are in the container"

# ---- Docker down: one clear error, exit 1
stop_dockerd
run_prepull pull --store "docker:$DOCKER_SOCK" --state-dir "$STATE" "$REF"
assert_eq 1 "$RC" "Docker stopped: exit 1"
assert_contains "$ERR" "Docker is not running: (no socket at|nothing listens on) $DOCKER_SOCK" \
  "Docker stopped: the error says Docker is not running"
assert_eq 1 "$(printf '%s\n' "$ERR" | grep -c 'error')" "Docker stopped: one error line"

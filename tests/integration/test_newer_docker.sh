#!/usr/bin/env bash
# prepull's docker store against the newer generation: Debian sid's dockerd 28
# (28.5.2 when written) with its containerd image store
# ({"features": {"containerd-snapshotter": true}}), running the sid containerd 2.x
# it starts itself; both unpacked beside the tests by scripts/newer-runtimes.sh.
# prepull sees the containerd image store, places the image through containerd
# (namespace moby), and `docker run --pull=never` runs it.
source "$(dirname "$0")/lib.sh"
NEWER=$(bash "$PREPULL_SRC/scripts/newer-runtimes.sh" 2>"$T/logs/newer-runtimes.log") ||
  cannot_run "scripts/newer-runtimes.sh failed: $(tail -n 3 "$T/logs/newer-runtimes.log")"
export DOCKERD_BIN=$NEWER/usr/sbin/dockerd CONTAINERD_BIN=$NEWER/usr/bin/containerd
export DOCKERD_DAEMON_JSON='{"features": {"containerd-snapshotter": true}}'
source "$(dirname "$0")/dockerd.sh"
need_prepull

start_registry
start_dockerd
ver=$("${DOCKER[@]}" version --format '{{.Server.Version}}')
assert_contains "$ver" "^(2[89]|[3-9][0-9])\." "the daemon under test is Docker 28 or newer ($ver)"
info=$(curl -s --unix-socket "$DOCKER_SOCK" http://docker/info)
assert_contains "$info" '"driver-type","io.containerd.snapshotter.v1"' "dockerd uses the containerd image store"
ctd=$(jget - 'o["Containerd"]["Address"]' <<<"$info")
log "its containerd: $ctd ($("$NEWER/usr/bin/ctr" --address "${ctd#unix://}" version 2>/dev/null | awk '/^Server:/ {s=1} s && /Version:/ {print $2; exit}'))"

mkimage "$T/src" v1 --layer busybox:gzip --layer file:zstd:/etc/from-zstd=zstd-layer \
  --layer random:gzip:2M:3
REF=$REG_ADDR/test/newer-docker:v1
push_layout "$T/src" v1 "$REF"
DIGEST=$(img_field v1 'o["digest"]')

prepull_ok "pull $REF into Docker $ver" pull -v --store "docker:$DOCKER_SOCK" \
  --state-dir "$T/state" "$REF"
assert_contains "$ERR" "uses the containerd image store: placing images through containerd at .*namespace moby" \
  "prepull takes the containerd path (namespace moby)"

assert_contains "$("${DOCKER[@]}" image ls --digests --format '{{.Repository}}:{{.Tag}} {{.Digest}}')" \
  "^$REF $DIGEST" "docker image ls lists the image with its digest"
out=$("${DOCKER[@]}" run --rm --pull=never --network none "$REF" /bin/sh -c \
  'echo $(cat /etc/from-zstd) $(wc -c </data/random-3.bin)' 2>&1)
assert_eq "zstd-layer 2097152" "$out" "docker run --pull=never runs the image (zstd and gzip layers there)"

prepull_ok "second pull" pull --json --store "docker:$DOCKER_SOCK" --state-dir "$T/state" "$REF"
assert_eq 0 "$(json_events "$OUT" summary | jget - 'o["fetched"]')" "second pull: no byte fetched"

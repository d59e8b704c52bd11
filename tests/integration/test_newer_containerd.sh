#!/usr/bin/env bash
# prepull's containerd store against the newer generation: Debian sid's
# containerd 2.x (2.1.9 when written), unpacked beside the tests by
# scripts/newer-runtimes.sh (cached under /var/tmp/prepull-newer; the first call
# fetches it). A private daemon with its own root and socket: the pull lands,
# `ctr images check` says complete and unpacked, `ctr run` starts the image and
# sees a file from each layer (gzip, zstd, uncompressed) but not the whited-out
# one, and a second pull fetches nothing.
source "$(dirname "$0")/lib.sh"
NEWER=$(bash "$PREPULL_SRC/scripts/newer-runtimes.sh" 2>"$T/logs/newer-runtimes.log") ||
  cannot_run "scripts/newer-runtimes.sh failed: $(tail -n 3 "$T/logs/newer-runtimes.log")"
export CONTAINERD_BIN=$NEWER/usr/bin/containerd CTR_BIN=$NEWER/usr/bin/ctr
source "$(dirname "$0")/containerd.sh"
need_prepull

start_registry
start_containerd
ver=$(ctr_ version | awk '/^Server:/ {s=1} s && /Version:/ {print $2; exit}')
log "containerd server version $ver ($CONTAINERD_BIN)"
assert_contains "$ver" "^v?[2-9]\.[0-9]+\.[0-9]+" "the daemon under test is containerd 2 or newer ($ver)"

mkimage "$T/src" v1 --layer busybox:gzip --layer file:zstd:/etc/from-zstd=zstd-layer \
  --layer file:none:/etc/from-tar=plain-layer --layer file:gzip:/etc/doomed=bye \
  --layer whiteout:gzip:/etc/doomed --layer random:gzip:2M:7
REF=$REG_ADDR/test/newer:v1
push_layout "$T/src" v1 "$REF"
DIGEST=$(img_field v1 'o["digest"]')
NS=k8s.io

prepull_ok "pull $REF into containerd $ver" pull --json --store "containerd:$CTD_SOCK" \
  --state-dir "$T/state" "$REF"
assert_eq "$DIGEST" "$(json_events "$OUT" image_done | jget - 'o["digest"]')" "image_done carries the image digest"

check=$(ctr_ -n "$NS" images check "name==$REF")
log "$check"
assert_contains "$check" "complete \(([0-9]+)/\1\)" "ctr images check: complete (N/N)"
assert_contains "$check" "true *$" "ctr images check: unpacked"

out=$(ctr_run "$NS" "$REF" /bin/sh -c \
  'echo $(cat /etc/from-zstd) $(cat /etc/from-tar) $(test -e /etc/doomed && echo doomed-present || echo doomed-gone) $(wc -c </data/random-7.bin)')
assert_eq "zstd-layer plain-layer doomed-gone 2097152" "$out" \
  "ctr run: files from the zstd, uncompressed and random layers are there; the whited-out one is gone"
assert_eq "" "$(ctr_ -n "$NS" leases ls -q)" "the lease is removed at the end"

prepull_ok "second pull" pull --json --store "containerd:$CTD_SOCK" --state-dir "$T/state" "$REF"
assert_eq 0 "$(json_events "$OUT" summary | jget - 'o["fetched"]')" "second pull: no byte fetched"

#!/usr/bin/env bash
# A blob listed by images from two registries, fetched once: when the first registry
# refuses it (404 here), the blob is not failed but fetched from the second registry's
# copy, and both images are pulled.  Each registry is fronted by a fault server whose
# request log tells which one served what.
source "$(dirname "$0")/lib.sh"
need_prepull

mkimage "$T/src" a --layer random:gzip:1M:21 --layer random:gzip:1M:22
mkimage "$T/src" b --layer random:gzip:1M:21 --layer random:gzip:1M:23
SHARED=$(img_field a 'o["platforms"]["linux/amd64"]["layers"][0]')
assert_eq "$SHARED" "$(img_field b 'o["platforms"]["linux/amd64"]["layers"][0]')" \
  "the two images share their first layer"
SIZE=$(stat -c %s "$T/src/blobs/sha256/${SHARED#sha256:}")

start_registry --name r1
push_layout "$T/src" a "$REG_ADDR/test/a:v1"
start_faultserver --log "$T/logs/r1.jsonl"
R1=$FS_ADDR R1_LOG=$T/logs/r1.jsonl R1_URL=$FS_URL
start_registry --name r2
push_layout "$T/src" b "$REG_ADDR/test/b:v1"
start_faultserver --log "$T/logs/r2.jsonl"
R2=$FS_ADDR R2_LOG=$T/logs/r2.jsonl

served() { FS_LOG=$1 fs_query 'sum(r["bytes"] for r in L if r["path"].endswith(A[0]) and r["status"] in (200, 206))' "$2"; }

FS_URL=$R1_URL fs_rules "{\"rules\": [{\"fault\": \"status\", \"status\": 404, \"path\": \"$SHARED\", \"count\": -1}]}"
prepull_ok "pull both images, the first registry refusing the shared layer" pull \
  --store "oci:$T/oci" --state-dir "$T/state" --hosts-dir "" -j 4 --chunk-size 256K \
  "$R1/test/a:v1" "$R2/test/b:v1"
for img in a b; do
  assert_eq "" "$(layout_has_image "$T/oci" "$(img_field $img 'o["digest"]')" linux/amd64)" \
    "image $img is in the layout, every blob"
done
assert_eq "" "$(verify_blob_hashes "$T/oci")" "every blob hashes to its name"
assert_eq 0 "$(served "$R1_LOG" "$SHARED")" "the first registry served none of the shared layer"
assert_eq "$SIZE" "$(served "$R2_LOG" "$SHARED")" "the second registry served it, once and whole"
assert_contains "$ERR" "registry $R1: .*next: $R2/test/b" "the move is named"

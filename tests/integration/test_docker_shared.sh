#!/usr/bin/env bash
# Layers Docker already holds are not downloaded again (classic image store): v2 shares
# its two bottom layers with v1, so after v1 is in Docker, pulling v2 fetches only its
# own top layer, and docker load takes the shared ones from the layer store by chain ID.
# A layer with the same digest over a different base (another chain) is still fetched.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dockerd.sh"
need_prepull

start_registry
start_dockerd
mkimage "$T/src" v1 --layer busybox:gzip --layer random:gzip:4M:11
mkimage "$T/src" v2 --layer busybox:gzip --layer random:gzip:4M:11 --layer file:gzip:/etc/v2=two
mkimage "$T/src" v3 --layer file:gzip:/etc/v3=three --layer busybox:gzip
for v in v1 v2 v3; do push_layout "$T/src" "$v" "$REG_ADDR/test/shared:$v"; done
layer() { img_field "$1" "o[\"platforms\"][\"linux/amd64\"][\"layers\"][$2]"; }
BUSYBOX=$(layer v1 0)
RANDOM_L=$(layer v1 1)
V2_TOP=$(layer v2 2)
assert_eq "$BUSYBOX $RANDOM_L" "$(layer v2 0) $(layer v2 1)" "v1 and v2 share their two bottom layers"
assert_eq "$BUSYBOX" "$(layer v3 1)" "v3 has the busybox layer too, over another base"
start_faultserver
ARGS=(pull --store "docker:$DOCKER_SOCK" --state-dir "$T/state" -v)

prepull_ok "pull v1 into docker" "${ARGS[@]}" "$FS_ADDR/test/shared:v1"
busybox1=$(fs_blob_bytes "$BUSYBOX")
random1=$(fs_blob_bytes "$RANDOM_L")
assert_num "$random1" -ge 4194304 "v1: its layers were downloaded"

prepull_ok "pull v2 into docker" "${ARGS[@]}" "$FS_ADDR/test/shared:v2"
assert_contains "$ERR" "layer ${BUSYBOX:0:19}: Docker has it" "v2: prepull says Docker has the busybox layer"
assert_contains "$ERR" "layer ${RANDOM_L:0:19}: Docker has it" "v2: prepull says Docker has the 4 MiB layer"
assert_eq "$busybox1 $random1" "$(fs_blob_bytes "$BUSYBOX") $(fs_blob_bytes "$RANDOM_L")" \
  "v2: no byte of the shared layers was served again"
assert_num "$(fs_blob_bytes "$V2_TOP")" -gt 0 "v2: its own layer was downloaded"
CONFIG2=$(img_field v2 'o["platforms"]["linux/amd64"]["config"]')
assert_eq "$CONFIG2" "$("${DOCKER[@]}" image inspect --format '{{.Id}}' "$FS_ADDR/test/shared:v2")" \
  "v2: docker image inspect: ID is the config digest"
out=$("${DOCKER[@]}" run --rm --pull=never --network none "$FS_ADDR/test/shared:v2" \
  /bin/busybox sh -c 'busybox cat /etc/v2; echo; busybox wc -c < /data/random-11.bin' 2>&1)
assert_eq "two 4194304" "$(echo $out)" "v2: docker run --pull=never reads its own layer and the shared ones"

prepull_ok "pull v3 into docker" "${ARGS[@]}" "$FS_ADDR/test/shared:v3"
assert_not_contains "$ERR" "Docker has it" "v3: no layer is taken as held (busybox sits on another base)"
assert_num "$(fs_blob_bytes "$BUSYBOX")" -gt "$busybox1" "v3: the busybox layer was downloaded for the other chain"
out=$("${DOCKER[@]}" run --rm --pull=never --network none "$FS_ADDR/test/shared:v3" /bin/busybox cat /etc/v3 2>&1)
assert_eq "three" "$out" "v3: docker run --pull=never works"

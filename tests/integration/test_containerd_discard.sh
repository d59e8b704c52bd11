#!/usr/bin/env bash
# --discard-layers (containerd): once a layer is unpacked and the image registered,
# the layer's compressed blob is not kept in the content store. `ctr run` still starts
# the image, `ctr images check` calls it incomplete (as documented), a second prepull
# run fetches no layer byte (the snapshots are what count), and the option is a usage
# error (exit 2) with a store that does not unpack layers.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull

start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer file:zstd:/etc/from-zstd=zstd-layer \
  --layer random:gzip:2M:5
push_layout "$T/src" v1 "$REG_ADDR/test/discard:v1"
read -r CONFIG LAYERS < <(img_field v1 \
  '" ".join([o["platforms"]["linux/amd64"]["config"]] + o["platforms"]["linux/amd64"]["layers"])')
start_faultserver
REF=$FS_ADDR/test/discard:v1
start_containerd
NS=discard

prepull_ok "pull with --discard-layers" pull -v --store "containerd:$CTD_SOCK" --namespace "$NS" \
  --state-dir "$T/state" --discard-layers "$REF"
out=$(ctr_run "$NS" "$REF" /bin/sh -c 'echo $(cat /etc/from-zstd) $(wc -c </data/random-5.bin)')
assert_eq "zstd-layer 2097152" "$out" "ctr run starts the image and sees every layer"
content=$(ctr_ -n "$NS" content ls | awk 'NR > 1 {print $1}')
for l in $LAYERS; do
  assert_not_contains "$content" "$l" "layer ${l:0:19} is not in the namespace's content"
done
assert_contains "$content" "$CONFIG" "the config stays (it keeps the snapshots alive)"
check=$(ctr_ -n "$NS" images check "name==$REF" 2>&1 || true)
assert_contains "$check" "incomplete \(" "ctr images check calls it incomplete"

fs_reset_log
prepull_ok "second pull with --discard-layers" pull -v --store "containerd:$CTD_SOCK" \
  --namespace "$NS" --state-dir "$T/state" --discard-layers "$REF"
settle
for l in $LAYERS; do
  assert_eq 0 "$(fs_blob_bytes "$l")" "second pull: no byte of layer ${l:0:19} fetched"
done
out=$(ctr_run "$NS" "$REF" /bin/sh -c 'cat /etc/from-zstd')
assert_eq "zstd-layer" "$out" "second pull: the image still runs"

run_prepull pull --store "oci:$T/oci" --state-dir "$T/state2" --discard-layers "$REF"
assert_eq 2 "$RC" "--discard-layers with an OCI store: usage error"
assert_contains "$ERR" "--discard-layers needs a store that unpacks layers" "the error says why"

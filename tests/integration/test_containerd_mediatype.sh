#!/usr/bin/env bash
# The containerd image record names the media type of what the tag points at.
# A registry may answer a manifest GET with a generic Content-Type
# (application/json) or a case variant of the right one; prepull accepts both
# (the body's mediaType decides), and the record must carry the parsed,
# canonical type: containerd matches media types exactly and cannot use an
# image whose target type it does not know, even though every blob is there.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull

start_registry
start_faultserver
start_containerd

MT_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_INDEX=application/vnd.oci.image.index.v1+json

# One plain image manifest and one multi-arch index.
mkimage "$T/one" v1 --layer busybox:gzip --layer file:gzip:/etc/which=one
push_layout "$T/one" v1 "$REG_ADDR/test/mt-json:v1"
mkimage "$T/multi" v1 --multiarch --layer busybox:gzip --layer file:gzip:/etc/which=multi
push_layout "$T/multi" v1 "$REG_ADDR/test/mt-case:v1"
D2=$(jget "$T/multi/index.json" 'o["manifests"][0]["digest"]')
D1=$(jget "$T/one/index.json" 'o["manifests"][0]["digest"]')

# The fault server answers the tags itself: the right bytes, the wrong Content-Type.
fs_canned "$("$PY" - "$T" "$D1" "$D2" <<'PYEOF'
import json, sys
t, d1, d2 = sys.argv[1:4]
blob = lambda layout, d: "%s/%s/blobs/sha256/%s" % (t, layout, d.split(":")[1])
print(json.dumps({"routes": {
    "/v2/test/mt-json/manifests/v1": {"body_file": blob("one", d1),
        "content_type": "application/json", "digest_header": True},
    "/v2/test/mt-case/manifests/v1": {"body_file": blob("multi", d2),
        "content_type": "Application/VND.OCI.Image.Index.v1+JSON; charset=utf-8",
        "digest_header": True},
}}))
PYEOF
)"
REF1=$FS_ADDR/test/mt-json:v1
REF2=$FS_ADDR/test/mt-case:v1
got=$(curl -s -o /dev/null -w '%{content_type}' "$FS_URL/v2/test/mt-json/manifests/v1")
assert_eq application/json "$got" "the registry front answers application/json"

NS=prepull-mt
prepull_ok "pull both into containerd" pull --store "containerd:$CTD_SOCK" --namespace "$NS" \
  --state-dir "$T/state" "$REF1" "$REF2"

for ref in "$REF1" "$REF2"; do
  check=$(ctr_ -n "$NS" images check "name==$ref" 2>&1) || true
  log "$check"
  assert_contains "$check" "complete \(([0-9]+)/\1\)" "ctr images check $ref: complete"
done
assert_eq one "$(ctr_run "$NS" "$REF1" /bin/cat /etc/which || true)" "ctr run $REF1"
assert_eq multi "$(ctr_run "$NS" "$REF2" /bin/cat /etc/which || true)" "ctr run $REF2"

# ctr images ls: NAME TYPE DIGEST SIZE PLATFORMS LABELS
ctr_ -n "$NS" images ls >"$T/logs/images-ls.txt" 2>&1 || true
types=$(awk -v a="$REF1" -v b="$REF2" '$1 == a || $1 == b {print $1, $2}' "$T/logs/images-ls.txt" | sort)
want=$(printf '%s %s\n%s %s\n' "$REF1" "$MT_MANIFEST" "$REF2" "$MT_INDEX" | sort)
assert_eq "$want" "$types" "image records carry the canonical media types"

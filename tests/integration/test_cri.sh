#!/usr/bin/env bash
# What kubelet sees: after prepull fills containerd (namespace k8s.io, layers applied as
# they arrive), the CRI plugin's runtime.v1.ImageService answers ImageStatus and
# ListImages (asked with prepull's own gRPC client, tests/cri_tool) with the image under
# its tag and its repo digest, its config digest as the ID, and its size.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull
TOOL=$(dirname "$PREPULL")/tests/cri_tool
[ -x "$TOOL" ] || fail "cri_tool not built next to prepull ($TOOL)"

start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer random:zstd:1M:3
push_layout "$T/src" v1 "$REG_ADDR/test/cri:v1"
REF=$REG_ADDR/test/cri:v1
read -r DIGEST CONFIG BYTES < <(img_field v1 \
  '" ".join([o["digest"], o["platforms"]["linux/amd64"]["config"], str(o["bytes"])])')
CTD_CRI=1 start_containerd

before=$("$TOOL" "$CTD_SOCK" status "$REF") || fail "CRI ImageStatus failed before the pull: $before"
assert_eq null "$before" "before the pull the CRI does not know the image"
prepull_ok "pull into k8s.io" pull --store "containerd:$CTD_SOCK" --state-dir "$T/state" "$REF"

status=$("$TOOL" "$CTD_SOCK" status "$REF") || fail "CRI ImageStatus failed: $status"
log "ImageStatus: $status"
assert_eq "$CONFIG" "$(jget - 'o["id"]' <<<"$status")" "ImageStatus: the ID is the config digest"
assert_eq "$REF" "$(jget - '" ".join(o["repo_tags"])' <<<"$status")" "ImageStatus: the tag"
assert_eq "$REG_ADDR/test/cri@$DIGEST" "$(jget - '" ".join(o["repo_digests"])' <<<"$status")" \
  "ImageStatus: the repo digest"
assert_eq "$BYTES" "$(jget - 'o["size"]' <<<"$status")" "ImageStatus: the size (manifest, config, layers)"
by_digest=$("$TOOL" "$CTD_SOCK" status "$REG_ADDR/test/cri@$DIGEST")
assert_eq "$CONFIG" "$(jget - 'o["id"]' <<<"$by_digest")" "ImageStatus by repo digest finds it too"

list=$("$TOOL" "$CTD_SOCK" list) || fail "CRI ListImages failed: $list"
assert_eq "$REF" "$(jget - '" ".join(t for i in o if i["id"] == "'"$CONFIG"'" for t in i["repo_tags"])' <<<"$list")" \
  "ListImages lists the image under its tag"

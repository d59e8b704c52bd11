#!/usr/bin/env bash
# Pull into a real containerd (private root and socket): blobs renamed into its
# content store, recorded in the namespace, every layer unpacked while the
# download goes on; `ctr images check` says complete and unpacked, `ctr run`
# starts the image and sees a file from each layer (gzip, zstd, uncompressed)
# but not the one a whiteout deleted; the CRI records in k8s.io; the lease is
# gone; a later `ctr images pull` and a second prepull fetch no blob byte.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull

start_registry
NP=$(free_port)
# 1 MiB/s per connection: the top layer (4 MiB, in 4 MiB chunks) takes ~4 s, so
# the bottom ones are unpacked while it still downloads.
nginx_conf_proxy "$T/ngx" "$NP" "$REG_ADDR" 1m
start_nginx "$T/ngx/nginx.conf" "$NP"
ALOG=$T/ngx/access.log
start_containerd

mkimage "$T/src" v1 --layer busybox:gzip --layer file:zstd:/etc/from-zstd=zstd-layer \
  --layer file:none:/etc/from-tar=plain-layer --layer file:gzip:/etc/doomed=bye \
  --layer whiteout:gzip:/etc/doomed --layer random:gzip:4M:7
push_layout "$T/src" v1 "$REG_ADDR/test/ctd:v1"
REF=127.0.0.1:$NP/test/ctd:v1
# One python start for all the image facts: digest, config, layers bottom-up.
read -r DIGEST CONFIG LAYERS < <(img_field v1 \
  '" ".join([o["digest"], o["platforms"]["linux/amd64"]["config"]] + o["platforms"]["linux/amd64"]["layers"])')
TOP_LAYER=${LAYERS##* }
LAYER_BYTES=0
for l in $LAYERS; do LAYER_BYTES=$((LAYER_BYTES + $(stat -c %s "$T/src/blobs/sha256/${l#sha256:}"))); done
NS=k8s.io
STATE=$T/state
CONTENT=$CTD_ROOT/io.containerd.content.v1.content

# ---- first pull
prepull_ok "pull $REF into containerd ($NS)" pull -v --store "containerd:$CTD_SOCK" \
  --namespace "$NS" --state-dir "$STATE" --chunk-size 4M "$REF"
assert_contains "$ERR" "store containerd:$CTD_SOCK" "the store line names the socket"

check=$(ctr_ -n "$NS" images check "name==$REF")
log "$check"
assert_contains "$check" "complete \(([0-9]+)/\1\)" "ctr images check: complete (N/N)"
assert_contains "$check" "true *$" "ctr images check: unpacked"

out=$(ctr_run "$NS" "$REF" /bin/echo ok)
assert_eq ok "$out" "ctr run IMAGE /bin/echo ok prints ok"
out=$(ctr_run "$NS" "$REF" /bin/sh -c \
  'echo $(cat /etc/from-zstd) $(cat /etc/from-tar) $(test -e /etc/doomed && echo doomed-present || echo doomed-gone) $(wc -c </data/random-7.bin)')
assert_eq "zstd-layer plain-layer doomed-gone 4194304" "$out" \
  "files from the zstd, uncompressed and random layers are there; the whited-out file is gone"

# The overlap: the bottom layer was unpacked before the top layer was in.
unpacked_line=$(grep -n "unpacked as" <<<"$ERR" | head -n 1 | cut -d: -f1)
top_line=$(grep -n "blob ${TOP_LAYER:0:19}: verified and committed" <<<"$ERR" | cut -d: -f1)
[ -n "$unpacked_line" ] && [ -n "$top_line" ] || fail "debug log lacks the unpack or commit lines"
assert_num "$unpacked_line" -lt "$top_line" "a lower layer was unpacked while the top layer was downloading"

# Blobs sit in containerd's content store: read-only, named by their hash.
for d in $LAYERS $CONFIG $DIGEST; do
  f=$CONTENT/blobs/sha256/${d#sha256:}
  [ -f "$f" ] || fail "blob $d not in $CONTENT"
  [ "$(sha256sum "$f" | cut -d' ' -f1)" = "${d#sha256:}" ] || fail "blob $d does not hash to its name"
  [ "$(stat -c %a "$f")" = 444 ] || fail "blob $d is not read-only ($(stat -c %a "$f"))"
done
ok "config, manifest and every layer are in the content store, read-only, hashing to their names"
assert_eq "" "$(find "$STATE" "$CONTENT" -name '*.partial' | head -n 3)" "no partial files left"

labels=$(ctr_ -n "$NS" content ls)
# The top of the chain: the one committed snapshot that is nobody's parent.
top_chain=$(ctr_ -n "$NS" snapshots ls | awk 'NR>1{k[$1]=1; if ($2 != "" && $2 != "Committed") p[$2]=1}
  END{for (x in k) if (!(x in p)) print x}')
assert_contains "$(grep "^$CONFIG" <<<"$labels")" "containerd.io/gc.ref.snapshot.overlayfs=$top_chain" \
  "config labelled with the top chain ID (gc.ref.snapshot.overlayfs)"
assert_contains "$(grep "^$DIGEST" <<<"$labels")" "containerd.io/gc.ref.content.config=$CONFIG" \
  "manifest references its config (gc.ref.content.config)"
assert_contains "$(grep "^$DIGEST" <<<"$labels")" "containerd.io/gc.ref.content.l.5=$TOP_LAYER" \
  "manifest references its layers (gc.ref.content.l.N)"
assert_eq "$(printf '%s\n' $LAYERS | grep -c .)" "$(grep -c 'containerd.io/uncompressed=sha256:' <<<"$labels")" \
  "every layer carries containerd.io/uncompressed"
assert_eq "" "$(ctr_ -n "$NS" leases ls -q)" "the lease is removed at the end"

records=$(ctr_ -n "$NS" images ls)
names=$(awk 'NR>1{print $1}' <<<"$records" | sort | tr '\n' ' ')
want=$(printf '%s\n' "$REF" "127.0.0.1:$NP/test/ctd@$DIGEST" "$CONFIG" | sort | tr '\n' ' ')
assert_eq "$want" "$names" "k8s.io: the tag, digest and image-ID records (as CRI makes them)"
assert_eq 3 "$(grep -c 'io.cri-containerd.image=managed' <<<"$records")" "k8s.io: all three labelled io.cri-containerd.image=managed"

settle
st=$(log_stats "$ALOG")
log "first run, server side: $st"
sent=$(stat_field "$st" bytes)
assert_num "$sent" -ge "$LAYER_BYTES" "first run: the server sent the layer bytes"
assert_num "$sent" -le $((LAYER_BYTES * 101 / 100 + 65536)) "first run: no blob byte sent twice"

# ---- containerd's own pull finds everything in place
reset_log "$ALOG"
ctr_ -n "$NS" images pull --plain-http "$REF" >"$T/logs/ctr-pull.log" 2>&1 ||
  fail "ctr images pull failed: $(tail -n 5 "$T/logs/ctr-pull.log")"
settle
st=$(log_stats "$ALOG")
log "ctr images pull, server side: $st"
assert_eq 0 "$(stat_field "$st" bytes)" "a later ctr images pull transfers no blob bytes"

# ---- prepull again: nothing fetched, nothing unpacked again
snaps_before=$(ctr_ -n "$NS" snapshots ls | wc -l)
reset_log "$ALOG"
prepull_ok "second pull" pull -v --store "containerd:$CTD_SOCK" --namespace "$NS" --state-dir "$STATE" "$REF"
settle
assert_eq 0 "$(stat_field "$(log_stats "$ALOG")" bytes)" "second prepull: no blob byte fetched"
assert_eq "" "$(grep 'unpacked as' <<<"$ERR")" "second prepull: no layer unpacked again"
assert_eq "$snaps_before" "$(ctr_ -n "$NS" snapshots ls | wc -l)" "second prepull: no new snapshot"

# ---- another namespace shares the content store: no download, own records
reset_log "$ALOG"
prepull_ok "pull into namespace other" pull --store "containerd:$CTD_SOCK" --namespace other \
  --state-dir "$STATE" "$REF"
settle
assert_eq 0 "$(stat_field "$(log_stats "$ALOG")" bytes)" "namespace other: no blob byte fetched"
assert_contains "$(ctr_ -n other images check)" "complete \(([0-9]+)/\1\).*true" \
  "namespace other: complete and unpacked"
assert_eq "$REF" "$(ctr_ -n other images ls -q)" "namespace other: only the tag record, no CRI records"

# ---- an OCI layout store passes containerd's own import (the README's criterion).
# Layers of their own, not yet in the content store: the import must take every
# blob from the layout, and unpacking checks each layer against its diff_id.
mkimage "$T/src" oci --layer file:gzip:/etc/oci=from-the-layout --layer random:zstd:1M:73
push_layout "$T/src" oci "$REG_ADDR/test/ctd:oci"
OCI_DIGEST=$(img_field oci 'o["digest"]')
prepull_ok "pull into an OCI layout" pull --store "oci:$T/oci" --state-dir "$T/state-oci" \
  --chunk-size 256K "$REG_ADDR/test/ctd:oci"
verify_layout "$T/oci" oci
tar -C "$T/oci" -cf "$T/oci.tar" oci-layout index.json blobs
ctr_ -n ociimport images import "$T/oci.tar" >"$T/logs/ctr-import.log" 2>&1 ||
  fail "ctr images import of the OCI layout failed: $(tail -n 5 "$T/logs/ctr-import.log")"
check=$(ctr_ -n ociimport images check)
log "$check"
assert_contains "$check" "$OCI_DIGEST" "ctr images import: the image is recorded with the manifest digest"
assert_contains "$check" "complete \(([0-9]+)/\1\) .*true *$" "ctr images import: complete (N/N) and unpacked"

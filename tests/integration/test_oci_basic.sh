#!/usr/bin/env bash
# Pull into an OCI layout through an nginx front (so we can count what was served):
# layout valid, index.json annotations, a second run fetches 0 blob bytes, a second
# image shares the layout, and a moved tag updates its entry.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
NP=$(free_port)
nginx_conf_proxy "$T/ngx" "$NP" "$REG_ADDR" 64m
start_nginx "$T/ngx/nginx.conf" "$NP"
ALOG=$T/ngx/access.log

# Image 1: gzip busybox, zstd generated data, a file and its whiteout.
mkimage "$T/src" v1 --layer busybox:gzip --layer random:zstd:6M:1 \
  --layer file:gzip:/etc/motd=hello --layer whiteout:gzip:/etc/motd --label one
push_layout "$T/src" v1 "$REG_ADDR/test/basic:v1"
D1=$(img_field v1 'o["digest"]')
LAYERS1=$(img_field v1 '" ".join(o["platforms"]["linux/amd64"]["layers"])')
CONFIG1=$(img_field v1 'o["platforms"]["linux/amd64"]["config"]')
LAYER_BYTES=0
for l in $LAYERS1; do LAYER_BYTES=$((LAYER_BYTES + $(stat -c %s "$T/src/blobs/sha256/${l#sha256:}"))); done

REF1=127.0.0.1:$NP/test/basic:v1
OCI=$T/oci
STATE=$T/state

# ---- first pull
echo stale >"$T/ready"
prepull_ok "pull $REF1 into oci:$OCI" pull --store "oci:$OCI" --state-dir "$STATE" --json \
  --ready-file "$T/ready" "$REF1"
assert_json_lines "$OUT" "--json stdout is one JSON event per line"
verify_layout "$OCI" v1
assert_eq "$D1" "$(jget "$T/ready" 'o["images"][0]["digest"]')" "ready file names the image digest"

res=$(json_events "$OUT" resolved)
assert_eq 1 "$(printf '%s\n' "$res" | grep -c .)" "one resolved event"
assert_eq "$D1" "$(printf '%s' "$res" | jget - 'o["digest"]')" "resolved digest is the manifest digest"
assert_eq "linux/amd64" "$(printf '%s' "$res" | jget - 'o["platform"]')" "resolved platform"
done1=$(json_events "$OUT" blob_done)
for l in $LAYERS1 $CONFIG1; do
  assert_contains "$done1" "\"digest\": \"$l\"" "blob_done for ${l:7:12}"
done
assert_contains "$(json_events "$OUT" image_done)" "\"digest\": \"$D1\"" "image_done with the digest"
sum=$(json_events "$OUT" summary)
assert_eq "1 0" "$(printf '%s' "$sum" | jget - '"%d %d" % (o["images"], o["failed"])')" "summary: 1 image, 0 failed"

# index.json: one entry, both annotations, digest of the manifest.
entries=$(index_entries "$OCI")
assert_eq 1 "$(printf '%s\n' "$entries" | grep -c .)" "index.json has one entry"
assert_eq "$D1 v1 $REF1 application/vnd.oci.image.manifest.v1+json" "$entries" "index.json entry: digest, ref.name, io.containerd.image.name, mediaType"
assert_file "$OCI/blobs/sha256/${D1#sha256:}" "manifest stored byte-exact under its digest"
for l in $LAYERS1 $CONFIG1; do
  cmp -s "$OCI/blobs/sha256/${l#sha256:}" "$T/src/blobs/sha256/${l#sha256:}" ||
    fail "blob $l differs from the pushed one"
done
ok "config and every layer are byte-identical to what was pushed"
# Temporary files are NAME.tmp.<pid> (util.c) and NAME.partial.
leftover=$(find "$OCI" "$STATE" -name '*.partial' -o -name '*.tmp' -o -name '*.tmp.*' | head -n 3)
assert_eq "" "$leftover" "no temporary files left in the layout"

settle
st=$(log_stats "$ALOG")
log "first run, server side: $st"
sent=$(stat_field "$st" bytes)
assert_num "$sent" -ge "$LAYER_BYTES" "first run: server sent at least the layer bytes"
assert_num "$sent" -le $((LAYER_BYTES * 101 / 100 + 65536)) "first run: no blob byte sent twice (<= 1.01x)"


# A failed run removes the ready file and does not write it.
run_prepull pull --store "oci:$OCI" --state-dir "$STATE" --ready-file "$T/ready" "127.0.0.1:$NP/test/absent:v1"
assert_eq 1 "$RC" "pull of an absent image fails"
[ ! -e "$T/ready" ] || fail "ready file still there after a failed run"
ok "ready file removed by a failed run"

# ---- second run: nothing to fetch
reset_log "$ALOG"
prepull_ok "second pull of $REF1" pull --store "oci:$OCI" --state-dir "$STATE" --json "$REF1"
settle
st=$(log_stats "$ALOG")
log "second run, server side: $st"
assert_eq 0 "$(stat_field "$st" bytes)" "second run: the server sent 0 blob bytes"
present=$(json_events "$OUT" blob_present)
for l in $LAYERS1; do
  assert_contains "$present" "\"digest\": \"$l\"" "second run: blob_present for ${l:7:12}"
done
fetched=$(json_events "$OUT" summary | jget - 'o.get("fetched", 0)')
assert_eq 0 "$fetched" "second run: summary says 0 bytes fetched"
assert_eq 1 "$(index_entries "$OCI" | grep -c .)" "second run: still one index entry"
verify_layout "$OCI" v1

# ---- a second image into the same layout
mkimage "$T/src" v2 --layer busybox:gzip --layer random:gzip:2M:2 --label two
push_layout "$T/src" v2 "$REG_ADDR/test/other:v2"
D2=$(img_field v2 'o["digest"]')
REF2=127.0.0.1:$NP/test/other:v2
reset_log "$ALOG"
prepull_ok "pull $REF2 into the same layout" pull --store "oci:$OCI" --state-dir "$STATE" -q "$REF2"
entries=$(index_entries "$OCI")
assert_eq 2 "$(printf '%s\n' "$entries" | grep -c .)" "index.json now has two entries"
assert_contains "$entries" "^$D1 v1 $REF1 " "first image's entry kept"
assert_contains "$entries" "^$D2 v2 $REF2 " "second image's entry added"
verify_layout "$OCI" v1
verify_layout "$OCI" v2
settle
# The busybox layer is shared and was already there.
BB=$(img_field v2 'o["platforms"]["linux/amd64"]["layers"][0]')
assert_eq 0 "$(stat_field "$(log_stats "$ALOG" "/blobs/$BB")" bytes)" "shared busybox layer not fetched again"

# ---- the tag moves: re-pull updates its entry
mkimage "$T/src" v1 --layer busybox:gzip --layer random:zstd:1M:3 --label moved
push_layout "$T/src" v1 "$REG_ADDR/test/basic:v1"
D3=$(img_field v1 'o["digest"]')
assert_ne "$D1" "$D3" "test/basic:v1 now points to a new manifest"
prepull_ok "re-pull moved tag $REF1" pull --store "oci:$OCI" --state-dir "$STATE" --json "$REF1"
entries=$(index_entries "$OCI")
assert_eq 1 "$(printf '%s\n' "$entries" | grep -c " $REF1 ")" "one entry for $REF1"
assert_contains "$entries" "^$D3 v1 $REF1 " "entry for $REF1 has the new digest"
assert_contains "$entries" "^$D2 v2 $REF2 " "other image's entry kept"
assert_eq 2 "$(printf '%s\n' "$entries" | grep -c .)" "two entries in total"
verify_layout "$OCI" v1
verify_layout "$OCI" v2

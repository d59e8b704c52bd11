#!/usr/bin/env bash
# Bad input from a registry and from the command line. tests/integration/faultserver.py
# fronts a real registry (real blobs) and answers chosen paths with canned manifests
# and configs: malformed JSON; a layer size > 1 TiB or negative; digests with an unknown
# algorithm, uppercase hex or the wrong length; a blob whose bytes are longer or shorter
# than its descriptor says; a manifest over the 4 MiB cap; a config whose diff_ids count
# differs from the layers; digests that do not match the bytes served (the tag's
# Docker-Content-Digest, a pull by digest, an index entry's manifest, the config);
# and invalid references on the command line.
# Each: exit 1, one clear error line saying what and where (the image), nothing written
# to the store (no blob, no index entry).
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
mkimage "$T/src" v1 --layer random:none:1M:131
push_layout "$T/src" v1 "$REG_ADDR/test/base:v1"
LAYER=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
CONFIG=$(img_field v1 'o["platforms"]["linux/amd64"]["config"]')
MANIFEST=$(img_field v1 'o["digest"]')
start_faultserver

# Canned routes: one repository per case, manifests at /v2/bad/<case>/manifests/v1.
"$PY" - "$T/src" "$LAYER" "$CONFIG" "$T/canned.json" "$MANIFEST" <<'PYEOF'
import hashlib, json, os, sys
src, layer, config, out, mdigest = sys.argv[1:6]
def blob(dg): return os.path.join(src, "blobs", "sha256", dg.split(":")[1])
lsize = os.path.getsize(blob(layer))
cbytes = open(blob(config), "rb").read()
MT = "application/vnd.oci.image.manifest.v1+json"
LT = "application/vnd.oci.image.layer.v1.tar"
CT = "application/vnd.oci.image.config.v1+json"
routes = {}
def manifest(case, layers, cfg=None, extra=None, raw=None):
    if raw is None:
        m = {"schemaVersion": 2, "mediaType": MT,
             "config": cfg or {"mediaType": CT, "digest": config, "size": len(cbytes)},
             "layers": layers}
        if extra:
            m.update(extra)
        raw = json.dumps(m, indent=1)
    routes["/v2/bad/%s/manifests/v1" % case] = {"status": 200, "content_type": MT,
                                                "body": raw, "digest_header": True}
def L(digest=layer, size=lsize):
    return {"mediaType": LT, "digest": digest, "size": size}
hexd = layer.split(":")[1]
manifest("json", None, raw='{"schemaVersion": 2, "mediaType": "%s", "layers": [' % MT)
manifest("hugesize", [L(size=2 * (1 << 40))])
manifest("negsize", [L(size=-5)])
manifest("algo", [L(digest="md5:d41d8cd98f00b204e9800998ecf8427e")])
manifest("upperhex", [L(digest="sha256:" + hexd.upper())])
manifest("shortdigest", [L(digest="sha256:" + hexd[:63])])
manifest("blobshort", [L(size=lsize + 4096)])    # the bytes are 4096 shorter than declared
manifest("bloblong", [L(size=lsize - 4096)])     # the bytes are 4096 longer than declared
manifest("huge", [L()], extra={"annotations": {"pad": "x" * (5 << 20)}})
c = json.loads(cbytes)
c["rootfs"]["diff_ids"] = c["rootfs"]["diff_ids"] * 2
c2 = json.dumps(c).encode()
c2d = "sha256:" + hashlib.sha256(c2).hexdigest()
routes["/v2/bad/diffids/blobs/" + c2d] = {"status": 200, "content_type": CT, "body": c2.decode()}
manifest("diffids", [L()], cfg={"mediaType": CT, "digest": c2d, "size": len(c2)})
# Digests that do not match what is served: the real manifest with a
# Docker-Content-Digest of other bytes; other bytes under the manifest's digest
# (pull by digest, and an index's entry); the config's bytes with one changed.
mbytes = open(blob(mdigest), "rb").read().decode()
other = json.loads(mbytes)
other["annotations"] = {"prepull.test": "not the manifest you asked for"}
other = json.dumps(other)
routes["/v2/bad/dcd/manifests/v1"] = {"status": 200, "content_type": MT, "body": mbytes,
    "headers": {"Docker-Content-Digest": "sha256:" + hashlib.sha256(other.encode()).hexdigest()}}
routes["/v2/bad/bydigest/manifests/" + mdigest] = {"status": 200, "content_type": MT,
                                                  "body": other}
IT = "application/vnd.oci.image.index.v1+json"
index = {"schemaVersion": 2, "mediaType": IT, "manifests": [{"mediaType": MT,
         "digest": mdigest, "size": len(mbytes),
         "platform": {"os": "linux", "architecture": "amd64"}}]}
routes["/v2/bad/child/manifests/v1"] = {"status": 200, "content_type": IT,
                                        "body": json.dumps(index), "digest_header": True}
routes["/v2/bad/child/manifests/" + mdigest] = {"status": 200, "content_type": MT, "body": other}
cbad = bytearray(cbytes)
cbad[cbad.index(b"amd64")] ^= 0x20  # "Amd64": valid JSON, same size, other digest
manifest("config", [L()])
routes["/v2/bad/config/blobs/" + config] = {"status": 200, "content_type": CT,
                                            "body": cbad.decode()}
json.dump({"routes": routes}, open(out, "w"))
PYEOF
curl -sf -X POST --data-binary "@$T/canned.json" "$FS_URL/_canned" >/dev/null || fail "cannot load canned routes"

# check_case CASE WHAT REGEX [REF_SUFFIX] — pull bad/CASE:v1 (or bad/CASE<REF_SUFFIX>)
# into a fresh store and check the outcome
check_case() {
  local case=$1 what=$2 rx=$3 store=$T/oci-$1
  run_prepull pull --store "oci:$store" --state-dir "$T/state-$1" --chunk-size 4M "$FS_ADDR/bad/$case${4:-:v1}"
  assert_eq 1 "$RC" "$what: exit 1"
  local lines
  lines=$(printf '%s\n' "$ERR" | grep -iE "error" || true)
  assert_contains "$lines" "bad/$case" "$what: the error names the image"
  assert_contains "$lines" "$rx" "$what: the error says what is wrong (/$rx/)"
  assert_eq 0 "$(blob_count "$store")" "$what: no blob written to the store"
  assert_no_index_entry "$store" "$what"
  assert_eq "" "$(find "$T/state-$1" "$store" -name '*.partial' 2>/dev/null | head -n 1)" "$what: no partial file left"
  # "One clear line": checked for every case at the end, so all cases run first.
  local n
  n=$(printf '%s\n' "$lines" | grep -c .)
  [ "$n" -eq 1 ] || MULTI="$MULTI [$what: $n error lines]"
}
MULTI=""

# Blobs whose size differs from the descriptor run in the background (prepull retries
# the Content-Range mismatch), both at once, while the other cases run.
declare -A SZ_PID SZ_OUT SZ_ERR
for c in blobshort bloblong; do
  start_prepull_bg pull --store "oci:$T/oci-$c" --state-dir "$T/state-$c" --chunk-size 4M "$FS_ADDR/bad/$c:v1"
  SZ_PID[$c]=$PP_PID SZ_OUT[$c]=$PP_OUTF SZ_ERR[$c]=$PP_ERRF
done
SIZE_T0=$(date +%s.%N)

check_case json "malformed manifest JSON" "manifest is not valid JSON: line [0-9]+"
check_case hugesize "layer size > 1 TiB" "layers\[0\]\.size: 2199023255552 is larger than 1099511627776 bytes"
check_case negsize "negative layer size" "layers\[0\]\.size: negative \(-5\)"
check_case algo "digest with an unknown algorithm" "layers\[0\]\.digest: invalid digest \"md5:[0-9a-f]+\": unknown algorithm \"md5\""
check_case upperhex "digest with uppercase hex" "layers\[0\]\.digest: invalid digest \"sha256:[0-9A-F]{64}\": hex must be lowercase"
check_case shortdigest "digest of the wrong length" "layers\[0\]\.digest: invalid digest .*: sha256 needs 64 hex characters, got 63"
check_case huge "manifest over 4 MiB" "/v2/bad/huge/manifests/v1: response larger than 4194304 bytes"
check_case diffids "config diff_ids count != layers" "config sha256:[0-9a-f]{12} lists 2 diff_ids but the manifest has 1 layers"
check_case dcd "tag's Docker-Content-Digest differs from the manifest's bytes" \
  "manifest v1: Docker-Content-Digest sha256:[0-9a-f]{64} but content hashes to $MANIFEST"
check_case bydigest "pull by digest served other bytes" \
  "manifest $MANIFEST: content hashes to sha256:[0-9a-f]{64}" "@$MANIFEST"
check_case child "an index entry's manifest served other bytes" \
  "manifest $MANIFEST: content hashes to sha256:[0-9a-f]{64}"
check_case config "config bytes do not hash to the config digest" \
  "config $CONFIG: got [0-9]+ bytes hashing to sha256:[0-9a-f]{64}, manifest says [0-9]+ bytes"
# None of them fetched a layer byte: the checks come before any download.
assert_eq 0 "$(fs_query 'sum(r["bytes"] for r in L if r["path"].startswith(("/v2/bad/dcd/", "/v2/bad/bydigest/", "/v2/bad/child/", "/v2/bad/config/")) and r["path"].endswith(A[0]))' "$LAYER")" \
  "wrong manifest or config digest: no layer byte was served"

# ---- invalid references on the command line
HEX=${LAYER#sha256:}
for bad in 'UPPER/Case:tag' "$FS_ADDR/test/x:bad tag" "$FS_ADDR/test/x@sha256:1234" \
  "$FS_ADDR/test//x:1" ':nope' "$FS_ADDR/test/x@md5:$HEX" "$FS_ADDR/test/x@sha256:${HEX^^}" \
  "$FS_ADDR/test/x:" "$FS_ADDR/test/x:$(printf 't%.0s' $(seq 1 129))" "$FS_ADDR/-x/y:1"; do
  run_prepull pull --store "oci:$T/oci-ref" --state-dir "$T/state-ref" "$bad"
  assert_eq 1 "$RC" "invalid reference [$bad]: exit 1"
  lines=$(printf '%s\n' "$ERR" | grep -iE "error|invalid" || true)
  # The reference itself holds words like "tag" or "digest": match the reason after it.
  assert_contains "$lines" "invalid reference \".*\": (repository name must be lowercase|invalid tag|invalid digest|empty path component|missing repository name|invalid repository name component)" "invalid reference [$bad]: says what is wrong"
  assert_contains "$lines" "$(printf '%s' "$bad" | cut -c1-40 | sed 's/[][\.*^$@+?(){}|]/./g')" "invalid reference [$bad]: quotes the reference"
  assert_eq 0 "$(blob_count "$T/oci-ref")" "invalid reference [$bad]: nothing written to the store"
done

SIZE_SECS=""
SIZE_SLOW=""
for c in blobshort bloblong; do
  what="blob $([ $c = blobshort ] && echo shorter || echo longer) than its descriptor"
  PP_PID=${SZ_PID[$c]} PP_OUTF=${SZ_OUT[$c]} PP_ERRF=${SZ_ERR[$c]}
  wait_prepull 100
  # When it finished (its last stderr write), not when this loop got to it.
  secs=$("$PY" -c 'import os, sys; print(round(os.path.getmtime(sys.argv[1]) - float(sys.argv[2]), 2))' "$PP_ERRF" "$SIZE_T0")
  SIZE_SECS="$SIZE_SECS $what: ${secs}s;"
  [ "$(awk -v s="$secs" 'BEGIN { print (s < 15) }')" = 1 ] || SIZE_SLOW="$SIZE_SLOW $what: ${secs}s;"
  log "$what: exit $RC after ${secs}s"
  assert_eq 1 "$RC" "$what: exit 1"
  lines=$(printf '%s\n' "$ERR" | grep -iE "error" || true)
  assert_contains "$lines" "bad/$c" "$what: the error names the image"
  assert_contains "$lines" "${LAYER:7:12}" "$what: the error names the blob"
  assert_contains "$lines" "the server has [0-9]+ bytes, the manifest says [0-9]+" "$what: the error says what is wrong"
  assert_eq 0 "$(blob_count "$T/oci-$c")" "$what: no blob written to the store"
  assert_no_index_entry "$T/oci-$c" "$what"
  n=$(printf '%s\n' "$lines" | grep -c .)
  [ "$n" -eq 1 ] || MULTI="$MULTI [$what: $n error lines]"
done

assert_eq "" "$MULTI" "each bad-input case printed exactly one error line"
# The server's Content-Range says the blob's real size: no retry can help.
# Both cases, not only the last one the loop saw.
assert_eq "" "$SIZE_SLOW" "size mismatch between blob and descriptor fails promptly (< 15s):$SIZE_SECS"

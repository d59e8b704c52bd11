#!/usr/bin/env bash
# Layers applied by prepull into containerd's snapshots while their bytes arrive
# (private containerd, the fault server pacing each connection so the top layer
# takes a few seconds):
#   - the top layer's snapshot is prepared and fed before its blob is complete, and
#     committed once both its digest and its diffID match; the image is complete and
#     unpacked, and `ctr run` sees every layer;
#   - every layer's snapshot holds the same tree as containerd's own Diff.Apply makes
#     of it (--unpacker containerd, in another namespace);
#   - --json says per layer, before image_done, its chain ID and who unpacked it:
#     prepull as the bytes arrived (the top layer), or containerd;
#   - a flipped byte mid-layer: the snapshot starts over, the repaired blob is applied
#     again, and the committed tree is still right;
#   - SIGKILL while a layer is being applied: the next run removes the active snapshot
#     the killed run left, applies the layer again from the bytes already on disk, and
#     the blob bytes served over both runs stay within 1.1x the image.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull
ORACLE=("$PY" "$IT_DIR/unpack_oracle.py")

start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer file:zstd:/etc/from-zstd=zstd-layer \
  --layer file:none:/etc/from-tar=plain-layer --layer file:gzip:/etc/doomed=bye \
  --layer whiteout:gzip:/etc/doomed --layer random:gzip:16M:9
push_layout "$T/src" v1 "$REG_ADDR/test/stream:v1"
read -r CONFIG LAYERS < <(img_field v1 \
  '" ".join([o["platforms"]["linux/amd64"]["config"]] + o["platforms"]["linux/amd64"]["layers"])')
TOP=${LAYERS##* }
TOP_SIZE=$(stat -c %s "$T/src/blobs/sha256/${TOP#sha256:}")
IMAGE_BYTES=0
for l in $LAYERS $CONFIG; do IMAGE_BYTES=$((IMAGE_BYTES + $(stat -c %s "$T/src/blobs/sha256/${l#sha256:}"))); done
# Diff IDs from the config, bottom-up, and the top chain ID.
DIFF_IDS=$("$PY" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["rootfs"]["diff_ids"]))' \
  "$T/src/blobs/sha256/${CONFIG#sha256:}")
# shellcheck disable=SC2086
TOP_CHAIN=$("${ORACLE[@]}" chain $DIFF_IDS)
N_LAYERS=$(wc -w <<<"$LAYERS")

# 2 MB/s per connection, 4 connections: the 16 MiB top layer takes about 2 s.
start_faultserver --rate 2000000
REF=$FS_ADDR/test/stream:v1

# layer_dirs NS -> the snapshot directories of the image's layers, bottom first.
layer_dirs() { snapshot_dirs "$1" "$TOP_CHAIN"; }

# same_trees NS_A NS_B WHAT — each layer's snapshot holds the same tree in both.
same_trees() {
  mapfile -t A < <(layer_dirs "$1" || echo missing)
  mapfile -t B < <(layer_dirs "$2" || echo missing)
  assert_eq "$N_LAYERS" "${#A[@]}" "$3: one snapshot per layer"
  local i out
  for i in "${!A[@]}"; do
    # A directory a layer lacks is created with the time it was made at, by
    # either applier; a whiteout device keeps the time it was made at too.
    out=$("${ORACLE[@]}" compare "${A[$i]}" "${B[$i]}" --no-mtime etc --no-mtime etc/doomed \
      --no-mtime data --no-mtime bin 2>&1) || fail "$3: layer $((i + 1)) differs: $out"
  done
  ok "$3: every layer's snapshot holds the same tree"
}

# image_works NS WHAT
image_works() {
  local check out
  check=$(ctr_ -n "$1" images check "name==$REF")
  assert_contains "$check" "complete \(([0-9]+)/\1\)" "$2: ctr images check: complete"
  assert_contains "$check" "true *$" "$2: ctr images check: unpacked"
  out=$(ctr_run "$1" "$REF" /bin/sh -c \
    'echo $(cat /etc/from-zstd) $(cat /etc/from-tar) $(test -e /etc/doomed && echo doomed-present || echo doomed-gone) $(wc -c </data/random-9.bin)')
  assert_eq "zstd-layer plain-layer doomed-gone 16777216" "$out" "$2: ctr run sees every layer, not the whited-out file"
}

# check_layer_events TEXT WHAT TOP_BY OTHERS_BY — one layer_unpacked event per layer,
# bottom up, before image_done: its digest, its chain ID (computed here from the
# config's diff IDs), unpacked_by TOP_BY for the top layer and one of OTHERS_BY
# (|-separated) for the others, and a number of seconds.
check_layer_events() {
  local bad
  bad=$(printf '%s\n' "$1" | "$PY" -c '
import json, subprocess, sys
layers, diff_ids, top_by, others_by = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3], sys.argv[4].split("|")
chains = [subprocess.check_output(sys.argv[5:] + ["chain"] + diff_ids[:i + 1], text=True).strip()
          for i in range(len(diff_ids))]
events = [json.loads(l) for l in sys.stdin if l.strip()]
names = [e["event"] for e in events]
got = [e for e in events if e["event"] == "layer_unpacked"]
if "image_done" not in names:
    sys.exit("no image_done")
if [e["digest"] for e in got] != layers:
    sys.exit("layer_unpacked digests %s, expected %s" % ([e["digest"] for e in got], layers))
if max(i for i, n in enumerate(names) if n == "layer_unpacked") > names.index("image_done"):
    sys.exit("a layer_unpacked event after image_done")
for i, e in enumerate(got):
    if e["chain_id"] != chains[i]:
        sys.exit("layer %d: chain_id %s, expected %s" % (i + 1, e["chain_id"], chains[i]))
    want = [top_by] if i == len(got) - 1 else others_by
    if e["unpacked_by"] not in want:
        sys.exit("layer %d: unpacked_by %s, expected one of %s" % (i + 1, e["unpacked_by"], want))
    if not isinstance(e["seconds"], (int, float)) or e["seconds"] < 0:
        sys.exit("layer %d: seconds %r" % (i + 1, e["seconds"]))
' "$LAYERS" "$DIFF_IDS" "$3" "$4" "${ORACLE[@]}" 2>&1) || fail "$2: $bad"
  ok "$2"
}

no_leftovers() { # WHAT
  local active
  active=$(ctr_ -n "$NS" snapshots ls | grep '^extract-prepull' | grep -w Active || true)
  assert_eq "" "$active" "$1: no active snapshot of prepull's is left"
}

# ---- 1. applied as the bytes arrive
start_containerd
NS=stream
prepull_ok "pull into containerd, layers applied as they arrive" pull -v --json \
  --store "containerd:$CTD_SOCK" --namespace "$NS" --state-dir "$T/state1" -j 4 --chunk-size 1M "$REF"
image_works "$NS" "streamed"
check_layer_events "$OUT" "--json: the top layer unpacked by prepull as it arrived, every layer with its chain" \
  prepull-streaming "prepull-streaming|prepull-from-store"
applying=$(grep -n "layer ${TOP:0:19}: applying into snapshot" <<<"$ERR" | head -n 1 | cut -d: -f1)
committed=$(grep -n "blob ${TOP:0:19}: verified and committed" <<<"$ERR" | head -n 1 | cut -d: -f1)
[ -n "$applying" ] && [ -n "$committed" ] || fail "the -v log lacks the apply or commit line of the top layer"
assert_num "$applying" -lt "$committed" "the top layer's snapshot was being fed before its blob was complete"
assert_contains "$ERR" "layer ${TOP:0:19}: unpacked as sha256:[0-9a-f]{12} by prepull as it arrived" \
  "-v says the top layer was applied by prepull as it arrived"
no_leftovers "streamed"

# The oracle: containerd's own Diff.Apply of the same layers, in another namespace
# (the blobs are in the content store already: nothing is fetched).
prepull_ok "the same image applied by containerd (--unpacker containerd)" pull -v --json \
  --store "containerd:$CTD_SOCK" --namespace oracle --state-dir "$T/state1" --unpacker containerd "$REF"
assert_contains "$ERR" "unpacked as sha256:[0-9a-f]{12} by containerd" "-v says containerd applied the layers"
check_layer_events "$OUT" "--json: every layer unpacked by containerd (--unpacker containerd)" containerd containerd
same_trees stream oracle "prepull's apply against containerd's"
ORACLE_CTD_SOCK=$CTD_SOCK

# ---- 2. a flipped byte in the top layer: the snapshot starts over
start_containerd flip
NS=flip
fs_rules "{\"rules\": [{\"path\": \"$TOP\", \"fault\": \"flip\", \"offset\": 5000000}]}"
prepull_ok "a flipped byte mid-layer" pull -v --store "containerd:$CTD_SOCK" --namespace "$NS" \
  --state-dir "$T/state2" -j 4 --chunk-size 1M "$REF"
assert_eq 1 "$(fs_applied)" "flip: the fault server flipped one byte"
assert_contains "$ERR" "blob ${TOP:0:19}: repaired" "flip: the blob was repaired"
image_works "$NS" "flip"
no_leftovers "flip"
FLIP_SOCK=$CTD_SOCK
F_TOP=$(layer_dirs flip | tail -n 1)
CTD_SOCK=$ORACLE_CTD_SOCK
O_TOP=$(layer_dirs oracle | tail -n 1)
[ -d "$F_TOP" ] && [ -d "$O_TOP" ] || fail "flip: cannot find the top layer's snapshots ([$F_TOP] [$O_TOP])"
out=$("${ORACLE[@]}" compare "$O_TOP" "$F_TOP" --no-mtime data 2>&1) ||
  fail "flip: the top layer's tree differs from containerd's: $out"
ok "flip: the committed top layer holds the same tree as containerd's apply"
CTD_SOCK=$FLIP_SOCK
fs_rules '{"rules": []}'

# ---- 3. SIGKILL while the top layer is being applied, then a clean run
start_containerd killed
NS=killed
fs_reset_log
# Chunks of 512 KiB on 2 connections: what the kill throws away is small beside the image.
start_prepull_bg pull -v --store "containerd:$CTD_SOCK" --namespace "$NS" --state-dir "$T/state3" \
  -j 2 --chunk-size 512K "$REF"
for _ in $(seq 1 200); do
  grep -q "layer ${TOP:0:19}: applying into snapshot" "$PP_ERRF" && break
  kill -0 "$PP_PID" 2>/dev/null || fail "prepull ended before applying the top layer: $(tail -n 5 "$PP_ERRF")"
  sleep 0.05
done
grep -q "layer ${TOP:0:19}: applying into snapshot" "$PP_ERRF" || fail "the top layer was never being applied"
sleep 0.5
kill -KILL "$PP_PID"
wait "$PP_PID" 2>/dev/null || true
left=$(ctr_ -n "$NS" snapshots ls | grep '^extract-prepull' | grep -w Active || true)
log "left by the killed run: $left"
assert_ne "" "$left" "the killed run left its active snapshot"
prepull_ok "the run after the kill" pull -v --store "containerd:$CTD_SOCK" --namespace "$NS" \
  --state-dir "$T/state3" -j 2 --chunk-size 512K "$REF"
assert_contains "$ERR" "removing snapshot .*left by an interrupted run" "the next run removes the killed run's snapshot"
assert_contains "$ERR" "resuming" "the next run resumes the top layer's blob"
image_works "$NS" "after the kill"
no_leftovers "after the kill"
settle
served=$(fs_query 'sum(r["bytes"] for r in L if r["method"] == "GET" and "/blobs/" in r["path"])')
assert_num "$served" -le "$((IMAGE_BYTES * 11 / 10))" \
  "blob bytes served across the killed run and the next stay within 1.1x the image ($IMAGE_BYTES)"


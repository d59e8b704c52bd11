#!/usr/bin/env bash
# File descriptors with many blobs: an image of 600 small layers, pulled under an
# open-file limit of 256 (soft and hard). A blob holds its partial file and journal only
# while it is fetched or hashed, and no more blobs are open at once than the limit
# leaves room for, so the pull succeeds and every blob is verified. A soft limit below
# the hard one is raised to it at start (the engine's debug line names the limit it
# found).
source "$(dirname "$0")/lib.sh"
need_prepull

N=600
start_registry
layers=()
for i in $(seq 1 "$N"); do layers+=(--layer "random:none:1K:$((1000 + i))"); done
mkimage "$T/src" v1 "${layers[@]}"
# Pushing 600 blobs one by one takes minutes: put the layout into the registry's
# filesystem storage as a push would leave it (blobs, the repository's layer links, the
# manifest revision and the tag), then check the registry serves it.
"$PY" - "$T/src" "$REG_ROOT/docker/registry/v2" test/many v1 <<'PYEOF'
import json, os, shutil, sys
src, root, repo, tag = sys.argv[1:]
def link(path, digest):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write(digest)
for hx in os.listdir(os.path.join(src, "blobs/sha256")):
    d = os.path.join(root, "blobs/sha256", hx[:2], hx)
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(os.path.join(src, "blobs/sha256", hx), os.path.join(d, "data"))
    link(os.path.join(root, "repositories", repo, "_layers/sha256", hx, "link"), "sha256:" + hx)
top = [m for m in json.load(open(os.path.join(src, "index.json")))["manifests"]
       if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag][0]["digest"]
m = os.path.join(root, "repositories", repo, "_manifests")
link(os.path.join(m, "revisions/sha256", top[7:], "link"), top)
link(os.path.join(m, "tags", tag, "current/link"), top)
link(os.path.join(m, "tags", tag, "index/sha256", top[7:], "link"), top)
PYEOF
D=$(img_field v1 'o["digest"]')
assert_eq "$D" "$(registry_digest "$REG_ADDR/test/many:v1")" "the registry serves the image from its storage"
assert_eq "$N" "$(img_field v1 'len(o["platforms"]["linux/amd64"]["layers"])')" "the image has $N layers"
REF=$REG_ADDR/test/many:v1

# Soft and hard limit 256: the old engine opened every queued blob's two files at once.
t0=$(date +%s.%N)
run_prepull_limited() { # "ULIMIT COMMANDS" PREPULL ARGS...
  local lim=$1
  shift
  log "($lim) prepull $*"
  set +e
  (eval "$lim" && exec "$PREPULL" "$@") >"$T/lim.out" 2>"$T/lim.err"
  RC=$?
  set -e
  OUT=$(cat "$T/lim.out")
  ERR=$(cat "$T/lim.err")
  [ "$RC" = 0 ] || tail -n 20 "$T/lim.err" | sed 's/^/#   stderr: /'
}
run_prepull_limited "ulimit -n 256" pull --store "oci:$T/oci1" --state-dir "$T/state1" -j 16 --plain-http "$REF"
log "ulimit -n 256, -j 16: exit $RC after $(elapsed_since "$t0")s"
assert_eq 0 "$RC" "$N blobs under ulimit -n 256 (-j 16): exit 0"
assert_not_contains "$ERR" "Too many open files" "no descriptor ran out"
verify_layout "$T/oci1" v1
assert_eq "$D" "$(index_entries "$T/oci1" | cut -d' ' -f1)" "index entry has the image digest"
assert_eq "$((N + 2))" "$(blob_count "$T/oci1")" "every layer, the config and the manifest are in the store"

# More connections than the limit leaves room for blobs at two descriptors each.
run_prepull_limited "ulimit -n 256" pull --store "oci:$T/oci2" --state-dir "$T/state2" -j 96 --plain-http -v "$REF"
assert_eq 0 "$RC" "$N blobs under ulimit -n 256 (-j 96): exit 0"
verify_layout "$T/oci2" v1
line=$(grep -F "blobs open at once" "$T/lim.err" | head -n 1)
log "$line"
assert_contains "$line" "at most [0-9]+ blobs open at once \(open-file limit 256\)" "the engine sizes what it opens by the limit"

# A soft limit below the hard one is raised to the hard one.
run_prepull_limited "ulimit -S -n 256 && ulimit -H -n 4096" pull --store "oci:$T/oci3" --state-dir "$T/state3" -j 16 --plain-http -v "$REF"
assert_eq 0 "$RC" "soft limit 256, hard 4096: exit 0"
assert_contains "$(grep -F "blobs open at once" "$T/lim.err" | head -n 1)" "open-file limit 4096\)" "the soft limit was raised to the hard one (4096)"

# The boot unit gives the service a high limit too.
lim=$(sed -n 's/^LimitNOFILE=//p' "$PREPULL_SRC/scripts/systemd/prepull.service")
assert_ne "" "$lim" "prepull.service sets LimitNOFILE="
assert_num "$lim" -ge 65536 "prepull.service: LimitNOFILE=$lim"

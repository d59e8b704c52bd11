#!/usr/bin/env bash
# prepull demo, from the root of a fresh clone on Debian 12 (as root):
#   bash scripts/demo.sh
# Installs only what the demo needs (scripts/deps.sh --demo: the build
# dependencies, docker-registry, skopeo, busybox-static, zstd, python3, curl; no
# daemon left enabled or running, nothing that changes the next boot), builds
# into build/, starts a throwaway local registry on 127.0.0.1, builds a demo
# image from local files (busybox + a ~256 MiB generated layer, gzip and zstd),
# pushes it, pre-pulls it with prepull into an OCI layout and says where it went
# and how fast. Nothing leaves this machine.
#   DEMO_SIZE=64M     a smaller layer
#   DEMO_OUT=DIR      where the layout goes (default /tmp/prepull-demo)
#   PREPULL=BINARY    use this prepull and skip the build
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SIZE=${DEMO_SIZE:-256M}
OUT=${DEMO_OUT:-/tmp/prepull-demo}
OCI=$OUT/oci

step() { printf '\n==> %s\n' "$*"; }

step "dependencies"
bash scripts/deps.sh --demo

if [ -n "${PREPULL:-}" ]; then
  step "prepull: $PREPULL"
else
  step "build"
  cmake -S . -B build >/dev/null
  cmake --build build -j "$(nproc)"
  PREPULL=$ROOT/build/prepull
fi
"$PREPULL" --version

WORK=$(mktemp -d /tmp/prepull-demo-work.XXXXXX)
REG_PID=""
cleanup() {
  if [ -n "$REG_PID" ]; then
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step "throwaway registry on 127.0.0.1"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/v2/" && break
  kill -0 "$REG_PID" 2>/dev/null || { cat "$WORK/registry.log"; exit 1; }
  sleep 0.1
done
echo "registry: http://127.0.0.1:$PORT (pid $REG_PID)"

step "demo image: busybox (gzip) + $SIZE generated data (zstd)"
python3 tests/integration/mkimage.py --out "$WORK/layout" --tag demo \
  --layer busybox:gzip --layer "random:zstd:$SIZE:2024" >"$WORK/image.json"
IMAGE=127.0.0.1:$PORT/demo/app:latest
skopeo copy --quiet --dest-tls-verify=false --preserve-digests "oci:$WORK/layout:demo" "docker://$IMAGE"
echo "pushed $IMAGE"

step "prepull pull --store oci:$OCI $IMAGE"
rm -rf "$OUT"
mkdir -p "$OUT"
start=$(date +%s.%N)
"$PREPULL" pull --store "oci:$OCI" --state-dir "$OUT/state" "$IMAGE"
end=$(date +%s.%N)

step "result"
bytes=$(du -sb "$OCI/blobs" | cut -f1)
python3 - "$start" "$end" "$bytes" "$OCI" "$IMAGE" <<'PY'
import json, sys
start, end, nbytes, oci, image = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
secs = max(end - start, 1e-6)
idx = json.load(open(oci + "/index.json"))
print("image     %s" % image)
for m in idx.get("manifests", []):
    a = m.get("annotations", {})
    print("stored as %s  (%s)" % (a.get("io.containerd.image.name", "?"), m["digest"]))
print("layout    %s  (skopeo inspect oci:%s:latest)" % (oci, oci))
print("size      %.1f MiB in %.2f s = %.0f MB/s" % (nbytes / 1048576, secs, nbytes / secs / 1e6))
PY

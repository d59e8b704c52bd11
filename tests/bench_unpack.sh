#!/usr/bin/env bash
# Inflate and apply rates of the streaming layer applier (not a test).
#   tests/bench_unpack.sh [BUILD_DIR] [WORK_DIR]
# KIND=usrlib (default): a gzip -6 layer of real binaries and text (~870 MiB
#   of tar from /usr/lib, ~257 MiB gzip on Debian 12 with clang-14 installed);
#   times, from the page cache, ISA-L's streaming inflate alone (unpack_tool
#   --inflate-only), gzip -dc and zcat to /dev/null, and the whole pp_unpack
#   path (inflate + sha256 + tar apply) into WORK_DIR/out.
# KIND=bf16: a SIZE (default 1G) layer of bf16-like numbers (like model
#   weights) made by tests/integration/mkimage.py, gzip -6 and its zstd -3
#   twin; times inflate-only and the whole pp_unpack path on both.
# The layers are made once and kept in WORK_DIR (delete it when done).
# Each is run RUNS times (default 3).  COMPARE=/path/to/another/unpack_tool
# (e.g. one built from the commit before) runs that one too, alternately, so
# that both see the same load.  The load average is printed before each
# round: on a shared machine compare rounds taken under the same load (or
# user+sys CPU seconds), wall seconds only on an idle one.
set -euo pipefail
BUILD=${1:-build}
W=${2:-/var/tmp/prepull-bench-unpack}
RUNS=${RUNS:-3}
KIND=${KIND:-usrlib}
SIZE=${SIZE:-1G}
TOOL=$BUILD/tests/unpack_tool
SRC=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$TOOL" ] || { echo "no $TOOL: build first" >&2; exit 1; }
mkdir -p "$W"
TF="%e s wall, %U s user, %S s sys, %M KiB max RSS"

# Runs one pp_unpack pass: label tool layer.  Prints the tool's line with
# MB/s of tar stream, and the time(1) line.
apply_once() {
  local label=$1 tool=$2 layer=$3 line extra=()
  # A tool that has the option also prints each thread's CPU seconds (the busiest
  # thread's bounds the wall time on idle cores).
  ! grep -qa thread-times "$tool" || extra=(--thread-times)
  rm -rf "$W/out" && mkdir "$W/out"
  line=$(/usr/bin/time -o "$W/time" -f "$TF" "$tool" "${extra[@]}" --diff-id "$D" \
    --piece 1048576 "$layer" "$W/out" | tr '\n' ' ')
  echo "$label: $line" | awk '{
    for (i = 1; i <= NF; i++) { if ($i ~ /^uncompressed=/) u = substr($i, 14);
                                if ($i ~ /^seconds=/) s = substr($i, 9) }
    printf "%s MB/s=%.0f\n", $0, (s > 0 ? u / s / 1e6 : 0) }'
  echo "  $(cat "$W/time")"
}

if [ "$KIND" = bf16 ]; then
  if [ ! -s "$W/bf16.gz" ] || [ ! -s "$W/bf16.zst" ] || [ ! -s "$W/bf16.diffid" ]; then
    rm -rf "$W/layout"
    for c in gzip zstd; do
      python3 "$SRC/tests/integration/mkimage.py" --out "$W/layout" --tag "$c" \
        --layer "bf16:$c:$SIZE" >"$W/$c.json"
    done
    python3 - "$W" <<'PY'
import json, os, sys
w = sys.argv[1]
blobs = os.path.join(w, "layout", "blobs", "sha256")
for c, ext in (("gzip", "gz"), ("zstd", "zst")):
    j = json.load(open(os.path.join(w, c + ".json")))
    plat = next(iter(j["platforms"].values()))
    os.rename(os.path.join(blobs, plat["layers"][0].split(":")[1]),
              os.path.join(w, "bf16." + ext))
    cfg = json.load(open(os.path.join(blobs, plat["config"].split(":")[1])))
    open(os.path.join(w, "bf16.diffid"), "w").write(cfg["rootfs"]["diff_ids"][0] + "\n")
PY
    rm -rf "$W/layout" "$W/gzip.json" "$W/zstd.json"
  fi
  D=$(cat "$W/bf16.diffid")
  echo "layers: $(stat -c %s "$W/bf16.gz") bytes gzip, $(stat -c %s "$W/bf16.zst") bytes zstd"
  cat "$W/bf16.gz" "$W/bf16.zst" >/dev/null
  for i in $(seq 1 "$RUNS"); do
    echo "round $i: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$TOOL" --inflate-only "$W/bf16.gz"
    for l in bf16.gz bf16.zst; do
      apply_once "pp_unpack $l" "$TOOL" "$W/$l"
      [ -z "${COMPARE:-}" ] || apply_once "compare $l" "$COMPARE" "$W/$l"
    done
  done 2>&1
  rm -rf "$W/out" "$W/time"
  exit 0
fi

if [ ! -s "$W/bench.tar.gz" ]; then
  dirs=()
  for d in usr/lib/llvm-14 usr/lib/gcc usr/lib/python3 usr/lib/python3.11 usr/lib/postgresql; do
    [ -d "/$d" ] && dirs+=("$d")
  done
  tar -cf "$W/bench.tar" -C / "${dirs[@]}" 2>/dev/null || true
  gzip -6 -n -c "$W/bench.tar" >"$W/bench.tar.gz"
  sha256sum "$W/bench.tar" | cut -d' ' -f1 >"$W/bench.sha"
  rm -f "$W/bench.tar"
fi
[ -s "$W/bench.sha" ] || gzip -dc "$W/bench.tar.gz" | sha256sum | cut -d' ' -f1 >"$W/bench.sha"
D=sha256:$(cat "$W/bench.sha")
echo "layer: $(stat -c %s "$W/bench.tar.gz") bytes gzip"
cat "$W/bench.tar.gz" >/dev/null
for i in $(seq 1 "$RUNS"); do
  echo "round $i: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -f "isal inflate-only: $TF" "$TOOL" --inflate-only "$W/bench.tar.gz"
  /usr/bin/time -f "gzip -dc: $TF" gzip -dc "$W/bench.tar.gz" >/dev/null
  /usr/bin/time -f "zcat: $TF" zcat "$W/bench.tar.gz" >/dev/null
  apply_once "pp_unpack (inflate+sha256+apply)" "$TOOL" "$W/bench.tar.gz"
  [ -z "${COMPARE:-}" ] || apply_once "compare" "$COMPARE" "$W/bench.tar.gz"
done 2>&1
rm -rf "$W/out" "$W/time"

#!/usr/bin/env bash
# Inflate and apply rates of the streaming layer applier (not a test).
#   tests/bench_unpack.sh [BUILD_DIR] [WORK_DIR]
# Makes a gzip -6 layer of real binaries and text (~870 MiB of tar from
# /usr/lib, ~257 MiB gzip on Debian 12 with clang-14 installed) unless
# WORK_DIR/bench.tar.gz exists, then times, from the page cache:
#   ISA-L streaming inflate alone (unpack_tool --inflate-only),
#   gzip -dc and zcat to /dev/null,
#   the whole pp_unpack path (inflate + sha256 + tar apply) into WORK_DIR/out.
# Each is run RUNS times (default 3); compare user+sys CPU seconds on a busy
# machine, wall seconds on an idle one.
set -euo pipefail
BUILD=${1:-build}
W=${2:-/var/tmp/prepull-bench-unpack}
RUNS=${RUNS:-3}
TOOL=$BUILD/tests/unpack_tool
[ -x "$TOOL" ] || { echo "no $TOOL: build first" >&2; exit 1; }
mkdir -p "$W"
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
TF="%e s wall, %U s user, %S s sys, %M KiB max RSS"
for i in $(seq 1 "$RUNS"); do
  /usr/bin/time -f "isal inflate-only: $TF" "$TOOL" --inflate-only "$W/bench.tar.gz"
  /usr/bin/time -f "gzip -dc: $TF" gzip -dc "$W/bench.tar.gz" >/dev/null
  /usr/bin/time -f "zcat: $TF" zcat "$W/bench.tar.gz" >/dev/null
  rm -rf "$W/out" && mkdir "$W/out"
  /usr/bin/time -f "pp_unpack (inflate+sha256+apply): $TF" \
    "$TOOL" --diff-id "$D" --piece 1048576 "$W/bench.tar.gz" "$W/out"
done 2>&1
rm -rf "$W/out"

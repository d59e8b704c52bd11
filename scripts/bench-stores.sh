#!/usr/bin/env bash
# prepull store benchmark (by hand, not a test; needs root):
#   bash scripts/bench-stores.sh [--a-size 1536M] [--a-small 45M] [--a-comp gzip|none]
#        [--b-size 1G] [--b-kind bf16|text] [--rate 128mbit] [--link RATE] [--jobs 16]
#        [--only a|b] [--no-twin] [--prepull PATH] [--timeout SECONDS]
#        [--prepull-only [--versus PATH] [--rounds N]]
#   bash scripts/bench-stores.sh --image many [--m-layers 16] [--m-size 48M] [--b-kind ...]
#
# "Time until the runtime can start the image", behind a TRUE per-connection cap: the
# registry, every client and every daemon run inside a network namespace of their own
# (scripts/netsim.sh: an htb class per client port, --rate per TCP connection, default
# 128mbit = 16 MB/s, optionally under a --link cap). Daemons pull by themselves
# (containerd 2.1's transfer service, dockerd), so they sit behind the same cap.
#
# Images (tests/integration/mkimage.py), pushed to a private docker-registry:
#   A      busybox (gzip) + --a-size incompressible layer (--a-comp, gzip level 1 by
#          default) + --a-small text layer (zstd). A-dk: the same, small layer gzip, for
#          Docker 20.10 (whose `docker pull` cannot take zstd layers).
#   B      busybox (gzip) + one --b-size compressible layer (--b-kind: bf16-like numbers
#          or text), gzip -6.
#   B-zst  B's twin: the same content, zstd -3 (fewer rows: prepull and containerd
#          2.1's multipart pull; --no-twin leaves it out).
#   M      (--image many, alone) busybox + --m-layers layers of --m-size --b-kind-like
#          content each, gzip -6: does the streaming applier keep up layer by layer?
#          Rows: the OCI download and prepull into containerd 1.6 only, then a table per
#          layer from prepull -v (its stderr stamped with the time since the start):
#          when the blob was committed, when its snapshot was committed, and whether
#          layer i was unpacked before layer i+1's blob was complete. Where it always
#          is, unpacking later layers concurrently cannot shorten the pull.
# Rows, per image, each against FRESH private daemons (own root, state, socket), run one
# after another:
#   prepull -> OCI layout (the download baseline);
#   containerd 1.6 (Debian 12) and 2.1 (Debian sid, scripts/newer-runtimes.sh): prepull
#     with its streaming unpacker, prepull --unpacker containerd (Diff.Apply per layer),
#     and their own `ctr images pull` (1.6 stock; 2.1 with multipart fetch on: config
#     version 3, 16 downloads x 16 MiB in the daemon's transfer service);
#   Docker 28 (sid) with its containerd image store on a private containerd 2.1: prepull
#     (both unpackers) and `docker pull`; Docker 20.10's classic store: prepull, `docker pull`.
# ready = pull + the first `ctr run --rm REF ID /bin/sh -c true` / `docker run --rm
# --pull=never --network none REF /bin/sh -c true` (each timed on its own).
# Also: inflate rates on B's gzip layer (prepull's ISA-L inflate and its whole apply path
# via build/tests/unpack_tool, unpigz and gzip -dc, containerd's Diff.Apply with unpigz on
# its PATH and with CONTAINERD_DISABLE_PIGZ=1); client CPU and peak RSS (/usr/bin/time);
# the daemon's CPU seconds (/proc/PID/stat, itself and the children it waited for).
# Physical limit = image bytes / min(16 x --rate, --link). Targets (issue 12): prepull's
# pull into containerd <= 1.2 x its own OCI download of the same image; prepull's ready
# <= 0.5 x containerd 2.1 multipart's ready.
#
# Defaults took 19 minutes on 2 busy CPUs (load 3-4 from other work; 25 at load 5-12),
# most of it the runtimes' single-connection pulls (`ctr images pull` 1.6 and both
# `docker pull`s fetch a layer over one connection: ~110 s for A); disk: about
# 6 x --a-size at the peak. Only processes this script started
# are stopped (by PID); the namespace it made is removed; big files go at the end.
#
# --prepull-only: only prepull's rows (the OCI download, and the streaming unpacker into
# containerd 1.6 and 2.1), --rounds times, with no rivals and no inflate table; --versus
# PATH alternates a second prepull binary with the first in every round (an A/B of two
# builds on the same images and daemons; its rows say "prepull B").
#
# Environment: PREPULL (binary; default build/prepull), KEEP_TMP=1 (keep the small logs),
# PREPULL_NEWER_DIR (see scripts/newer-runtimes.sh).
set -euo pipefail

A_SIZE=1536M
A_SMALL=45M
A_COMP=gzip
B_SIZE=1G
B_KIND=bf16
RATE=128mbit
LINK=""
JOBS=16
ONLY=""
SHAPE=""
M_LAYERS=16
M_SIZE=48M
TWIN=1
RUN_TIMEOUT=900
PPONLY=0
VERSUS=""
ROUNDS=1
ARGS=("$@")

usage() {
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}
while [ $# -gt 0 ]; do
  case $1 in
  --a-size) A_SIZE=$2; shift 2 ;;
  --a-small) A_SMALL=$2; shift 2 ;;
  --a-comp) A_COMP=$2; shift 2 ;;
  --b-size) B_SIZE=$2; shift 2 ;;
  --b-kind) B_KIND=$2; shift 2 ;;
  --rate) RATE=$2; shift 2 ;;
  --link) LINK=$2; shift 2 ;;
  --jobs) JOBS=$2; shift 2 ;;
  --only) ONLY=$2; shift 2 ;;
  --image) SHAPE=$2; shift 2 ;;
  --m-layers) M_LAYERS=$2; shift 2 ;;
  --m-size) M_SIZE=$2; shift 2 ;;
  --no-twin) TWIN=0; shift ;;
  --prepull) PREPULL=$2; shift 2 ;;
  --prepull-only) PPONLY=1; shift ;;
  --versus) VERSUS=$2; shift 2 ;;
  --rounds) ROUNDS=$2; shift 2 ;;
  --timeout) RUN_TIMEOUT=$2; shift 2 ;;
  -h | --help) usage 0 ;;
  *) echo "bench-stores.sh: unknown option $1" >&2; usage 2 >&2 ;;
  esac
done
case $A_COMP in none | gzip) ;; *) echo "bench-stores.sh: --a-comp none or gzip" >&2; exit 2 ;; esac
case $B_KIND in bf16 | text) ;; *) echo "bench-stores.sh: --b-kind bf16 or text" >&2; exit 2 ;; esac
case $ONLY in "" | a | b) ;; *) echo "bench-stores.sh: --only a or b" >&2; exit 2 ;; esac
case $SHAPE in "") ;; many) ONLY=m ;; *) echo "bench-stores.sh: --image many" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/netsim.sh
source "$ROOT/scripts/netsim.sh"

# ---------------------------------------------------------------- outside: the namespace
# The script runs itself again inside a namespace it creates, and removes it afterwards.
if [ -z "${BENCH_NETNS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "bench-stores.sh: needs root" >&2; exit 1; }
  NETNS=ppbench-$$
  link_opt=()
  [ -n "$LINK" ] && link_opt=(--link "$LINK")
  netsim_create "$NETNS" --rate "$RATE" "${link_opt[@]}" || exit 1
  trap 'netsim_destroy "$NETNS"' EXIT
  set +e
  netsim_exec "$NETNS" env BENCH_NETNS="$NETNS" bash "$0" "${ARGS[@]}"
  rc=$?
  exit "$rc"
fi
NETNS=$BENCH_NETNS

: "${PREPULL:=$ROOT/build/prepull}"
PREPULL=$(readlink -f "$PREPULL")
[ -z "$VERSUS" ] || VERSUS=$(readlink -f "$VERSUS")
export PREPULL PREPULL_SRC=$ROOT
PYTHON=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
export PYTHON
UNPACK_TOOL=$(dirname "$PREPULL")/tests/unpack_tool

# The test harness (registry, mkimage, PID bookkeeping) and the dockerd helpers; their
# EXIT traps are replaced by ours.
# shellcheck source=/dev/null
source "$ROOT/tests/integration/lib.sh"
# shellcheck source=/dev/null
source "$ROOT/tests/integration/dockerd.sh"
# The harness's progress lines go to stderr: stdout is the report.
log() { echo "# $*" >&2; }
NEWER=$(bash "$ROOT/scripts/newer-runtimes.sh" 2>"$T/logs/newer-runtimes.log") ||
  fail "scripts/newer-runtimes.sh failed: $(tail -n 3 "$T/logs/newer-runtimes.log")"

CTD16=$(command -v containerd || echo /usr/bin/containerd)
CTR16=$(command -v ctr || echo /usr/bin/ctr)
CTD21=$NEWER/usr/bin/containerd
CTR21=$NEWER/usr/bin/ctr
DOCKERD20=$(command -v dockerd || echo /usr/sbin/dockerd)
DOCKERD28=$NEWER/usr/sbin/dockerd

CTD_DIRS=()
CTD_PID=""
_bench_cleanup() {
  local rc=$? pid
  set +e
  stop_dockerd
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  # Anything a daemon left mounted under our temp dir would stop rm -rf.
  awk -v d="$T/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$T/registry" "$T/src" "$T/dockerd" "$T"/state-* "$T"/oci-* "$T/unpack-out" "${CTD_DIRS[@]}"
  if [ "$rc" -ne 0 ]; then
    echo "bench-stores.sh: failed (rc=$rc); logs in $T" >&2
    _dump_logs >&2
  elif [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "# logs kept in $T"
  else
    rm -rf "$T"
  fi
  exit "$rc"
}
set_trap() { trap _bench_cleanup EXIT; }
set_trap

BENCH_T0=$(date +%s)
say() { printf '# [%5.0fs] %s\n' "$(($(date +%s) - BENCH_T0))" "$*" >&2; }
# now, secs, div, bytes_of, rate_bps (and class_bytes, conns_since below)
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

# ---------------------------------------------------------------- requirements
need_prepull
for c in docker-registry skopeo zstd curl runc pigz unpigz nsenter "$CTD16" "$CTR16" "$CTD21" "$CTR21" "$DOCKERD20" "$DOCKERD28"; do
  command -v "$c" >/dev/null || fail "$c is not installed (scripts/deps.sh --test; scripts/newer-runtimes.sh)"
done
[ -x "$DOCKER_CLI" ] || fail "$DOCKER_CLI not installed (package docker.io)"
[ -x /usr/bin/time ] || fail "/usr/bin/time is not installed (package time, scripts/deps.sh --test)"
[ -x "$UNPACK_TOOL" ] || fail "no $UNPACK_TOOL (build the tests beside $PREPULL)"
A_B=$(bytes_of "$A_SIZE")
B_B=$(bytes_of "$B_SIZE")
need=$((A_B * 6 + B_B * 5))
[ "$ONLY" = m ] && need=$(($(bytes_of "$M_SIZE") * M_LAYERS * 5))
avail=$(($(df -Pk "$T" | awk 'NR==2{print $4}') * 1024))
[ "$avail" -gt "$need" ] || fail "need about $((need >> 30)) GiB free in $T, have $((avail >> 30)) GiB"
CONN_BPS=$(rate_bps "$RATE")
LIMIT_BPS=$((CONN_BPS * 16))
if [ -n "$LINK" ]; then
  l=$(rate_bps "$LINK")
  [ "$l" -lt "$LIMIT_BPS" ] && LIMIT_BPS=$l
fi
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
say "prepull: $PREPULL ($("$PREPULL" --version 2>&1 | head -n 1)); namespace $NETNS; tmp dir: $T"

# ---------------------------------------------------------------- registry and images
start_registry
netsim_cap "$NETNS" "$REG_PORT" || fail "cannot cap port $REG_PORT"
say "registry $REG_ADDR, responses capped at $RATE per connection${LINK:+, link $LINK}"

IMAGES=()
declare -A IMG_BYTES=() IMG_REF=() IMG_DESC=() BIG_DIGEST=()
build_push() { # KEY DESC LAYER...
  local key=$1 desc=$2
  shift 2
  mkimage "$T/src" "$key" --reuse-layers "$@"
  push_layout "$T/src" "$key" "$REG_ADDR/bench/stores:$key"
  IMG_BYTES[$key]=$(img_field "$key" 'o["bytes"]')
  IMG_REF[$key]=$REG_ADDR/bench/stores:$key
  IMG_DESC[$key]=$desc
  BIG_DIGEST[$key]=$(img_field "$key" 'o["platforms"]["linux/amd64"]["layers"][1]')
}
t0=$(date +%s)
if [ "$ONLY" = m ]; then
  m_layers=(--layer busybox:gzip)
  for i in $(seq 1 "$M_LAYERS"); do m_layers+=(--layer "$B_KIND:gzip:$M_SIZE:$((100 + i))"); done
  build_push m "busybox + $M_LAYERS layers of $M_SIZE $B_KIND-like, gzip -6" "${m_layers[@]}"
  M_LAYER_DIGESTS=$(img_field m '" ".join(o["platforms"]["linux/amd64"]["layers"])')
  IMAGES+=(m)
elif [ "$ONLY" != b ]; then
  BIG="random:$A_COMP:$A_SIZE:1536"
  build_push a "busybox + $A_SIZE incompressible ($A_COMP) + $A_SMALL text (zstd)" \
    --layer busybox:gzip --layer "$BIG" --layer "text:zstd:$A_SMALL:64"
  build_push a-dk "A with the text layer as gzip (for Docker 20.10)" \
    --layer busybox:gzip --layer "$BIG" --layer "text:gzip:$A_SMALL:64"
  IMAGES+=(a)
fi
if [ "$ONLY" != a ] && [ "$ONLY" != m ]; then
  build_push b "busybox + $B_SIZE $B_KIND-like, gzip -6" --layer busybox:gzip --layer "$B_KIND:gzip:$B_SIZE:7"
  IMAGES+=(b)
  if [ "$TWIN" = 1 ]; then
    build_push b-zst "B's twin: the same $B_SIZE $B_KIND-like content, zstd -3" \
      --layer busybox:gzip --layer "$B_KIND:zstd:$B_SIZE:7"
    IMAGES+=(b-zst)
  fi
fi
say "images built and pushed in $(($(date +%s) - t0)) s"

# ---------------------------------------------------------------- inflate rates (B's gzip layer)
INFL=() # "what|seconds|MB/s of tar|note"
B_TAR=0
if [ "$ONLY" != a ] && [ "$ONLY" != m ] && [ "$PPONLY" = 0 ]; then
  blob=$T/src/blobs/sha256/${BIG_DIGEST[b]#sha256:}
  diffid=$("$PY" -c 'import json, sys
d = sys.argv[1]
cfg = json.load(open(d + "/blobs/sha256/" + json.load(open(sys.argv[2]))["platforms"]["linux/amd64"]["config"][7:]))
print(cfg["rootfs"]["diff_ids"][1])' "$T/src" "$T/img-b.json")
  B_TAR=$(gzip -dc "$blob" | wc -c)
  B_GZ=$(stat -c %s "$blob")
  cat "$blob" >/dev/null
  infl() { # WHAT CMD...  (wall and CPU seconds of CMD; output to /dev/null)
    local what=$1 f=$T/logs/infl.time e u s m c
    shift
    /usr/bin/time -f '%e %U %S %M' -o "$f" "$@" >/dev/null 2>"$T/logs/infl.err" ||
      fail "$what failed: $(tail -n 3 "$T/logs/infl.err")"
    read -r e u s m <"$f"
    c=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
    INFL+=("$what|$e|$(div "$B_TAR" "$(awk -v e="$e" 'BEGIN{print e * 1e6}')" %.0f)|$c|$(div "$B_TAR" "$(awk -v c="$c" 'BEGIN{print c * 1e6}')" %.0f)|RSS $((m / 1024)) MiB")
    say "  $what: $e s wall, $c s CPU"
  }
  infl "prepull: ISA-L inflate only (unpack_tool --inflate-only)" "$UNPACK_TOOL" --inflate-only "$blob"
  rm -rf "$T/unpack-out" && mkdir "$T/unpack-out"
  infl "prepull: inflate + sha256 + tar apply (unpack_tool)" "$UNPACK_TOOL" --diff-id "$diffid" --piece 1048576 "$blob" "$T/unpack-out"
  rm -rf "$T/unpack-out"
  infl "unpigz -dc" unpigz -dc "$blob"
  infl "gzip -dc (zlib)" gzip -dc "$blob"
fi
rm -rf "$T/src"

# ---------------------------------------------------------------- measurement helpers
ROWS=() # "img|runtime|tool|pull|run|ready|client cpu|rss KiB|daemon cpu|conns|note"
NS=bench

# CPU seconds of PIDS (and the children each waited for): utime+stime+cutime+cstime.
cpu_of() {
  local t=0 p v tck
  tck=$(getconf CLK_TCK)
  for p in "$@"; do
    v=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)
    t=$((t + v))
  done
  awk -v t="$t" -v k="$tck" 'BEGIN { printf "%.1f", t / k }'
}
# The whole machine's CPU ticks: "busy total steal" (busy = user + nice + system + irq +
# softirq; total adds idle, iowait and steal).
machine_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9; exit }' /proc/stat
}
# busy percent of the machine between two machine_ticks readings ("B0 T0 S0" "B1 T1 S1"):
# "BUSY STEAL", each a percent of all the CPUs' time.
busy_pct() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2];
    if (t <= 0) { print "- -"; exit } printf "%.0f %.0f\n", 100 * (y[1] - x[1]) / t, 100 * (y[3] - x[3]) / t }'
}
DAEMON_PIDS=()
daemon_pids() { # the daemons of this measurement and their direct children (dockerd's containerd)
  local p out=()
  for p in "${DAEMON_PIDS[@]}"; do out+=("$p" $(_children_of "$p")); done
  echo "${out[@]}"
}
# Connections a pull used: per-port classes that moved bytes (class_bytes, conns_since:
# scripts/bench-lib.sh).

# "${STAMPED[@]}" CMD... — runs CMD with each stderr line prefixed by the seconds since
# it started (a program, so that timeout and /usr/bin/time can run it).
cat >"$T/stamped.py" <<'EOF'
import subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stderr=subprocess.PIPE, text=True, errors="replace")
for line in p.stderr:
    sys.stderr.write("%.3f %s" % (time.monotonic() - t0, line))
sys.exit(p.wait())
EOF
STAMPED=("$PY" "$T/stamped.py")

# timed_pull NAME CMD... — sets PULL_A/B/S, CPU_S, RSS_K, CONNS0 (class bytes before)
timed_pull() {
  local name=$1 rc e u s m
  shift
  class_bytes >"$T/logs/$name.classes"
  DCPU0=$(cpu_of $(daemon_pids))
  local m0
  m0=$(machine_ticks)
  PULL_A=$(now)
  set +e
  /usr/bin/time -f '%e %U %S %M' -o "$T/logs/$name.time" \
    timeout -k 10 "$RUN_TIMEOUT" "$@" >"$T/logs/$name.out" 2>"$T/logs/$name.err" </dev/null
  rc=$?
  set -e
  PULL_B=$(now)
  read -r BUSY STEAL < <(busy_pct "$m0" "$(machine_ticks)")
  [ "$rc" -eq 0 ] || fail "$name failed (exit $rc): $(tail -n 5 "$T/logs/$name.err")"
  PULL_S=$(secs "$PULL_A" "$PULL_B")
  read -r e u s m < <(tail -n 1 "$T/logs/$name.time")
  CPU_S=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.1f", u + s }')
  RSS_K=$m
  CONNS=$(conns_since "$T/logs/$name.classes")
}
# timed_run NAME CMD... — the first start of the image; sets RUN_S, READY_S, DCPU
timed_run() {
  local name=$1 a b rc
  shift
  a=$(now)
  set +e
  timeout -k 10 300 "$@" >"$T/logs/$name.out" 2>&1 </dev/null
  rc=$?
  set -e
  b=$(now)
  [ "$rc" -eq 0 ] || fail "$name: the image does not start (exit $rc): $(tail -n 5 "$T/logs/$name.out")"
  RUN_S=$(secs "$a" "$b")
  READY_S=$(awk -v p="$PULL_S" -v r="$RUN_S" 'BEGIN { printf "%.1f", p + r }')
  DCPU=$(awk -v a="$DCPU0" -v b="$(cpu_of $(daemon_pids))" 'BEGIN { printf "%.1f", b - a }')
}
add_row() { # IMG RUNTIME TOOL NOTE
  ROWS+=("$1|$2|$3|$PULL_S|$RUN_S|$READY_S|$CPU_S|$RSS_K|$DCPU|$BUSY|$CONNS|$4")
  say "  $2 / $3: ready $READY_S s (pull $PULL_S, run $RUN_S), client CPU $CPU_S s, RSS $((RSS_K / 1024)) MiB, daemon CPU $DCPU s, machine busy $BUSY% (steal $STEAL%), $CONNS conns${4:+; $4}"
}

# What prepull -v said about the big layer (LOG DIGEST): who unpacked it, how long.
pp_note() {
  local log=$1 short=${2#sha256:} line
  short=${short:0:12}
  line=$(grep -E "layer (sha256:)?${short}[0-9a-f]*: unpacked as" "$log" | tail -n 1 | sed 's/.*: unpacked as [^ ]* //')
  if grep -q "containerd applies it" "$log"; then
    line="FELL BACK: $(grep -m1 'containerd applies it' "$log" | cut -c1-160); $line"
  fi
  echo "$line"
}

# A private containerd: VERSION (16|21), NAME, [multipart] [nopigz]. Sets CTD_*, CTR.
bench_containerd() {
  local ver=$1 name=$2 opt bin extra="" env=()
  shift 2
  CTD_DIR=$T/$name
  CTD_ROOT=$CTD_DIR/root
  CTD_SOCK=$CTD_DIR/c.sock
  CTD_DIRS+=("$CTD_DIR")
  mkdir -p "$CTD_DIR"
  for opt in "$@"; do
    case $opt in
    multipart) extra="[plugins.'io.containerd.transfer.v1.local']
  max_concurrent_downloads = 16
  concurrent_layer_fetch_buffer = 16777216" ;;
    nopigz) env+=(CONTAINERD_DISABLE_PIGZ=1) ;;
    esac
  done
  if [ "$ver" = 16 ]; then
    bin=$CTD16 CTR=$CTR16
    cat >"$CTD_DIR/config.toml" <<EOF
version = 2
root = "$CTD_ROOT"
state = "$CTD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTD_SOCK"
EOF
  else
    bin=$CTD21 CTR=$CTR21
    cat >"$CTD_DIR/config.toml" <<EOF
version = 3
root = "$CTD_ROOT"
state = "$CTD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images",
  "io.containerd.cri.v1.runtime", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTD_SOCK"
$extra
EOF
  fi
  bg "$name" env "${env[@]}" PATH="$(dirname "$bin"):$PATH" "$bin" --config "$CTD_DIR/config.toml"
  CTD_PID=$LAST_PID
  DAEMON_PIDS=("$CTD_PID")
  local i
  for i in $(seq 1 100); do
    if [ -S "$CTD_SOCK" ] && "$CTR" --address "$CTD_SOCK" version >/dev/null 2>&1; then return 0; fi
    kill -0 "$CTD_PID" 2>/dev/null || fail "containerd $name died at start-up: $(tail -n 3 "$T/logs/$name.log")"
    sleep 0.1
  done
  fail "containerd $name not ready after 10 s"
}
drop_containerd() {
  [ -n "$CTD_PID" ] || return 0
  kill "$CTD_PID" 2>/dev/null
  _wait_gone "$CTD_PID" 100 || kill -9 "$CTD_PID" 2>/dev/null
  wait "$CTD_PID" 2>/dev/null || true
  _forget_pid "$CTD_PID"
  CTD_PID=""
  awk -v d="$CTD_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$CTD_DIR"
}
# Docker: VERSION (20|28). 28 runs on a private containerd 2.1 with the containerd store.
bench_dockerd() {
  local ver=$1
  rm -rf "$T/dockerd"
  if [ "$ver" = 20 ]; then
    DOCKERD_BIN=$DOCKERD20 CONTAINERD_BIN=$CTD16 DOCKERD_DAEMON_JSON='{}'
    start_dockerd
  else
    bench_containerd 21 dk28-containerd
    DOCKERD_BIN=$DOCKERD28 CONTAINERD_BIN=$CTD21
    DOCKERD_DAEMON_JSON='{"features": {"containerd-snapshotter": true}}'
    start_dockerd --containerd="$CTD_SOCK"
  fi
  set_trap # start_dockerd installs the harness's trap; ours stops dockerd too
  DAEMON_PIDS=("$DOCKERD_PID" ${CTD_PID:+"$CTD_PID"})
  DVER=$("${DOCKER[@]}" version --format '{{.Server.Version}}' 2>/dev/null || echo "$ver")
}
drop_dockerd() {
  stop_dockerd
  rm -rf "$T/dockerd"
  drop_containerd
}

PP=("$PREPULL" pull -v --plain-http -j "$JOBS") # prepull pull with the bench's settings

# ---------------------------------------------------------------- the rows
row_oci() { # IMG
  local img=$1
  say "$img: prepull -> OCI layout"
  DAEMON_PIDS=()
  timed_pull "$img-oci" "${PP[@]}" --store "oci:$T/oci-$img" --state-dir "$T/state-$img-oci" "${IMG_REF[$img]}"
  RUN_S=0 READY_S=$PULL_S DCPU=0
  OCI_S[$img]=$PULL_S
  add_row "$img" "OCI layout" "prepull$PPTAG" ""
  rm -rf "$T/oci-$img" "$T/state-$img-oci"
}
row_ctd() { # IMG VER TOOL(pp|ppctd|ppnopigz|ctr)
  local img=$1 ver=$2 tool=$3 name=$1-ctd$2-$3 ref=${IMG_REF[$1]} label rt note=""
  rt="containerd $([ "$ver" = 16 ] && echo 1.6 || echo 2.1)"
  say "$img: $rt, $tool (fresh containerd)"
  case $tool in
  ctr)
    if [ "$ver" = 21 ]; then bench_containerd "$ver" "$name" multipart; else bench_containerd "$ver" "$name"; fi ;;
  ppnopigz) bench_containerd "$ver" "$name" nopigz ;;
  *) bench_containerd "$ver" "$name" ;;
  esac
  rt="containerd $("$CTR" --address "$CTD_SOCK" version | awk '/^Server:/ {s=1} s && /Version:/ {print $2; exit}')"
  case $tool in
  pp)
    label="prepull$PPTAG"
    if [ "$img" = m ]; then
      label="prepull (stderr stamped)"
      timed_pull "$name" "${STAMPED[@]}" "${PP[@]}" --store "containerd:$CTD_SOCK" --namespace "$NS" --state-dir "$T/state-$name" "$ref"
      M_LOG=$T/logs/$name.err
    else
      timed_pull "$name" "${PP[@]}" --store "containerd:$CTD_SOCK" --namespace "$NS" --state-dir "$T/state-$name" "$ref"
    fi ;;
  ppctd | ppnopigz)
    label="prepull --unpacker containerd"
    [ "$tool" = ppnopigz ] && label="$label, CONTAINERD_DISABLE_PIGZ=1"
    timed_pull "$name" "${PP[@]}" --unpacker containerd --store "containerd:$CTD_SOCK" --namespace "$NS" \
      --state-dir "$T/state-$name" "$ref" ;;
  ctr)
    label=$([ "$ver" = 21 ] && echo "ctr images pull, multipart 16 x 16 MiB" || echo "ctr images pull")
    timed_pull "$name" "$CTR" --address "$CTD_SOCK" -n "$NS" images pull --plain-http "$ref"
    "$CTR" --address "$CTD_SOCK" -n "$NS" images check "name==$ref" 2>&1 | grep -q 'true *$' ||
      note="not unpacked by the pull" ;;
  esac
  timed_run "$name-run" "$CTR" --address "$CTD_SOCK" -n "$NS" run --rm "$ref" "bench-$tool" /bin/sh -c true
  [ "$tool" = ctr ] || note=$(pp_note "$T/logs/$name.err" "${BIG_DIGEST[$img]}")
  add_row "$img" "$rt" "$label" "$note"
  PULLED["$img|$ver|$tool"]=$PULL_S
  READY["$img|$ver|$tool"]=$READY_S
  NOTE["$img|$ver|$tool"]=$note
  DCPUS["$img|$ver|$tool"]=$DCPU
  drop_containerd
  rm -rf "$T/state-$name"
}
row_docker() { # IMG VER TOOL(pp|ppctd|pull)
  local img=$1 ver=$2 tool=$3 name=$1-dk$2-$3 ref=${IMG_REF[$1]} label note=""
  [ "$ver" = 20 ] && [ "$img" = a ] && ref=${IMG_REF[a-dk]}
  say "$img: docker $ver, $tool (fresh dockerd)"
  bench_dockerd "$ver"
  local rt="Docker $DVER $([ "$ver" = 20 ] && echo "classic store" || echo "containerd store")"
  case $tool in
  pp)
    label="prepull"
    timed_pull "$name" "${PP[@]}" --store "docker:$DOCKER_SOCK" --state-dir "$T/state-$name" "$ref" ;;
  ppctd)
    label="prepull --unpacker containerd"
    timed_pull "$name" "${PP[@]}" --unpacker containerd --store "docker:$DOCKER_SOCK" --state-dir "$T/state-$name" "$ref" ;;
  pull)
    label="docker pull"
    timed_pull "$name" "${DOCKER[@]}" pull "$ref" ;;
  esac
  timed_run "$name-run" "${DOCKER[@]}" run --rm --pull=never --network none "$ref" /bin/sh -c true
  [ "$tool" = pull ] || note=$(pp_note "$T/logs/$name.err" "${BIG_DIGEST[$img]}")
  [ "$ver" = 20 ] && [ "$img" = a ] && note="image A-dk (text layer gzip)${note:+; $note}"
  add_row "$img" "$rt" "$label" "$note"
  PULLED["$img|d$ver|$tool"]=$PULL_S
  READY["$img|d$ver|$tool"]=$READY_S
  drop_dockerd
  rm -rf "$T/state-$name"
}

declare -A OCI_S=() PULLED=() READY=() NOTE=() DCPUS=()
M_LOG=""
PPTAG=""
# Every row of one image, rivals included.
rows_all() { # IMG
  local img=$1 ver
  row_oci "$img"
  if [ "$img" = m ]; then
    row_ctd m 16 pp
    return
  fi
  for ver in 16 21; do
    row_ctd "$img" "$ver" pp
    row_ctd "$img" "$ver" ppctd
  done
  row_ctd "$img" 21 ctr
  [ "$img" = b ] && row_ctd "$img" 16 ppnopigz
  [ "$img" = b-zst ] && return # the twin: prepull and containerd 2.1 multipart only
  row_ctd "$img" 16 ctr
  row_docker "$img" 28 pp
  row_docker "$img" 28 ppctd
  row_docker "$img" 28 pull
  row_docker "$img" 20 pp
  row_docker "$img" 20 pull
}
if [ "$PPONLY" = 1 ]; then
  BINS=("$PREPULL")
  [ -z "$VERSUS" ] || BINS+=("$VERSUS")
  for ((round = 1; round <= ROUNDS; round++)); do
    for bin in "${BINS[@]}"; do
      PP[0]=$bin
      PPTAG=$([ "$bin" = "$PREPULL" ] || echo " B")
      say "round $round of $ROUNDS: $bin"
      for img in "${IMAGES[@]}"; do
        row_oci "$img"
        row_ctd "$img" 16 pp
        row_ctd "$img" 21 pp
      done
    done
  done
else
  for img in "${IMAGES[@]}"; do rows_all "$img"; done
fi

# ---------------------------------------------------------------- report
mib() { echo $(($1 / 1048576)); }
echo
echo "## prepull against the runtimes' own pull: time until the image starts"
echo
echo "Network: scripts/netsim.sh, $RATE per TCP connection${LINK:+ under a $LINK link}; registry,"
echo "clients and daemons in one namespace; prepull \`-j $JOBS\`. Physical limit = image bytes /"
echo "$((LIMIT_BPS / 1000000)) MB/s. **ready** = pull + first run (\`/bin/sh -c true\`); x limit = ready / limit."
echo "client CPU = user + sys of the pull command; daemon CPU = the daemons' CPU seconds over"
echo "pull and first run; machine busy = all $(nproc) CPUs' busy time during the pull (registry, daemons"
echo "and kernel included), in percent; conns = client ports that carried blob bytes."
for img in "${IMAGES[@]}"; do
  lim=$(awk -v b="${IMG_BYTES[$img]}" -v r="$LIMIT_BPS" 'BEGIN { printf "%.1f", b / r }')
  echo
  echo "### Image ${img^^}: ${IMG_DESC[$img]} — ${IMG_BYTES[$img]} bytes, physical limit $lim s"
  echo
  echo "| runtime | tool | pull (s) | first run (s) | ready (s) | ready ÷ limit | client CPU (s) | peak RSS (MiB) | daemon CPU (s) | machine busy (%) | conns | big layer unpacked |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for r in "${ROWS[@]}"; do
    IFS='|' read -r i rt tool pull run ready cpu rss dcpu busy conns note <<<"$r"
    [ "$i" = "$img" ] || continue
    echo "| $rt | $tool | $pull | $run | $ready | $(div "$ready" "$lim") | $cpu | $((rss / 1024)) | $dcpu | $busy | $conns | $note |"
  done
  echo
  oci=${OCI_S[$img]}
  for k in 16 21 d28; do
    p=${PULLED["$img|$k|pp"]:-}
    [ -n "$p" ] || continue
    case $k in 16) w="containerd 1.6" ;; 21) w="containerd 2.1" ;; d28) w="Docker 28 (containerd store)" ;; esac
    c=${PULLED["$img|$k|ppctd"]:-}
    echo "- target (ready − first run) into $w ÷ OCI download ≤ 1.2: $p ÷ $oci = **$(div "$p" "$oci")**" \
      "${c:+(with --unpacker containerd: $(div "$c" "$oci"))}"
  done
  m=${READY["$img|21|ctr"]:-}
  [ -n "$m" ] && echo "- target prepull-ready ÷ containerd 2.1 multipart-ready ≤ 0.5: ${READY["$img|21|pp"]} ÷ $m = **$(div "${READY["$img|21|pp"]}" "$m")**" \
    "(--unpacker containerd: $(div "${READY["$img|21|ppctd"]}" "$m"))"
done
if [ -n "$M_LOG" ]; then
  echo
  echo "### Image M, layer by layer (prepull -v into containerd 1.6, seconds since the start)"
  echo
  echo "blob in = its blob verified and committed; unpacked = its snapshot committed; apply = what"
  echo "-v says (from preparing the snapshot: for a layer applied as it arrives this includes"
  echo "waiting for its bytes); slack = layer i+1's blob in − layer i unpacked (≥ 0: the"
  echo "applier was done with layer i before the bytes of layer i+1 were all in)."
  echo
  "$PY" - "$M_LOG" $M_LAYER_DIGESTS <<'EOF'
import re, sys
log, layers = sys.argv[1], sys.argv[2:]
blob_in, unpacked, how = {}, {}, {}
for line in open(log, errors="replace"):
    m = re.match(r"([0-9.]+) prepull: debug: (?:blob|layer) sha256:([0-9a-f]{12})[0-9a-f]*: (.*)", line)
    if not m:
        continue
    t, short, rest = float(m.group(1)), m.group(2), m.group(3)
    if rest.startswith("verified and committed"):
        blob_in.setdefault(short, t)
    elif rest.startswith("unpacked as") or rest.startswith("chain "):
        unpacked.setdefault(short, t)
        how[short] = re.sub(r"^unpacked as \S+ ", "", rest)
print("| layer | blob in (s) | unpacked (s) | slack (s) | how, from -v |")
print("|---:|---:|---:|---:|---|")
shorts = [d[7:19] for d in layers]
behind = 0
for i, s in enumerate(shorts):
    nxt = blob_in.get(shorts[i + 1]) if i + 1 < len(shorts) else None
    u = unpacked.get(s)
    slack = "%.2f" % (nxt - u) if nxt is not None and u is not None else "-"
    if nxt is not None and u is not None and nxt < u:
        behind += 1
    b = blob_in.get(s)
    print("| %d | %s | %s | %s | %s |" % (i + 1, "%.2f" % b if b is not None else "-",
          "%.2f" % u if u is not None else "-", slack, how.get(s, "")))
last = shorts[-1]
if last in blob_in and last in unpacked:
    print("\n- the top layer was unpacked %.2f s after its blob was in; layers unpacked after"
          " the next one's blob was in: %d of %d" % (unpacked[last] - blob_in[last], behind, len(shorts) - 1))
EOF
fi
if [ ${#INFL[@]} -gt 0 ]; then
  echo
  echo "### Inflate rates on image B's gzip layer ($B_GZ bytes gzip, $B_TAR bytes of tar)"
  echo
  echo "Wall seconds suffer from the machine's load; CPU seconds (user + sys) less so."
  echo
  echo "| what | wall (s) | MB/s of tar (wall) | CPU (s) | MB of tar per CPU s | note |"
  echo "|---|---:|---:|---:|---:|---|"
  for r in "${INFL[@]}"; do
    IFS='|' read -r w s rate c crate n <<<"$r"
    echo "| $w | $s | $rate | $c | $crate | $n |"
  done
  for k in "16|ppctd|containerd 1.6 Diff.Apply, unpigz on its PATH" "16|ppnopigz|containerd 1.6 Diff.Apply, CONTAINERD_DISABLE_PIGZ=1" \
    "21|ppctd|containerd 2.1 Diff.Apply, unpigz on its PATH"; do
    IFS='|' read -r v t w <<<"$k"
    s=$(sed -n 's/.*by containerd in \([0-9.]*\) s.*/\1/p' <<<"${NOTE["b|$v|$t"]:-}")
    c=${DCPUS["b|$v|$t"]:-}
    [ -n "$s" ] && echo "| $w (inflate + apply; time from prepull -v, CPU: the daemon's over pull and run) | $s |" \
      "$(div "$B_TAR" "$(awk -v s="$s" 'BEGIN{print s * 1e6}')" %.0f) | $c | $(div "$B_TAR" "$(awk -v c="$c" 'BEGIN{print c * 1e6}')" %.0f) | |"
  done
fi
echo
echo "- $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1048576)) GiB RAM," \
  "kernel $(uname -r), load before: $LOAD0, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- prepull $("$PREPULL" --version 2>&1 | head -n 1 | cut -d' ' -f2); runtimes: $(tr '\n' ' ' <"$NEWER/../root.stamp" 2>/dev/null)" \
  "+ Debian 12's containerd $("$CTD16" --version | awk '{print $3}') and dockerd $("$DOCKERD20" --version | awk '{print $3}' | tr -d ,)"
echo "- run took $(($(date +%s) - BENCH_T0)) s; command: bash scripts/bench-stores.sh ${ARGS[*]}"
say "done"

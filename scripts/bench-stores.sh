#!/usr/bin/env bash
# prepull store benchmark (by hand, not a test; needs root):
#   bash scripts/bench-stores.sh [--size 1536M] [--small 16M] [--comp none|gzip]
#                                [--prepull PATH] [--timeout SECONDS] [--only containerd|docker]
#
# "Time until the runtime can start the image", prepull against the runtime's own pull:
#   (a) containerd 1.6: `prepull pull --store containerd:SOCK --namespace bench` (download +
#       registration + unpack) versus `ctr -n bench images pull --plain-http REF` (which
#       also unpacks: ctr pull prepares the snapshots unless told otherwise; checked below
#       with `ctr images check`);
#   (b) dockerd 20.10: `prepull pull --store docker:SOCK` versus `docker pull REF`.
# Every tool gets a FRESH private daemon (its own root, state and socket, started for that
# one measurement and removed after it), so nothing is shared between the two tools.
#
# The clock starts with the pull command and stops when the first
#   ctr -n bench run --rm REF ID /bin/sh -c true                       (containerd)
#   docker run --rm --pull=never --network none REF /bin/sh -c true    (docker)
# succeeds: the "ready" column (the one the ratio uses) includes that first run for every
# tool; the pull alone and the run alone are listed as well. (mkimage.py's busybox layer has
# /bin/busybox, sh, echo, cat and ls but no /bin/true, so `/bin/sh -c true` stands for it.)
#
# The registry (docker-registry on 127.0.0.1) sits behind nginx with `limit_rate 16m` per
# connection. Images (tests/integration/mkimage.py): busybox (so /bin/sh -c true runs) + one
# incompressible --size layer (--comp: uncompressed tar by default, or gzip) + a --small
# layer, zstd for containerd; for docker the small layer is gzip, as dockerd 20.10 cannot
# `docker pull` zstd layers. The big layer is the same blob in both images.
# prepull runs with default settings (+ --plain-http, as ctr), under /usr/bin/time -f %M
# for its peak RSS. Loopback only; only processes this script started are stopped (by
# PID); big files are removed at the end (and each daemon's root right after its run).
# Disk: about 4 x --size at the peak. Takes ~6 minutes at 1536M on 2 CPUs.
#
# Environment: PREPULL (binary; default: the newer of build/prepull and /tmp/build-sb/prepull),
# KEEP_TMP=1 (keep the small logs).
set -euo pipefail

SIZE=1536M
SMALL=16M
COMP=none
RUN_TIMEOUT=900
ONLY=""

usage() {
  sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}
while [ $# -gt 0 ]; do
  case $1 in
  --size) SIZE=$2; shift 2 ;;
  --small) SMALL=$2; shift 2 ;;
  --comp) COMP=$2; shift 2 ;;
  --prepull) PREPULL=$2; shift 2 ;;
  --timeout) RUN_TIMEOUT=$2; shift 2 ;;
  --only) ONLY=$2; shift 2 ;;
  -h | --help) usage 0 ;;
  *) echo "bench-stores.sh: unknown option $1" >&2; usage 2 >&2 ;;
  esac
done
case $COMP in none | gzip) ;; *) echo "bench-stores.sh: --comp none or gzip" >&2; exit 2 ;; esac
case $ONLY in "" | containerd | docker) ;; *) echo "bench-stores.sh: --only containerd or docker" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PREPULL:-}" ]; then
  # The most recently built of the usual places (build/ may hold an old binary).
  for p in "$ROOT/build/prepull" /tmp/build-sb/prepull; do
    [ -x "$p" ] || continue
    if [ -z "${PREPULL:-}" ] || [ "$p" -nt "$PREPULL" ]; then PREPULL=$p; fi
  done
fi
: "${PREPULL:=$ROOT/build/prepull}"
PREPULL=$(readlink -f "$PREPULL")
export PREPULL PREPULL_SRC=$ROOT
# The interpreter itself, not a version-manager shim.
PYTHON=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
export PYTHON

# The test harness (registry, nginx, mkimage, PID bookkeeping), then the private
# containerd and dockerd helpers. Their EXIT traps are replaced by ours.
# shellcheck source=/dev/null
source "$ROOT/tests/integration/lib.sh"
# shellcheck source=/dev/null
source "$ROOT/tests/integration/containerd.sh"
# shellcheck source=/dev/null
source "$ROOT/tests/integration/dockerd.sh"

CTD_DIRS=()
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
  # Large files: registry storage, source layout, daemon roots, prepull state.
  rm -rf "$T/registry" "$T/src" "$T/dockerd" "$T"/state-* "${CTD_DIRS[@]}"
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

say() { printf '# [%5.0fs] %s\n' "$(($(date +%s) - BENCH_T0))" "$*"; }
BENCH_T0=$(date +%s)
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- requirements
need_prepull
for c in docker-registry nginx skopeo zstd curl containerd ctr runc "$PY"; do
  command -v "$c" >/dev/null || fail "$c is not installed (scripts/deps.sh)"
done
[ -x "$DOCKERD_BIN" ] && [ -x "$DOCKER_CLI" ] || fail "dockerd / $DOCKER_CLI not installed (package docker.io)"
[ -x /busybox ] || [ -x /bin/busybox ] || fail "busybox-static is not installed"
if [ ! -x /usr/bin/time ]; then
  say "installing package time (for /usr/bin/time -f %M)"
  apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y time >/dev/null; } ||
    fail "cannot install the time package"
fi
SIZE_B=$("$PY" -c 'import sys
s = sys.argv[1].strip(); m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
print(int(float(s[:-1]) * m[s[-1].upper()]) if s[-1].upper() in m else int(s))' "$SIZE")
need=$((SIZE_B * 5))
avail=$(($(df -Pk "$T" | awk 'NR==2{print $4}') * 1024))
[ "$avail" -gt "$need" ] || fail "need about $((need >> 30)) GiB free in $T, have $((avail >> 30)) GiB"

LIMIT=16m
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
say "prepull: $PREPULL ($("$PREPULL" --version 2>&1 | head -n 1 | cut -d' ' -f1-2))"
say "tmp dir: $T"

# ---------------------------------------------------------------- servers and images
start_registry
NP=$(free_port)
nginx_conf_proxy "$T/ngx" "$NP" "$REG_ADDR" "$LIMIT"
start_nginx "$T/ngx/nginx.conf" "$NP"
ALOG=$T/ngx/access.log
say "registry $REG_ADDR behind nginx http://127.0.0.1:$NP (limit_rate $LIMIT per connection)"

t0=$(date +%s)
BIG="random:$COMP:$SIZE:1536"
# Same layout: the big layer is generated twice but stored once (same digest).
mkimage "$T/src" ctd --layer busybox:gzip --layer "$BIG" --layer "random:zstd:$SMALL:64"
mkimage "$T/src" dk --layer busybox:gzip --layer "$BIG" --layer "random:gzip:$SMALL:65"
push_layout "$T/src" ctd "$REG_ADDR/bench/stores:ctd"
push_layout "$T/src" dk "$REG_ADDR/bench/stores:dk"
rm -rf "$T/src"
CTD_BYTES=$(img_field ctd 'o["bytes"]')
DK_BYTES=$(img_field dk 'o["bytes"]')
say "images built and pushed in $(($(date +%s) - t0)) s: bench/stores:ctd ($CTD_BYTES bytes," \
  "busybox gzip + $SIZE $COMP + $SMALL zstd), bench/stores:dk ($DK_BYTES bytes, zstd layer as gzip)"
REF_CTD=127.0.0.1:$NP/bench/stores:ctd
REF_DK=127.0.0.1:$NP/bench/stores:dk
NS=bench

# ---------------------------------------------------------------- measurement helpers
ROWS=()   # "runtime|tool|ready|pull|run|cmd"
PP_RSS=() # "runtime|KiB"
BYTES_SENT=()

# timed_pull NAME CMD... — runs CMD with a timeout; sets PULL_S; fails on error.
timed_pull() {
  local name=$1 a b rc
  shift
  reset_log "$ALOG"
  a=$(now)
  set +e
  timeout -k 10 "$RUN_TIMEOUT" "$@" >"$T/logs/$name.out" 2>"$T/logs/$name.err" </dev/null
  rc=$?
  set -e
  b=$(now)
  [ "$rc" -eq 0 ] || fail "$name failed (exit $rc): $(tail -n 5 "$T/logs/$name.err")"
  PULL_A=$a
  PULL_B=$b
  PULL_S=$(secs "$a" "$b")
  PULL_NAME=$name
}

# What the server sent for the last pull (after its first run: no bookkeeping is timed).
count_bytes() {
  local st
  settle 0.5
  st=$(log_stats "$ALOG")
  BYTES_SENT+=("$PULL_NAME: $(stat_field "$st" bytes) blob bytes over $(stat_field "$st" conns) connections")
}

# timed_run NAME CMD... — the first start of the image; sets RUN_S and READY_S.
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
  # pull + first run, each timed on its own (the checks in between are not counted).
  READY_S=$(awk -v p0="$PULL_A" -v p1="$PULL_B" -v r0="$a" -v r1="$b" 'BEGIN { printf "%.1f", (p1 - p0) + (r1 - r0) }')
  count_bytes
}

# Fresh private containerd for one tool (its own root/state/socket).
fresh_containerd() { # NAME
  start_containerd "$1"
  CTD_DIRS+=("$CTD_DIR")
}
drop_containerd() {
  kill "$CTD_PID" 2>/dev/null
  _wait_gone "$CTD_PID" 100 || kill -9 "$CTD_PID" 2>/dev/null
  wait "$CTD_PID" 2>/dev/null || true
  _forget_pid "$CTD_PID"
  awk -v d="$CTD_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$CTD_DIR"
}
fresh_dockerd() {
  rm -rf "$T/dockerd"
  start_dockerd
  set_trap # start_dockerd installs the harness's trap; ours stops dockerd too
}
drop_dockerd() {
  stop_dockerd
  rm -rf "$T/dockerd"
}

# ---------------------------------------------------------------- (a) containerd
if [ "$ONLY" != docker ]; then
  say "containerd: prepull (fresh containerd)"
  fresh_containerd ctd-prepull
  timed_pull ctd-prepull /usr/bin/time -f %M -o "$T/logs/rss-ctd" \
    "$PREPULL" pull -q --plain-http --store "containerd:$CTD_SOCK" --namespace "$NS" \
    --state-dir "$T/state-ctd" "$REF_CTD"
  timed_run ctd-prepull-run ctr --address "$CTD_SOCK" -n "$NS" run --rm "$REF_CTD" bench-pp /bin/sh -c true
  ROWS+=("containerd 1.6|prepull|$READY_S|$PULL_S|$RUN_S|prepull pull --plain-http --store containerd:SOCK --namespace $NS REF")
  PP_RSS+=("containerd|$(tail -n 1 "$T/logs/rss-ctd")")
  say "  ready after $READY_S s (pull $PULL_S s, run $RUN_S s)"
  drop_containerd

  say "containerd: ctr images pull (fresh containerd)"
  fresh_containerd ctd-ctr
  timed_pull ctd-ctr ctr --address "$CTD_SOCK" -n "$NS" images pull --plain-http "$REF_CTD"
  # ctr pull unpacks by default: the image is "unpacked" before any run.
  check=$(ctr --address "$CTD_SOCK" -n "$NS" images check "name==$REF_CTD")
  printf '%s\n' "$check" | grep -Eq 'complete \(([0-9]+)/\1\).*true *$' ||
    fail "ctr images pull left the image not complete or not unpacked: $check"
  timed_run ctd-ctr-run ctr --address "$CTD_SOCK" -n "$NS" run --rm "$REF_CTD" bench-ctr /bin/sh -c true
  ROWS+=("containerd 1.6|ctr images pull|$READY_S|$PULL_S|$RUN_S|ctr -n $NS images pull --plain-http REF")
  say "  ready after $READY_S s (pull $PULL_S s, run $RUN_S s); ctr images check: unpacked"
  drop_containerd
fi

# ---------------------------------------------------------------- (b) docker
if [ "$ONLY" != containerd ]; then
  say "docker: prepull (fresh dockerd)"
  fresh_dockerd
  DVER=$("${DOCKER[@]}" version --format '{{.Server.Version}}' 2>/dev/null || echo '?')
  timed_pull dk-prepull /usr/bin/time -f %M -o "$T/logs/rss-dk" \
    "$PREPULL" pull -q --plain-http --store "docker:$DOCKER_SOCK" --state-dir "$T/state-dk" "$REF_DK"
  timed_run dk-prepull-run "${DOCKER[@]}" run --rm --pull=never --network none "$REF_DK" /bin/sh -c true
  ROWS+=("docker $DVER|prepull|$READY_S|$PULL_S|$RUN_S|prepull pull --plain-http --store docker:SOCK REF")
  PP_RSS+=("docker|$(tail -n 1 "$T/logs/rss-dk")")
  say "  ready after $READY_S s (pull $PULL_S s, run $RUN_S s)"
  drop_dockerd

  say "docker: docker pull (fresh dockerd)"
  fresh_dockerd
  timed_pull dk-docker "${DOCKER[@]}" pull "$REF_DK"
  timed_run dk-docker-run "${DOCKER[@]}" run --rm --pull=never --network none "$REF_DK" /bin/sh -c true
  ROWS+=("docker $DVER|docker pull|$READY_S|$PULL_S|$RUN_S|docker -H unix://SOCK pull REF")
  say "  ready after $READY_S s (pull $PULL_S s, run $RUN_S s)"
  drop_dockerd
fi

# ---------------------------------------------------------------- report
echo
echo "## prepull vs the runtimes' own pull: time until the image starts"
echo
echo "Image: busybox (gzip) + $SIZE incompressible layer ($COMP) + $SMALL layer (zstd for"
echo "containerd: $CTD_BYTES bytes; gzip for docker: $DK_BYTES bytes). Registry on loopback"
echo "behind nginx, \`limit_rate $LIMIT\` per connection. Each tool against a fresh private"
echo "daemon. **ready** = pull + the first \`run /bin/sh -c true\` of the image (each timed on its"
echo "own, run right after the pull); ratio = ready(tool) / ready(prepull)."
echo
echo "| runtime | tool | ready (s) | pull (s) | first run (s) | ratio | command |"
echo "|---|---|---:|---:|---:|---:|---|"
declare -A BASE=()
for r in "${ROWS[@]}"; do
  IFS='|' read -r rt tool ready pull run cmd <<<"$r"
  [ "$tool" = prepull ] && BASE[$rt]=$ready
done
for r in "${ROWS[@]}"; do
  IFS='|' read -r rt tool ready pull run cmd <<<"$r"
  ratio=$(awk -v a="$ready" -v b="${BASE[$rt]:-0}" 'BEGIN { if (b > 0) printf "%.1f×", a / b; else print "-" }')
  echo "| $rt | $tool | $ready | $pull | $run | $ratio | \`$cmd\` |"
done
echo
echo "Run commands (timed as \"first run\"):"
echo "\`ctr -n $NS run --rm REF ID /bin/sh -c true\`, \`docker run --rm --pull=never --network none REF /bin/sh -c true\`."
echo "REF = \`127.0.0.1:$NP/bench/stores:ctd\` (containerd), \`127.0.0.1:$NP/bench/stores:dk\` (docker);"
echo "SOCK = the private daemon's socket. docker CLI: $DOCKER_CLI (127.0.0.0/8 is an insecure"
echo "registry by default)."
echo
for r in "${PP_RSS[@]}"; do
  IFS='|' read -r rt kib <<<"$r"
  echo "- prepull peak RSS ($rt store): $((kib / 1024)) MiB ($kib KiB, /usr/bin/time -f %M)"
done
for b in "${BYTES_SENT[@]}"; do echo "- server side, $b"; done
echo "- $(nproc) CPUs, load before: $LOAD0; prepull $("$PREPULL" --version 2>&1 | head -n 1 | cut -d' ' -f2)"
echo
echo "Command: bash scripts/bench-stores.sh --size $SIZE --small $SMALL --comp $COMP"
say "done"

#!/usr/bin/env bash
# prepull line-rate benchmark (by hand, not a test; needs root):
#   bash scripts/bench-line.sh [--size 1536M] [--comp none|gzip] [--shapes a,b,c,d]
#        [--rtts 0,50,100] [--rate 128mbit] [--slow 0.25:16mbit] [--link 800mbit]
#        [--jobs "8 32 64" | --no-extra-jobs] [--no-aria2] [--no-warmup] [--prepull PATH]
#        [--timeout SECONDS]
#
# How close prepull comes to the physical limit of the network, behind a TRUE
# per-connection cap (scripts/netsim.sh: an htb class per client port), with an added
# round trip (tests/tools/latency_proxy.c in front of nginx, inside the namespace, so
# the cap still applies per connection). Issues "Line rate on real networks" and "Far
# registries". Shapes (each in a namespace of its own):
#   a  --rate per connection (default 128mbit = 16 MB/s)
#   b  a, with a fraction of the connections on slow lanes (--slow F:R, default a
#      quarter at 16mbit = 2 MB/s); the fraction that actually landed on slow lanes
#      is measured from nginx's log of client ports and reported
#   c  --rate per connection under a --link for all (default 800mbit = 100 MB/s)
#   d  no cap at all (CPU bound; compare with aria2c only)
# RTTs (--rtts, ms) apply to shapes a and b; c and d run at 0. An RTT of 0p goes
# through the proxy with no delay: what the proxy's own CPU costs on this machine.
# Rows per shape and RTT: prepull without -j, prepull -j 16, prepull -j N for each of
# --jobs (default 8 32 64), aria2c -x16 -s16 -k1M on the biggest blob (on shape d also
# with --checksum, which has aria2c verify the blob's sha256 after the download).
# Each shape first runs one unmeasured prepull -j 16 pull (--no-warmup: none): the
# first pull after a shape's setup was slower here.
# Image: busybox + one --size incompressible layer (random bytes, --comp none by
# default: building it is quick; gzip -1 as bench-stores.sh does with --comp gzip).
# Physical limit = image bytes / min(16 x --rate, --link); (d) has none.
# Per prepull row: wall time, time ÷ limit ("x limit") and its inverse (the fraction of
# the limit's speed), client CPU seconds per GB (user + sys, /usr/bin/time), peak RSS,
# connections (distinct connections in nginx's log), last byte -> exit (nginx logs a
# request's end when its last bytes leave a 64 KiB send buffer; + the one-way delay =
# when the client had them; exit = when the prepull process ended).
#
# Environment: PREPULL (binary; default build/prepull), KEEP_TMP=1 (keep the logs).
# For a smoke run: --size 64M --shapes a --rtts 50 --no-extra-jobs.
set -euo pipefail

SIZE=1536M
COMP=none
SHAPES=a,b,c,d
RTTS=0,50,100
RATE=128mbit
SLOW=0.25:16mbit
LINK=800mbit
XJOBS="8 32 64"
ARIA=1
WARMUP=1
RUN_TIMEOUT=900
ARGS=("$@")

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}
while [ $# -gt 0 ]; do
  case $1 in
  --size) SIZE=$2; shift 2 ;;
  --comp) COMP=$2; shift 2 ;;
  --shapes) SHAPES=$2; shift 2 ;;
  --rtts) RTTS=$2; shift 2 ;;
  --rate) RATE=$2; shift 2 ;;
  --slow) SLOW=$2; shift 2 ;;
  --link) LINK=$2; shift 2 ;;
  --jobs) XJOBS=$2; shift 2 ;;
  --no-extra-jobs) XJOBS=""; shift ;;
  --no-aria2) ARIA=0; shift ;;
  --no-warmup) WARMUP=0; shift ;;
  --prepull) PREPULL=$2; shift 2 ;;
  --timeout) RUN_TIMEOUT=$2; shift 2 ;;
  -h | --help) usage 0 ;;
  *) echo "bench-line.sh: unknown option $1" >&2; usage 2 >&2 ;;
  esac
done
case $COMP in none | gzip) ;; *) echo "bench-line.sh: --comp none or gzip" >&2; exit 2 ;; esac
for s in ${SHAPES//,/ }; do
  case $s in a | b | c | d) ;; *) echo "bench-line.sh: shapes are a, b, c, d" >&2; exit 2 ;; esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${PREPULL:=$ROOT/build/prepull}"
PREPULL=$(readlink -f "$PREPULL")
export PREPULL PREPULL_SRC=$ROOT
PYTHON=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
export PYTHON
# shellcheck source=scripts/netsim.sh
source "$ROOT/scripts/netsim.sh"

# ---------------------------------------------------------------- inside one shape's namespace
# The outer run builds the image and pushes it into a registry storage directory once;
# each shape runs this script again inside a namespace of its own (BENCH_SHAPE set),
# serving that storage, and appends its rows to BENCH_ROWS.
if [ -n "${BENCH_SHAPE:-}" ]; then
  source "$ROOT/tests/integration/lib.sh"
  source "$ROOT/tests/tools/latency.sh"
  source "$ROOT/scripts/bench-lib.sh"
  log() { echo "# $*" >&2; }
  NETNS=$BENCH_NETNS
  SHAPE=$BENCH_SHAPE
  ln -s "$BENCH_REG_ROOT" "$T/registry"
  start_registry
  NP=$(free_port)
  D=$T/ngx
  mkdir -p "$D/tmp"
  {
    _nginx_head "$D"
    cat <<EOF
  log_format line 'c=\$connection port=\$remote_port end=\$msec rt=\$request_time '
                  'b=\$body_bytes_sent s=\$status m=\$request_method u=\$request_uri';
  server {
    # A small send buffer: a request's logged end is when its last bytes leave.
    listen 127.0.0.1:$NP sndbuf=64k;
    access_log $D/access.log line;
    location / {
$(_nginx_proxy_location "$REG_ADDR" 0)
    }
  }
}
EOF
  } >"$D/nginx.conf"
  start_nginx "$D/nginx.conf" "$NP"
  [ "$SHAPE" = d ] || netsim_cap "$NETNS" "$NP" || fail "cannot cap port $NP"

  # The slow per-port classes (shape b), by the low byte of the client port.
  SLOWSET=" "
  if [ "$SHAPE" = b ]; then
    for i in $(seq 0 255); do _netsim_is_slow "$i" "${SLOW%%:*}" && SLOWSET+="$i "; done
  fi

  # run_row RTT DELAY_ADDR TOOL LABEL CMD... — one timed run; appends a row.
  run_row() {
    local rtt=$1 tool=$2 label=$3 name u s m rc a b stats
    shift 3
    name=$SHAPE-$rtt-$tool
    : >"$D/access.log"
    # Nothing dirty left to write back (the image's push, the last row's files): its
    # writeback would land in this row's time.
    sync
    a=$(now)
    set +e
    /usr/bin/time -f '%e %U %S %M' -o "$T/logs/$name.time" \
      timeout -k 10 "$RUN_TIMEOUT" "$@" >"$T/logs/$name.out" 2>"$T/logs/$name.err" </dev/null
    rc=$?
    set -e
    b=$(now)
    [ "$rc" -eq 0 ] || fail "$label failed (exit $rc): $(tail -n 5 "$T/logs/$name.err")"
    read -r _ u s m < <(tail -n 1 "$T/logs/$name.time")
    sleep 0.3 # nginx writes a line when a request ends
    # Connections, the slow lanes among them, the last request's end.
    stats=$("$PY" - "$D/access.log" "$SLOWSET" <<'PYEOF'
import sys
slow = set(int(x) for x in sys.argv[2].split())
conns, last = {}, 0.0
for line in open(sys.argv[1]):
    kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
    if kv.get("m") != "GET" or "/blobs/" not in kv.get("u", ""):
        continue
    conns[kv["c"]] = int(kv["port"])
    last = max(last, float(kv["end"]))
n = len(conns)
ns = sum(1 for p in conns.values() if (p & 255) in slow)
print(n, ns, "%.3f" % last)
PYEOF
)
    local conns nslow last lbe
    read -r conns nslow last <<<"$stats"
    lbe=$(awk -v b="$b" -v l="$last" -v d="${rtt%p}" 'BEGIN { if (l > 0) printf "%.2f", b - (l + d / 2000); else print "-" }')
    echo "$SHAPE|$rtt|$label|$(secs "$a" "$b")|$u|$s|$m|$conns|$nslow|$lbe|$tool" >>"$BENCH_ROWS"
    log "$SHAPE rtt $rtt: $label: $(secs "$a" "$b") s, CPU $(awk -v u="$u" -v s="$s" 'BEGIN{print u+s}') s," \
      "RSS $((m / 1024)) MiB, $conns conns ($nslow slow), last byte -> exit $lbe s"
  }

  # One pull that is not measured. The first row of a shape is prepull's automatic
  # count; measured three times in a row here (--rtts 0,0,0 --jobs 32), it took 6.0 s
  # and 5.81 CPU-seconds in the first group and 5.3-5.4 s and 4.4-4.5 CPU-seconds in the
  # two after it, while the first group's other rows took 4-12% more CPU and no more
  # time. Why was not traced.
  if [ "$BENCH_WARMUP" = 1 ]; then
    rm -rf "$T/oci" "$T/state"
    "$PREPULL" pull -q --plain-http --store "oci:$T/oci" --state-dir "$T/state" -j 16 \
      "127.0.0.1:$NP/bench/line:img" </dev/null >/dev/null 2>"$T/logs/$SHAPE-warmup.err" ||
      fail "the warm-up pull failed: $(tail -n 5 "$T/logs/$SHAPE-warmup.err")"
    rm -rf "$T/oci" "$T/state"
    log "$SHAPE: one warm-up pull (-j 16, not measured)"
  fi

  for rtt in ${BENCH_RTTS//,/ }; do
    if [ "$rtt" = 0p ] || [ "${rtt%p}" -gt 0 ]; then
      start_latency_proxy "rtt-$rtt" "127.0.0.1:$NP" $((${rtt%p} / 2))
      addr=$LP_ADDR
    else
      addr=127.0.0.1:$NP
    fi
    ref=$addr/bench/line:img
    pp() { # TOOL LABEL [ARGS...]
      local tool=$1 label=$2
      shift 2
      rm -rf "$T/oci" "$T/state"
      run_row "$rtt" "$tool" "$label" "$PREPULL" pull -v --plain-http --store "oci:$T/oci" \
        --state-dir "$T/state" "$@" "$ref"
      [ -f "$T/oci/blobs/sha256/${BENCH_BIG#sha256:}" ] || fail "$label: the big blob is missing from the store"
      rm -rf "$T/oci" "$T/state"
    }
    pp pp "prepull"
    pp pp-j16 "prepull -j 16" -j 16
    for j in $BENCH_XJOBS; do pp "pp-j$j" "prepull -j $j" -j "$j"; done
    if [ "$BENCH_ARIA" = 1 ]; then
      # aria2c TOOL LABEL [ARGS...]: the biggest blob, its content checked after the row.
      aria() {
        local tool=$1 label=$2 got
        shift 2
        rm -rf "$T/aria" && mkdir -p "$T/aria"
        run_row "$rtt" "$tool" "$label" aria2c -x16 -s16 -k1M "$@" --file-allocation=falloc \
          --console-log-level=warn --summary-interval=0 --download-result=hide \
          --allow-overwrite=true --auto-file-renaming=false \
          -d "$T/aria" -o blob "http://$addr/v2/bench/line/blobs/$BENCH_BIG"
        got=$(sha256sum "$T/aria/blob" | cut -d' ' -f1)
        [ "sha256:$got" = "$BENCH_BIG" ] || fail "$label: wrong content (sha256 $got)"
        rm -rf "$T/aria"
      }
      aria aria2c "aria2c -x16 -s16 -k1M (biggest blob)"
      # Where the CPU sets the pace, what verifying costs aria2c: it reads the file back
      # after the download and hashes it (prepull hashes as the bytes land).
      [ "$SHAPE" != d ] || aria aria2c-checksum "aria2c -x16 -s16 -k1M --checksum (biggest blob)" \
        --checksum="sha-256=${BENCH_BIG#sha256:}"
    fi
  done
  exit 0
fi

# ---------------------------------------------------------------- outside: image, shapes, report
[ "$(id -u)" = 0 ] || { echo "bench-line.sh: needs root" >&2; exit 1; }
source "$ROOT/tests/integration/lib.sh"
source "$ROOT/scripts/bench-lib.sh"
# stdout is the report: the harness's closing line goes to stderr.
trap '_bench_rc=$?; exec 1>&2; (exit $_bench_rc); _cleanup' EXIT
log() { echo "# $*" >&2; }
BENCH_T0=$(date +%s)
say() { printf '# [%5.0fs] %s\n' "$(($(date +%s) - BENCH_T0))" "$*" >&2; }

need_prepull
for c in docker-registry nginx skopeo aria2c nsenter; do
  command -v "$c" >/dev/null || fail "$c is not installed (scripts/deps.sh --test)"
done
[ -x /usr/bin/time ] || fail "/usr/bin/time is not installed (package time)"
SIZE_B=$(bytes_of "$SIZE")
avail=$(($(df -Pk "$T" | awk 'NR==2{print $4}') * 1024))
[ "$avail" -gt $((SIZE_B * 4)) ] || fail "need about $((SIZE_B * 4 >> 20)) MiB free in $T"
CONN_BPS=$(rate_bps "$RATE")
LINK_BPS=$(rate_bps "$LINK")
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
say "prepull: $PREPULL ($("$PREPULL" --version 2>&1 | head -n 1)); tmp dir $T"

# The image, pushed once through a registry on loopback; each shape serves its storage.
start_registry
mkimage "$T/src" img --layer busybox:gzip --layer "random:$COMP:$SIZE:1536"
push_layout "$T/src" img "$REG_ADDR/bench/line:img"
IMG_BYTES=$(img_field img 'o["bytes"]')
BIG=$(img_field img 'o["platforms"]["linux/amd64"]["layers"][1]')
kill "$REG_PID"
wait "$REG_PID" 2>/dev/null || true
_forget_pid "$REG_PID"
rm -rf "$T/src"
say "image: $IMG_BYTES bytes (one $SIZE $COMP layer); registry storage $REG_ROOT"

ROWS_FILE=$T/rows
: >"$ROWS_FILE"
declare -A SHAPE_DESC=(
  [a]="$RATE per connection"
  [b]="$RATE per connection, a fraction ${SLOW%%:*} of the client ports at ${SLOW#*:}"
  [c]="$RATE per connection under a $LINK link"
  [d]="no cap"
)
for shape in ${SHAPES//,/ }; do
  ns=ppline-$$-$shape
  opts=(--rate "$RATE")
  case $shape in
  b) opts+=(--slow "$SLOW") ;;
  c) opts+=(--link "$LINK") ;;
  esac
  rtts=$RTTS
  case $shape in c | d) rtts=0 ;; esac
  say "shape $shape (${SHAPE_DESC[$shape]}), RTT ms: $rtts"
  netsim_create "$ns" "${opts[@]}" || fail "netsim create $ns failed"
  set +e
  netsim_exec "$ns" env BENCH_SHAPE="$shape" BENCH_NETNS="$ns" BENCH_REG_ROOT="$REG_ROOT" \
    BENCH_ROWS="$ROWS_FILE" BENCH_RTTS="$rtts" BENCH_XJOBS="$XJOBS" BENCH_ARIA="$ARIA" BENCH_WARMUP="$WARMUP" \
    BENCH_BIG="$BIG" RUN_TIMEOUT="$RUN_TIMEOUT" KEEP_TMP="${KEEP_TMP:-0}" \
    bash "$0" --slow "$SLOW" >&2
  rc=$?
  set -e
  netsim_destroy "$ns"
  [ "$rc" -eq 0 ] || fail "shape $shape failed (exit $rc)"
done

# ---------------------------------------------------------------- report
limit_of() { # SHAPE -> seconds ("-" for d)
  local bps=$((CONN_BPS * 16))
  case $1 in
  d) echo - ; return ;;
  c) [ "$LINK_BPS" -lt "$bps" ] && bps=$LINK_BPS ;;
  esac
  awk -v b="$IMG_BYTES" -v r="$bps" 'BEGIN { printf "%.2f", b / r }'
}
echo
echo "## Line rate: prepull against the physical limit"
echo
echo "Image: busybox + one $SIZE incompressible layer ($COMP), $IMG_BYTES bytes. Network:"
echo "scripts/netsim.sh (an htb class per client port); round trips added by"
echo "tests/tools/latency_proxy.c in front of nginx. Physical limit = image ÷ min(16 × per-connection"
echo "rate, link rate). **of limit** = limit ÷ time (1.00 = at the limit). aria2c fetches the biggest blob"
echo "only. CPU s/GB: client user + sys per GB fetched. conns: distinct connections in nginx's log"
echo "(slow: of them, on slow lanes). last byte → exit: the process's end minus (the last blob"
echo "request's end in nginx's log + the one-way delay)."
for shape in ${SHAPES//,/ }; do
  lim=$(limit_of "$shape")
  echo
  echo "### Shape $shape: ${SHAPE_DESC[$shape]} — physical limit $lim s"
  echo
  echo "| RTT (ms) | tool | time (s) | of limit | CPU s/GB | peak RSS (MiB) | conns | slow | last byte → exit (s) |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  while IFS='|' read -r sh rtt label t u s m conns nslow lbe tool; do
    [ "$sh" = "$shape" ] || continue
    bytes=$IMG_BYTES
    [ "${tool%-checksum}" = aria2c ] && bytes=$(stat -c %s "$REG_ROOT/docker/registry/v2/blobs/sha256/${BIG:7:2}/${BIG#sha256:}/data")
    cpu=$(awk -v u="$u" -v s="$s" -v b="$bytes" 'BEGIN { printf "%.2f", (u + s) / (b / 1e9) }')
    of=$(div "$lim" "$t")
    [ "$lim" = - ] && of=-
    slowcol=-
    [ "$shape" = b ] && slowcol="$nslow ($(div "$nslow" "$conns"))"
    echo "| $rtt | $label | $t | $of | $cpu | $((m / 1024)) | $conns | $slowcol | $lbe |"
  done <"$ROWS_FILE"
done
echo
echo "- $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)," \
  "load before: $LOAD0, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- prepull $("$PREPULL" --version 2>&1 | head -n 1 | cut -d' ' -f2); $(aria2c --version | head -n 1)"
echo "- run took $(($(date +%s) - BENCH_T0)) s; command: bash scripts/bench-line.sh ${ARGS[*]}"

#!/usr/bin/env bash
# Several sources for one blob: a registry (UP) and a mirror (MIR) of it, two nginx
# fronts with logs of their own over one registry, every TCP connection to either
# capped at 8 MB/s (scripts/netsim.sh), all inside a network namespace of the test's
# own.  --per-host 2 -j 4 in both runs:
#   - the mirror alone (pulled as a registry of its own): 2 connections, 16 MB/s;
#   - the registry with the mirror (--mirror): 2 connections to each, so the blob is
#     faster from both at once: the time is at most 0.8 of the mirror alone's, and
#     each server's log shows at least a quarter of the blob's bytes, nothing twice
#     (unless a lane turned slow and was raced or retired: then at most 1.1x).
# Prints both times.
#
# Needs root (a network namespace); runs itself again inside the namespace it makes.
set -euo pipefail
SRC=${PREPULL_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
RATE=${MS_RATE:-64mbit} # 8 MB/s per connection
BLOB=${MS_BLOB:-64M}

if [ -z "${MS_NETNS:-}" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "FAIL: test_mirror_multisource cannot run here: needs root (a network namespace)"
    exit 1
  fi
  # shellcheck source=scripts/netsim.sh
  source "$SRC/scripts/netsim.sh"
  NS=ppms-$$
  netsim_create "$NS" --rate "$RATE" || { echo "FAIL: test_mirror_multisource: netsim create failed"; exit 1; }
  trap 'netsim_destroy "$NS"' EXIT
  set +e
  netsim_exec "$NS" env MS_NETNS="$NS" PREPULL_SRC="$SRC" bash "$0" "$@"
  exit $?
fi

source "$(dirname "$0")/lib.sh"
# shellcheck source=scripts/netsim.sh
source "$PREPULL_SRC/scripts/netsim.sh"
need_prepull
NS=$MS_NETNS

start_registry
mkimage "$T/src" v1 --layer "random:none:$BLOB:61"
push_layout "$T/src" v1 "$REG_ADDR/test/ms:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")

front() { # NAME -> sets FRONT_ADDR, FRONT_LOG
  local p
  p=$(free_port)
  nginx_conf_proxy "$T/$1" "$p" "$REG_ADDR" 0
  start_nginx "$T/$1/nginx.conf" "$p"
  netsim_cap "$NS" "$p" || fail "cannot cap nginx's port $p"
  FRONT_ADDR=127.0.0.1:$p FRONT_LOG=$T/$1/access.log
}
front up
UP_ADDR=$FRONT_ADDR UP_LOG=$FRONT_LOG
front mirror
MIR_ADDR=$FRONT_ADDR MIR_LOG=$FRONT_LOG

# served LOG -> body bytes of the big blob that server sent
served() {
  awk -v u="/v2/test/ms/blobs/$BIG" '
    { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = substr($i, length(kv[1]) + 2) } }
    f["m"] == "GET" && index(f["u"], u) == 1 && (f["s"] == 200 || f["s"] == 206) { n += f["b"] }
    END { print n + 0 }' "$1"
}

t0=$(date +%s.%N)
prepull_ok "the mirror alone, -j 4 --per-host 2" pull --plain-http --store "oci:$T/oci-1" \
  --state-dir "$T/state-1" -j 4 --per-host 2 "$MIR_ADDR/test/ms:v1"
alone=$(elapsed_since "$t0")
verify_layout "$T/oci-1" v1
assert_eq 0 "$(served "$UP_LOG")" "the registry served nothing when the mirror was pulled alone"
: >"$MIR_LOG"

t0=$(date +%s.%N)
prepull_ok "the registry and its mirror, -j 4 --per-host 2" pull -v --json --plain-http --hosts-dir "" \
  --mirror "$UP_ADDR=http://$MIR_ADDR" --store "oci:$T/oci-2" --state-dir "$T/state-2" \
  -j 4 --per-host 2 "$UP_ADDR/test/ms:v1"
both=$(elapsed_since "$t0")
verify_layout "$T/oci-2" v1
settle 0.5
up=$(served "$UP_LOG") mir=$(served "$MIR_LOG")
echo "# $BLOB blob, $RATE per connection, -j 4 --per-host 2: mirror alone $alone s;" \
  "registry + mirror $both s (registry $up bytes, mirror $mir bytes)"
assert_served_once $((up + mir)) "$SIZE" "$OUT" "registry + mirror"
assert_num $((up * 4)) -ge "$SIZE" "the registry served at least a quarter of the blob ($up bytes)"
assert_num $((mir * 4)) -ge "$SIZE" "the mirror served at least a quarter of the blob ($mir bytes)"
awk -v a="$alone" -v b="$both" 'BEGIN { exit !(b <= 0.8 * a) }' ||
  fail "from both at once $both s, from the mirror alone $alone s (want at most 0.8 times)"
ok "from both at once $both s <= 0.8 x the mirror alone's $alone s"

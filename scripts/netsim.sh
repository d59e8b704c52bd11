#!/usr/bin/env bash
# netsim: a network model for benchmarks and tests (root; loopback of a private
# network namespace only, nothing outside it is touched).
#
#   netsim.sh create NS [--rate R] [--link R] [--slow FRACTION:R]
#       A new namespace NS (refused if NS exists) with lo up, the client port range
#       pinned to 256 ports (40000-40255) and on its lo an htb class per client port
#       (keyed on the low byte of the destination port of packets leaving a capped
#       server port): every TCP connection gets its own cap R (default 128mbit =
#       16 MB/s; tc units: `mbit` is megabits, `mbps` megabytes), from its first byte.
#       --link R       all per-port classes share one parent class of rate R: the
#                      machine's total link (each still capped at --rate)
#       --slow F:R     a fraction F (0..1) of the per-port classes get rate R instead:
#                      connections that land on slow edges. The slow ports are spread
#                      over both parities (Linux hands out ports with a parity
#                      preference); `netsim.sh lanes NS` counts where connections went.
#   netsim.sh cap NS PORT...     cap the responses sent from these server ports
#   netsim.sh exec NS CMD...     run CMD in NS's network namespace only (nsenter --net:
#                                mounts and everything else stay shared, so daemons in
#                                NS and tools outside see the same files)
#   netsim.sh lanes NS           per-port classes that carried bytes: "fast N slow M"
#   netsim.sh stats NS           tc -s class show of NS's lo
#   netsim.sh destroy NS         remove NS, only if this script created it (a marker
#                                in /run/prepull-netsim/NS); processes still in NS are
#                                the caller's to stop first
#
# Sourced instead (`source netsim.sh`), it defines netsim_create, netsim_cap,
# netsim_exec, netsim_lanes, netsim_destroy with the same arguments.
# The recipe and its measurements: ../shared/reference/testing-notes.md, "Network".

NETSIM_MARK=/run/prepull-netsim
NETSIM_PORT0=40000

_netsim_die() {
  echo "netsim: $*" >&2
  return 1
}
_netsim_tc() { ip netns exec "$1" tc "${@:2}"; }
_netsim_ours() { [ -f "$NETSIM_MARK/$1" ]; }

# Slow or not, for per-port class I (0..255): a fixed permutation of the 256 ports,
# so any fraction takes ports of both parities, spread over the range.
_netsim_is_slow() { # I FRACTION
  awk -v i="$1" -v f="$2" 'BEGIN { exit !(((i * 97 + 13) % 256) < f * 256) }'
}

netsim_create() {
  local ns=$1 rate=128mbit link="" slow="" frac=0 srate="" i cls parent crate
  shift || true
  [ -n "$ns" ] || _netsim_die "create: a namespace name is needed" || return
  while [ $# -gt 0 ]; do
    case $1 in
    --rate) rate=$2; shift 2 ;;
    --link) link=$2; shift 2 ;;
    --slow) slow=$2; shift 2 ;;
    *) _netsim_die "create: unknown option $1" || return ;;
    esac
  done
  if [ -n "$slow" ]; then
    frac=${slow%%:*} srate=${slow#*:}
    [ -n "$srate" ] && [ "$srate" != "$slow" ] || _netsim_die "create: --slow FRACTION:RATE" || return
  fi
  [ "$(id -u)" = 0 ] || _netsim_die "needs root" || return
  ip netns list | awk '{print $1}' | grep -qxF -- "$ns" && { _netsim_die "namespace $ns exists already"; return; }
  ip netns add "$ns" || return
  mkdir -p "$NETSIM_MARK"
  echo "rate=$rate link=$link slow=$slow" >"$NETSIM_MARK/$ns"
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="$NETSIM_PORT0 $((NETSIM_PORT0 + 255))"
  # quantum set: the default (rate / 10) is over htb's limit and warns per class.
  # tc -batch: 512 class and filter lines in one process, not 512 processes.
  {
    echo "qdisc add dev lo root handle 1: htb default 1"
    echo "class add dev lo parent 1: classid 1:1 htb rate 100gbit quantum 60000"
    parent=1:
    if [ -n "$link" ]; then
      echo "class add dev lo parent 1: classid 1:2 htb rate $link ceil $link quantum 60000"
      parent=1:2
    fi
    for i in $(seq 0 255); do
      cls=$(printf %x $((i + 16)))
      crate=$rate
      if [ -n "$slow" ] && _netsim_is_slow "$i" "$frac"; then crate=$srate; fi
      if [ -n "$link" ]; then
        # Under a link class: a small guaranteed rate, the cap as ceil, so the
        # connections borrow from (and are limited by) the link.
        echo "class add dev lo parent $parent classid 1:$cls htb rate 1mbit ceil $crate burst 64k cburst 64k quantum 60000"
      else
        echo "class add dev lo parent $parent classid 1:$cls htb rate $crate ceil $crate burst 64k cburst 64k quantum 60000"
      fi
    done
    echo "filter add dev lo parent 1: prio 1 handle 2: protocol ip u32 divisor 256"
    for i in $(seq 0 255); do
      printf 'filter add dev lo parent 1: prio 1 protocol ip u32 ht 2:%x: match u8 0 0 flowid 1:%x\n' "$i" $((i + 16))
    done
  } >"$NETSIM_MARK/$ns.tc"
  ip netns exec "$ns" tc -batch "$NETSIM_MARK/$ns.tc" || { netsim_destroy "$ns"; return 1; }
}

netsim_cap() {
  local ns=$1 p
  shift
  _netsim_ours "$ns" || _netsim_die "cap: $ns is not a namespace netsim created" || return
  for p in "$@"; do
    _netsim_tc "$ns" filter add dev lo parent 1: prio 1 protocol ip u32 ht 800:: match ip protocol 6 0xff \
      match ip sport "$p" 0xffff hashkey mask 0x000000ff at 20 link 2: || return
  done
}

netsim_exec() {
  local ns=$1
  shift
  _netsim_ours "$ns" || _netsim_die "exec: $ns is not a namespace netsim created" || return
  nsenter --net="/run/netns/$ns" -- "$@"
}

netsim_lanes() {
  local ns=$1 slowset=" " i
  _netsim_ours "$ns" || _netsim_die "lanes: $ns is not a namespace netsim created" || return
  local frac
  frac=$(sed -n 's/.*slow=\([^:]*\):.*/\1/p' "$NETSIM_MARK/$ns")
  if [ -n "$frac" ]; then
    for i in $(seq 0 255); do
      _netsim_is_slow "$i" "$frac" && slowset+="1:$(printf %x $((i + 16))) "
    done
  fi
  _netsim_tc "$ns" -s class show dev lo | awk -v slow="$slowset" '
    $1 == "class" { c = $3 }
    $1 == "Sent" && c != "1:1" && c != "1:2" && $2 > 0 { if (index(slow, " " c " ")) s++; else f++ }
    END { printf "fast %d slow %d\n", f, s }'
}

netsim_destroy() {
  local ns=$1
  _netsim_ours "$ns" || _netsim_die "destroy: $ns is not a namespace netsim created" || return
  ip netns delete "$ns" 2>/dev/null || true
  rm -f "$NETSIM_MARK/$ns" "$NETSIM_MARK/$ns.tc"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cmd=${1:-}
  shift || true
  case $cmd in
  create) netsim_create "$@" ;;
  cap) netsim_cap "$@" ;;
  exec) netsim_exec "$@" ;;
  lanes) netsim_lanes "$@" ;;
  stats) _netsim_ours "$1" && _netsim_tc "$1" -s class show dev lo ;;
  destroy) netsim_destroy "$@" ;;
  *)
    sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
  esac
fi

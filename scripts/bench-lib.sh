# shellcheck shell=bash
# Helpers shared by the benchmarks (scripts/bench-stores.sh, bench-line.sh, fleet-sim.sh),
# sourced after tests/integration/lib.sh (they use PY) and scripts/netsim.sh.
#
#   now                          wall clock, seconds with nanoseconds
#   secs A B                     B - A, one decimal
#   div A B [FMT]                A / B ("-" when B is 0)
#   bytes_of 1536M               bytes (K, M, G suffixes: binary)
#   rate_bps 128mbit             tc rate -> bytes per second (kbit/mbit/gbit are bits,
#                                kbps/mbps/gbps bytes)
#   class_bytes                  "CLASS BYTES" per htb class of $NETNS's lo
#   conns_since FILE             per-port classes that carried over 64 KiB since FILE
#                                (class_bytes output taken before): connections used

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (b > 0) printf f, a / b; else print "-" }'; }
bytes_of() {
  "$PY" -c 'import sys
s = sys.argv[1].strip(); m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
print(int(float(s[:-1]) * m[s[-1].upper()]) if s[-1].upper() in m else int(s))' "$1"
}
rate_bps() {
  "$PY" -c 'import re, sys
m = re.fullmatch(r"([0-9.]+)([kmg]?)(bit|bps)", sys.argv[1].lower())
if not m: sys.exit("cannot read rate " + sys.argv[1])
v = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
print(int(v / 8 if m.group(3) == "bit" else v))' "$1"
}
class_bytes() {
  ip netns exec "$NETNS" tc -s class show dev lo | awk '$1 == "class" { c = $3 } $1 == "Sent" { print c, $2 }'
}
conns_since() {
  class_bytes | awk 'NR == FNR { b[$1] = $2; next } $1 != "1:1" && $1 != "1:2" && $2 > b[$1] + 65536 { n++ } END { print n + 0 }' "$1" -
}

# shellcheck shell=bash
# The latency model for tests and benchmarks (tests/tools/latency_proxy.c), to be
# sourced after tests/integration/lib.sh (it uses T, bg, fail, cannot_run, log).
#
#   latency_proxy_bin          -> path of the proxy: build/tests/latency_proxy beside
#                                 $PREPULL, else compiled here with cc into $T
#   start_latency_proxy NAME TARGET DELAY_MS [PROXY OPTIONS...]
#                              -> a proxy on 127.0.0.1:$(free_port)
#                                 in front of TARGET (ADDR:PORT), each direction
#                                 delayed DELAY_MS (round trip 2 x DELAY_MS).
#                                 Sets LP_PORT, LP_ADDR, LP_PID; log $T/logs/NAME.log

latency_proxy_bin() {
  local b
  b=$(dirname "$PREPULL")/tests/latency_proxy
  if [ -x "$b" ]; then
    echo "$b"
    return 0
  fi
  b=$T/latency_proxy
  if [ ! -x "$b" ]; then
    cc -O2 -Wall -o "$b" "$PREPULL_SRC/tests/tools/latency_proxy.c" 2>"$T/logs/latency_proxy-cc.log" ||
      cannot_run "cannot build tests/tools/latency_proxy.c: $(tail -n 3 "$T/logs/latency_proxy-cc.log")"
  fi
  echo "$b"
}

start_latency_proxy() {
  local name=$1 target=$2 delay=$3 bin
  shift 3
  bin=$(latency_proxy_bin) || exit 1
  # A port below the ephemeral range (free_port): inside a netsim namespace the
  # ephemeral ports are the capped client ports.
  _TRIES=0
  while :; do
    LP_PORT=$(free_port)
    bg "$name" "$bin" --listen "127.0.0.1:$LP_PORT" --target "$target" --delay-ms "$delay" "$@"
    LP_PID=$LAST_PID
    for _ in $(seq 1 100); do
      grep -qx "listening on 127.0.0.1:$LP_PORT" "$T/logs/$name.log" 2>/dev/null && break
      kill -0 "$LP_PID" 2>/dev/null || break
      sleep 0.05
    done
    if grep -qx "listening on 127.0.0.1:$LP_PORT" "$T/logs/$name.log" 2>/dev/null; then
      LP_ADDR=127.0.0.1:$LP_PORT
      log "latency proxy $name on $LP_ADDR -> $target, ${delay} ms each way (pid $LP_PID)"
      return 0
    fi
    kill -0 "$LP_PID" 2>/dev/null && fail "latency proxy $name did not start listening in 5 s"
    _started_again "latency proxy $name" "$LP_PID" ||
      fail "latency proxy $name died at start-up: $(tail -n 3 "$T/logs/$name.log")"
  done
}

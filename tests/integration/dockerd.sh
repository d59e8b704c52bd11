# shellcheck shell=bash
# A private dockerd for the docker store tests; source it after lib.sh.
#
# start_dockerd starts Debian's dockerd (20.10, with the containerd it starts itself)
# with its own --data-root, --exec-root, socket, pidfile and config file, no bridge
# and no iptables rules, so it touches no system socket, network or state. It sets
#   DOCKER_SOCK   the daemon's socket
#   DOCKERD_PID   its PID
#   DOCKER        the 20.10 CLI bound to that socket: "${DOCKER[@]}" run ...
# The daemon is stopped by PID (and then the containerd it started, by the PID of
# that child) when the test exits, before lib.sh's own cleanup runs; anything it
# left mounted under the test's temp dir is unmounted.
#
# Other binaries and settings, from the environment:
#   DOCKERD_BIN          the daemon (e.g. the newer one scripts/newer-runtimes.sh unpacks)
#   CONTAINERD_BIN       the containerd dockerd starts; its directory and dockerd's
#                        go first on dockerd's PATH (the shim and docker-proxy are
#                        found there too)
#   DOCKER_CLI           the client
#   DOCKERD_DAEMON_JSON  the daemon's config file (default {}), e.g.
#                        {"features": {"containerd-snapshotter": true}}

DOCKERD_BIN=${DOCKERD_BIN:-$(command -v dockerd || echo /usr/sbin/dockerd)}
# /usr/local/bin/docker may be a newer CLI: the tests use the one Debian ships.
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}
DOCKERD_DAEMON_JSON=${DOCKERD_DAEMON_JSON:-'{}'}
DOCKERD_PID=""
DOCKERD_DIR=""

# Children of a PID (found by parent PID, never by name).
_children_of() {
  ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' '
  return 0
}

_wait_gone() { # PID TENTHS
  local i
  for ((i = 0; i < $2; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

stop_dockerd() {
  [ -n "$DOCKERD_PID" ] || return 0
  local kids pid
  kids=$(_children_of "$DOCKERD_PID")
  kill -TERM "$DOCKERD_PID" 2>/dev/null
  # dockerd stops its containerd itself; give both a while, then insist.
  _wait_gone "$DOCKERD_PID" 200 || kill -KILL "$DOCKERD_PID" 2>/dev/null
  wait "$DOCKERD_PID" 2>/dev/null
  for pid in $kids; do
    _wait_gone "$pid" 50 || kill -TERM "$pid" 2>/dev/null
    _wait_gone "$pid" 50 || kill -KILL "$pid" 2>/dev/null
  done
  DOCKERD_PID=""
  # Overlay and netns mounts a killed daemon leaves would stop rm -rf.
  if [ -n "$DOCKERD_DIR" ]; then
    awk -v d="$DOCKERD_DIR" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null; done
  fi
  return 0
}

_dockerd_exit() {
  local rc=$?
  set +e
  stop_dockerd
  (exit "$rc")
  _cleanup
}

# start_dockerd [EXTRA DOCKERD ARGS...]
start_dockerd() {
  [ "$(id -u)" = 0 ] || cannot_run "dockerd needs root"
  [ -x "$DOCKERD_BIN" ] || cannot_run "dockerd not installed (package docker.io)"
  [ -x "$DOCKER_CLI" ] || cannot_run "docker CLI $DOCKER_CLI not installed (package docker.io)"
  DOCKERD_DIR=$T/dockerd
  mkdir -p "$DOCKERD_DIR"
  printf '%s\n' "$DOCKERD_DAEMON_JSON" >"$DOCKERD_DIR/daemon.json"
  DOCKER_SOCK=$DOCKERD_DIR/docker.sock
  if declare -F add_exit_hook >/dev/null; then
    add_exit_hook stop_dockerd
  else
    trap _dockerd_exit EXIT
  fi
  local path
  path=$(dirname "$DOCKERD_BIN"):${CONTAINERD_BIN:+$(dirname "$CONTAINERD_BIN"):}$PATH
  PATH=$path "$DOCKERD_BIN" --config-file "$DOCKERD_DIR/daemon.json" \
    --data-root "$DOCKERD_DIR/root" --exec-root "$DOCKERD_DIR/exec" \
    -H "unix://$DOCKER_SOCK" --pidfile "$DOCKERD_DIR/docker.pid" \
    --bridge=none --iptables=false --ip-masq=false --userland-proxy=false \
    "$@" >>"$T/logs/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  DOCKER=("$DOCKER_CLI" -H "unix://$DOCKER_SOCK")
  local i
  for i in $(seq 1 300); do
    if curl -s --max-time 1 --unix-socket "$DOCKER_SOCK" http://docker/_ping 2>/dev/null | grep OK >/dev/null; then
      log "dockerd $("${DOCKER[@]}" version --format '{{.Server.Version}}' 2>/dev/null) on $DOCKER_SOCK (pid $DOCKERD_PID), up after $((i / 10)).$((i % 10)) s"
      return 0
    fi
    kill -0 "$DOCKERD_PID" 2>/dev/null || fail "dockerd died at start-up: $(tail -n 5 "$T/logs/dockerd.log")"
    sleep 0.1
  done
  fail "dockerd not answering on $DOCKER_SOCK after 30 s"
}

# Seconds since the epoch as dockerd's events API takes them.
docker_now() { date +%s.%N; }

# docker_image_events SINCE UNTIL -> "action name" lines for image events in the window
docker_image_events() {
  "${DOCKER[@]}" events --since "$1" --until "$2" --filter type=image \
    --format '{{.Action}} {{.Actor.ID}} {{index .Actor.Attributes "name"}}'
}

# shellcheck shell=bash
# containerd for the store tests: a private daemon (root, state, socket, config
# of its own) that coexists with any system one. Source after lib.sh.
#
# The binaries are Debian's unless CONTAINERD_BIN and CTR_BIN name others (the
# newer ones scripts/newer-runtimes.sh unpacks); the daemon gets its own
# directory first on PATH, so it finds the shim that came with it.

CONTAINERD_BIN=${CONTAINERD_BIN:-$(command -v containerd || echo /usr/bin/containerd)}
CTR_BIN=${CTR_BIN:-$(command -v ctr || echo /usr/bin/ctr)}
[ -x "$CONTAINERD_BIN" ] && [ -x "$CTR_BIN" ] && command -v runc >/dev/null ||
  cannot_run "containerd ($CONTAINERD_BIN), ctr ($CTR_BIN) and runc are needed (scripts/deps.sh --test installs them)"
[ "$(id -u)" = 0 ] || cannot_run "containerd tests need root"

# start_containerd [NAME] -> CTD_DIR, CTD_SOCK, CTD_ROOT, CTD_PID
# The CRI plugin and the snapshotters that cannot work here are disabled: they
# only slow the start and fill the log.
start_containerd() {
  local name=${1:-containerd}
  CTD_DIR=$T/$name
  CTD_ROOT=$CTD_DIR/root
  CTD_SOCK=$CTD_DIR/c.sock
  mkdir -p "$CTD_DIR"
  cat >"$CTD_DIR/config.toml" <<EOF
version = 2
root = "$CTD_ROOT"
state = "$CTD_DIR/state"
disabled_plugins = [${CTD_CRI:+#}"io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTD_SOCK"
EOF
  bg "$name" env PATH="$(dirname "$CONTAINERD_BIN"):$PATH" "$CONTAINERD_BIN" --config "$CTD_DIR/config.toml" --root "$CTD_ROOT" \
    --state "$CTD_DIR/state" --address "$CTD_SOCK"
  CTD_PID=$LAST_PID
  local i
  for i in $(seq 1 100); do
    if [ -S "$CTD_SOCK" ] && "$CTR_BIN" --address "$CTD_SOCK" version >/dev/null 2>&1; then
      log "containerd $name on $CTD_SOCK (pid $CTD_PID)"
      return 0
    fi
    kill -0 "$CTD_PID" 2>/dev/null || fail "containerd died at start-up"
    sleep 0.1
  done
  fail "containerd not ready after 10 s"
}

# ctr_ ARGS... — ctr against the test's containerd.
ctr_() { "$CTR_BIN" --address "$CTD_SOCK" "$@"; }

# Runs a command in a throw-away container of IMAGE; prints its output.
# ctr_run NS IMAGE CMD...
CTR_RUN_N=0
# The command's output goes to a file in a bind-mounted directory, not through ctr's
# stdio: ctr can lose the output of a process that exits at once (a loaded run of
# containerd 2.1 printed nothing for a `sh -c 'echo …'`).  Prints that output, then
# what ctr itself said; returns ctr's status.  The image needs /bin/sh.
ctr_run() {
  local ns=$1 image=$2 dir rc=0
  shift 2
  CTR_RUN_N=$((CTR_RUN_N + 1))
  dir=$T/ctr-run-$CTR_RUN_N
  mkdir -p "$dir"
  "$CTR_BIN" --address "$CTD_SOCK" -n "$ns" run --rm \
    --mount "type=bind,src=$dir,dst=/prepull-run,options=rbind:rw" "$image" "prepull-t$CTR_RUN_N" \
    /bin/sh -c 'exec "$@" >/prepull-run/out 2>&1' sh "$@" >"$dir/ctr.log" 2>&1 || rc=$?
  cat "$dir/out" 2>/dev/null || true
  cat "$dir/ctr.log"
  return "$rc"
}

# snapshot_dirs NS CHAIN — the directories of a committed snapshot chain, bottom
# layer first (overlayfs).  A view made by ctr outlives ctr only until the next
# garbage collection (ctr's lease goes when it exits), so the view is marked a GC
# root at once, and made again if it was collected before it could be read.
SNAPSHOT_VIEWS=0
snapshot_dirs() {
  local ns=$1 chain=$2 v m try
  for try in 1 2 3 4 5; do
    SNAPSHOT_VIEWS=$((SNAPSHOT_VIEWS + 1))
    v="prepull-test-view-$SNAPSHOT_VIEWS-$BASHPID"
    ctr_ -n "$ns" snapshots view "$v" "$chain" >/dev/null 2>&1 || continue
    ctr_ -n "$ns" snapshots label "$v" containerd.io/gc.root=test >/dev/null 2>&1 || continue
    m=$(ctr_ -n "$ns" snapshots mounts /mnt "$v" 2>&1) || continue
    if grep -q lowerdir= <<<"$m"; then
      sed -n 's/.*lowerdir=\([^ ,]*\).*/\1/p' <<<"$m" | tr ':' '\n' | tac
      return 0
    fi
  done
  echo "no readable view of snapshot chain $chain in namespace $ns: ${m:-}" >&2
  return 1
}

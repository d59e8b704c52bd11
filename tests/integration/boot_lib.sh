# shellcheck shell=bash
# Helpers for the boot-path tests (test_boot*, test_config*, test_cloudinit*,
# test_packer*): build the .deb from the build dir under test, serve files on
# loopback, and run commands in a throwaway sandbox. Source after lib.sh.

BUILD_DIR=$(cd "$(dirname "$PREPULL")" && pwd)

# build_deb [--fresh] — `cpack -G DEB` from the build dir of $PREPULL. Sets DEB
# (a copy in $T/pkg). The package is kept in $BUILD_DIR/prepull-test-deb and
# reused by later tests while nothing it is made from changed; tests running in
# parallel take a lock on it while they check, rebuild or copy it.  --fresh always
# runs cpack (the packaging test does), into the test's own directory: the shared
# package is not touched while others copy it.
build_deb() {
  [ -f "$BUILD_DIR/CPackConfig.cmake" ] || cannot_run "no CPackConfig.cmake in $BUILD_DIR (not a CMake build dir)"
  command -v cpack >/dev/null || fail "cpack not found"
  mkdir -p "$T/pkg"
  if [ "${1:-}" = --fresh ]; then
    cpack -G DEB -B "$T/cpack" --config "$BUILD_DIR/CPackConfig.cmake" >"$T/logs/cpack.log" 2>&1 ||
      fail "cpack -G DEB failed: $(tail -n 5 "$T/logs/cpack.log")"
    local fresh
    fresh=$(ls "$T/cpack"/prepull_*.deb 2>/dev/null | head -n 1 || true)
    [ -n "$fresh" ] || fail "cpack made no prepull_*.deb: $(ls "$T/cpack")"
    log "built $fresh"
    mv "$fresh" "$T/pkg/"
    rm -rf "$T/cpack"
    DEB=$T/pkg/$(basename "$fresh")
    return 0
  fi
  local cache=$BUILD_DIR/prepull-test-deb cached lock
  exec {lock}>"$BUILD_DIR/prepull-test-deb.lock"
  flock "$lock"
  cached=$(ls "$cache"/prepull_*.deb 2>/dev/null | head -n 1 || true)
  if [ -z "$cached" ] ||
    [ -n "$(find "$PREPULL" "$BUILD_DIR/CPackConfig.cmake" "$BUILD_DIR/prepull.service" \
      "$PREPULL_SRC/scripts/man" "$PREPULL_SRC/scripts/systemd" -newer "$cached" 2>/dev/null | head -n 1)" ]; then
    rm -rf "$cache"
    cpack -G DEB -B "$cache" --config "$BUILD_DIR/CPackConfig.cmake" >"$T/logs/cpack.log" 2>&1 ||
      fail "cpack -G DEB failed: $(tail -n 5 "$T/logs/cpack.log")"
    rm -rf "$cache/_CPack_Packages"
    cached=$(ls "$cache"/prepull_*.deb 2>/dev/null | head -n 1 || true)
    [ -n "$cached" ] || fail "cpack made no prepull_*.deb: $(ls "$cache")"
    log "built $cached"
  fi
  cp "$cached" "$T/pkg/"
  flock -u "$lock"
  exec {lock}>&-
  DEB=$T/pkg/$(basename "$cached")
}

# serve_dir DIR — a static HTTP server on 127.0.0.1 for DIR. Sets SERVE_URL.
serve_dir() {
  local port
  _TRIES=0
  while :; do
    port=$(free_port)
    bg "http-$port" "$PY" -m http.server --bind 127.0.0.1 --directory "$1" "$port"
    _wait_ours "http://127.0.0.1:$port/" "$LAST_PID" && break
    _started_again "http.server for $1" "$LAST_PID" || fail "http.server for $1 died at start-up"
  done
  SERVE_URL=http://127.0.0.1:$port
}

# The sandbox has no systemd: this systemctl logs each call to
# $SANDBOX_LOG_DIR/systemctl.log, and `start`/`restart`/`enable --now` of
# prepull.service run its ExecStart= in the foreground (exit codes in
# SuccessExitStatus= count as success). Other units are only logged.
_write_systemctl_stub() {
  cat >"$1" <<'EOF'
#!/bin/bash
log=${SANDBOX_LOG_DIR:-/run}/systemctl.log
echo "systemctl $*" >>"$log"
now=0 verb="" units=()
for a in "$@"; do
  case $a in
  --now) now=1 ;;
  -*) ;;
  *) if [ -z "$verb" ]; then verb=$a; else units+=("$a"); fi ;;
  esac
done
case $verb in
start | restart) now=1 ;;
enable) ;;
*) exit 0 ;;
esac
[ "$now" = 1 ] || exit 0
for u in "${units[@]}"; do
  [[ $u == *.* ]] || u=$u.service
  f=""
  for d in /etc/systemd/system /run/systemd/system /usr/lib/systemd/system /lib/systemd/system; do
    if [ -f "$d/$u" ]; then f=$d/$u; break; fi
  done
  if [ -z "$f" ]; then echo "unit $u: not found" >>"$log"; exit 5; fi
  if [ "$u" != prepull.service ]; then echo "unit $u: started (not run in the sandbox)" >>"$log"; continue; fi
  ok_codes="0 $(sed -n 's/^SuccessExitStatus=//p' "$f" | tr '\n' ' ')"
  rc=0
  while IFS= read -r cmd; do
    eval "$cmd" >>"${log%.log}.$u.out" 2>>"${log%.log}.$u.err" </dev/null || rc=$?
  done < <(sed -n 's/^ExecStart=//p' "$f")
  echo "unit $u: exited $rc" >>"$log"
  case " $ok_codes " in *" $rc "*) ;; *) exit 1 ;; esac
done
exit 0
EOF
  chmod 755 "$1"
}

# sandbox CMD... — runs CMD in private mount and UTS namespaces where /etc,
# /usr and /var are overlays whose writes go to a tmpfs that vanishes with the
# namespace, and /run is an empty tmpfs. So `apt-get install`, cloud-init and
# Packer provisioners can do what they do on a real machine without changing
# this host. The network is the host's (the loopback registry is reachable);
# $T stays shared for results. systemctl is a stub (see above); its log and the
# output of the units it runs go to $SANDBOX_LOG_DIR (default $T/sandbox-logs).
sandbox() {
  command -v unshare >/dev/null || cannot_run "unshare not found"
  [ "$(id -u)" = 0 ] || cannot_run "the sandbox needs root (mount namespaces, overlayfs)"
  export SANDBOX_LOG_DIR=${SANDBOX_LOG_DIR:-$T/sandbox-logs}
  mkdir -p "$SANDBOX_LOG_DIR" "$T/sbx"
  _write_systemctl_stub "$T/systemctl-stub"
  unshare --mount --uts --propagation private -- bash -c '
    set -e
    base=$1 stub=$2
    shift 2
    mount -t tmpfs -o mode=0755 prepull-sbx "$base"
    for d in etc usr var; do
      mkdir -p "$base/$d.up" "$base/$d.work"
      mount -t overlay "prepull-sbx-$d" -o "lowerdir=/$d,upperdir=$base/$d.up,workdir=$base/$d.work" "/$d"
    done
    mount -t tmpfs -o mode=0755 prepull-sbx-run /run
    # skopeo'"'"'s blob-info cache (a bolt database other tests'"'"' skopeo rewrite on the
    # host): copied up into the overlay while one of them writes it, it arrived torn and
    # a demo'"'"'s skopeo panicked reading it. The sandbox gets an empty one of its own.
    mkdir -p /var/lib/containers/cache
    mount -t tmpfs -o mode=0700 prepull-sbx-cache /var/lib/containers/cache
    mkdir -p /run/lock
    hostname prepull-sandbox
    # Only time, not behaviour: no man-db index rebuild, no needrestart scan.
    rm -f /var/lib/man-db/auto-update
    export NEEDRESTART_SUSPEND=1
    install -m 0755 "$stub" /usr/bin/systemctl
    [ ! -e /bin/systemctl ] || [ /bin/systemctl -ef /usr/bin/systemctl ] || install -m 0755 "$stub" /bin/systemctl
    exec "$@"' prepull-sandbox "$T/sbx" "$T/systemctl-stub" "$@"
}

# sandbox_check — the sandbox works here (overlayfs over /etc and a tmpfs
# /run), and writes inside it do not reach the host.
sandbox_check() {
  local marker=/etc/prepull-sandbox-probe.$$
  if ! sandbox bash -c "echo probe >$marker && cat $marker && [ ! -e /run/lock/x ]" >"$T/logs/sandbox-probe.log" 2>&1; then
    cannot_run "cannot make the overlay sandbox here: $(tail -n 3 "$T/logs/sandbox-probe.log")"
  fi
  [ ! -e "$marker" ] || {
    rm -f "$marker"
    fail "a write to /etc inside the sandbox reached the host"
  }
  ok "sandbox: overlay /etc /usr /var and tmpfs /run; the host's /etc is untouched"
}

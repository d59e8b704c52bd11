#!/usr/bin/env bash
# hostile_sandbox.sh RW_DIR[:RW_DIR...] -- CMD [ARG...]
#
# Runs CMD in a private mount namespace where every mount is read-only except the
# RW_DIRs (bound onto themselves, writable) and /proc and /sys.  A write anywhere else
# fails with EROFS, so a program under test cannot touch a file outside the
# directories it was given.  The remounts live and die with the namespace: nothing
# outside it changes.  Exits 97 when the namespace cannot be set up (never runs CMD
# then), else with CMD's status.
set -euo pipefail
[ $# -ge 3 ] && [ "$2" = -- ] || { echo "usage: hostile_sandbox.sh RW[:RW...] -- CMD..." >&2; exit 97; }
rw=$1
shift 2
exec unshare -m --propagation private bash -c '
  rw=$1
  shift
  IFS=: read -ra RW <<<"$rw"
  for d in "${RW[@]}"; do
    [ -d "$d" ] || { echo "hostile_sandbox: $d is not a directory" >&2; exit 97; }
    mount --bind "$d" "$d" || { echo "hostile_sandbox: cannot bind $d" >&2; exit 97; }
  done
  while read -r _ _ _ _ mp _; do
    mp=$(printf "%b" "$mp")   # /proc/self/mountinfo escapes spaces as \040
    case $mp in /proc | /proc/* | /sys | /sys/*) continue ;; esac
    keep=0
    for d in "${RW[@]}"; do [ "$mp" = "$d" ] && keep=1; done
    [ $keep = 1 ] && continue
    mount -o remount,bind,ro "$mp" 2>/dev/null && continue
    # A mount whose directory was removed outside meanwhile (a daemon'"'"'s temporary
    # mount, copied into this namespace as it went) has no path left to write through.
    [ -e "$mp" ] || continue
    # One that another test mounted and is taking down as this namespace copied it
    # (an overlay of a container run) may refuse the remount: detached here, what is
    # under it is the read-only parent.
    umount -l "$mp" 2>/dev/null && continue
    echo "hostile_sandbox: cannot make $mp read-only" >&2
    exit 97
  done </proc/self/mountinfo
  exec "$@"
' hostile-sandbox "$rw" "$@"

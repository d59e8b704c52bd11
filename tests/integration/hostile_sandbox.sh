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
# The whole mount table is read before anything changes (a table read while mounts are
# taken down can skip or repeat lines), every mount is made read-only, and only then are
# the RW_DIRs bound onto themselves and made writable again: nothing done to another
# mount can hide or detach a writable bind.
exec unshare -m --propagation private bash -c '
  rw=$1
  shift
  IFS=: read -ra RW <<<"$rw"
  for d in "${RW[@]}"; do
    [ -d "$d" ] || { echo "hostile_sandbox: $d is not a directory" >&2; exit 97; }
  done
  mapfile -t TABLE </proc/self/mountinfo
  for line in "${TABLE[@]}"; do
    read -r _ _ _ _ mp _ <<<"$line"
    printf -v mp "%b" "$mp"   # /proc/self/mountinfo escapes spaces as \040
    case $mp in /proc | /proc/* | /sys | /sys/*) continue ;; esac
    mount -o remount,bind,ro "$mp" 2>/dev/null && continue
    # A mount whose directory was removed outside meanwhile (a daemon'"'"'s temporary
    # mount, copied into this namespace as it went) has no path left to write through.
    [ -e "$mp" ] || continue
    # One that another test mounted and is taking down as this namespace copied it
    # (an overlay of a container run) may refuse the remount: detached here, what is
    # under it is the read-only parent.
    umount -l "$mp" 2>/dev/null && continue
    # No longer a mount point: it went with a parent detached above (the table was read
    # before), and what is there now is that parent'"'"'s, read-only.
    mountpoint -q "$mp" || continue
    echo "hostile_sandbox: cannot make $mp read-only" >&2
    exit 97
  done
  for d in "${RW[@]}"; do
    { mount --bind "$d" "$d" && mount -o remount,bind,rw "$d"; } ||
      { echo "hostile_sandbox: cannot bind $d writable" >&2; exit 97; }
    touch "$d/.hostile-sandbox-rw.$$" && rm -f "$d/.hostile-sandbox-rw.$$" ||
      { echo "hostile_sandbox: $d is not writable in the namespace" >&2; exit 97; }
  done
  exec "$@"
' hostile-sandbox "$rw" "$@"

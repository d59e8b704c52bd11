#!/usr/bin/env bash
# Fetches Debian sid's containerd (2.1) and docker.io (28) and unpacks them beside
# the tests, without touching the system's packages: apt gets a private directory
# and a sid source list built from the mirror this machine's apt already uses.
# The .debs are cached, so a second run fetches nothing.
#   bash scripts/newer-runtimes.sh        -> prints the unpacked root
# The tests read the binaries from $ROOT/usr/bin and $ROOT/usr/sbin (see
# tests/integration/test_newer_containerd.sh, test_newer_docker.sh).
#
# Environment:
#   PREPULL_NEWER_DIR  where to keep it all (default /var/tmp/prepull-newer)
set -euo pipefail

A=${PREPULL_NEWER_DIR:-/var/tmp/prepull-newer}
PKGS=(containerd docker.io)
say() { echo "newer-runtimes: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

mkdir -p "$A"
# Tests running side by side may call this at once: one fetches, the others wait.
exec 9>"$A/.lock"
flock 9

# Already unpacked: nothing to do (the stamp lists the .debs it was made from).
if [ -s "$A/root.stamp" ] && [ -x "$A/root/usr/bin/containerd" ] && [ -x "$A/root/usr/sbin/dockerd" ]; then
  say "cached in $A ($(tr '\n' ' ' <"$A/root.stamp"))"
  echo "$A/root"
  exit 0
fi

mkdir -p "$A/dl"
have_debs() {
  local p
  for p in "${PKGS[@]}"; do
    compgen -G "$A/dl/${p}_*.deb" >/dev/null || return 1
  done
}

if ! have_debs; then
  [ "$(id -u)" = 0 ] || die "needs root to run apt-get (once; the .debs are cached in $A/dl)"
  # The system's own Debian mirror, as apt has it configured (one-line or deb822
  # sources); never a host name written down here.
  uri=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 'Label: Debian' 2>/dev/null |
    head -n 1)
  [ -n "$uri" ] || die "no Debian archive in this machine's apt sources"
  # apt's lists, cache, logs and the source list live in a directory of their
  # own that goes away afterwards: only the .debs are kept.
  apt=$(mktemp -d "$A/apt.XXXXXX")
  trap 'rm -rf "$apt"' EXIT
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri sid main" >"$apt/sources.list"
  O=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
  # apt-get download writes into the current directory as the _apt user when
  # it can: give it a directory of its own, then move the .debs.
  mkdir -p "$apt/dl"
  chown _apt "$apt/dl" 2>/dev/null || true
  # A fresh machine once got an update that exited 0 with no sid index, and the
  # download then asked for the installed (Debian 12) versions; a minute later
  # the same commands worked. So: up to three tries, 20 s apart.
  for try in 1 2 3; do
    say "fetching sid's ${PKGS[*]} into $A/dl (try $try of 3)"
    if apt-get "${O[@]}" -q update >"$apt/update.log" 2>&1 &&
      (cd "$apt/dl" && apt-get "${O[@]}" -q download "${PKGS[@]}") >"$apt/download.log" 2>&1; then
      break
    fi
    [ "$try" -lt 3 ] || die "apt-get update or download (sid) failed 3 times:" \
      "$(tail -n 3 "$apt/update.log") $(tail -n 3 "$apt/download.log" 2>/dev/null)"
    : >"$apt/download.log"
    sleep 20
  done
  mv "$apt"/dl/*.deb "$A/dl/"
  have_debs || die "apt-get download left no .deb for ${PKGS[*]} in $A/dl"
fi

rm -rf "$A/root" "$A/root.stamp"
mkdir -p "$A/root"
for d in "$A"/dl/*.deb; do
  dpkg-deb -x "$d" "$A/root" || die "cannot unpack $d"
  basename "$d" >>"$A/root.stamp"
done
for b in usr/bin/containerd usr/bin/ctr usr/bin/containerd-shim-runc-v2 usr/sbin/dockerd; do
  [ -x "$A/root/$b" ] || die "$b is not in the unpacked packages ($(cat "$A/root.stamp"))"
done
say "unpacked $(tr '\n' ' ' <"$A/root.stamp")into $A/root"
echo "$A/root"

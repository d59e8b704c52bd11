#!/usr/bin/env bash
# Installs the Debian 12 packages prepull needs, non-interactively. Two sets:
#
#   scripts/deps.sh --demo   what scripts/demo.sh needs: the build dependencies and
#                            the few tools the demo runs (docker-registry, skopeo,
#                            busybox-static, zstd, python3, curl). No recommended
#                            packages, nothing that changes how the machine boots,
#                            and no daemon left behind: the demo runs its own
#                            private registry, so if installing docker-registry
#                            enabled or started its system service, that service
#                            is disabled and stopped again (a service that was
#                            enabled or running before is left as it was).
#   scripts/deps.sh [--test] everything scripts/test.sh needs: the demo's set plus
#                            the test world (nginx, containerd, docker.io,
#                            cloud-init, packer, fuzzing toolchains, tmux, ...).
#                            These start system services and enable cloud-init:
#                            meant for a test machine or VM, not a workstation.
#
# Does nothing when all packages are already installed; otherwise runs
# `apt-get update` once and `apt-get install -y` of the missing ones. Needs root
# (or sudo) only when something is missing.
#   --list                 print the set's packages, one a line, and exit
#   --simulate STATUSFILE  print what apt-get would install, with the same
#                          options, on a machine whose dpkg status is STATUSFILE
#                          (tests/integration/test_demo_deps.sh uses it)
set -euo pipefail

# Build dependencies (libcmocka-dev: the default build compiles the unit tests).
BUILD_PACKAGES=(
  cmake make gcc libc6-dev pkg-config
  libcurl4-openssl-dev libssl-dev libjansson-dev libzstd-dev libarchive-dev libcmocka-dev
  libisal-dev
)
# What scripts/demo.sh runs. docker-registry is the one daemon among them.
DEMO_RUN_PACKAGES=(docker-registry skopeo busybox-static zstd python3 curl ca-certificates)
# The rest of what the tests use.
TEST_PACKAGES=(
  clang clang-format libfuzzer-14-dev libclang-rt-14-dev
  nginx aria2 apache2-utils openssl containerd runc docker.io
  cloud-init packer systemd dpkg-dev man-db util-linux tmux
  time pigz strace
)
# The demo's daemon: its system service must not outlive the install.
DEMO_SERVICE=docker-registry

mode="test" list=0 simulate=""
while [ $# -gt 0 ]; do
  case $1 in
  --demo) mode="demo" ;;
  --test) mode="test" ;;
  --list) list=1 ;;
  --simulate)
    [ $# -ge 2 ] || { echo "deps: --simulate needs a dpkg status file" >&2; exit 2; }
    simulate=$2
    shift
    ;;
  *)
    echo "usage: scripts/deps.sh [--demo | --test] [--list | --simulate STATUSFILE]" >&2
    exit 2
    ;;
  esac
  shift
done

if [ "$mode" = demo ]; then
  PACKAGES=("${BUILD_PACKAGES[@]}" "${DEMO_RUN_PACKAGES[@]}")
  # Recommends would bring daemons and timers the demo does not need (e.g.
  # uuid-runtime's uuidd, nftables).
  APT_OPTS=(--no-install-recommends)
else
  PACKAGES=("${BUILD_PACKAGES[@]}" "${DEMO_RUN_PACKAGES[@]}" "${TEST_PACKAGES[@]}")
  APT_OPTS=()
fi

if [ "$list" = 1 ]; then
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
fi
if [ -n "$simulate" ]; then
  exec apt-get -s -o "Dir::State::status=$simulate" install "${APT_OPTS[@]}" "${PACKAGES[@]}"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PACKAGES[@]} packages of the $mode set already installed"
  exit 0
fi

if [ "$mode" = test ]; then
  echo "deps: the test command installs the test world beside the demo's packages:"
  echo "deps: daemons (nginx, containerd, docker.io), cloud-init, packer, fuzzing toolchains;"
  echo "deps: some start system services or change the next boot. Use a test machine or VM."
fi
echo "deps: installing ${missing[*]}"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi

# The state of the demo's service, so that the demo leaves it as it found it.
# With systemd running, systemctl knows; without it (a container, a chroot) the
# package's init script is what starts it, and its pidfile says if it runs.
service_enabled() {
  if command -v systemctl >/dev/null; then
    systemctl is-enabled --quiet "$DEMO_SERVICE.service" 2>/dev/null
  else
    compgen -G "/etc/rc[2345].d/S[0-9][0-9]$DEMO_SERVICE" >/dev/null
  fi
}
service_running() {
  if [ -d /run/systemd/system ]; then
    systemctl is-active --quiet "$DEMO_SERVICE.service" 2>/dev/null
  else
    [ -x "/etc/init.d/$DEMO_SERVICE" ] && "/etc/init.d/$DEMO_SERVICE" status >/dev/null 2>&1
  fi
}
was_enabled=0 was_running=0
if [ "$mode" = demo ]; then
  service_enabled && was_enabled=1
  service_running && was_running=1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y "${APT_OPTS[@]}" "${missing[@]}"

if [ "$mode" = demo ]; then
  if [ "$was_running" = 0 ] && service_running; then
    echo "deps: installing $DEMO_SERVICE started its system service; stopping it (the demo runs a private registry)"
    if [ -d /run/systemd/system ]; then
      "${SUDO[@]}" systemctl stop "$DEMO_SERVICE.service"
    else
      "${SUDO[@]}" "/etc/init.d/$DEMO_SERVICE" stop
    fi
  fi
  if [ "$was_enabled" = 0 ] && service_enabled; then
    echo "deps: installing $DEMO_SERVICE enabled its system service; disabling it"
    if command -v systemctl >/dev/null; then
      "${SUDO[@]}" systemctl disable --quiet "$DEMO_SERVICE.service"
    else
      "${SUDO[@]}" update-rc.d "$DEMO_SERVICE" disable
    fi
  fi
fi
# In the test set, the Debian packages start system services on install (nginx,
# docker-registry, dockerd); prepull's tests never use them: they start private
# instances on free ports.
echo "deps: done"

#!/usr/bin/env bash
# Installs everything prepull's build and tests need on Debian 12, non-interactively.
# Does nothing when all packages are already installed; otherwise runs
# `apt-get update` once and `apt-get install -y` of the missing ones. Needs root
# (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  cmake gcc clang clang-format pkg-config
  libcurl4-openssl-dev libssl-dev libjansson-dev libzstd-dev libarchive-dev libcmocka-dev
  libisal-dev
  libfuzzer-14-dev libclang-rt-14-dev
  docker-registry nginx skopeo aria2 busybox-static apache2-utils openssl zstd python3
  ca-certificates curl containerd runc docker.io
  cloud-init packer systemd dpkg-dev man-db util-linux
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y "${missing[@]}"

# The Debian packages start system services on install (nginx, docker-registry).
# prepull's tests never use them: they start private instances on free ports.
echo "deps: done"

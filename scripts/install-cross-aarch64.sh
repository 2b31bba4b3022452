#!/bin/sh
# install-cross-aarch64.sh - install what the aarch64 cross build and its
# emulated tests need, from Debian's packages: the cross compiler, qemu's
# user-mode emulator (the test runner) and the arm64 builds of the
# dependencies through Debian multiarch.  Run as root; safe to rerun: it
# installs only what is missing.  With --check it installs nothing and exits
# with 1 when something is missing.
set -eu

packages="gcc-aarch64-linux-gnu qemu-user pkg-config meson ninja-build
libc6-dev:arm64 libgomp1:arm64 libopenblas-dev:arm64 libsleef-dev:arm64 libstb-dev:arm64 zlib1g-dev:arm64
libjpeg62-turbo-dev:arm64 libwebp-dev:arm64 libpng-dev:arm64 check:arm64"

missing=""
for p in $packages; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "install-cross-aarch64: everything is installed"
    exit 0
fi
if [ "${1:-}" = --check ]; then
    echo "install-cross-aarch64: missing:$missing"
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-cross-aarch64: missing:$missing; run this script as root" >&2
    exit 1
fi

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi
apt-get update
# A multiarch package must have the same version for amd64 and arm64, so apt
# may upgrade a few amd64 libraries to the archive's current version.
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing

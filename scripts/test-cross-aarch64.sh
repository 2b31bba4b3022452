#!/bin/sh
# test-cross-aarch64.sh - cross-build for 64-bit ARM Linux and run the test
# suite under qemu: the golden suite with the scalar and the NEON kernels,
# the NEON-vs-scalar kernel sweeps, and the FEAT_FHM and FEAT_BF16
# half-precision kernels on qemu's 'max' CPU (tests/meson.build), the one
# test that leaves the cross file's Cortex-A72.  Installs the cross
# toolchain first when something is missing (as root, or through sudo).
#
# usage: scripts/test-cross-aarch64.sh [BUILD_DIR]   (default build-aarch64)
#
# Emulation is 10-50 times slower than a board (DAMamba-F's golden case takes
# about 25 s per kernel set here), and no time measured under it says
# anything about speed.
set -eu
cd "$(dirname "$0")/.."
build=${1:-build-aarch64}

if ! scripts/install-cross-aarch64.sh --check; then
    if [ "$(id -u)" -eq 0 ]; then
        scripts/install-cross-aarch64.sh
    else
        sudo scripts/install-cross-aarch64.sh
    fi
fi

# Without `damamba serve`: it would need libmicrohttpd's arm64 build and its
# dependencies, and its tests (loopback servers, wrk) run natively only.
scripts/setup-build.sh "$build" --cross-file cross/aarch64-linux-gnu.ini -Dserve=disabled
meson compile -C "$build"
meson test -C "$build" --print-errorlogs

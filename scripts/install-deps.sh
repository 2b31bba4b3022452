#!/usr/bin/env bash
# Install what building and testing damamba needs on Debian 12 (as root).
# Installs only what is missing, so a second run is quick.
set -euo pipefail

packages=(
  meson ninja-build pkg-config gcc     # build
  libopenblas-dev libsleef-dev libstb-dev zlib1g-dev  # library dependencies
  libjpeg62-turbo-dev                  # JPEG decoding as Pillow and OpenCV do it
  libwebp-dev                          # WebP decoding, likewise
  libpng-dev                           # label maps as palette PNGs (damamba segment)
  check                                # unit tests
  libdnnl-dev                          # oneDNN, a yardstick in bench/bench_sgemm
  libmicrohttpd-dev                    # damamba serve (HTTP)
  wrk                                  # the server's load test
  clang libclang-rt-14-dev             # sanitizer and fuzz builds
  python3-venv python3-pip python3-mesonpy python3-numpy  # the Python package, built offline
  python3-pandas python3-dask python3-distributed python3-pytest  # damamba.dask and the tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Install what is missing, build damamba, and classify the bundled sample
# images with the embedded Fashion-MNIST model.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/setup-build.sh build --buildtype=release
ninja -C build
build/tools/damamba classify -k 3 data/samples

#!/usr/bin/env bash
# The whole test suite: the native build under every instruction set this
# CPU has, the same tests under AddressSanitizer and UndefinedBehaviorSanitizer,
# the CUDA build, and the CUDA code run on the CPU through the host harness.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

step() { printf '\n==== %s\n' "$*"; }

step "native build and tests"
scripts/setup-build.sh build --buildtype=release
ninja -C build
meson test -C build --print-errorlogs

step "AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
# GCC's -fsanitize=undefined leaves out float-to-integer conversions that
# overflow; a size computed in floating point from a hostile file is one.
scripts/setup-build.sh build-asan --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
  -Dc_args=-fsanitize=float-cast-overflow -Dc_link_args=-fsanitize=float-cast-overflow
ninja -C build-asan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --print-errorlogs --timeout-multiplier 4

if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  step "CUDA build (compiles and links; the GPU tests skip without a device)"
  export PATH="$PATH:/usr/local/cuda/bin"
  # The oldest and the newest architecture of the default list: both ends of
  # what the kernels must compile for, in less than half the full build's time.
  scripts/setup-build.sh build-cuda --buildtype=release -Dcuda=enabled -Dgpu_archs=75,90
  ninja -C build-cuda
  meson test -C build-cuda --print-errorlogs
fi

step "the CUDA code on the CPU: the host harness (tests/cuda_host), plain and under ASan + UBSan"
# Only the library and the CUDA tests are built: these builds exist for them.
scripts/setup-build.sh build-harness --buildtype=release -Dgpu_harness=true
ninja -C build-harness tests/test_cuda tests/test_cuda_harness tests/test_ops tests/test_detect
DM_TEST_REQUIRE_CUDA=1 meson test -C build-harness --no-rebuild --print-errorlogs --suite cuda
scripts/setup-build.sh build-harness-asan --buildtype=debugoptimized -Dgpu_harness=true \
  -Db_sanitize=address,undefined -Db_lundef=false
ninja -C build-harness-asan tests/test_cuda tests/test_cuda_harness tests/test_ops tests/test_detect
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 DM_TEST_REQUIRE_CUDA=1 \
  meson test -C build-harness-asan --no-rebuild --print-errorlogs --timeout-multiplier 4 \
  cuda-harness-lazy cuda-harness ops-cuda-harness-lazy detect-cuda-harness-lazy

step "Python package: offline install into a venv, pytest (Dask on a 2-process LocalCluster)"
scripts/test-python.sh

step "fuzz targets, 60 s each (libFuzzer with ASan and UBSan)"
scripts/fuzz.sh 60

step "aarch64 cross build, tested under qemu (scalar, NEON, and the FP16/BF16 kernels on the max CPU)"
scripts/test-cross-aarch64.sh

# One closing line over every suite run above (meson's and pytest's
# summaries are printed with each step).
python3 - build build-asan build-cuda build-harness build-harness-asan build-aarch64 <<'PY'
import json, os, sys
import xml.etree.ElementTree as ET
passed = failed = skipped = 0
for build in sys.argv[1:]:
    log = os.path.join(build, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        continue
    for line in open(log):
        result = json.loads(line)["result"]
        if result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1
pytest_log = os.path.join("build-python", "pytest.xml")
if os.path.exists(pytest_log):
    for suite in ET.parse(pytest_log).getroot().iter("testsuite"):
        bad, skips = int(suite.get("failures")) + int(suite.get("errors")), int(suite.get("skipped"))
        passed += int(suite.get("tests")) - bad - skips
        failed += bad
        skipped += skips
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
PY

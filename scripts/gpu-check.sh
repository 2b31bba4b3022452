#!/usr/bin/env bash
# The CUDA backend on a machine with an NVIDIA GPU: build with -Dcuda=enabled,
# run the test suite with the golden cases on the GPU (a missing device is a
# failure here, not a skip), compare CPU and GPU on the golden DAMamba-F, and
# bench DAMamba-T on the GPU at batch 1 and 128 (and with its UperNet head at
# 512 x 512).  Everything goes to the log
# (default gpu-check.log).  Sized for about 8 minutes on a 16-core machine,
# most of it the build; each step has its own time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
log=${1:-gpu-check.log}
exec > >(tee "$log") 2>&1

failed=0
step() { printf '\n==== %s\n' "$*"; }
# run SECONDS COMMAND...: run a step under a time limit, note a failure.
run() {
  local limit=$1; shift
  echo "\$ $*"
  timeout "$limit" "$@"
  local rc=$?
  [ $rc -eq 0 ] || { echo "gpu-check: FAILED (exit $rc): $*"; failed=1; }
  return $rc
}

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "gpu-check: nvidia-smi not available"
echo "cores: $(nproc)"
nvcc --version | tail -2

step "configure and build with CUDA"
if [ ! -d build-cuda ]; then
  run 120 meson setup build-cuda --buildtype=release -Dcuda=enabled || exit 1
fi
run 300 ninja -C build-cuda || exit 1

step "tests: golden suite on the CPU and the GPU"
export DM_TEST_REQUIRE_CUDA=1
run 240 meson test -C build-cuda --print-errorlogs
grep -E '^\[cuda\]' build-cuda/meson-logs/testlog.txt

step "compare CPU and GPU on the golden DAMamba-F"
run 120 build-cuda/tools/damamba compare -m tests/golden/damamba_f.safetensors \
  -i tests/golden/damamba_f.io.safetensors

step "bench DAMamba-T on the GPU"
run 120 build-cuda/tools/damamba bench --task seg -v T -n 5 --backend cuda
run 90 build-cuda/tools/damamba bench -v T -b 1 --backend cuda
run 120 build-cuda/tools/damamba bench -v T -b 128 -n 5 --backend cuda

step "result"
if [ $failed -eq 0 ]; then echo "gpu-check: all steps passed"; else echo "gpu-check: some steps FAILED"; fi
exit $failed

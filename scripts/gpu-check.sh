#!/usr/bin/env bash
# The CUDA backend on a machine with an NVIDIA GPU, in one command of under
# 10 minutes (the step limits add up to 535 s on the GPU):
#   - build with -Dcuda=enabled (an existing build directory is set up
#     afresh, so nothing stale survives);
#   - the CUDA tests, a missing device being a failure: every operator of
#     the backend's table against the scalar reference; the golden block,
#     small model and DAMamba-F; batches that do not divide into the copy-in
#     chunks, odd sizes down to 1x1 maps, offsets, partial outputs and calls
#     in a row with other inputs, each against the CPU backend; running out
#     of device memory and recovering; device choice;
#   - the detection head: the golden Mask R-CNN micro on the GPU against
#     mmdetection's expected outputs and against the CPU backend, and
#     damamba run and detect with --backend cuda;
#   - damamba compare, CPU against GPU, on the golden DAMamba-F input and on
#     a synthetic batch of 128;
#   - damamba bench of DAMamba-T on the GPU at batch 1 and 128, and with
#     its UperNet head at 512 x 512 (the segmentation tests are in the CUDA
#     suite).
# It ends with one line: pass or fail, with the figures.  Everything goes to
# the log (default gpu-check.log).
#
# scripts/gpu-check.sh --harness [LOG] runs the same steps on this machine's
# CPU through the host harness (-Dgpu_harness=true, tests/cuda_host), with a
# batch of 2 for the large-batch steps and limits ten times as long: a dry
# run of this script where no GPU is.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PATH="$PATH:/usr/local/cuda/bin"

mode=gpu
if [ "${1:-}" = --harness ]; then
  mode=harness
  shift
fi
log=${1:-gpu-check.log}
exec > >(tee "$log") 2>&1

if [ "$mode" = gpu ]; then
  build=build-cuda options=(-Dcuda=enabled) batch=128 runs=5 scale=1
else
  build=build-harness options=(-Dgpu_harness=true) batch=2 runs=1 scale=10
fi
model=tests/golden/damamba_f.safetensors
damamba=$build/tools/damamba

failed=0
step() { printf '\n==== %s\n' "$*"; }
# run SECONDS COMMAND...: run a step under its time limit (times scale),
# note a failure.
run() {
  local limit=$(($1 * scale))
  shift
  echo "\$ $*"
  timeout "$limit" "$@"
  local rc=$?
  [ $rc -eq 0 ] || { echo "gpu-check: FAILED (exit $rc): $*"; failed=1; }
  return $rc
}
# The largest rel_err of the log's lines that match a pattern.
max_rel_err() {
  grep -hE "$1" "$log" | awk '{ for (i = 1; i < NF; i++) if ($i == "rel_err" && $(i + 1) > m) m = $(i + 1) }
    END { printf "%.1e", m }'
}
# The closing line, from what the log holds so far.
result() {
  local golden det det_box compare b1 bn
  golden=$(max_rel_err '^\[cuda\]')
  det=$(max_rel_err '^det \[cuda\]')
  det_box=$(grep -hoE '^det \[cuda\] detections.*max box err [0-9.e+-]+' "$log" |
    awk '{ if ($NF > m) m = $NF } END { printf "%.1e", m }')
  compare=$(awk '$1 ~ /^(stage[0-3]|logits)$/ && $5 > m { m = $5 } END { printf "%.1e", m }' "$log")
  b1=$(grep -oE 'images_per_s=[0-9.]+' "$log" | sed -n 1p | cut -d= -f2)
  bn=$(grep -oE 'images_per_s=[0-9.]+' "$log" | sed -n 2p | cut -d= -f2)
  local figures="max rel err vs golden/CPU ${golden:-n/a} (tests), ${compare:-n/a} (compare);"
  figures+=" Mask R-CNN ${det:-n/a}, boxes within ${det_box:-n/a} px;"
  figures+=" DAMamba-T ${b1:-n/a} images/s at batch 1, ${bn:-n/a} at batch $batch"
  if [ $failed -eq 0 ]; then echo "gpu-check ($mode): PASS: $figures"; else echo "gpu-check ($mode): FAIL: $figures"; fi
  exit $failed
}

step "machine"
if [ "$mode" = gpu ]; then
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv ||
    echo "gpu-check: nvidia-smi not available"
  nvcc --version | tail -2
fi
echo "cores: $(nproc)"

step "configure and build ($build, ${options[*]})"
# An existing build directory is set up afresh, so the check builds what the
# checkout holds with these options and nothing else.
if [ -d "$build" ]; then
  run 30 meson setup --wipe "$build" --buildtype=release "${options[@]}" || result
else
  run 30 meson setup "$build" --buildtype=release "${options[@]}" || result
fi
run 180 ninja -C "$build" || result

step "CUDA tests (a missing device fails them)"
export DM_TEST_REQUIRE_CUDA=1
run 110 meson test -C "$build" --no-rebuild --print-errorlogs --suite cuda --no-suite cuda-detect
grep -hE '^\[cuda\]|^too large|^workspace on' "$build/meson-logs/testlog.txt"

step "detection head: the golden Mask R-CNN micro on the GPU, against mmdetection and the CPU; run and detect --backend cuda"
run 40 meson test -C "$build" --no-rebuild --print-errorlogs --suite cuda-detect
# (mask.prob, the sigmoid against float64, is printed for the record only)
grep -hE '^\[cuda\]' "$build/meson-logs/testlog.txt" | grep -v 'mask\.prob' | sed 's/^/det /'

step "compare CPU and GPU: the golden DAMamba-F input, then a synthetic batch of $batch"
run 30 "$damamba" compare -m "$model" -i tests/golden/damamba_f.io.safetensors
run 45 "$damamba" compare -m "$model" --synthetic -b "$batch"

step "bench DAMamba-T on the GPU"
run 20 "$damamba" bench -v T -b 1 -n "$runs" --backend cuda
run 30 "$damamba" bench -v T -b "$batch" -n "$runs" --backend cuda
run 50 "$damamba" bench --task seg -v T -n "$runs" --backend cuda

step "result"
result

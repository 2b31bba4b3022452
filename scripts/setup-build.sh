#!/usr/bin/env bash
# scripts/setup-build.sh DIR [MESON OPTIONS...]
# meson setup of a build directory not set up yet; one that is (it has a
# build.ninja) is left as it is.  Quiet unless it fails: then meson's
# output, where it prints its errors, is shown.
set -euo pipefail
dir=$1
shift
[ -f "$dir/build.ninja" ] && exit 0
if ! log=$(meson setup "$dir" "$@" 2>&1); then
  printf '%s\n' "$log"
  exit 1
fi

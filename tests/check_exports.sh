#!/bin/sh
# check_exports.sh LIBRARY HEADER - the shared library exports exactly the
# functions the public header marks DM_API: no internal function, no
# bundled stb_image, and nothing of the header missing.
set -u
lib=$1 header=$2
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
# Each declaration starts a line with "DM_API type name(".
grep '^DM_API ' "$header" | sed 's/(.*//; s/.*[ *]//' | sort -u >"$tmp/api"
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sed 's/@.*//' | sort -u >"$tmp/exported"
[ -s "$tmp/api" ] || { echo "no DM_API declarations found in $header"; exit 1; }
status=0
extra=$(comm -13 "$tmp/api" "$tmp/exported")
missing=$(comm -23 "$tmp/api" "$tmp/exported")
[ -z "$extra" ] || { echo "exported but not in $header:"; echo "$extra"; status=1; }
[ -z "$missing" ] || { echo "declared in $header but not exported:"; echo "$missing"; status=1; }
[ "$status" -eq 0 ] && echo "$(wc -l <"$tmp/exported") symbols exported, all of them the header's"
exit "$status"

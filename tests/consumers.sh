#!/bin/sh
# consumers.sh SOURCE_ROOT IMAGE - use libdamamba the ways another project
# would, each building tests/consumer/consumer.c and classifying IMAGE:
#  1. as a Meson subproject (dependency('damamba', fallback : 'damamba')),
#     which must build the library only: no tools, benchmarks or tests;
#  2. installed (into a temporary prefix), through pkg-config, shared;
#  3. the same, linking the static library with pkg-config --static.
# The subproject (used even where a damamba.pc is installed) is built
# unoptimized with both library kinds, to keep the build short and to
# install both.  Last, -Dtests=false configures without looking for Check.
set -u
src=$(cd "$1" && pwd) image=$2
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
cc=${CC:-cc}

mkdir -p "$tmp/project/subprojects"
cp "$src/tests/consumer/meson.build" "$src/tests/consumer/consumer.c" "$tmp/project/"
ln -s "$src" "$tmp/project/subprojects/damamba"
prefix=$tmp/prefix
if ! meson setup "$tmp/build" "$tmp/project" --prefix "$prefix" --buildtype plain --force-fallback-for=damamba \
        -Ddamamba:default_library=both >"$tmp/setup.log" 2>&1 ||
    ! ninja -C "$tmp/build" >"$tmp/build.log" 2>&1; then
    cat "$tmp/setup.log" "$tmp/build.log"
    echo "FAIL: the subproject build"
    exit 1
fi
"$tmp/build/consumer" "$image" | grep -q "^Sneaker " || fail "consumer built with the subproject"
for built in tools/damamba bench tests; do
    [ -e "$tmp/build/subprojects/damamba/$built" ] && fail "the subproject built $built"
done
grep -qi "dependency check" "$tmp/setup.log" && fail "the subproject looked for Check"

meson install -C "$tmp/build" --no-rebuild >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "meson install"; }
pc=$(find "$prefix" -name damamba.pc)
[ -n "$pc" ] || { echo "FAIL: no damamba.pc installed"; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")"

# Shared: the link line the README gives.
if $cc -o "$tmp/shared" "$tmp/project/consumer.c" $(pkg-config --cflags --libs damamba) 2>"$tmp/cc.log"; then
    LD_LIBRARY_PATH="$(pkg-config --variable=libdir damamba)" "$tmp/shared" "$image" | grep -q "^Sneaker " ||
        fail "consumer linked through pkg-config"
else
    cat "$tmp/cc.log"
    fail "linking through pkg-config"
fi

# Static: libdamamba.a plus the private libraries the .pc lists, as the
# README gives it.
if $cc "$tmp/project/consumer.c" $(pkg-config --cflags damamba) -l:libdamamba.a \
        $(pkg-config --static --libs damamba | sed 's/-ldamamba//') -o "$tmp/static" 2>"$tmp/cc.log"; then
    ldd "$tmp/static" | grep -q libdamamba && fail "the static consumer still needs libdamamba.so"
    "$tmp/static" "$image" | grep -q "^Sneaker " || fail "consumer linked statically through pkg-config"
else
    cat "$tmp/cc.log"
    fail "linking statically through pkg-config --static"
fi

if meson setup "$tmp/no-tests" "$src" -Dtests=false >"$tmp/setup.log" 2>&1; then
    grep -qi "dependency check" "$tmp/setup.log" && fail "-Dtests=false still looks for Check"
else
    cat "$tmp/setup.log"
    fail "meson setup -Dtests=false"
fi

[ "$failures" -eq 0 ] && echo "subproject, pkg-config and static consumers all classify $image"
exit "$failures"

#!/usr/bin/env bash
# The Python package: build its wheel offline with the README's command,
# install it into a virtual environment over Debian's Python packages,
# then run its tests (pytest), which compare it with the command-line
# program of the native build in build/.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=build-python/venv
scripts/setup-build.sh build --buildtype=release
ninja -C build tools/damamba >/dev/null
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$venv"
rm -rf build-python/wheel
"$venv/bin/pip" wheel --quiet --no-build-isolation --no-deps --no-index -w build-python/wheel ./python
"$venv/bin/pip" install --quiet --no-index --no-deps --force-reinstall build-python/wheel/damamba-*.whl
# Run from outside the source tree, so the tests import the installed package.
cd build-python
GOMP_SPINCOUNT=10000 DAMAMBA_CLI="$PWD/../build/tools/damamba" \
  timeout 600 venv/bin/python -m pytest -q -p no:cacheprovider --junitxml=pytest.xml ../python/tests

#!/usr/bin/env bash
# build.sh <build-dir> [cmake args...]: configure (once) and build with Ninja, -j2.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$1"; shift
if [ ! -f "$dir/build.ninja" ]; then
  cmake -S "$root" -B "$dir" -G Ninja "$@" >/dev/null
fi
cmake --build "$dir" -j"${TANDEM_JOBS:-2}"

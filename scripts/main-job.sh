#!/usr/bin/env bash
# The main job. Until the local-cluster demo exists it runs the replica data
# path end to end: builds Release, then bench/replica_bench compares the raw
# io_uring/libaio backends with a replica served by tandem-engine over
# loopback TCP, and prints the table and the ratios.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/install-deps.sh"
out="${TANDEM_BUILD_ROOT:-$root/build}/release"
"$root/scripts/build.sh" "$out" -DCMAKE_BUILD_TYPE=Release -DTANDEM_BUILD_TESTS=OFF
exec "$out/bench/replica_bench" "$@"

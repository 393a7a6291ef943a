#!/usr/bin/env bash
# The whole test suite, from a fresh Debian bookworm machine:
#   1. installs missing packages,
#   2. builds and runs every ctest test (unit + integration over 127.0.0.1),
#   3. builds with ASan+UBSan and runs the suite again  (TANDEM_SANITIZE=0 skips),
#   4. builds the libFuzzer targets with clang and runs each for
#      TANDEM_FUZZ_SECONDS (default 10)                  (TANDEM_FUZZ=0 skips).
# Exit status is non-zero if anything failed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/install-deps.sh"

out="${TANDEM_BUILD_ROOT:-$root/build}"
jobs="${TANDEM_TEST_JOBS:-2}"

echo "== build (RelWithDebInfo) =="
"$root/scripts/build.sh" "$out/dev" -DCMAKE_BUILD_TYPE=RelWithDebInfo
# The test that flips the machine-wide kernel.io_uring_disabled sysctl runs
# alone: any io_uring another test creates in that window would fail.
serial='KernelSysctlDisablingIoUring'
echo "== ctest =="
ctest --test-dir "$out/dev" --output-on-failure -j"$jobs" -E "$serial"
ctest --test-dir "$out/dev" --output-on-failure -R "$serial"

if [ "${TANDEM_SANITIZE:-1}" != "0" ]; then
  echo "== build (ASan + UBSan) =="
  "$root/scripts/build.sh" "$out/asan" -DCMAKE_BUILD_TYPE=Debug -DTANDEM_SANITIZE=ON
  echo "== ctest under ASan + UBSan =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir "$out/asan" --output-on-failure -j"$jobs" -E "$serial"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir "$out/asan" --output-on-failure -R "$serial"
fi

if [ "${TANDEM_FUZZ:-1}" != "0" ]; then
  echo "== fuzzers (clang + libFuzzer, ${TANDEM_FUZZ_SECONDS:-10} s each) =="
  # Only the fuzzers, the libraries they link and the thread-safety check
  # (clang -Wthread-safety over every annotated library; not the gRPC services).
  if [ ! -f "$out/fuzz/build.ninja" ]; then
    CC=clang CXX=clang++ cmake -S "$root" -B "$out/fuzz" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DTANDEM_FUZZ=ON -DTANDEM_BUILD_TESTS=OFF -DTANDEM_FUZZ_SECONDS="${TANDEM_FUZZ_SECONDS:-10}" \
      >/dev/null
  fi
  cmake --build "$out/fuzz" -j"${TANDEM_JOBS:-2}" --target tandem_fuzzers
  ctest --test-dir "$out/fuzz" --output-on-failure -R fuzz
fi
echo "== all tests passed =="

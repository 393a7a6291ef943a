#pragma once
// Monotonic time in nanoseconds, for timeouts and latency measurement.

#include <time.h>

#include <cstdint>

namespace tandem {

inline uint64_t MonotonicNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace tandem

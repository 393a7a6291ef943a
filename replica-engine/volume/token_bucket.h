#pragma once
// TokenBucket: the rebuild's rate limit (bytes per second, changeable at run
// time). Tokens accrue with time up to a burst of a tenth of a second of the
// rate, but never less than `min_burst` (one copy window must always fit, or
// a slow rate could never start one). A copy window waits until Available()
// covers it and then Take()s its length.
//
// Pure: time comes in as an argument (MonotonicNanos() in the target), so
// tests drive it. Not thread-safe (the target's loop).

#include <cstdint>

namespace tandem::target {

class TokenBucket {
 public:
  // rate 0: unlimited.
  TokenBucket(uint64_t bytes_per_sec, uint64_t min_burst)
      : rate_(bytes_per_sec), min_burst_(min_burst) {}

  uint64_t rate() const { return rate_; }
  // Empties the bucket at `now_ns` (a rebuild starts, or the rate changes).
  void Reset(uint64_t now_ns) {
    tokens_ = 0;
    last_ns_ = now_ns;
  }
  void SetRate(uint64_t bytes_per_sec, uint64_t now_ns) {
    rate_ = bytes_per_sec;
    Reset(now_ns);
  }
  // Tokens available at `now_ns` (UINT64_MAX when unlimited). Time only
  // counts once it adds a whole token, so frequent calls lose nothing.
  uint64_t Available(uint64_t now_ns);
  // REQUIRES: n <= Available(now) just before. No-op when unlimited.
  void Take(uint64_t n) {
    if (rate_ != 0) tokens_ -= n;
  }

 private:
  uint64_t rate_;
  uint64_t min_burst_;
  uint64_t tokens_ = 0;
  uint64_t last_ns_ = 0;
};

}  // namespace tandem::target

#include "replica-engine/volume/token_bucket.h"

#include <algorithm>

namespace tandem::target {

uint64_t TokenBucket::Available(uint64_t now_ns) {
  if (rate_ == 0) return UINT64_MAX;
  uint64_t cap = std::max<uint64_t>(min_burst_, rate_ / 10);
  // 128-bit product: nanoseconds times bytes per second passes 2^64 after
  // ~18 s idle at 1 GiB/s, and a wrapped product would under-fill the bucket.
  const unsigned __int128 wide =
      static_cast<unsigned __int128>(now_ns - last_ns_) * rate_ / 1000000000ull;
  const uint64_t add = wide > cap ? cap : static_cast<uint64_t>(wide);
  if (add > 0) {
    tokens_ = std::min(cap, tokens_ + add);
    last_ns_ = now_ns;
  }
  return tokens_;
}

}  // namespace tandem::target

#include "replica-engine/volume/stage_histogram.h"

#include <cmath>

namespace tandem::target {

uint64_t StageHistogram::LowerBound(int bucket) {
  if (bucket < kSub) return static_cast<uint64_t>(bucket);
  const int group = bucket / kSub;  // >= 1: octave msb = group + kSubBits - 1
  const uint64_t sub = static_cast<uint64_t>(bucket % kSub);
  return (kSub + sub) << (group - 1);
}

uint64_t StageHistogram::UpperBound(int bucket) {
  if (bucket >= kBuckets - 1) return 2 * LowerBound(kBuckets - 1);
  return LowerBound(bucket + 1);
}

int StageHistogram::used_buckets() const {
  for (int b = kBuckets; b > 0; --b) {
    if (counts_[static_cast<size_t>(b - 1)] != 0) return b;
  }
  return 0;
}

uint64_t StageHistogram::Percentile(double q) const {
  if (count_ == 0) return 0;
  if (q > 1) q = 1;
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  if (rank == 0) rank = 1;
  uint64_t below = 0;
  for (int b = 0; b < kBuckets; ++b) {
    const uint64_t c = counts_[static_cast<size_t>(b)];
    if (below + c >= rank) {
      // The values of a bucket are taken as spread evenly over it: the k-th of
      // c sits at the middle of the k-th of c equal parts.
      const double lo = static_cast<double>(LowerBound(b));
      const double width = static_cast<double>(UpperBound(b)) - lo;
      const double pos = (static_cast<double>(rank - below) - 0.5) / static_cast<double>(c);
      return static_cast<uint64_t>(lo + width * pos);
    }
    below += c;
  }
  return LowerBound(kBuckets - 1);  // unreachable: the counts add up to count_
}

StageHistogram StageHistogram::FromBuckets(const uint64_t* counts, size_t n, uint64_t sum_ns) {
  StageHistogram h;
  for (size_t b = 0; b < n && b < static_cast<size_t>(kBuckets); ++b) {
    h.counts_[b] = counts[b];
    h.count_ += counts[b];
  }
  h.sum_ns_ = sum_ns;
  return h;
}

const char* StageName(Stage s) {
  switch (s) {
    case Stage::kQueue:
      return "queue";
    case Stage::kReplica:
      return "replica";
    case Stage::kData:
      return "data";
    case Stage::kFinish:
      return "finish";
    case Stage::kTotal:
      return "total";
  }
  return "?";
}

}  // namespace tandem::target

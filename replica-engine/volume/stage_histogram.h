#pragma once
// StageHistogram: a fixed-size latency histogram (nanoseconds) for the
// target's per-stage breakdown of the I/O path (docs/performance.md).
//
// Buckets are log2 octaves split into kSub linear sub-buckets (HdrHistogram's
// shape with two significant bits): values 0..3 have a bucket each; above,
// bucket b covers [LowerBound(b), LowerBound(b + 1)), at most 25% wide, so a
// percentile is placed within 25% of the truth. Values of 2^36 ns (~69 s) and
// more share the last bucket. Record() is a few instructions on a fixed
// array: the target's loop records every I/O with no allocation and no lock
// (the loop is single-threaded; status is read on it).
//
// The layout is part of the engine's management API (engine.proto's
// StageLatency.buckets): tools that diff two snapshots recompute percentiles
// from the counts with the same formula (scripts/lib/bench_table.py).

#include <array>
#include <cstddef>
#include <cstdint>

namespace tandem::target {

class StageHistogram {
 public:
  static constexpr int kSubBits = 2;
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kMaxOctave = 35;  // values < 2^36 ns get exact buckets
  static constexpr int kBuckets = (kMaxOctave - kSubBits + 2) * kSub;

  static int BucketOf(uint64_t ns) {
    if (ns < kSub) return static_cast<int>(ns);
    const int msb = 63 - __builtin_clzll(ns);
    if (msb > kMaxOctave) return kBuckets - 1;
    const int sub = static_cast<int>((ns >> (msb - kSubBits)) & (kSub - 1));
    return (msb - kSubBits + 1) * kSub + sub;
  }
  // The smallest value of `bucket`.
  static uint64_t LowerBound(int bucket);
  // The first value past `bucket` (LowerBound(bucket + 1)); the last bucket
  // is open: its bound is twice its lower bound, for interpolation only.
  static uint64_t UpperBound(int bucket);

  void Record(uint64_t ns) {
    ++counts_[static_cast<size_t>(BucketOf(ns))];
    ++count_;
    sum_ns_ += ns;
  }

  uint64_t count() const { return count_; }
  uint64_t sum_ns() const { return sum_ns_; }
  uint64_t bucket(int b) const { return counts_[static_cast<size_t>(b)]; }
  // Buckets up to the last non-empty one (0 when empty): what is exported.
  int used_buckets() const;

  // The value at quantile q (0 < q <= 1): the bucket holding the value of
  // rank ceil(q * count), interpolated linearly inside it by rank. 0 when
  // empty.
  uint64_t Percentile(double q) const;

  // Rebuilds a histogram from exported counts (`n` may be < kBuckets; extra
  // ones are ignored) and their sum.
  static StageHistogram FromBuckets(const uint64_t* counts, size_t n, uint64_t sum_ns);

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ns_ = 0;
};

// The stages of one class of I/O (reads; or writes with TRIM, WRITE_ZEROES
// and FLUSH), each a histogram:
//   queue   frontend Submit -> handed to the replica clients (waits for an
//           IoCtx, start-up, a generation bump or the range lock)
//   replica one sub-request handed to its ReplicaChannel -> its reply handled
//           on the target's loop: client send batching, TCP, the replica
//           server, its disk and the reply's way back, for every replica
//   data    handed to the replicas -> the last reply of the data phase (for
//           writes the slowest replica decides)
//   finish  the last data reply -> the frontend's `done` (MARK_DIRTY, a bump
//           or the FLUSH after a FUA TRIM when they happen; else ~0)
//   total   frontend Submit -> the frontend's `done`
// The frontend's own part (reading the request from its socket, writing the
// reply) is outside: the client's latency minus `total`.
enum class Stage : uint8_t { kQueue, kReplica, kData, kFinish, kTotal };
constexpr int kStageCount = 5;
const char* StageName(Stage s);

struct StageLatencies {
  std::array<StageHistogram, kStageCount> read;
  std::array<StageHistogram, kStageCount> write;
};

}  // namespace tandem::target

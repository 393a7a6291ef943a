#include "replica-engine/volume/stage_histogram.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::target {
namespace {

using H = StageHistogram;

TEST(StageHistogramTest, SmallValuesHaveABucketEach) {
  for (uint64_t v = 0; v < 4; ++v) {
    EXPECT_EQ(H::BucketOf(v), static_cast<int>(v));
    EXPECT_EQ(H::LowerBound(static_cast<int>(v)), v);
    EXPECT_EQ(H::UpperBound(static_cast<int>(v)), v + 1);
  }
}

TEST(StageHistogramTest, BucketEdgesAreQuarterOctaves) {
  // Octave [4096, 8192) is split at 5120, 6144, 7168.
  EXPECT_EQ(H::BucketOf(4095) + 1, H::BucketOf(4096));
  EXPECT_EQ(H::BucketOf(4096), H::BucketOf(5119));
  EXPECT_EQ(H::BucketOf(5119) + 1, H::BucketOf(5120));
  EXPECT_EQ(H::LowerBound(H::BucketOf(5120)), 5120u);
  EXPECT_EQ(H::LowerBound(H::BucketOf(7168)), 7168u);
  EXPECT_EQ(H::UpperBound(H::BucketOf(7168)), 8192u);
  EXPECT_EQ(H::BucketOf(8191) + 1, H::BucketOf(8192));
}

TEST(StageHistogramTest, EveryValueLiesInItsBucketAndBucketsAreContiguous) {
  for (int b = 0; b + 1 < H::kBuckets; ++b) {
    EXPECT_EQ(H::UpperBound(b), H::LowerBound(b + 1)) << b;
    EXPECT_LT(H::LowerBound(b), H::UpperBound(b)) << b;
    EXPECT_EQ(H::BucketOf(H::LowerBound(b)), b) << b;
    EXPECT_EQ(H::BucketOf(H::UpperBound(b) - 1), b) << b;
    // At most 25% wide above the exact small values: the error bound.
    if (b >= H::kSub) {
      EXPECT_LE(H::UpperBound(b) - H::LowerBound(b), H::LowerBound(b) / 4) << b;
    }
  }
}

TEST(StageHistogramTest, HugeValuesShareTheLastBucket) {
  EXPECT_EQ(H::BucketOf((1ull << 36) - 1), H::kBuckets - 1);
  EXPECT_EQ(H::BucketOf(1ull << 36), H::kBuckets - 1);
  EXPECT_EQ(H::BucketOf(UINT64_MAX), H::kBuckets - 1);
  H h;
  h.Record(UINT64_MAX / 4);
  EXPECT_EQ(h.count(), 1u);
  EXPECT_EQ(h.used_buckets(), H::kBuckets);
}

TEST(StageHistogramTest, EmptyHistogramReportsZero) {
  H h;
  EXPECT_EQ(h.Percentile(0.5), 0u);
  EXPECT_EQ(h.used_buckets(), 0);
  EXPECT_EQ(h.count(), 0u);
}

TEST(StageHistogramTest, PercentilesFallInTheBucketOfTheRankedValue) {
  H h;
  // 1..1000 us: p50 is 500 us, p99 990 us, p100 1000 us.
  for (uint64_t us = 1; us <= 1000; ++us) h.Record(us * 1000);
  EXPECT_EQ(h.count(), 1000u);
  EXPECT_EQ(h.sum_ns(), 500500u * 1000);
  const uint64_t p50 = h.Percentile(0.5);
  EXPECT_EQ(H::BucketOf(p50), H::BucketOf(500'000));
  const uint64_t p99 = h.Percentile(0.99);
  EXPECT_EQ(H::BucketOf(p99), H::BucketOf(990'000));
  EXPECT_EQ(H::BucketOf(h.Percentile(1.0)), H::BucketOf(1'000'000));
  // Within a quarter of the true value, and ordered.
  EXPECT_NEAR(static_cast<double>(p50), 500'000.0, 125'000.0);
  EXPECT_NEAR(static_cast<double>(p99), 990'000.0, 250'000.0);
  EXPECT_LE(h.Percentile(0.1), p50);
  EXPECT_LE(p50, p99);
}

TEST(StageHistogramTest, OneBucketInterpolatesByRank) {
  H h;
  // Four values in [4096, 5120): the k-th of 4 sits at the middle of the k-th quarter.
  for (int i = 0; i < 4; ++i) h.Record(4500);
  EXPECT_EQ(h.Percentile(0.25), 4096u + 128);
  EXPECT_EQ(h.Percentile(1.0), 4096u + 3 * 256 + 128);
  // A bimodal set: p50 in the low mode, p99 in the high one.
  H bi;
  for (int i = 0; i < 90; ++i) bi.Record(20'000);
  for (int i = 0; i < 10; ++i) bi.Record(900'000);
  EXPECT_EQ(H::BucketOf(bi.Percentile(0.5)), H::BucketOf(20'000));
  EXPECT_EQ(H::BucketOf(bi.Percentile(0.9)), H::BucketOf(20'000));
  EXPECT_EQ(H::BucketOf(bi.Percentile(0.91)), H::BucketOf(900'000));
}

TEST(StageHistogramTest, FromBucketsRoundTripsTheExportedCounts) {
  H h;
  for (uint64_t v : {0ull, 3ull, 70ull, 4096ull, 65'000ull, 3'000'000ull}) h.Record(v);
  std::vector<uint64_t> counts;
  for (int b = 0; b < h.used_buckets(); ++b) counts.push_back(h.bucket(b));
  H back = H::FromBuckets(counts.data(), counts.size(), h.sum_ns());
  EXPECT_EQ(back.count(), h.count());
  EXPECT_EQ(back.sum_ns(), h.sum_ns());
  EXPECT_EQ(back.used_buckets(), h.used_buckets());
  for (double q : {0.1, 0.5, 0.9, 1.0}) EXPECT_EQ(back.Percentile(q), h.Percentile(q)) << q;
}

TEST(StageHistogramTest, StagesHaveNames) {
  EXPECT_STREQ(StageName(Stage::kQueue), "queue");
  EXPECT_STREQ(StageName(Stage::kReplica), "replica");
  EXPECT_STREQ(StageName(Stage::kData), "data");
  EXPECT_STREQ(StageName(Stage::kFinish), "finish");
  EXPECT_STREQ(StageName(Stage::kTotal), "total");
}

}  // namespace
}  // namespace tandem::target

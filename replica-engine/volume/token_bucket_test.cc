#include "replica-engine/volume/token_bucket.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace tandem::target {
namespace {

constexpr uint64_t kSecond = 1000000000ull;
constexpr uint64_t kWindow = 1 << 20;

TEST(TokenBucketTest, UnlimitedAlwaysHasTokensAndTakingCostsNothing) {
  TokenBucket b(0, kWindow);
  b.Reset(0);
  EXPECT_EQ(b.Available(0), UINT64_MAX);
  b.Take(kWindow);
  EXPECT_EQ(b.Available(1), UINT64_MAX);
}

TEST(TokenBucketTest, AccruesAtTheRateFromEmpty) {
  TokenBucket b(100 << 20, kWindow);  // 100 MiB/s
  b.Reset(5 * kSecond);
  EXPECT_EQ(b.Available(5 * kSecond), 0u);
  // 5 ms: 0.5 MiB.
  EXPECT_EQ(b.Available(5 * kSecond + kSecond / 200), (100ull << 20) / 200);
  b.Take((100ull << 20) / 200);
  EXPECT_EQ(b.Available(5 * kSecond + kSecond / 200), 0u);
}

TEST(TokenBucketTest, BurstIsATenthOfASecondButAtLeastOneWindow) {
  TokenBucket fast(1000 << 20, kWindow);  // 1000 MiB/s: burst 100 MiB
  fast.Reset(0);
  EXPECT_EQ(fast.Available(10 * kSecond), (1000ull << 20) / 10);
  TokenBucket slow(1 << 20, kWindow);  // 1 MiB/s: a tenth is less than a window
  slow.Reset(0);
  EXPECT_EQ(slow.Available(10 * kSecond), kWindow);
}

TEST(TokenBucketTest, FrequentCallsLoseNoTime) {
  // 1000 B/s: a call every 0.5 ms adds nothing by itself, but the time still
  // counts once it adds up to whole tokens.
  TokenBucket b(1000, 1);
  b.Reset(0);
  for (uint64_t t = 0; t <= kSecond / 10; t += kSecond / 2000) b.Available(t);
  EXPECT_EQ(b.Available(kSecond / 10), 100u);
}

TEST(TokenBucketTest, ALongIdleFillsTheBucketInsteadOfWrappingAround) {
  // 1 GiB/s idle for 2^34 ns (~17 s): 2^34 ns * 2^30 B/s is exactly 2^64,
  // which 64-bit math wraps to 0 tokens.
  TokenBucket b(1ull << 30, kWindow);
  b.Reset(0);
  EXPECT_EQ(b.Available(1ull << 34), (1ull << 30) / 10);
  b.Take((1ull << 30) / 10);
  const uint64_t later = (1ull << 34) + 3600 * kSecond;
  EXPECT_EQ(b.Available(later), (1ull << 30) / 10);
}

TEST(TokenBucketTest, ChangingTheRateEmptiesTheBucket) {
  TokenBucket b(100 << 20, kWindow);
  b.Reset(0);
  EXPECT_GT(b.Available(kSecond), 0u);
  b.SetRate(10 << 20, kSecond);
  EXPECT_EQ(b.rate(), 10u << 20);
  EXPECT_EQ(b.Available(kSecond), 0u);
  EXPECT_EQ(b.Available(kSecond + kSecond / 10), (10ull << 20) / 10);
}

}  // namespace
}  // namespace tandem::target

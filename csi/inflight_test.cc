#include "csi/inflight.h"

#include <gtest/gtest.h>

namespace tandem::csi {
namespace {

TEST(InFlightTest, SecondAcquireOfAHeldKeyIsAborted) {
  InFlight inflight;
  auto first = inflight.TryAcquire("vol:a");
  ASSERT_TRUE(first.ok());
  auto second = inflight.TryAcquire("vol:a");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kAborted);
  EXPECT_NE(second.status().message().find("vol:a"), std::string::npos);
}

TEST(InFlightTest, OtherKeysAreIndependent) {
  InFlight inflight;
  auto a = inflight.TryAcquire("vol:a");
  auto b = inflight.TryAcquire("vol:b");
  EXPECT_TRUE(a.ok());
  EXPECT_TRUE(b.ok());
}

TEST(InFlightTest, KeyIsReleasedWhenTheGuardGoesAway) {
  InFlight inflight;
  {
    auto g = inflight.TryAcquire("name:x");
    ASSERT_TRUE(g.ok());
    EXPECT_TRUE(inflight.Contains("name:x"));
  }
  EXPECT_FALSE(inflight.Contains("name:x"));
  EXPECT_TRUE(inflight.TryAcquire("name:x").ok());
}

TEST(InFlightTest, MovedGuardReleasesOnce) {
  InFlight inflight;
  auto g = inflight.TryAcquire("k");
  ASSERT_TRUE(g.ok());
  {
    InFlight::Guard moved(std::move(*g));
    EXPECT_TRUE(inflight.Contains("k"));
  }
  EXPECT_FALSE(inflight.Contains("k"));
}

}  // namespace
}  // namespace tandem::csi

#include "common/grpc/grpc_status.h"

#include <gtest/gtest.h>

namespace tandem::rpc {
namespace {

TEST(GrpcStatusTest, EveryCodeAndMessageSurvivesTheRoundTrip) {
  EXPECT_TRUE(ToGrpcStatus(Status::Ok()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  for (int code = 1; code <= static_cast<int>(StatusCode::kUnauthenticated); ++code) {
    Status st(static_cast<StatusCode>(code), "volume v1: why");
    grpc::Status g = ToGrpcStatus(st);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    EXPECT_EQ(g.error_message(), "volume v1: why");
    Status back = FromGrpcStatus(g);
    EXPECT_EQ(back.code(), st.code());
    EXPECT_EQ(back.message(), st.message());
  }
}

// A code outside the canonical range (DO_NOT_USE is the one such value that
// is a valid enumerator; a number outside the enum would be UB to build here).
TEST(GrpcStatusTest, AForeignCodeBecomesUnknown) {
  Status st = FromGrpcStatus(grpc::Status(grpc::StatusCode::DO_NOT_USE, "odd peer"));
  EXPECT_EQ(st.code(), StatusCode::kUnknown);
  EXPECT_EQ(st.message(), "odd peer");
}

}  // namespace
}  // namespace tandem::rpc

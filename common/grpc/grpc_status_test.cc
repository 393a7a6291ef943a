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

TEST(GrpcStatusTest, AForeignCodeBecomesUnknown) {
  Status st = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), "odd peer"));
  EXPECT_EQ(st.code(), StatusCode::kUnknown);
  EXPECT_EQ(st.message(), "odd peer");
}

}  // namespace
}  // namespace tandem::rpc

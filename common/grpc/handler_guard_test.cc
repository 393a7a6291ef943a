#include "common/grpc/handler_guard.h"

#include <gtest/gtest.h>

#include <new>
#include <stdexcept>
#include <string>

namespace tandem::rpc {
namespace {

TEST(GuardHandlerTest, ExceptionsBecomeStatusesNamingTheMethod) {
  grpc::Status ok = GuardHandler("GetReplica", [] { return grpc::Status::OK; });
  EXPECT_TRUE(ok.ok());
  grpc::Status passed = GuardHandler(
      "GetReplica", [] { return grpc::Status(grpc::NOT_FOUND, "no replica of vol-1"); });
  EXPECT_EQ(passed.error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(passed.error_message(), "no replica of vol-1");

  grpc::Status oom =
      GuardHandler("CreateReplica", []() -> grpc::Status { throw std::bad_alloc(); });
  EXPECT_EQ(oom.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_NE(oom.error_message().find("CreateReplica"), std::string::npos) << oom.error_message();
  // A bad_alloc subclass is still out of memory.
  grpc::Status len =
      GuardHandler("CreateReplica", []() -> grpc::Status { throw std::bad_array_new_length(); });
  EXPECT_EQ(len.error_code(), grpc::RESOURCE_EXHAUSTED);

  grpc::Status other =
      GuardHandler("CreateTarget", []() -> grpc::Status { throw std::out_of_range("vector::at"); });
  EXPECT_EQ(other.error_code(), grpc::INTERNAL);
  EXPECT_NE(other.error_message().find("CreateTarget"), std::string::npos);
  EXPECT_NE(other.error_message().find("vector::at"), std::string::npos);

  grpc::Status odd = GuardHandler("ListTargets", []() -> grpc::Status { throw 42; });
  EXPECT_EQ(odd.error_code(), grpc::INTERNAL);
  EXPECT_NE(odd.error_message().find("ListTargets"), std::string::npos);
}

}  // namespace
}  // namespace tandem::rpc

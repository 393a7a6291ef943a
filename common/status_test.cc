#include "common/status.h"

#include <cerrno>
#include <string>
#include <utility>

#include "common/result.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

TEST(StatusTest, OkCarriesNothing) {
  Status st;
  EXPECT_TRUE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kOk);
  EXPECT_TRUE(st.message().empty());
  EXPECT_EQ(st.ToString(), "OK");
  EXPECT_TRUE(Status::Ok().ok());
  // A constructed OK drops its message: OK never allocates.
  EXPECT_TRUE(Status(StatusCode::kOk, "ignored").message().empty());
}

TEST(StatusTest, FactoriesSetCodeAndMessage) {
  EXPECT_EQ(Status::InvalidArgument("x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Status::NotFound("x").code(), StatusCode::kNotFound);
  EXPECT_EQ(Status::AlreadyExists("x").code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(Status::FailedPrecondition("x").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Status::OutOfRange("x").code(), StatusCode::kOutOfRange);
  EXPECT_EQ(Status::ResourceExhausted("x").code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(Status::Unavailable("x").code(), StatusCode::kUnavailable);
  EXPECT_EQ(Status::Internal("x").code(), StatusCode::kInternal);
  EXPECT_EQ(Status::DataLoss("x").code(), StatusCode::kDataLoss);
  EXPECT_EQ(Status::Unimplemented("x").code(), StatusCode::kUnimplemented);
  EXPECT_EQ(Status::DeadlineExceeded("x").code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Status::PermissionDenied("x").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(Status::Unauthenticated("x").code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(Status::Aborted("x").code(), StatusCode::kAborted);
  Status st = Status::NotFound("replica vol-1 does not exist");
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.message(), "replica vol-1 does not exist");
  EXPECT_EQ(st.ToString(), "NOT_FOUND: replica vol-1 does not exist");
  EXPECT_EQ(Status::Internal("").ToString(), "INTERNAL");
}

TEST(StatusTest, CodeNamesAreCanonical) {
  EXPECT_STREQ(StatusCodeName(StatusCode::kOk), "OK");
  EXPECT_STREQ(StatusCodeName(StatusCode::kInvalidArgument), "INVALID_ARGUMENT");
  EXPECT_STREQ(StatusCodeName(StatusCode::kFailedPrecondition), "FAILED_PRECONDITION");
  EXPECT_STREQ(StatusCodeName(StatusCode::kUnauthenticated), "UNAUTHENTICATED");
  EXPECT_STREQ(StatusCodeName(static_cast<StatusCode>(99)), "UNKNOWN");
  // gRPC numbering: these cross the management API unchanged.
  EXPECT_EQ(static_cast<int>(StatusCode::kNotFound), 5);
  EXPECT_EQ(static_cast<int>(StatusCode::kUnavailable), 14);
  EXPECT_EQ(static_cast<int>(StatusCode::kUnauthenticated), 16);
}

TEST(StatusTest, WithContextPrefixesAndKeepsCode) {
  Status st = Status::DataLoss("bad crc").WithContext("replica vol-1").WithContext("open");
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_EQ(st.message(), "open: replica vol-1: bad crc");
  EXPECT_TRUE(Status::Ok().WithContext("ignored").ok());
}

TEST(StatusTest, CopyAndMoveAreIndependent) {
  Status a = Status::Internal("a");
  Status b = a;
  EXPECT_EQ(b.ToString(), a.ToString());
  Status c;
  c = a;
  a = Status::Ok();
  EXPECT_TRUE(a.ok());
  EXPECT_EQ(b.ToString(), "INTERNAL: a");
  EXPECT_EQ(c.ToString(), "INTERNAL: a");
  Status d = std::move(b);
  EXPECT_EQ(d.ToString(), "INTERNAL: a");
  const Status& alias = c;
  c = alias;  // self-assignment keeps the value
  EXPECT_EQ(c.ToString(), "INTERNAL: a");
  c = Status();
  EXPECT_TRUE(c.ok());
}

TEST(StatusTest, PosixErrorMapsErrnoWithContext) {
  Status st = PosixError("open /x/data", ENOENT);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_EQ(st.message(), "open /x/data: No such file or directory");
  EXPECT_EQ(PosixError("f", EEXIST).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(PosixError("f", EINVAL).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PosixError("f", EACCES).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(PosixError("f", ENOSPC).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(PosixError("f", ECONNRESET).code(), StatusCode::kUnavailable);
  EXPECT_EQ(PosixError("f", EOPNOTSUPP).code(), StatusCode::kUnimplemented);
  EXPECT_EQ(PosixError("f", EIO).code(), StatusCode::kInternal);
}

Status ReturnsEarly(bool fail, int* reached) {
  TANDEM_RETURN_IF_ERROR(fail ? Status::Aborted("stop") : Status::Ok());
  *reached = 1;
  return Status::Ok();
}

TEST(StatusTest, ReturnIfErrorPropagates) {
  int reached = 0;
  EXPECT_EQ(ReturnsEarly(true, &reached).code(), StatusCode::kAborted);
  EXPECT_EQ(reached, 0);
  EXPECT_TRUE(ReturnsEarly(false, &reached).ok());
  EXPECT_EQ(reached, 1);
}

TEST(ResultTest, ValueAndError) {
  Result<std::string> v(std::string("hello"));
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v.status().ok());
  EXPECT_EQ(*v, "hello");
  EXPECT_EQ(v->size(), 5u);
  std::string moved = std::move(v).value();
  EXPECT_EQ(moved, "hello");

  Result<int> e(Status::NotFound("nope"));
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(e.status().message(), "nope");
}

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd");
  return x / 2;
}

Status Quarter(int x, int* out) {
  TANDEM_ASSIGN_OR_RETURN(int h, Half(x));
  TANDEM_ASSIGN_OR_RETURN(*out, Half(h));
  return Status::Ok();
}

TEST(ResultTest, AssignOrReturn) {
  int out = 0;
  ASSERT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  EXPECT_EQ(Quarter(6, &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(out, 2);
}

}  // namespace
}  // namespace tandem

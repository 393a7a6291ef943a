#include "controller/store/txn_validation.h"

#include <gtest/gtest.h>

namespace tandem::store {
namespace {

TEST(PrefixEndTest, IncrementsTheLastByteThatIsNotFf) {
  EXPECT_EQ(PrefixEnd("/tandem/volumes/"), "/tandem/volumes0");
  EXPECT_EQ(PrefixEnd("a"), "b");
  EXPECT_EQ(PrefixEnd(std::string("a\xff\xff", 3)), "b");
  EXPECT_EQ(PrefixEnd(std::string("\xff", 1)), "");
  EXPECT_EQ(PrefixEnd(""), "");
}

TEST(ValidateTxnTest, NamesTheProblem) {
  EXPECT_TRUE(ValidateTxn({.compares = {Compare::Exists("/a")}, .ops = {Op::Put("/a", "")}}).ok());
  Status dup = ValidateTxn({.compares = {}, .ops = {Op::Put("/a", "1"), Op::Put("/a", "2")}});
  EXPECT_EQ(dup.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dup.message().find("/a"), std::string::npos);
  EXPECT_EQ(ValidateTxn({.compares = {Compare::Absent("")}, .ops = {}}).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::store

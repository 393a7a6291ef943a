#include "common/id.h"

#include <gtest/gtest.h>

#include <string>

namespace tandem {
namespace {

TEST(IdTest, AcceptsDirectoryNameSafeIds) {
  for (const std::string& id :
       {std::string("v1"), std::string("pvc-0d1c4a9e-7f7e-4d4e-9a55-0123456789ab"),
        std::string("a.b_c-D"), std::string(kMaxIdLength, 'x')}) {
    EXPECT_TRUE(ValidateId("volume_id", id).ok()) << id;
  }
}

TEST(IdTest, RejectsIdsThatCouldEscapeOrBreakTheDataDirNamingTheField) {
  for (const std::string& id :
       {std::string(), std::string("."), std::string(".."), std::string("a/b"), std::string("../x"),
        std::string("a b"), std::string("a\0b", 3), std::string("é"),
        std::string(kMaxIdLength + 1, 'x')}) {
    Status st = ValidateId("replica_id", id);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << id;
    EXPECT_EQ(st.message().rfind("replica_id ", 0), 0u) << st.ToString();
  }
}

}  // namespace
}  // namespace tandem

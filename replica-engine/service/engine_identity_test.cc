#include "replica-engine/service/engine_identity.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace tandem::service {
namespace {

class EngineIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-identity-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string File() const { return dir_ + "/" + kEngineIdentityFile; }
  std::string dir_;
};

TEST_F(EngineIdentityTest, CreatedOnceThenTheSameValueAcrossRestarts) {
  Result<uint64_t> first = LoadOrCreateEngineIdentity(dir_);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_NE(*first, 0u);
  struct stat st;
  ASSERT_EQ(stat(File().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  Result<uint64_t> again = LoadOrCreateEngineIdentity(dir_);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *first);
}

TEST_F(EngineIdentityTest, TwoDataDirectoriesGetDifferentIdentities) {
  std::string other = dir_ + "/other";
  Result<uint64_t> a = LoadOrCreateEngineIdentity(dir_);
  Result<uint64_t> b = LoadOrCreateEngineIdentity(other);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
}

TEST_F(EngineIdentityTest, AMalformedFileIsDataLossAndKept) {
  { std::ofstream(File()) << "not-hex\n"; }
  Result<uint64_t> id = LoadOrCreateEngineIdentity(dir_);
  EXPECT_EQ(id.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(id.status().ToString().find(kEngineIdentityFile), std::string::npos);
  std::ifstream in(File());
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "not-hex");  // never overwritten
  { std::ofstream(File()) << "0000000000000000\n"; }
  EXPECT_EQ(LoadOrCreateEngineIdentity(dir_).status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace tandem::service

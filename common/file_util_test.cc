#include "common/file_util.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/bits.h"

namespace tandem {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tandem_file_util.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FileUtilTest, WriteFileAtomicallyReplacesTheContentsAndLeavesNoTempFile) {
  const std::string path = dir_ + "/port";
  ASSERT_TRUE(WriteFileAtomically(path, "9600\n").ok());
  EXPECT_EQ(ReadAll(path), "9600\n");
  ASSERT_TRUE(WriteFileAtomically(path, std::string(100000, 'z'), 0600).ok());
  EXPECT_EQ(ReadAll(path), std::string(100000, 'z'));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  ASSERT_TRUE(WriteFileAtomically(path, "").ok());
  EXPECT_EQ(ReadAll(path), "");
}

TEST_F(FileUtilTest, AFailedWriteKeepsTheOldFileAndNamesThePath) {
  const std::string path = dir_ + "/record";
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  // A directory where the temp file would go: creating it fails.
  std::filesystem::create_directory(path + ".tmp");
  Status st = WriteFileAtomically(path, "new");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(path + ".tmp"), std::string::npos) << st.ToString();
  EXPECT_EQ(ReadAll(path), "old");
  // A missing directory is NOT_FOUND.
  EXPECT_EQ(WriteFileAtomically(dir_ + "/no/such/file", "x").code(), StatusCode::kNotFound);
}

TEST_F(FileUtilTest, SyncDirAndDirName) {
  EXPECT_TRUE(SyncDir(dir_).ok());
  EXPECT_EQ(SyncDir(dir_ + "/missing").code(), StatusCode::kNotFound);
  EXPECT_EQ(DirName("/a/b"), "/a");
  EXPECT_EQ(DirName("/a//b/"), "/a");
  EXPECT_EQ(DirName("/b"), "/");
  EXPECT_EQ(DirName("b"), ".");
  EXPECT_EQ(DirName("/"), "/");
}

TEST(BitsTest, IsPowerOfTwoAndAlignUp) {
  EXPECT_FALSE(IsPowerOfTwo(0));
  EXPECT_TRUE(IsPowerOfTwo(1));
  EXPECT_TRUE(IsPowerOfTwo(4096));
  EXPECT_TRUE(IsPowerOfTwo(1ull << 63));
  EXPECT_FALSE(IsPowerOfTwo(4095));
  EXPECT_FALSE(IsPowerOfTwo(~0ull));
  EXPECT_EQ(AlignUp(0, 4096), 0u);
  EXPECT_EQ(AlignUp(1, 4096), 4096u);
  EXPECT_EQ(AlignUp(4096, 4096), 4096u);
}

}  // namespace
}  // namespace tandem

#include "common/mount_info.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace tandem {
namespace {

TEST(MountInfoTest, ParsesFieldsAroundTheOptionalOnesAndUnescapesPaths) {
  char path[] = "/tmp/tandem-mountinfo-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        << "90 22 0:50 / /var/tmp/a\\040b/c.fuse rw,nosuid shared:7 master:2 - fuse.tandem "
           "tandem\\134x rw,user_id=0\n"
        << "91 22 0:51 / /mnt/no-optional rw - tmpfs tmpfs rw\n"
        << "garbage\n";
  }
  auto mounts = ReadMountInfo(path);
  unlink(path);
  ASSERT_TRUE(mounts.ok()) << mounts.status().ToString();
  ASSERT_EQ(mounts->size(), 3u);
  EXPECT_EQ((*mounts)[0].mount_point, "/");
  EXPECT_EQ((*mounts)[0].fs_type, "ext4");
  EXPECT_EQ((*mounts)[0].source, "/dev/vda");
  EXPECT_EQ((*mounts)[1].mount_point, "/var/tmp/a b/c.fuse");
  EXPECT_EQ((*mounts)[1].fs_type, "fuse.tandem");
  EXPECT_EQ((*mounts)[1].source, "tandem\\x");
  EXPECT_EQ((*mounts)[2].fs_type, "tmpfs");
}

TEST(MountInfoTest, AMissingFileIsInternal) {
  auto mounts = ReadMountInfo("/nonexistent/mountinfo");
  EXPECT_EQ(mounts.status().code(), StatusCode::kInternal);
}

TEST(MountInfoTest, MalformedEscapesStayAsTheyAre) {
  EXPECT_EQ(UnescapeMountInfo("a\\040b"), "a b");
  EXPECT_EQ(UnescapeMountInfo("a\\09b"), "a\\09b");
  EXPECT_EQ(UnescapeMountInfo("end\\04"), "end\\04");
  EXPECT_EQ(UnescapeMountInfo("\\777"), "\\777");
}

TEST(MountInfoTest, TheRootFilesystemIsListed) {
  auto mounts = ReadMountInfo();
  ASSERT_TRUE(mounts.ok());
  bool root = false;
  for (const auto& m : *mounts) root = root || m.mount_point == "/";
  EXPECT_TRUE(root);
}

}  // namespace
}  // namespace tandem

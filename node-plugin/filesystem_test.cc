#include "node-plugin/filesystem.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "node-plugin/command.h"
#include "node-plugin/loop_device.h"
#include "node-plugin/test_dir.h"

namespace tandem::node {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class FilesystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CanAttachLoops()) GTEST_SKIP() << "needs root and /dev/loop-control";
    ASSERT_FALSE(dir_.path().empty());
  }
  void TearDown() override {
    for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) (void)Unmount(*it);
    if (!device_.empty()) (void)DetachLoop(device_);
  }
  // A sparse file of `size` on a loop device (xfs needs >= 300 MiB).
  void AttachVolume(uint64_t size) {
    file_ = dir_ / "volume";
    int fd = open(file_.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    close(fd);
    auto dev = AttachLoop(file_);
    ASSERT_TRUE(dev.ok()) << dev.status().ToString();
    device_ = *dev;
  }
  std::string MountPoint(const std::string& name) {
    std::string p = dir_ / name;
    mounts_.push_back(p);
    return p;
  }
  TestDir dir_;
  std::string file_, device_;
  std::vector<std::string> mounts_;
};

TEST_F(FilesystemTest, Ext4IsFormattedOnceMountedAndKeepsItsFilesAcrossRemount) {
  AttachVolume(128 * kMiB);
  auto probe = ProbeDevice(device_);
  ASSERT_TRUE(probe.ok()) << probe.status().ToString();
  EXPECT_EQ(probe->fs_type, "");

  auto fs = FormatIfEmpty(device_, "ext4");
  ASSERT_TRUE(fs.ok()) << fs.status().ToString();
  EXPECT_EQ(*fs, "ext4");
  probe = ProbeDevice(device_);
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(probe->fs_type, "ext4");

  const std::string mnt = MountPoint("staging");
  ASSERT_TRUE(Mount(device_, mnt, "ext4", {"noatime"}).ok());
  EXPECT_TRUE(Mount(device_, mnt, "ext4", {"noatime"}).ok()) << "a repeated mount is idempotent";
  {
    std::ofstream out(mnt + "/hello.txt");
    out << "replicated bytes\n";
  }
  sync();
  ASSERT_TRUE(Unmount(mnt).ok());
  auto src = MountSourceAt(mnt);
  ASSERT_TRUE(src.ok());
  EXPECT_EQ(*src, "");
  EXPECT_TRUE(Unmount(mnt).ok()) << "unmounting an unmounted path is idempotent";

  // Formatting again must find the filesystem and leave the file alone.
  fs = FormatIfEmpty(device_, "ext4");
  ASSERT_TRUE(fs.ok());
  ASSERT_TRUE(Mount(device_, mnt, "ext4", {}).ok());
  EXPECT_EQ(ReadAll(mnt + "/hello.txt"), "replicated bytes\n");

  auto stats = StatFilesystem(mnt);
  ASSERT_TRUE(stats.ok());
  EXPECT_GT(stats->total_bytes, 100 * kMiB);
  EXPECT_GT(stats->used_inodes, 0u);
  EXPECT_LE(stats->available_bytes, stats->total_bytes);
}

TEST_F(FilesystemTest, AnotherFilesystemIsNeverFormattedAway) {
  AttachVolume(64 * kMiB);
  ASSERT_TRUE(FormatIfEmpty(device_, "ext4").ok());
  auto fs = FormatIfEmpty(device_, "xfs");
  EXPECT_EQ(fs.status().code(), StatusCode::kFailedPrecondition) << fs.status().ToString();
  auto probe = ProbeDevice(device_);
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(probe->fs_type, "ext4");
  EXPECT_EQ(FormatIfEmpty(device_, "btrfs").status().code(), StatusCode::kInvalidArgument);
}

// Options: the generic flags by name and filesystem options through mount(2);
// one only mount(8) knows ("defaults") through mount(8); a bad one refused.
TEST_F(FilesystemTest, MountOptionsReachTheKernelWithOrWithoutMount8) {
  AttachVolume(64 * kMiB);
  ASSERT_TRUE(FormatIfEmpty(device_, "ext4").ok());
  const std::string mnt = MountPoint("opts");
  ASSERT_TRUE(Mount(device_, mnt, "ext4", {"ro", "noexec", "data=ordered"}).ok());
  std::ifstream in("/proc/mounts");
  std::string line, opts;
  while (std::getline(in, line)) {
    if (line.find(" " + mnt + " ") != std::string::npos) opts = line;
  }
  EXPECT_NE(opts.find("ro,"), std::string::npos) << opts;
  EXPECT_NE(opts.find("noexec"), std::string::npos) << opts;
  ASSERT_TRUE(Unmount(mnt).ok());
  ASSERT_TRUE(Mount(device_, mnt, "ext4", {"defaults", "noatime"}).ok());
  ASSERT_TRUE(Unmount(mnt).ok());
  EXPECT_FALSE(Mount(device_, mnt, "ext4", {"no-such-option"}).ok());
}

// The one-read superblock check (ext4 with extents) must not take an ext2
// filesystem for ext4: that one goes through blkid, which names it.
TEST_F(FilesystemTest, AnExt2FilesystemIsNotTakenForExt4) {
  AttachVolume(64 * kMiB);
  ASSERT_TRUE(RunChecked({"mkfs.ext2", "-F", "-q", device_}).ok());
  auto fs = FormatIfEmpty(device_, "ext4");
  EXPECT_EQ(fs.status().code(), StatusCode::kFailedPrecondition) << fs.status().ToString();
  EXPECT_EQ(ProbeDevice(device_)->fs_type, "ext2");
}

TEST_F(FilesystemTest, XfsFormatsMountsAndGrowsOnline) {
  AttachVolume(320 * kMiB);
  auto fs = FormatIfEmpty(device_, "xfs");
  ASSERT_TRUE(fs.ok()) << fs.status().ToString();
  const std::string mnt = MountPoint("xfs");
  ASSERT_TRUE(Mount(device_, mnt, "xfs", {}).ok());
  auto before = StatFilesystem(mnt);
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(truncate(file_.c_str(), 640 * kMiB), 0);
  ASSERT_TRUE(RefreshLoopCapacity(device_).ok());
  Status grown = GrowFilesystem(device_, mnt, "xfs");
  ASSERT_TRUE(grown.ok()) << grown.ToString();
  auto after = StatFilesystem(mnt);
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->total_bytes, before->total_bytes + 250 * kMiB);
}

TEST_F(FilesystemTest, Ext4GrowsOnline) {
  AttachVolume(64 * kMiB);
  ASSERT_TRUE(FormatIfEmpty(device_, "ext4").ok());
  const std::string mnt = MountPoint("ext4");
  ASSERT_TRUE(Mount(device_, mnt, "ext4", {}).ok());
  auto before = StatFilesystem(mnt);
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(truncate(file_.c_str(), 192 * kMiB), 0);
  ASSERT_TRUE(RefreshLoopCapacity(device_).ok());
  Status grown = GrowFilesystem(device_, mnt, "ext4");
  if (!HasSysResourceCapability()) {
    // Containers often drop it (this CI machine does): the error must say so.
    EXPECT_EQ(grown.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(grown.message().find("CAP_SYS_RESOURCE"), std::string::npos);
    return;
  }
  ASSERT_TRUE(grown.ok()) << grown.ToString();
  auto after = StatFilesystem(mnt);
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->total_bytes, before->total_bytes + 100 * kMiB);
}

TEST_F(FilesystemTest, ReadOnlyBindMountRefusesWritesAndABlockDeviceBindsOntoAFile) {
  AttachVolume(64 * kMiB);
  ASSERT_TRUE(FormatIfEmpty(device_, "ext4").ok());
  const std::string staging = MountPoint("staging");
  ASSERT_TRUE(Mount(device_, staging, "ext4", {}).ok());
  const std::string ro = MountPoint("pod-ro");
  ASSERT_TRUE(BindMount(staging, ro, /*read_only=*/true).ok());
  EXPECT_TRUE(BindMount(staging, ro, true).ok()) << "repeated publish is idempotent";
  int fd = open((ro + "/x").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  EXPECT_LT(fd, 0);
  EXPECT_EQ(errno, EROFS);
  if (fd >= 0) close(fd);

  // Block publish: the device node bound onto a plain file.
  const std::string block = MountPoint("pod-block/dev");
  ASSERT_TRUE(BindMount(device_, block, false).ok());
  struct stat st;
  ASSERT_EQ(stat(block.c_str(), &st), 0);
  EXPECT_TRUE(S_ISBLK(st.st_mode));
  ASSERT_TRUE(Unmount(block).ok());
  ASSERT_EQ(stat(block.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
}

TEST_F(FilesystemTest, MountingADifferentSourceOverAnExistingMountIsRefused) {
  AttachVolume(64 * kMiB);
  ASSERT_TRUE(FormatIfEmpty(device_, "ext4").ok());
  const std::string mnt = MountPoint("staging");
  ASSERT_TRUE(Mount(device_, mnt, "ext4", {}).ok());
  const std::string other = dir_ / "otherdir";
  ASSERT_EQ(mkdir(other.c_str(), 0700), 0);
  EXPECT_EQ(BindMount(other, mnt, false).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Mount("/dev/loop-control", mnt, "ext4", {}).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Mount(device_, dir_ / "x", "ext4", {"a,b"}).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::node

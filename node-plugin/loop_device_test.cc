#include "node-plugin/loop_device.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "node-plugin/test_dir.h"

namespace tandem::node {
namespace {

constexpr uint64_t kMiB = 1 << 20;

void MakeFile(const std::string& path, uint64_t size) {
  int fd = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  close(fd);
}

class LoopDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CanAttachLoops()) GTEST_SKIP() << "needs root and /dev/loop-control";
  }
  void TearDown() override {
    if (!device_.empty()) (void)DetachLoop(device_);
  }
  TestDir dir_;
  std::string device_;
};

TEST_F(LoopDeviceTest, BytesWrittenThroughTheDeviceLandInTheFileAndAttachIsIdempotent) {
  const std::string file = dir_ / "volume";
  MakeFile(file, 64 * kMiB);
  auto dev = AttachLoop(file);
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  device_ = *dev;
  auto again = AttachLoop(file);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, device_) << "a retried attach must reuse the device, not stack a second one";

  auto size = BlockDeviceSize(device_);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 64 * kMiB);
  auto backing = LoopBackingFile(device_);
  ASSERT_TRUE(backing.ok());
  EXPECT_EQ(*backing, file);

  // 64 KiB of a pattern at offset 1 MiB + 4 KiB, through the device with O_DIRECT.
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, 64 * 1024), 0);
  for (size_t i = 0; i < 64 * 1024; ++i)
    static_cast<unsigned char*>(buf)[i] = static_cast<unsigned char>(i * 7 + 3);
  int fd = open(device_.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, buf, 64 * 1024, kMiB + 4096), 64 * 1024);
  ASSERT_EQ(fsync(fd), 0);
  close(fd);
  std::vector<unsigned char> back(64 * 1024);
  int ffd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(ffd, 0);
  ASSERT_EQ(pread(ffd, back.data(), back.size(), kMiB + 4096), 64 * 1024);
  close(ffd);
  EXPECT_EQ(memcmp(back.data(), buf, back.size()), 0);
  free(buf);

  ASSERT_TRUE(DetachLoop(device_).ok());
  auto found = FindLoopByBackingFile(file);
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
  EXPECT_TRUE(DetachLoop(device_).ok()) << "detaching a detached device is idempotent";
  device_.clear();
}

TEST_F(LoopDeviceTest, CapacityRefreshShowsTheGrownFile) {
  const std::string file = dir_ / "volume";
  MakeFile(file, 16 * kMiB);
  auto dev = AttachLoop(file);
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  device_ = *dev;
  MakeFile(file, 48 * kMiB);
  ASSERT_TRUE(RefreshLoopCapacity(device_).ok());
  auto size = BlockDeviceSize(device_);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 48 * kMiB);
}

TEST_F(LoopDeviceTest, MissingBackingFileIsNotFound) {
  EXPECT_EQ(AttachLoop(dir_ / "absent").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tandem::node

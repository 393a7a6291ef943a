// The two phases of an Export (export.h): Prepare() runs off the loop and
// needs nothing from it (the loop is held busy while it runs), Start() on
// the loop begins serving, and an export that was only prepared is undone
// when destroyed off the loop or shut down on it (no socket file, no mount,
// the port free).
// Both kinds: NBD (unix socket + TCP) and the FUSE file (as root).

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "common/event_loop.h"
#include "replica-engine/frontend/fuse_export.h"
#include "replica-engine/frontend/nbd_server.h"
#include "tests/support/memory_block_device.h"

namespace tandem::frontend {
namespace {

using testing::MemoryBlockDevice;
using testing::MemoryBlockDeviceOptions;

constexpr auto kWait = std::chrono::seconds(30);

bool Mounted(const std::string& dir) {
  std::ifstream mounts("/proc/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    if (line.find(" " + dir + " ") != std::string::npos) return true;
  }
  return false;
}

class ExportPrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tandem-prepare-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    loop_ = std::make_unique<EventLoop>();
    ASSERT_TRUE(loop_->init_status().ok());
    MemoryBlockDeviceOptions dev;
    dev.size = 16ull << 20;
    dev.block_size = 4096;
    device_ = std::make_unique<MemoryBlockDevice>(loop_.get(), dev);
    ASSERT_TRUE(device_->init_status().ok());
    thread_ = std::thread([this] { loop_->Run(); });
  }
  void TearDown() override {
    if (!loop_) return;
    if (exp_ != nullptr) ShutdownOnLoop();
    loop_->Stop();
    if (thread_.joinable()) thread_.join();
    device_.reset();
    loop_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void OnLoop(std::function<void()> fn) {
    auto p = std::make_shared<std::promise<void>>();
    auto f = p->get_future();
    loop_->Post([fn = std::move(fn), p] {
      fn();
      p->set_value();
    });
    ASSERT_EQ(f.wait_for(kWait), std::future_status::ready) << "loop did not run the closure";
  }

  // Prepare() on this thread while the loop thread is held inside a closure:
  // it must finish without the loop.
  Status PrepareWithTheLoopBusy() {
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::promise<void> entered;
    loop_->Post([&entered, released] {
      entered.set_value();
      released.wait_for(kWait);
    });
    entered.get_future().wait();
    auto prepared = std::async(std::launch::async, [&] { return exp_->Prepare(); });
    const bool done = prepared.wait_for(kWait) == std::future_status::ready;
    release.set_value();
    EXPECT_TRUE(done) << "Prepare waited for the loop";
    return done ? prepared.get() : Status::Internal("Prepare did not finish");
  }

  void ShutdownOnLoop() {
    std::promise<void> done;
    OnLoop([&] {
      exp_->Shutdown([](void* arg) { static_cast<std::promise<void>*>(arg)->set_value(); }, &done);
    });
    ASSERT_EQ(done.get_future().wait_for(kWait), std::future_status::ready);
    OnLoop([&] { exp_.reset(); });
  }

  std::string dir_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<MemoryBlockDevice> device_;
  std::unique_ptr<Export> exp_;
  std::thread thread_;
};

TEST_F(ExportPrepareTest, NbdPreparesOffTheLoopAndServesOnceStarted) {
  NbdServerOptions o;
  o.export_name = "vol";
  o.unix_path = dir_ + "/vol.sock";
  o.tcp_address = "127.0.0.1:0";
  exp_ = std::make_unique<NbdServer>(loop_.get(), device_.get(), o);
  Status st = PrepareWithTheLoopBusy();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(std::filesystem::exists(o.unix_path));
  EXPECT_EQ(exp_->Prepare().code(), StatusCode::kFailedPrecondition);
  OnLoop([&] { st = exp_->Start(); });
  ASSERT_TRUE(st.ok()) << st.ToString();
  ExportDescription d;
  OnLoop([&] { d = exp_->Describe(); });
  EXPECT_EQ(d.path, o.unix_path);
  EXPECT_NE(d.address, "127.0.0.1:0");
  // Served: the newstyle greeting starts with "NBDMAGIC".
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, o.unix_path.c_str(), o.unix_path.size() + 1);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  char magic[8] = {};
  EXPECT_EQ(recv(fd, magic, sizeof(magic), MSG_WAITALL), ssize_t(sizeof(magic)));
  EXPECT_EQ(std::string(magic, sizeof(magic)), "NBDMAGIC");
  close(fd);
  OnLoop([&] { st = exp_->Start(); });
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  ShutdownOnLoop();
  EXPECT_FALSE(std::filesystem::exists(o.unix_path));
}

TEST_F(ExportPrepareTest, NbdPreparedButNeverStartedLeavesNothingWhenDestroyedOffTheLoop) {
  NbdServerOptions o;
  o.export_name = "vol";
  o.unix_path = dir_ + "/vol.sock";
  o.tcp_address = "127.0.0.1:0";
  auto server = std::make_unique<NbdServer>(loop_.get(), device_.get(), o);
  ASSERT_TRUE(server->Prepare().ok());
  const uint16_t port = server->tcp_port();
  ASSERT_NE(port, 0);
  EXPECT_TRUE(std::filesystem::exists(o.unix_path));
  server.reset();  // this thread, not the loop's
  EXPECT_FALSE(std::filesystem::exists(o.unix_path));
  // The port is free again.
  NbdServerOptions again = o;
  again.unix_path.clear();
  again.tcp_address = "127.0.0.1:" + std::to_string(port);
  NbdServer rebound(loop_.get(), device_.get(), again);
  Status st = rebound.Prepare();
  EXPECT_TRUE(st.ok()) << st.ToString();
}

TEST_F(ExportPrepareTest, FuseMountsOffTheLoopAndRequestsWaitForStart) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (FUSE mount)";
  if (access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
  FuseExportOptions o;
  o.mount_dir = dir_ + "/export";
  o.name = "prepare";
  o.threads = 2;
  auto* fuse = new FuseExport(loop_.get(), device_.get(), o);
  exp_.reset(fuse);
  Status st = PrepareWithTheLoopBusy();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(Mounted(o.mount_dir));
  EXPECT_EQ(exp_->Prepare().code(), StatusCode::kFailedPrecondition);

  // A write sent before Start waits for it (only the loop reaches the device).
  const std::string file = fuse->file_path();
  int fd = open(file.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << file;
  const std::string block(4096, 'p');
  auto written =
      std::async(std::launch::async, [&] { return pwrite(fd, block.data(), block.size(), 4096); });
  EXPECT_EQ(written.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  OnLoop([&] { st = exp_->Start(); });
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_EQ(written.wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(written.get(), ssize_t(block.size()));
  std::string got(block.size(), '\0');
  EXPECT_EQ(pread(fd, got.data(), got.size(), 4096), ssize_t(got.size()));
  EXPECT_EQ(got, block);
  close(fd);
  ShutdownOnLoop();
  EXPECT_FALSE(Mounted(o.mount_dir));
  EXPECT_FALSE(std::filesystem::exists(o.mount_dir));
}

TEST_F(ExportPrepareTest, FusePreparedButNeverStartedIsUnmountedWhenDestroyedOffTheLoop) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (FUSE mount)";
  if (access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
  FuseExportOptions o;
  o.mount_dir = dir_ + "/export";
  o.name = "prepare";
  o.threads = 2;
  auto fuse = std::make_unique<FuseExport>(loop_.get(), device_.get(), o);
  Status st = fuse->Prepare();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(Mounted(o.mount_dir));
  auto destroyed = std::async(std::launch::async, [&] { fuse.reset(); });
  ASSERT_EQ(destroyed.wait_for(kWait), std::future_status::ready) << "teardown did not finish";
  EXPECT_FALSE(Mounted(o.mount_dir));
  EXPECT_FALSE(std::filesystem::exists(o.mount_dir));
}

TEST_F(ExportPrepareTest, FusePreparedThenShutDownOnTheLoopUnmounts) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (FUSE mount)";
  if (access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
  FuseExportOptions o;
  o.mount_dir = dir_ + "/export";
  o.name = "prepare";
  o.threads = 2;
  exp_ = std::make_unique<FuseExport>(loop_.get(), device_.get(), o);
  Status st = exp_->Prepare();
  ASSERT_TRUE(st.ok()) << st.ToString();
  ShutdownOnLoop();
  EXPECT_FALSE(Mounted(o.mount_dir));
  EXPECT_FALSE(std::filesystem::exists(o.mount_dir));
}

}  // namespace
}  // namespace tandem::frontend

// FuseExport end to end, as root: a real FUSE mount over a MemoryBlockDevice
// on an EventLoop thread, driven through the file with pread/pwrite, then
// through a real loop device (`losetup --direct-io=on`) with mkfs.ext4, mount,
// blkdiscard. Every external command runs under `timeout`; every mount, loop
// device and FUSE mount a test makes is removed by a guard, also on failure.
// Without root, /dev/fuse or the tools the tests skip with the reason.

#include "replica-engine/frontend/fuse_export.h"

#include "replica-engine/frontend/export_factory.h"

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/event_loop.h"
#include "tests/support/memory_block_device.h"

namespace tandem::frontend {
namespace {

using testing::MemoryBlockDevice;
using testing::MemoryBlockDeviceOptions;
using testing::MemoryBlockDeviceStats;

constexpr auto kWait = std::chrono::seconds(30);
constexpr uint64_t kSize = 256ull << 20;

// Runs `cmd` through the shell with a hard time limit; returns the exit code
// and appends stdout+stderr to *out.
int Sh(const std::string& cmd, std::string* out = nullptr, int timeout_s = 60) {
  std::string full = "timeout -k 5 " + std::to_string(timeout_s) + " sh -c '" + cmd + "' 2>&1";
  FILE* f = popen(full.c_str(), "r");
  if (f == nullptr) return -1;
  char buf[4096];
  size_t n;
  std::string sink;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) (out ? out : &sink)->append(buf, n);
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::vector<uint8_t> Pattern(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t w = rng();
    memcpy(&v[i], &w, 8);
  }
  return v;
}

// Detaches loop device `dev` only while it is still attached to `file`: the
// number may have been handed to another test (or another user of this
// machine) since this one detached it.
void DetachLoopIfOurs(const std::string& dev, const std::string& file) {
  std::string backing;
  std::string name = dev.substr(dev.rfind('/') + 1);
  FILE* f = fopen(("/sys/block/" + name + "/loop/backing_file").c_str(), "r");
  if (f == nullptr) return;  // not attached
  char buf[4096];
  if (fgets(buf, sizeof(buf), f) != nullptr) backing = buf;
  fclose(f);
  while (!backing.empty() && backing.back() == '\n') backing.pop_back();
  if (backing == file) Sh("losetup -d " + dev + " 2>/dev/null");
}

// Undoes what a test set up, in reverse order, even when it failed half-way.
class Cleanup {
 public:
  ~Cleanup() {
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) (*it)();
  }
  void Add(std::function<void()> fn) { steps_.push_back(std::move(fn)); }

 private:
  std::vector<std::function<void()>> steps_;
};

class FuseExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (mount, losetup)";
    if (access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
    char tmpl[] = "/tmp/tandem-fuse-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    mount_dir_ = dir_ + "/export";
    loop_ = std::make_unique<EventLoop>();
    ASSERT_TRUE(loop_->init_status().ok());
    MemoryBlockDeviceOptions dev;
    dev.size = kSize;
    dev.block_size = 4096;        // what VolumeTarget offers
    dev.max_io_size = 256 << 10;  // below FUSE's 1 MiB: requests are split
    device_ = std::make_unique<MemoryBlockDevice>(loop_.get(), dev);
    ASSERT_TRUE(device_->init_status().ok());
    thread_ = std::thread([this] { loop_->Run(); });
  }

  void TearDown() override {
    if (!loop_) return;
    if (export_ != nullptr) ShutdownExport();
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

  bool WaitFor(std::function<bool()> cond) {
    auto deadline = std::chrono::steady_clock::now() + kWait;
    while (std::chrono::steady_clock::now() < deadline) {
      bool ok = false;
      OnLoop([&] { ok = cond(); });
      if (ok) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  void StartExport(FuseExportOptions opts = {}) {
    opts.mount_dir = mount_dir_;
    opts.name = "test";
    Status st;
    OnLoop([&] {
      export_ = std::make_unique<FuseExport>(loop_.get(), device_.get(), opts);
      st = export_->Start();
    });
    ASSERT_TRUE(st.ok()) << st.ToString();
    file_ = export_->file_path();
  }

  // Shutdown + wait for done + destroy. Returns how long the drain took.
  std::chrono::milliseconds ShutdownExport() {
    auto t0 = std::chrono::steady_clock::now();
    auto p = std::make_shared<std::promise<void>>();
    auto f = p->get_future();
    struct Ctx {
      std::shared_ptr<std::promise<void>> p;
    };
    auto* ctx = new Ctx{p};
    OnLoop([&] {
      export_->Shutdown(
          [](void* arg) {
            auto* c = static_cast<Ctx*>(arg);
            c->p->set_value();
            delete c;
          },
          ctx);
    });
    EXPECT_EQ(f.wait_for(kWait), std::future_status::ready) << "Shutdown did not finish";
    OnLoop([&] { export_.reset(); });
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 t0);
  }

  // Attaches the exported file to a loop device; the guard detaches it.
  std::string AttachLoop(Cleanup* cleanup) {
    std::string out;
    int rc = Sh("losetup --direct-io=on --sector-size 4096 --find --show " + file_, &out);
    EXPECT_EQ(rc, 0) << out;
    std::string dev = Trim(out);
    if (rc != 0 || dev.rfind("/dev/loop", 0) != 0) return "";
    cleanup->Add([dev, file = file_] { DetachLoopIfOurs(dev, file); });
    return dev;
  }

  std::string dir_;
  std::string mount_dir_;
  std::string file_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<MemoryBlockDevice> device_;
  std::unique_ptr<FuseExport> export_;
  std::thread thread_;
};

bool HaveTools() {
  return Sh("command -v losetup && command -v mkfs.ext4 && command -v blkdiscard") == 0;
}

#define REQUIRE_LOOP_TOOLS() \
  if (!HaveTools()) GTEST_SKIP() << "losetup/mkfs.ext4/blkdiscard not installed"

// --- Through the file ----------------------------------------------------------

TEST_F(FuseExportTest, PatternWrittenThroughTheFileReadsBackAndReachesTheDevice) {
  StartExport();
  struct stat st;
  ASSERT_EQ(stat(file_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kSize);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  int fd = open(file_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << strerror(errno);
  // Sizes from one block to 1 MiB (split into device pieces), at offsets
  // across the file including its last block.
  const std::vector<std::pair<uint64_t, size_t>> ios = {{0, 4096},
                                                        {8192, 65536},
                                                        {1 << 20, 1 << 20},
                                                        {100ull << 20, 300 << 10},
                                                        {kSize - 4096, 4096}};
  uint64_t seed = 1;
  for (auto [off, len] : ios) {
    auto data = Pattern(len, seed++);
    ASSERT_EQ(pwrite(fd, data.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len))
        << strerror(errno);
  }
  seed = 1;
  for (auto [off, len] : ios) {
    auto data = Pattern(len, seed++);
    std::vector<uint8_t> back(len);
    ASSERT_EQ(pread(fd, back.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    EXPECT_EQ(back, data) << "offset " << off;
    std::vector<uint8_t> mem;
    OnLoop([&] { mem.assign(device_->data() + off, device_->data() + off + len); });
    EXPECT_EQ(mem, data) << "device bytes at offset " << off;
  }
  // An unaligned read is served (through a widened device read).
  {
    auto data = Pattern(65536, 2);
    std::vector<uint8_t> back(1000);
    ASSERT_EQ(pread(fd, back.data(), 1000, 8192 + 123), 1000);
    EXPECT_EQ(0, memcmp(back.data(), data.data() + 123, 1000));
  }
  // Reads at the end are short, as for any file.
  {
    std::vector<uint8_t> back(8192);
    EXPECT_EQ(pread(fd, back.data(), 8192, static_cast<off_t>(kSize - 4096)), 4096);
    EXPECT_EQ(pread(fd, back.data(), 8192, static_cast<off_t>(kSize)), 0);
  }
  // A write of part of a block is a read-modify-write: the rest stays.
  {
    auto before = Pattern(65536, 2);
    std::vector<uint8_t> b(5000, 0xab);
    ASSERT_EQ(pwrite(fd, b.data(), b.size(), 8192 + 100), 5000);
    memcpy(before.data() + 100, b.data(), b.size());
    std::vector<uint8_t> back(65536);
    ASSERT_EQ(pread(fd, back.data(), back.size(), 8192), 65536);
    EXPECT_EQ(back, before);
    ASSERT_EQ(pwrite(fd, before.data(), before.size(), 8192), 65536);  // restore
  }
  // The file cannot grow.
  {
    std::vector<uint8_t> b(8192, 1);
    EXPECT_EQ(pwrite(fd, b.data(), 8192, static_cast<off_t>(kSize - 4096)), -1);
    EXPECT_EQ(errno, ENOSPC);
  }
  close(fd);
  // The file is the volume: it cannot be truncated.
  EXPECT_LT(open(file_.c_str(), O_RDWR | O_TRUNC | O_CLOEXEC), 0);
  EXPECT_NE(truncate(file_.c_str(), 4096), 0);

  ExportDescription d;
  OnLoop([&] { d = export_->Describe(); });
  EXPECT_EQ(d.kind, ExportKind::kFuseFile);
  EXPECT_STREQ(ExportKindName(d.kind), "fuse_file");
  EXPECT_EQ(d.path, file_);
  EXPECT_EQ(d.counters.connections, 1u);
  EXPECT_GE(d.counters.bytes_written, 4096u + 65536 + (1 << 20) + (300 << 10) + 4096);
  EXPECT_GE(d.counters.errors, 1u);
}

TEST_F(FuseExportTest, FsyncFallocateAndDsyncMapToFlushTrimWriteZeroesAndFua) {
  StartExport();
  int fd = open(file_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto data = Pattern(1 << 20, 7);
  ASSERT_EQ(pwrite(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(fsync(fd), 0);
  ASSERT_EQ(fdatasync(fd), 0);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 65536), 0)
      << strerror(errno);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_ZERO_RANGE, 131072, 65536), 0) << strerror(errno);
  ASSERT_EQ(fallocate(fd, 0, 0, 4096), 0) << "preallocation inside the file is a no-op";
  EXPECT_NE(fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 4096), 0);
  // After an unsupported mode the kernel still sends fallocate (we never
  // answered ENOSYS).
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096 * 64, 4096), 0);
  std::vector<uint8_t> back(1 << 20);
  ASSERT_EQ(pread(fd, back.data(), back.size(), 0), static_cast<ssize_t>(back.size()));
  std::vector<uint8_t> expect = data;
  std::fill(expect.begin(), expect.begin() + 65536, 0);
  std::fill(expect.begin() + 131072, expect.begin() + 196608, 0);
  std::fill(expect.begin() + 4096 * 64, expect.begin() + 4096 * 65, 0);
  EXPECT_EQ(back, expect);
  close(fd);
  int dfd = open(file_.c_str(), O_RDWR | O_DSYNC | O_CLOEXEC);
  ASSERT_GE(dfd, 0);
  ASSERT_EQ(pwrite(dfd, data.data(), 4096, 0), 4096);
  close(dfd);
  MemoryBlockDeviceStats s;
  OnLoop([&] { s = device_->stats(); });
  EXPECT_GE(s.flushes, 2u);
  EXPECT_EQ(s.trims, 2u);
  EXPECT_EQ(s.write_zeroes, 1u);
  EXPECT_GE(s.fua_writes, 1u);
}

TEST_F(FuseExportTest, DeviceErrorsBecomeEio) {
  StartExport();
  int fd = open(file_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  OnLoop([&] { device_->InjectError(target::BlockOp::kWrite, StatusCode::kUnavailable, 1); });
  std::vector<uint8_t> b(4096, 3);
  EXPECT_EQ(pwrite(fd, b.data(), 4096, 0), -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_EQ(pwrite(fd, b.data(), 4096, 0), 4096) << "the next write succeeds";
  close(fd);
}

TEST_F(FuseExportTest, ConcurrentWritersFromManyThreadsAllLand) {
  FuseExportOptions opts;
  opts.threads = 8;
  StartExport(opts);
  OnLoop([&] { device_->SetReverseOrder(true); });
  constexpr int kThreads = 16;
  constexpr int kBlocks = 64;
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      int fd = open(file_.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) {
        ++failures;
        return;
      }
      for (int i = 0; i < kBlocks; ++i) {
        auto data = Pattern(8192, static_cast<uint64_t>(t * 1000 + i));
        off_t off = static_cast<off_t>((t * kBlocks + i) * 8192);
        if (pwrite(fd, data.data(), data.size(), off) != 8192) ++failures;
      }
      close(fd);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kBlocks; ++i) {
      auto data = Pattern(8192, static_cast<uint64_t>(t * 1000 + i));
      size_t off = static_cast<size_t>((t * kBlocks + i) * 8192);
      std::vector<uint8_t> mem;
      OnLoop([&] { mem.assign(device_->data() + off, device_->data() + off + 8192); });
      ASSERT_EQ(mem, data) << "thread " << t << " block " << i;
    }
  }
}

TEST_F(FuseExportTest, RequestsReachADeviceThatBatchesInBeforeWaitWithoutAWake) {
  // The export submits from its own BeforeWait, which runs after the
  // device's: the loop must take another turn rather than sleep with the
  // request queued (VolumeTarget's clients flush their sends in BeforeWait;
  // without the turn a QD1 write waited for the 10 ms ticker).
  OnLoop([&] { device_.reset(); });
  MemoryBlockDeviceOptions dev;
  dev.size = kSize;
  dev.block_size = 4096;
  dev.wake_on_submit = false;
  OnLoop([&] { device_ = std::make_unique<MemoryBlockDevice>(loop_.get(), dev); });
  StartExport();
  int fd = open(file_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto t0 = std::chrono::steady_clock::now();
  auto data = Pattern(4096, 5);
  std::unique_ptr<void, decltype(&free)> buf(aligned_alloc(4096, 4096), &free);
  memcpy(buf.get(), data.data(), 4096);
  std::atomic<int> done{0};
  std::thread io([&] {
    for (int i = 0; i < 200; ++i) {
      if (pwrite(fd, buf.get(), 4096, static_cast<off_t>(i) * 4096) != 4096) return;
      if (pread(fd, buf.get(), 4096, static_cast<off_t>(i) * 4096) != 4096) return;
      ++done;
    }
  });
  // Generous on a loaded machine; a lost wake-up stalls forever (nothing
  // else wakes this loop).
  auto deadline = t0 + std::chrono::seconds(20);
  while (done < 200 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(done.load(), 200) << "requests stalled in the hand-off";
  if (done < 200) OnLoop([&] { device_->SetDelayMs(1); });  // unstick the thread for join
  io.join();
  close(fd);
}

// One asynchronous O_DIRECT write (Linux AIO) and its completion: with AIO
// the kernel holds the file's lock only while it queues a direct write, so
// writes reach the export concurrently, as a loop device's do (a pwrite()
// holds it until the reply).
bool AioWrite(int fd, const void* buf, size_t len, off_t off) {
  aio_context_t ctx = 0;
  if (syscall(SYS_io_setup, 1, &ctx) != 0) return false;
  iocb cb{};
  cb.aio_fildes = static_cast<uint32_t>(fd);
  cb.aio_lio_opcode = IOCB_CMD_PWRITE;
  cb.aio_buf = reinterpret_cast<uint64_t>(buf);
  cb.aio_nbytes = len;
  cb.aio_offset = off;
  iocb* cbs[1] = {&cb};
  bool ok = syscall(SYS_io_submit, ctx, 1, cbs) == 1;
  io_event ev{};
  timespec ts{30, 0};
  ok = ok && syscall(SYS_io_getevents, ctx, 1, 1, &ev, &ts) == 1 &&
       ev.res == static_cast<int64_t>(len);
  syscall(SYS_io_destroy, ctx);
  return ok;
}

TEST_F(FuseExportTest, PartialBlockWritesNeverUndoAConcurrentWholeBlockWrite) {
  // One thread writes whole block 0 with a new stamp and reads it back; the
  // other keeps writing 512 bytes in the middle of the same block (a
  // read-modify-write). A whole-block write landing between the partial
  // write's read and write would be undone, and the read-back would show an
  // older stamp. The device takes 1 ms per request to widen that window.
  StartExport();
  OnLoop([&] { device_->SetDelayMs(1); });
  int fd = open(file_.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(fd, 0) << strerror(errno);
  std::atomic<bool> stop{false};
  std::atomic<int> partial_writes{0};
  std::thread partial([&] {
    std::unique_ptr<uint8_t, decltype(&free)> b(static_cast<uint8_t*>(aligned_alloc(4096, 4096)),
                                                &free);
    memset(b.get(), 0xee, 512);
    while (!stop && AioWrite(fd, b.get(), 512, 1024)) ++partial_writes;
  });
  std::unique_ptr<uint8_t, decltype(&free)> buf(static_cast<uint8_t*>(aligned_alloc(4096, 4096)),
                                                &free);
  std::unique_ptr<uint8_t, decltype(&free)> back(static_cast<uint8_t*>(aligned_alloc(4096, 4096)),
                                                 &free);
  int undone = 0;
  for (uint32_t stamp = 1; stamp <= 100; ++stamp) {
    for (int i = 0; i < 4096; i += 4) memcpy(buf.get() + i, &stamp, 4);
    ASSERT_TRUE(AioWrite(fd, buf.get(), 4096, 0));
    ASSERT_EQ(pread(fd, back.get(), 4096, 0), 4096);
    uint32_t seen;
    memcpy(&seen, back.get(), 4);
    if (seen != stamp) ++undone;
  }
  stop = true;
  partial.join();
  close(fd);
  EXPECT_GT(partial_writes.load(), 10);
  EXPECT_EQ(undone, 0) << "whole-block writes undone by a concurrent read-modify-write";
}

TEST_F(FuseExportTest, BadOptionsAreRefusedAndLeaveNothingBehind) {
  Status st;
  FuseExportOptions opts;
  opts.mount_dir = "relative/dir";
  OnLoop([&] {
    FuseExport e(loop_.get(), device_.get(), opts);
    st = e.Start();
  });
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  opts.mount_dir = mount_dir_;
  opts.file_name = "a/b";
  OnLoop([&] {
    FuseExport e(loop_.get(), device_.get(), opts);
    st = e.Start();
  });
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  opts.file_name = "volume";
  opts.transport = FuseTransport::kIoUring;
  OnLoop([&] {
    FuseExport e(loop_.get(), device_.get(), opts);
    st = e.Start();
  });
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st.ToString();
  // A non-empty directory is not mounted over.
  std::filesystem::create_directories(mount_dir_);
  {
    FILE* f = fopen((mount_dir_ + "/x").c_str(), "w");
    fclose(f);
  }
  opts.transport = FuseTransport::kDevice;
  OnLoop([&] {
    FuseExport e(loop_.get(), device_.get(), opts);
    st = e.Start();
  });
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_TRUE(std::filesystem::exists(mount_dir_ + "/x"));
}

TEST_F(FuseExportTest, FactoryCreatesEitherKindBehindTheExportSeam) {
  auto kind = ParseExportKind("fuse_file");
  ASSERT_TRUE(kind.ok());
  EXPECT_EQ(*kind, ExportKind::kFuseFile);
  EXPECT_EQ(ParseExportKind("ublk").status().code(), StatusCode::kInvalidArgument);

  ExportSpec spec;
  spec.kind = ExportKind::kFuseFile;
  spec.name = "vol";
  EXPECT_EQ(CreateExport(loop_.get(), device_.get(), spec).status().code(),
            StatusCode::kInvalidArgument);
  spec.fuse_mount_dir = mount_dir_;
  auto fuse = CreateExport(loop_.get(), device_.get(), spec);
  ASSERT_TRUE(fuse.ok()) << fuse.status().ToString();
  spec.kind = ExportKind::kNbd;
  EXPECT_EQ(CreateExport(loop_.get(), device_.get(), spec).status().code(),
            StatusCode::kInvalidArgument);
  spec.nbd_unix_path = dir_ + "/nbd.sock";
  auto nbd = CreateExport(loop_.get(), device_.get(), spec);
  ASSERT_TRUE(nbd.ok()) << nbd.status().ToString();

  std::unique_ptr<Export> exports[] = {std::move(*fuse), std::move(*nbd)};
  for (auto& e : exports) {
    Status st;
    ExportDescription d;
    OnLoop([&] {
      st = e->Start();
      d = e->Describe();
    });
    ASSERT_TRUE(st.ok()) << st.ToString();
    struct stat sb;
    EXPECT_EQ(stat(d.path.c_str(), &sb), 0) << d.path;
    EXPECT_EQ(sb.st_mode & 0777, 0600u) << ExportKindName(d.kind);
    bool done = false;
    OnLoop([&] { e->Shutdown([](void* a) { *static_cast<bool*>(a) = true; }, &done); });
    ASSERT_TRUE(WaitFor([&] { return done; }));
    OnLoop([&] { e.reset(); });
    EXPECT_NE(stat(d.path.c_str(), &sb), 0) << d.path << " left behind";
  }
}

// --- Shutdown and teardown -------------------------------------------------------

TEST_F(FuseExportTest, ShutdownWaitsForRequestsOnTheDeviceThenUnmounts) {
  StartExport();
  OnLoop([&] { device_->Pause(); });
  auto data = Pattern(65536, 9);
  std::atomic<ssize_t> result{-2};
  // A page-aligned buffer: the kernel sends the write as one request (an
  // unaligned one is cut at page boundaries, and the second piece would
  // meet the shutdown).
  std::unique_ptr<void, decltype(&free)> aligned(aligned_alloc(4096, data.size()), &free);
  memcpy(aligned.get(), data.data(), data.size());
  std::thread writer([&] {
    int fd = open(file_.c_str(), O_RDWR | O_CLOEXEC);
    result = fd < 0 ? -1 : pwrite(fd, aligned.get(), data.size(), 0);
    if (fd >= 0) close(fd);
  });
  ASSERT_TRUE(WaitFor([&] { return device_->inflight() > 0; }));
  bool done = false;
  OnLoop([&] { export_->Shutdown([](void* a) { *static_cast<bool*>(a) = true; }, &done); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  bool done_now = true;
  OnLoop([&] { done_now = done; });
  EXPECT_FALSE(done_now) << "shutdown finished with a request on the device";
  OnLoop([&] { device_->Resume(); });
  ASSERT_TRUE(WaitFor([&] { return done; }));
  writer.join();
  EXPECT_EQ(result.load(), 65536) << "a write accepted before the shutdown completes";
  std::vector<uint8_t> mem;
  OnLoop([&] { mem.assign(device_->data(), device_->data() + 65536); });
  EXPECT_EQ(mem, data);
  // Unmounted and the directory it made removed.
  EXPECT_FALSE(std::filesystem::exists(mount_dir_));
  EXPECT_NE(Sh("grep -q ' " + mount_dir_ + " ' /proc/mounts"), 0);
  // Idempotent.
  bool done2 = false;
  OnLoop([&] { export_->Shutdown([](void* a) { *static_cast<bool*>(a) = true; }, &done2); });
  ASSERT_TRUE(WaitFor([&] { return done2; }));
  OnLoop([&] { export_.reset(); });
}

TEST_F(FuseExportTest, DestroyWithoutShutdownWhileARequestWaitsIsBounded) {
  StartExport();
  OnLoop([&] { device_->Pause(); });
  std::atomic<ssize_t> result{-2};
  std::atomic<int> err{0};
  std::thread reader([&] {
    int fd = open(file_.c_str(), O_RDONLY | O_CLOEXEC);
    std::vector<uint8_t> b(4096);
    result = fd < 0 ? -1 : pread(fd, b.data(), b.size(), 0);
    err = errno;
    if (fd >= 0) close(fd);
  });
  ASSERT_TRUE(WaitFor([&] { return device_->inflight() > 0; }));
  auto t0 = std::chrono::steady_clock::now();
  OnLoop([&] { export_.reset(); });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  reader.join();
  EXPECT_EQ(result.load(), -1) << "the abandoned read fails";
  // The request still on the device completes into memory that is still
  // valid (ASan checks).
  OnLoop([&] { device_->Resume(); });
  ASSERT_TRUE(WaitFor([&] { return device_->inflight() == 0; }));
  EXPECT_FALSE(std::filesystem::exists(mount_dir_));
}

// Run only as the child of StaleMountOfAKilledEngineIsDetachedAtTheNextStart:
// serves an export until it is killed.
TEST_F(FuseExportTest, DISABLED_ServeUntilKilled) {
  const char* dir = getenv("TANDEM_FUSE_HELPER_DIR");
  if (dir == nullptr) GTEST_SKIP() << "helper of StaleMountOfAKilledEngineIsDetachedAtTheNextStart";
  // This process dies by SIGKILL: its own temporary directory goes now.
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
  mount_dir_ = dir;
  StartExport();
  FILE* f = fopen((std::string(dir) + ".ready").c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  std::this_thread::sleep_for(std::chrono::seconds(60));
}

TEST_F(FuseExportTest, StaleMountOfAKilledEngineIsDetachedAtTheNextStart) {
  REQUIRE_LOOP_TOOLS();
  // A child process mounts the export and is killed with -9, as a crashed
  // engine would be: its mount stays, "Transport endpoint is not connected".
  std::filesystem::create_directories(mount_dir_);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setenv("TANDEM_FUSE_HELPER_DIR", mount_dir_.c_str(), 1);
    execl("/proc/self/exe", "frontend_tests",
          "--gtest_filter=FuseExportTest.DISABLED_ServeUntilKilled",
          "--gtest_also_run_disabled_tests", static_cast<char*>(nullptr));
    _exit(127);
  }
  Cleanup cleanup;
  cleanup.Add([child] {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
  });
  const std::string ready = mount_dir_ + ".ready";
  auto deadline = std::chrono::steady_clock::now() + kWait;
  while (access(ready.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(access(ready.c_str(), F_OK), 0) << "helper did not mount";
  file_ = mount_dir_ + "/volume";
  std::string out;
  ASSERT_EQ(Sh("losetup --direct-io=on --sector-size 4096 --find --show " + file_, &out), 0) << out;
  std::string old_loop = Trim(out);
  cleanup.Add([old_loop, file = file_] { DetachLoopIfOurs(old_loop, file); });
  kill(child, SIGKILL);
  ASSERT_EQ(waitpid(child, nullptr, 0), child);

  struct statfs sf;
  int statfs_rc = statfs(mount_dir_.c_str(), &sf);
  int statfs_err = errno;
  EXPECT_NE(statfs_rc, 0);
  EXPECT_EQ(statfs_err, ENOTCONN) << "expected a stale FUSE mount";
  // The loop device of the dead export fails I/O promptly and detaches.
  int rc = Sh("dd if=" + old_loop + " of=/dev/null bs=4096 count=1 iflag=direct", &out, 20);
  EXPECT_NE(rc, 0);
  EXPECT_NE(rc, 124) << "read of the dead export's loop device hung";
  EXPECT_EQ(Sh("losetup -d " + old_loop, &out, 30), 0) << out;
  // A new export on the same directory detaches the stale mount and serves.
  StartExport();
  std::vector<uint8_t> b(4096);
  int fd = open(file_.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << strerror(errno);
  EXPECT_EQ(pread(fd, b.data(), b.size(), 0), 4096);
  close(fd);
}

// --- Through a loop device -------------------------------------------------------

TEST_F(FuseExportTest, Ext4OnTheLoopDeviceKeepsItsFilesAcrossRemountAndReexport) {
  REQUIRE_LOOP_TOOLS();
  StartExport();
  const std::string mnt = dir_ + "/fs";
  std::filesystem::create_directories(mnt);
  {
    Cleanup cleanup;
    std::string dev = AttachLoop(&cleanup);
    ASSERT_FALSE(dev.empty());
    std::string out;
    ASSERT_EQ(Sh("mkfs.ext4 -q -F " + dev, &out, 120), 0) << out;
    ASSERT_EQ(Sh("mount " + dev + " " + mnt, &out), 0) << out;
    cleanup.Add([mnt] { Sh("umount " + mnt + " 2>/dev/null || umount -l " + mnt); });
    // A tree of files with random contents and their checksums.
    ASSERT_EQ(Sh("mkdir -p " + mnt +
                     "/a/b && "
                     "head -c 3000000 /dev/urandom > " +
                     mnt +
                     "/a/big && "
                     "head -c 5000 /dev/urandom > " +
                     mnt +
                     "/a/b/small && "
                     "for i in 1 2 3 4 5 6 7 8; do head -c 70000 /dev/urandom > " +
                     mnt + "/f$i; done && cd " + mnt +
                     " && find . -type f | sort | xargs sha256sum > " + dir_ + "/sums && sync",
                 &out, 120),
              0)
        << out;
    ASSERT_EQ(Sh("umount " + mnt, &out), 0) << out;
    ASSERT_EQ(Sh("mount " + dev + " " + mnt, &out), 0) << out;
    ASSERT_EQ(Sh("cd " + mnt + " && sha256sum --quiet -c " + dir_ + "/sums", &out), 0) << out;
    ASSERT_EQ(Sh("umount " + mnt, &out), 0) << out;
  }  // loop detached
  // A new export of the same device: the data is on the device, not in a
  // cache of the first mount.
  auto took = ShutdownExport();
  EXPECT_LT(took, std::chrono::seconds(10));
  StartExport();
  Cleanup cleanup;
  std::string dev = AttachLoop(&cleanup);
  ASSERT_FALSE(dev.empty());
  std::string out;
  ASSERT_EQ(Sh("fsck.ext4 -n -f " + dev, &out, 120), 0) << out;
  ASSERT_EQ(Sh("mount " + dev + " " + mnt, &out), 0) << out;
  cleanup.Add([mnt] { Sh("umount " + mnt + " 2>/dev/null || umount -l " + mnt); });
  EXPECT_EQ(Sh("cd " + mnt + " && sha256sum --quiet -c " + dir_ + "/sums", &out), 0) << out;
}

TEST_F(FuseExportTest, BlkdiscardOnTheLoopDeviceReachesTrim) {
  REQUIRE_LOOP_TOOLS();
  StartExport();
  Cleanup cleanup;
  std::string dev = AttachLoop(&cleanup);
  ASSERT_FALSE(dev.empty());
  std::string out;
  ASSERT_EQ(
      Sh("head -c 4194304 /dev/urandom | dd of=" + dev + " bs=1M oflag=direct status=none", &out),
      0)
      << out;
  uint64_t trims_before = 0;
  OnLoop([&] { trims_before = device_->stats().trims; });
  ASSERT_EQ(Sh("blkdiscard -o 1048576 -l 2097152 " + dev, &out), 0) << out;
  uint64_t trims = 0;
  std::vector<uint8_t> mem;
  OnLoop([&] {
    trims = device_->stats().trims;
    mem.assign(device_->data(), device_->data() + (4 << 20));
  });
  EXPECT_GT(trims, trims_before);
  EXPECT_TRUE(std::all_of(mem.begin() + (1 << 20), mem.begin() + (3 << 20), [](uint8_t b) {
    return b == 0;
  })) << "discarded range not zero on the device";
  EXPECT_FALSE(std::all_of(mem.begin(), mem.begin() + (1 << 20), [](uint8_t b) { return b == 0; }))
      << "data before the range was discarded too";
}

TEST_F(FuseExportTest, AGrownDeviceGrowsTheFileAndTheLoopDevice) {
  REQUIRE_LOOP_TOOLS();
  // A device with room to grow (a volume resized while attached).
  OnLoop([&] { device_.reset(); });
  MemoryBlockDeviceOptions dev;
  dev.size = kSize;
  dev.capacity = kSize + (64 << 20);
  dev.block_size = 4096;
  OnLoop([&] { device_ = std::make_unique<MemoryBlockDevice>(loop_.get(), dev); });
  StartExport();
  Cleanup cleanup;
  std::string loopdev = AttachLoop(&cleanup);
  ASSERT_FALSE(loopdev.empty());
  std::string out;
  ASSERT_EQ(Sh("blockdev --getsize64 " + loopdev, &out), 0);
  EXPECT_EQ(Trim(out), std::to_string(kSize));

  OnLoop([&] {
    ASSERT_TRUE(device_->SetSize(kSize + (64 << 20)));
    export_->SizeChanged();
  });
  struct stat st;
  ASSERT_EQ(stat(file_.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kSize + (64 << 20)) << "file size not refreshed";
  ASSERT_EQ(Sh("losetup -c " + loopdev, &out), 0) << out;
  out.clear();
  ASSERT_EQ(Sh("blockdev --getsize64 " + loopdev, &out), 0);
  EXPECT_EQ(Trim(out), std::to_string(kSize + (64 << 20)));
  // The new last block is writable through the loop device.
  ASSERT_EQ(Sh("head -c 4096 /dev/urandom > " + dir_ + "/blk && dd if=" + dir_ + "/blk of=" +
                   loopdev + " bs=4096 seek=" + std::to_string((kSize + (64 << 20)) / 4096 - 1) +
                   " oflag=direct status=none",
               &out),
            0)
      << out;
  std::vector<uint8_t> mem;
  OnLoop([&] {
    const uint8_t* p = device_->data() + kSize + (64 << 20) - 4096;
    mem.assign(p, p + 4096);
  });
  std::vector<uint8_t> want(4096);
  FILE* f = fopen((dir_ + "/blk").c_str(), "rb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(fread(want.data(), 1, want.size(), f), want.size());
  fclose(f);
  EXPECT_EQ(mem, want);
}

TEST_F(FuseExportTest, ShutdownWithTheLoopAndAFilesystemStillAttachedFailsIoAndIsBounded) {
  REQUIRE_LOOP_TOOLS();
  StartExport();
  const std::string mnt = dir_ + "/fs";
  std::filesystem::create_directories(mnt);
  Cleanup cleanup;
  std::string dev = AttachLoop(&cleanup);
  ASSERT_FALSE(dev.empty());
  std::string out;
  ASSERT_EQ(Sh("mkfs.ext4 -q -F " + dev, &out, 120), 0) << out;
  ASSERT_EQ(Sh("mount " + dev + " " + mnt, &out), 0) << out;
  cleanup.Add([mnt] { Sh("umount " + mnt + " 2>/dev/null || umount -l " + mnt); });
  ASSERT_EQ(Sh("head -c 100000 /dev/urandom > " + mnt + "/f && sync", &out), 0) << out;

  // The export goes while the loop device and the filesystem still use it.
  auto took = ShutdownExport();
  EXPECT_LT(took, std::chrono::seconds(10));
  // Direct reads of the loop device now fail promptly instead of hanging.
  out.clear();
  int rc = Sh("dd if=" + dev + " of=/dev/null bs=4096 count=1 iflag=direct", &out, 20);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(rc, 124) << "read of the loop device hung";
  // Writes through the filesystem fail with an error too (bounded).
  rc = Sh("head -c 100000 /dev/urandom > " + mnt + "/g && sync", &out, 20);
  EXPECT_NE(rc, 124) << "filesystem write hung";
  // Everything can still be taken apart: umount, loop detach.
  EXPECT_EQ(Sh("umount " + mnt + " || umount -l " + mnt, &out, 30), 0) << out;
  EXPECT_EQ(Sh("losetup -d " + dev, &out, 30), 0) << out;
  EXPECT_FALSE(std::filesystem::exists(mount_dir_));
}

TEST_F(FuseExportTest, LoopDetachedFirstThenShutdownThenDeviceGone) {
  REQUIRE_LOOP_TOOLS();
  StartExport();
  {
    Cleanup cleanup;
    std::string dev = AttachLoop(&cleanup);
    ASSERT_FALSE(dev.empty());
    std::string out;
    ASSERT_EQ(Sh("head -c 1048576 /dev/urandom | dd of=" + dev + " bs=64k oflag=direct status=none",
                 &out),
              0)
        << out;
  }
  auto took = ShutdownExport();
  EXPECT_LT(took, std::chrono::seconds(10));
  EXPECT_FALSE(std::filesystem::exists(mount_dir_));
  OnLoop([&] { device_.reset(); });
}

}  // namespace
}  // namespace tandem::frontend

// The backend conformance suite: every test runs against each StorageBackend
// ("io_uring" and "libaio") and checks the contract in storage_backend.h.
// "io_uring_si" is io_uring with BackendOptions::single_issuer (a
// SINGLE_ISSUER + DEFER_TASKRUN ring where the kernel has them), so both ring
// kinds are held to the contract.

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/clock.h"
#include "replica-engine/backend/aio_backend.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/backend/storage_backend.h"

namespace tandem::backend {
namespace {

constexpr uint64_t kFileSize = 64ull << 20;  // sparse
constexpr uint32_t kBlock = 4096;
// Bound on every wait in this file.
constexpr uint64_t kWaitNs = 20'000'000'000ull;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

Buffer NewBuffer(size_t n) {
  const size_t rounded = (n + kBlock - 1) / kBlock * kBlock;
  return Buffer(static_cast<uint8_t*>(std::aligned_alloc(kDirectIoAlignment, rounded)));
}

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Deterministic bytes for (seed); different seeds give different blocks.
void FillPattern(uint8_t* p, size_t n, uint64_t seed) {
  uint64_t state = seed * 0x100000001b3ull + 1;
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = SplitMix64(&state);
    std::memcpy(p + i, &v, std::min<size_t>(8, n - i));
  }
}

bool IsZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// The block device under `path`'s filesystem, for its flush counter
// (Documentation/ABI/testing/procfs-diskstats: field 16 is flushes completed).
struct BlockDeviceStats {
  std::string sysfs;  // /sys/dev/block/M:m
  bool write_back_cache = false;
  bool fua = false;

  static std::optional<BlockDeviceStats> For(const std::string& path) {
    struct stat sb;
    if (::stat(path.c_str(), &sb) != 0 || major(sb.st_dev) == 0) return std::nullopt;
    BlockDeviceStats s;
    s.sysfs = "/sys/dev/block/" + std::to_string(major(sb.st_dev)) + ":" +
              std::to_string(minor(sb.st_dev));
    std::string queue = s.sysfs + "/queue";
    if (!std::filesystem::exists(queue)) queue = s.sysfs + "/../queue";  // a partition
    std::string cache, fua;
    std::ifstream(queue + "/write_cache") >> cache;
    std::ifstream(queue + "/fua") >> fua;
    if (cache.empty()) return std::nullopt;
    s.write_back_cache = cache == "write";  // "write back" vs "write through"
    s.fua = fua == "1";
    return s;
  }

  std::optional<uint64_t> Flushes() const {
    std::ifstream f(sysfs + "/stat");
    std::vector<uint64_t> v;
    uint64_t x;
    while (f >> x) v.push_back(x);
    if (v.size() < 16) return std::nullopt;  // kernels before 5.5 have no flush fields
    return v[15];
  }
};

// A tiny filesystem mounted for one test, to run out of space on purpose:
// tmpfs (O_DIRECT on tmpfs needs Linux 6.6+), else ext4 on a loop device.
class SmallFilesystem {
 public:
  static std::unique_ptr<SmallFilesystem> Mount(std::string* why_not) {
    char tmpl[] = "/var/tmp/tandem-enospc-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      *why_not = std::string("mkdtemp: ") + std::strerror(errno);
      return nullptr;
    }
    std::unique_ptr<SmallFilesystem> fs(new SmallFilesystem(tmpl));
    if (::mount("tandem-enospc", tmpl, "tmpfs", 0, "size=1m,mode=0700") == 0) {
      fs->mounted_ = true;
      if (fs->SupportsDirectIo()) return fs;
      fs->Unmount();
      *why_not = "tmpfs rejects O_DIRECT; ";
    } else {
      *why_not = std::string("mount tmpfs: ") + std::strerror(errno) + "; ";
    }
    fs->image_ = fs->dir_ + ".img";
    const std::string mkfs = "mkfs.ext4 -q -F -b 4096 -O ^has_journal " + fs->image_ +
                             " 8M >/dev/null 2>&1 && mount -o loop " + fs->image_ + " " + fs->dir_ +
                             " >/dev/null 2>&1";
    if (std::system(mkfs.c_str()) == 0) {
      fs->mounted_ = true;
      if (fs->SupportsDirectIo()) return fs;
      *why_not += "ext4 on loop rejects O_DIRECT";
      return nullptr;
    }
    *why_not += "mkfs.ext4 + mount -o loop failed";
    return nullptr;
  }

  ~SmallFilesystem() {
    Unmount();
    ::rmdir(dir_.c_str());
    if (!image_.empty()) ::unlink(image_.c_str());
  }

  const std::string& dir() const { return dir_; }

 private:
  explicit SmallFilesystem(std::string dir) : dir_(std::move(dir)) {}

  bool SupportsDirectIo() const {
    const std::string probe = dir_ + "/probe";
    const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    ::close(fd);
    ::unlink(probe.c_str());
    return true;
  }

  void Unmount() {
    if (!mounted_) return;
    mounted_ = false;
    // Lazy unmount if something still holds it, so the test never hangs here;
    // a loop device mounted by mount(8) is released (autoclear) with it.
    if (::umount(dir_.c_str()) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
  }

  std::string dir_;
  std::string image_;
  bool mounted_ = false;
};

void CountDone(IoRequest* r) { ++*static_cast<int*>(r->ctx); }

class BackendConformanceTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    MakeBackend(BackendOptions{}, &backend_);
    if (backend_ == nullptr) return;  // skipped or failed inside
    char tmpl[] = "/var/tmp/tandem-backend-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/data";
    auto fd = backend_->OpenFile(path_.c_str(), /*create=*/true);
    ASSERT_TRUE(fd.ok()) << fd.status().ToString();
    fd_ = *fd;
    ASSERT_EQ(ftruncate(fd_, static_cast<off_t>(kFileSize)), 0);
  }

  void TearDown() override {
    if (backend_ != nullptr) {
      EXPECT_EQ(backend_->InFlight(), 0u) << "a test left requests in flight";
      // Never destroy a backend with requests in flight: drain (bounded).
      const uint64_t deadline = MonotonicNanos() + kWaitNs;
      while (backend_->InFlight() > 0 && MonotonicNanos() < deadline) backend_->Reap(1, 100'000);
      if (fd_ >= 0) backend_->CloseFile(fd_);
      backend_.reset();
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // The backend under test with `options`; leaves *out null after GTEST_SKIP
  // when this machine cannot create it (io_uring blocked by seccomp or the
  // sysctl), or after a failure.
  void MakeBackend(const BackendOptions& options, std::unique_ptr<StorageBackend>* out) {
    const bool si = std::string(GetParam()) == "io_uring_si";
    const std::string name = si ? "io_uring" : GetParam();
    BackendOptions o = options;
    o.single_issuer = si;
    auto b = BackendFactory::Create(name, o);
    if (!b.ok()) {
      if (b.status().code() == StatusCode::kUnavailable && name == "io_uring") {
        GTEST_SKIP() << "io_uring unavailable here: " << b.status().ToString();
      }
      FAIL() << b.status().ToString();
    }
    EXPECT_STREQ((*b)->Name(), name.c_str());
    *out = std::move(*b);
  }

  // Reaps on `b` until *count >= n; bounded.
  static void ReapUntil(StorageBackend* b, const int* count, int n) {
    const uint64_t deadline = MonotonicNanos() + kWaitNs;
    while (*count < n && MonotonicNanos() < deadline) b->Reap(1, 100'000);
    ASSERT_GE(*count, n) << "requests did not complete in time";
  }

  // Runs one request to completion and returns its result.
  int32_t Run(IoOp op, uint64_t offset, uint32_t length, void* buf, uint32_t flags = 0,
              std::optional<int> fd = std::nullopt) {
    int done = 0;
    IoRequest r;
    r.op = op;
    r.flags = flags;
    r.fd = fd.value_or(fd_);
    r.offset = offset;
    r.length = length;
    r.buf = buf;
    r.done = CountDone;
    r.ctx = &done;
    backend_->Queue(&r);
    ReapUntil(backend_.get(), &done, 1);
    EXPECT_EQ(done, 1) << "done must run exactly once";
    return r.result;
  }

  // Writes the pattern for `seed` to [offset, offset+length) and checks it went.
  void WritePattern(uint64_t offset, uint32_t length, uint64_t seed) {
    Buffer b = NewBuffer(length);
    FillPattern(b.get(), length, seed);
    ASSERT_EQ(Run(IoOp::kWrite, offset, length, b.get()), static_cast<int32_t>(length));
  }

  // Reads [offset, offset+length) through the backend.
  std::vector<uint8_t> ReadBack(uint64_t offset, uint32_t length) {
    Buffer b = NewBuffer(length);
    std::memset(b.get(), 0xee, length);
    EXPECT_EQ(Run(IoOp::kRead, offset, length, b.get()), static_cast<int32_t>(length));
    return std::vector<uint8_t>(b.get(), b.get() + length);
  }

  std::vector<uint8_t> Pattern(uint32_t length, uint64_t seed) {
    std::vector<uint8_t> v(length);
    FillPattern(v.data(), length, seed);
    return v;
  }

  struct stat Stat() const {
    struct stat sb {};
    EXPECT_EQ(::fstat(fd_, &sb), 0);
    return sb;
  }

  std::unique_ptr<StorageBackend> backend_;
  std::string dir_;
  std::string path_;
  int fd_ = -1;
};

TEST_P(BackendConformanceTest, ReadsAfterWritesReturnTheSameBytes) {
  // Sizes from one block to several MiB, at offsets spread over the file, all
  // in flight at once (non-overlapping), then all read back at once.
  const uint32_t sizes[] = {4096, 8192, 65536, 135168, 1u << 20, 4u << 20};
  const uint64_t offsets[] = {0, 4096 * 3, 1u << 20, 5u << 20, 9u << 20, 17u << 20};
  constexpr int kN = 6;
  std::vector<Buffer> wbufs, rbufs;
  std::vector<IoRequest> reqs(2 * kN);
  int writes_done = 0, reads_done = 0;
  for (int i = 0; i < kN; ++i) {
    wbufs.push_back(NewBuffer(sizes[i]));
    rbufs.push_back(NewBuffer(sizes[i]));
    FillPattern(wbufs[i].get(), sizes[i], 100 + i);
    std::memset(rbufs[i].get(), 0xee, sizes[i]);
    IoRequest& w = reqs[i];
    w.op = IoOp::kWrite;
    w.fd = fd_;
    w.offset = offsets[i];
    w.length = sizes[i];
    w.buf = wbufs[i].get();
    w.done = CountDone;
    w.ctx = &writes_done;
    backend_->Queue(&w);
  }
  EXPECT_GE(backend_->Submit(), 0);
  ReapUntil(backend_.get(), &writes_done, kN);
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(reqs[i].result, static_cast<int32_t>(sizes[i])) << "write " << i;
    IoRequest& r = reqs[kN + i];
    r = reqs[i];
    r.op = IoOp::kRead;
    r.buf = rbufs[i].get();
    r.ctx = &reads_done;
    backend_->Queue(&r);
  }
  ReapUntil(backend_.get(), &reads_done, kN);
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(reqs[kN + i].result, static_cast<int32_t>(sizes[i])) << "read " << i;
    EXPECT_EQ(std::memcmp(wbufs[i].get(), rbufs[i].get(), sizes[i]), 0)
        << "bytes differ for " << sizes[i] << " at " << offsets[i];
  }

  // And an independent reader (the page cache path) sees the same bytes.
  const int plain = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(plain, 0);
  std::vector<uint8_t> check(sizes[2]);
  ASSERT_EQ(::pread(plain, check.data(), check.size(), static_cast<off_t>(offsets[2])),
            static_cast<ssize_t>(check.size()));
  EXPECT_EQ(std::memcmp(check.data(), wbufs[2].get(), check.size()), 0);
  ::close(plain);
}

TEST_P(BackendConformanceTest, CallbacksRunOnlyFromReapAndExactlyOnce) {
  constexpr int kN = 8;
  Buffer buf = NewBuffer(kN * kBlock);
  FillPattern(buf.get(), kN * kBlock, 7);
  std::vector<IoRequest> reqs(kN + 1);
  std::vector<int> per_request(kN + 1, 0);
  for (int i = 0; i < kN; ++i) {
    IoRequest& r = reqs[i];
    r.op = IoOp::kWrite;
    r.fd = fd_;
    r.offset = static_cast<uint64_t>(i) * kBlock;
    r.length = kBlock;
    r.buf = buf.get() + i * kBlock;
    r.done = CountDone;
    r.ctx = &per_request[i];
    backend_->Queue(&r);
  }
  // One request that fails validation completes through Reap too, not Queue.
  IoRequest& bad = reqs[kN];
  bad.op = IoOp::kRead;
  bad.fd = fd_;
  bad.offset = 512;
  bad.length = kBlock;
  bad.buf = buf.get();
  bad.done = CountDone;
  bad.ctx = &per_request[kN];
  backend_->Queue(&bad);

  EXPECT_EQ(backend_->InFlight(), static_cast<uint32_t>(kN + 1));
  backend_->Submit();
  for (int c : per_request) EXPECT_EQ(c, 0) << "done ran outside Reap";

  int ran = 0;
  const uint64_t deadline = MonotonicNanos() + kWaitNs;
  while (backend_->InFlight() > 0 && MonotonicNanos() < deadline) {
    ran += backend_->Reap(1, 100'000);
  }
  EXPECT_EQ(ran, kN + 1) << "Reap returns how many callbacks ran";
  EXPECT_EQ(backend_->InFlight(), 0u);
  for (int i = 0; i <= kN; ++i) EXPECT_EQ(per_request[i], 1) << "request " << i;
  for (int i = 0; i < kN; ++i) EXPECT_EQ(reqs[i].result, static_cast<int32_t>(kBlock));
  EXPECT_EQ(bad.result, -EINVAL);
  // Nothing left: a further Reap runs nothing and returns at once (it does
  // not wait when nothing can complete).
  EXPECT_EQ(backend_->Reap(1, -1), 0);
  for (int c : per_request) EXPECT_EQ(c, 1);
}

TEST_P(BackendConformanceTest, MisalignedReadOrWriteCompletesWithEinvalAndTouchesNothing) {
  WritePattern(0, 4 * kBlock, 11);
  Buffer buf = NewBuffer(8 * kBlock);
  uint8_t* aligned = buf.get();
  struct Case {
    const char* what;
    uint64_t offset;
    uint32_t length;
    void* buf;
  };
  const Case cases[] = {
      {"misaligned buffer", 0, kBlock, aligned + 512},
      {"misaligned offset", 512, kBlock, aligned},
      {"misaligned length", 0, 512, aligned},
      {"length not a multiple", 0, kBlock + 512, aligned},
      {"zero length", 0, 0, aligned},
      {"null buffer", 0, kBlock, nullptr},
  };
  for (const Case& c : cases) {
    for (IoOp op : {IoOp::kRead, IoOp::kWrite}) {
      // A write's source is garbage, a read's destination is a sentinel.
      std::memset(aligned, 0xee, 8 * kBlock);
      EXPECT_EQ(Run(op, c.offset, c.length, c.buf), -EINVAL) << IoOpName(op) << ": " << c.what;
      if (op == IoOp::kRead) {
        for (int i = 0; i < 8 * static_cast<int>(kBlock); ++i) {
          if (aligned[i] != 0xee) {
            ADD_FAILURE() << "rejected read wrote into the buffer: " << c.what;
            break;
          }
        }
      }
    }
  }
  EXPECT_EQ(ReadBack(0, 4 * kBlock), Pattern(4 * kBlock, 11))
      << "a rejected write reached the file";
}

TEST_P(BackendConformanceTest, NegativeDescriptorCompletesWithEbadf) {
  Buffer buf = NewBuffer(kBlock);
  for (IoOp op : {IoOp::kRead, IoOp::kWrite, IoOp::kFlush, IoOp::kDiscard, IoOp::kWriteZeroes}) {
    EXPECT_EQ(Run(op, 0, kBlock, buf.get(), 0, -1), -EBADF) << IoOpName(op);
  }
}

TEST_P(BackendConformanceTest, NopCompletesWithZeroThroughReapWithoutAFile) {
  // No file, no buffer, any range: the request only travels the completion path.
  EXPECT_EQ(Run(IoOp::kNop, 12345, 7, nullptr, 0, -1), 0);
  int done = 0;
  IoRequest r;
  r.op = IoOp::kNop;
  r.done = CountDone;
  r.ctx = &done;
  backend_->Queue(&r);
  EXPECT_EQ(done, 0) << "done runs from Reap, never from Queue";
  EXPECT_EQ(backend_->InFlight(), 1u);
  ReapUntil(backend_.get(), &done, 1);
  EXPECT_EQ(r.result, 0);
  EXPECT_EQ(backend_->InFlight(), 0u);
}

TEST_P(BackendConformanceTest, DiscardAndWriteZeroesNeedOnlyAnAlignedRange) {
  for (IoOp op : {IoOp::kDiscard, IoOp::kWriteZeroes}) {
    // The buffer is ignored: null or even a misaligned pointer is fine.
    EXPECT_EQ(Run(op, 0, kBlock, nullptr), static_cast<int32_t>(kBlock)) << IoOpName(op);
    EXPECT_EQ(Run(op, kBlock, 2 * kBlock, reinterpret_cast<void*>(uintptr_t{1})),
              static_cast<int32_t>(2 * kBlock))
        << IoOpName(op);
    EXPECT_EQ(Run(op, 512, kBlock, nullptr), -EINVAL) << IoOpName(op) << " misaligned offset";
    EXPECT_EQ(Run(op, 0, 1000, nullptr), -EINVAL) << IoOpName(op) << " misaligned length";
    EXPECT_EQ(Run(op, 0, 0, nullptr), -EINVAL) << IoOpName(op) << " zero length";
  }
}

TEST_P(BackendConformanceTest, FlushCompletesWithZeroAndReachesTheDevice) {
  // An allocating write (into a hole) leaves metadata that only fdatasync
  // commits, and the commit must end in a device cache flush.
  const auto dev = BlockDeviceStats::For(path_);
  WritePattern(3u << 20, 16 * kBlock, 21);
  const std::optional<uint64_t> before = dev ? dev->Flushes() : std::nullopt;
  // kFlush ignores offset, length and buffer.
  EXPECT_EQ(Run(IoOp::kFlush, 12345, 7, reinterpret_cast<void*>(uintptr_t{1})), 0);
  if (dev && dev->write_back_cache && before) {
    // Other processes may flush too, so this can only err on the side of
    // passing; it catches a flush that never reaches the kernel.
    EXPECT_GT(dev->Flushes().value_or(0), *before)
        << "no cache flush reached " << dev->sysfs << " during kFlush";
  }
  EXPECT_EQ(ReadBack(3u << 20, 16 * kBlock), Pattern(16 * kBlock, 21));
  EXPECT_EQ(Run(IoOp::kFlush, 0, 0, nullptr), 0) << "a flush with nothing dirty";
}

TEST_P(BackendConformanceTest, FuaWriteCompletesDurablyAndReadsBack) {
  const auto dev = BlockDeviceStats::For(path_);
  Buffer buf = NewBuffer(8 * kBlock);
  FillPattern(buf.get(), 8 * kBlock, 31);
  const std::optional<uint64_t> before = dev ? dev->Flushes() : std::nullopt;
  EXPECT_EQ(Run(IoOp::kWrite, 7u << 20, 8 * kBlock, buf.get(), kFlagFua),
            static_cast<int32_t>(8 * kBlock));
  if (dev && dev->write_back_cache && !dev->fua && before) {
    // Without FUA in the device, RWF_DSYNC is emulated with a cache flush
    // after the write; with FUA it would be a FUA write, not counted here.
    EXPECT_GT(dev->Flushes().value_or(0), *before)
        << "a FUA write on " << dev->sysfs << " (write-back cache, no FUA) issued no flush";
  }
  EXPECT_EQ(ReadBack(7u << 20, 8 * kBlock), Pattern(8 * kBlock, 31));
  // FUA on an overwrite (no allocation) as well.
  FillPattern(buf.get(), 8 * kBlock, 32);
  EXPECT_EQ(Run(IoOp::kWrite, 7u << 20, 8 * kBlock, buf.get(), kFlagFua),
            static_cast<int32_t>(8 * kBlock));
  EXPECT_EQ(ReadBack(7u << 20, 8 * kBlock), Pattern(8 * kBlock, 32));
}

TEST_P(BackendConformanceTest, DiscardPunchesAHoleThatReadsAsZeroes) {
  constexpr uint64_t kOff = 10u << 20;
  constexpr uint32_t kLen = 64 * kBlock;  // 256 KiB written
  constexpr uint64_t kHoleOff = kOff + 16 * kBlock;
  constexpr uint32_t kHoleLen = 32 * kBlock;  // 128 KiB discarded in the middle
  WritePattern(kOff, kLen, 41);
  ASSERT_EQ(Run(IoOp::kFlush, 0, 0, nullptr), 0);
  const struct stat before = Stat();
  ASSERT_GE(before.st_blocks, kLen / 512) << "the written range should be allocated";

  EXPECT_EQ(Run(IoOp::kDiscard, kHoleOff, kHoleLen, nullptr), static_cast<int32_t>(kHoleLen));

  const struct stat after = Stat();
  EXPECT_LE(after.st_blocks, before.st_blocks - static_cast<blkcnt_t>(kHoleLen / 512))
      << "space was not released (st_blocks " << before.st_blocks << " -> " << after.st_blocks
      << ")";
  EXPECT_EQ(after.st_size, before.st_size) << "discard must not change the size";
  const std::vector<uint8_t> got = ReadBack(kOff, kLen);
  const std::vector<uint8_t> want = Pattern(kLen, 41);
  const size_t hole = kHoleOff - kOff;
  EXPECT_TRUE(std::equal(got.begin(), got.begin() + hole, want.begin())) << "before the hole";
  EXPECT_TRUE(IsZero(got.data() + hole, kHoleLen)) << "the hole must read as zeroes";
  EXPECT_TRUE(std::equal(got.begin() + hole + kHoleLen, got.end(), want.begin() + hole + kHoleLen))
      << "after the hole";
}

TEST_P(BackendConformanceTest, WriteZeroesMakesTheRangeReadAsZeroes) {
  constexpr uint64_t kOff = 12u << 20;
  constexpr uint32_t kLen = 64 * kBlock;
  constexpr uint64_t kZeroOff = kOff + 8 * kBlock;
  constexpr uint32_t kZeroLen = 40 * kBlock;
  WritePattern(kOff, kLen, 51);
  const struct stat before = Stat();

  EXPECT_EQ(Run(IoOp::kWriteZeroes, kZeroOff, kZeroLen, nullptr), static_cast<int32_t>(kZeroLen));

  EXPECT_EQ(Stat().st_size, before.st_size) << "write-zeroes must not change the size";
  const std::vector<uint8_t> got = ReadBack(kOff, kLen);
  const std::vector<uint8_t> want = Pattern(kLen, 51);
  const size_t z = kZeroOff - kOff;
  EXPECT_TRUE(std::equal(got.begin(), got.begin() + z, want.begin())) << "before the range";
  EXPECT_TRUE(IsZero(got.data() + z, kZeroLen)) << "the range must read as zeroes";
  EXPECT_TRUE(std::equal(got.begin() + z + kZeroLen, got.end(), want.begin() + z + kZeroLen))
      << "after the range";
  // Over a hole it is a no-op that still succeeds.
  EXPECT_EQ(Run(IoOp::kWriteZeroes, 40u << 20, 16 * kBlock, nullptr),
            static_cast<int32_t>(16 * kBlock));
  EXPECT_TRUE(IsZero(ReadBack(40u << 20, 16 * kBlock).data(), 16 * kBlock));
  // And a write after it lands normally.
  WritePattern(kZeroOff, kBlock, 52);
  EXPECT_EQ(ReadBack(kZeroOff, kBlock), Pattern(kBlock, 52));
}

TEST_P(BackendConformanceTest, ReadPastTheEndReportsOnlyTheBytesBeforeIt) {
  WritePattern(kFileSize - kBlock, kBlock, 61);
  Buffer buf = NewBuffer(4 * kBlock);
  std::memset(buf.get(), 0xee, 4 * kBlock);
  // Crossing EOF: the bytes up to EOF.
  EXPECT_EQ(Run(IoOp::kRead, kFileSize - kBlock, 4 * kBlock, buf.get()),
            static_cast<int32_t>(kBlock));
  EXPECT_EQ(std::vector<uint8_t>(buf.get(), buf.get() + kBlock), Pattern(kBlock, 61));
  // At or after EOF: 0.
  EXPECT_EQ(Run(IoOp::kRead, kFileSize, kBlock, buf.get()), 0);
  EXPECT_EQ(Run(IoOp::kRead, kFileSize + (1u << 20), 2 * kBlock, buf.get()), 0);
}

TEST_P(BackendConformanceTest, KernelErrorsPropagateAsNegativeErrno) {
  Buffer buf = NewBuffer(kBlock);
  FillPattern(buf.get(), kBlock, 71);
  // A descriptor the file is open read-only on: reads work, writes and
  // space changes fail in the kernel with EBADF.
  const int ro = ::open(path_.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(ro, 0) << std::strerror(errno);
  EXPECT_EQ(Run(IoOp::kRead, 0, kBlock, buf.get(), 0, ro), static_cast<int32_t>(kBlock));
  EXPECT_EQ(Run(IoOp::kWrite, 0, kBlock, buf.get(), 0, ro), -EBADF);
  EXPECT_EQ(Run(IoOp::kDiscard, 0, kBlock, nullptr, 0, ro), -EBADF);
  EXPECT_EQ(Run(IoOp::kWriteZeroes, 0, kBlock, nullptr, 0, ro), -EBADF);
  ::close(ro);

  // A descriptor number that is not open at all.
  const int closed = ::dup(fd_);
  ASSERT_GE(closed, 0);
  ::close(closed);
  for (IoOp op : {IoOp::kRead, IoOp::kWrite, IoOp::kFlush, IoOp::kDiscard}) {
    EXPECT_EQ(Run(op, 0, kBlock, buf.get(), 0, closed), -EBADF) << IoOpName(op);
  }
  // The backend is still healthy afterwards.
  WritePattern(0, kBlock, 72);
  EXPECT_EQ(ReadBack(0, kBlock), Pattern(kBlock, 72));
}

TEST_P(BackendConformanceTest, WritesOnAFullFilesystemFailWithEnospc) {
  std::string why_not;
  std::unique_ptr<SmallFilesystem> fs = SmallFilesystem::Mount(&why_not);
  if (fs == nullptr) GTEST_SKIP() << "cannot mount a small filesystem: " << why_not;
  const std::string path = fs->dir() + "/full";
  auto fd = backend_->OpenFile(path.c_str(), true);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  constexpr uint64_t kSparseSize = 64ull << 20;  // far more than the filesystem holds
  ASSERT_EQ(ftruncate(*fd, static_cast<off_t>(kSparseSize)), 0);

  // Batches of 16 concurrent 4 KiB writes until the filesystem is full; every
  // request completes, each with its full length or -ENOSPC.
  constexpr int kBatch = 16;
  Buffer buf = NewBuffer(kBatch * kBlock);
  FillPattern(buf.get(), kBatch * kBlock, 81);
  std::vector<IoRequest> reqs(kBatch);
  int ok = 0, enospc = 0, other = 0;
  uint64_t offset = 0;
  while (enospc == 0 && other == 0 && offset < kSparseSize) {
    int done = 0;
    for (int i = 0; i < kBatch; ++i) {
      IoRequest& r = reqs[i];
      r = IoRequest{};
      r.op = IoOp::kWrite;
      r.fd = *fd;
      r.offset = offset;
      r.length = kBlock;
      r.buf = buf.get() + i * kBlock;
      r.done = CountDone;
      r.ctx = &done;
      backend_->Queue(&r);
      offset += kBlock;
    }
    ReapUntil(backend_.get(), &done, kBatch);
    for (const IoRequest& r : reqs) {
      if (r.result == static_cast<int32_t>(kBlock)) {
        ++ok;
      } else if (r.result == -ENOSPC) {
        ++enospc;
      } else {
        ++other;
        ADD_FAILURE() << "write at " << r.offset << " completed with " << r.result;
      }
    }
  }
  EXPECT_GT(ok, 0) << "nothing fit at all";
  EXPECT_GT(enospc, 0) << "wrote " << offset << " bytes without running out of space";
  EXPECT_EQ(other, 0);
  // What was acknowledged is there, and the backend still works.
  Buffer rbuf = NewBuffer(kBlock);
  int done = 0;
  IoRequest r;
  r.op = IoOp::kRead;
  r.fd = *fd;
  r.offset = 0;
  r.length = kBlock;
  r.buf = rbuf.get();
  r.done = CountDone;
  r.ctx = &done;
  backend_->Queue(&r);
  ReapUntil(backend_.get(), &done, 1);
  EXPECT_EQ(r.result, static_cast<int32_t>(kBlock));
  EXPECT_EQ(std::memcmp(rbuf.get(), buf.get(), kBlock), 0);
  backend_->CloseFile(*fd);
}

// --- many requests in flight, checked against a model -----------------------

// Random reads, writes, discards, write-zeroes and flushes on a range of
// blocks, up to `slots` in flight. In-flight requests never overlap, so the
// model (a version per block; 0 = zeroes) is exact at issue and completion.
struct ModelWorkload {
  struct Slot {
    IoRequest req;
    Buffer buf;
    uint64_t first_block = 0;
    uint32_t nblocks = 0;
    uint32_t version = 0;
    ModelWorkload* w = nullptr;
  };

  static constexpr uint32_t kMaxBlocks = 8;

  ModelWorkload(uint64_t blocks, int slots) : version(blocks, 0), busy(blocks, 0), slot(slots) {
    for (Slot& s : slot) {
      s.buf = NewBuffer(kMaxBlocks * kBlock);
      s.w = this;
      free_slots.push_back(&s);
    }
  }

  static void ExpectedBlock(uint64_t block, uint32_t v, uint8_t* out) {
    if (v == 0) {
      std::memset(out, 0, kBlock);
    } else {
      FillPattern(out, kBlock, (block << 32) | v);
    }
  }

  static void OnDone(IoRequest* r) {
    auto* s = static_cast<Slot*>(r->ctx);
    ModelWorkload* w = s->w;
    const int32_t want = r->op == IoOp::kFlush ? 0 : static_cast<int32_t>(r->length);
    if (r->result != want) {
      if (w->errors++ < 5) {
        ADD_FAILURE() << IoOpName(r->op) << " at " << r->offset << " len " << r->length
                      << " completed with " << r->result;
      }
    } else {
      uint8_t expect[kBlock];
      for (uint32_t i = 0; i < s->nblocks; ++i) {
        const uint64_t b = s->first_block + i;
        switch (r->op) {
          case IoOp::kWrite:
            w->version[b] = s->version;
            break;
          case IoOp::kRead:
            ExpectedBlock(b, w->version[b], expect);
            if (std::memcmp(expect, s->buf.get() + i * kBlock, kBlock) != 0 &&
                w->mismatches++ < 5) {
              ADD_FAILURE() << "block " << b << " differs from the model (version " << w->version[b]
                            << ")";
            }
            ++w->blocks_checked;
            break;
          case IoOp::kDiscard:
          case IoOp::kWriteZeroes:
            w->version[b] = 0;
            break;
          case IoOp::kFlush:
          case IoOp::kNop:
            break;
        }
      }
    }
    for (uint32_t i = 0; i < s->nblocks; ++i) w->busy[s->first_block + i] = 0;
    w->free_slots.push_back(s);
    ++w->completed;
  }

  // Issues one random request if a slot and a free range are available.
  bool IssueOne(StorageBackend* b, int fd, std::mt19937_64& rng) {
    if (free_slots.empty()) return false;
    const uint32_t pick = rng() % 100;
    IoOp op = pick < 45   ? IoOp::kWrite
              : pick < 85 ? IoOp::kRead
              : pick < 92 ? IoOp::kDiscard
              : pick < 99 ? IoOp::kWriteZeroes
                          : IoOp::kFlush;
    uint64_t first = 0;
    uint32_t n = 0;
    if (op != IoOp::kFlush) {
      bool found = false;
      for (int attempt = 0; attempt < 4 && !found; ++attempt) {
        n = 1 + static_cast<uint32_t>(rng() % kMaxBlocks);
        first = rng() % (version.size() - n + 1);
        found = std::none_of(busy.begin() + first, busy.begin() + first + n,
                             [](uint8_t x) { return x != 0; });
      }
      if (!found) return false;
    }
    Slot* s = free_slots.back();
    free_slots.pop_back();
    s->first_block = first;
    s->nblocks = n;
    for (uint32_t i = 0; i < n; ++i) busy[first + i] = 1;
    if (op == IoOp::kWrite) {
      s->version = next_version++;
      for (uint32_t i = 0; i < n; ++i)
        ExpectedBlock(first + i, s->version, s->buf.get() + i * kBlock);
    } else if (op == IoOp::kRead) {
      std::memset(s->buf.get(), 0xee, n * kBlock);
    }
    IoRequest& r = s->req;
    r = IoRequest{};
    r.op = op;
    r.fd = fd;
    r.offset = first * kBlock;
    r.length = n * kBlock;
    r.buf = s->buf.get();
    r.done = OnDone;
    r.ctx = s;
    b->Queue(&r);
    ++issued;
    return true;
  }

  std::vector<uint32_t> version;
  std::vector<uint8_t> busy;
  std::vector<Slot> slot;
  std::vector<Slot*> free_slots;
  uint32_t next_version = 1;
  uint64_t issued = 0, completed = 0, blocks_checked = 0;
  int errors = 0, mismatches = 0;
  uint32_t peak_in_flight = 0;
};

// Runs `ops` random requests with up to `slots` in flight, then checks the
// whole range against the model through an independent (buffered) reader.
void RunModelWorkload(StorageBackend* b, int fd, const std::string& path, int slots, int ops,
                      uint64_t seed) {
  constexpr uint64_t kBlocks = 8192;  // 32 MiB
  ModelWorkload w(kBlocks, slots);
  std::mt19937_64 rng(seed);
  const uint64_t deadline = MonotonicNanos() + 6 * kWaitNs;
  while ((w.issued < static_cast<uint64_t>(ops) || b->InFlight() > 0) &&
         MonotonicNanos() < deadline) {
    while (w.issued < static_cast<uint64_t>(ops) && w.IssueOne(b, fd, rng)) {
    }
    w.peak_in_flight = std::max(w.peak_in_flight, b->InFlight());
    b->Submit();
    b->Reap(1, 100'000);
  }
  ASSERT_EQ(b->InFlight(), 0u) << "requests did not complete in time";
  EXPECT_EQ(w.completed, w.issued);
  EXPECT_EQ(w.issued, static_cast<uint64_t>(ops));
  EXPECT_EQ(w.errors, 0);
  EXPECT_EQ(w.mismatches, 0);
  EXPECT_GT(w.blocks_checked, 0u);
  EXPECT_GE(w.peak_in_flight, std::min<uint32_t>(static_cast<uint32_t>(slots), 128))
      << "the workload never had many requests in flight";

  // Every block, including those never read during the run, matches.
  const int plain = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(plain, 0);
  std::vector<uint8_t> got(kBlocks * kBlock);
  ASSERT_EQ(::pread(plain, got.data(), got.size(), 0), static_cast<ssize_t>(got.size()));
  ::close(plain);
  uint8_t expect[kBlock];
  int bad = 0;
  for (uint64_t blk = 0; blk < kBlocks; ++blk) {
    ModelWorkload::ExpectedBlock(blk, w.version[blk], expect);
    if (std::memcmp(expect, got.data() + blk * kBlock, kBlock) != 0 && bad++ < 5) {
      ADD_FAILURE() << "final check: block " << blk << " differs (version " << w.version[blk]
                    << ")";
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST_P(BackendConformanceTest, ManyInFlightRandomRequestsMatchAModel) {
  // 256 requests in flight against a 256-entry kernel queue.
  RunModelWorkload(backend_.get(), fd_, path_, /*slots=*/256, /*ops=*/8000, /*seed=*/1);
}

TEST_P(BackendConformanceTest, RequestsBeyondTheQueueDepthWaitAndAllComplete) {
  // 200 in flight against an 8-entry kernel queue: Queue() never fails for
  // lack of room; the excess waits inside the backend.
  BackendOptions options;
  options.queue_depth = 8;
  std::unique_ptr<StorageBackend> small;
  MakeBackend(options, &small);
  if (small == nullptr) return;  // skipped or failed
  auto fd = small->OpenFile(path_.c_str(), false);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  RunModelWorkload(small.get(), *fd, path_, /*slots=*/200, /*ops=*/4000, /*seed=*/2);
  small->CloseFile(*fd);
}

// --- completion plumbing ----------------------------------------------------

struct Chain {
  StorageBackend* b = nullptr;
  IoRequest req;
  Buffer buf;
  int next = 0;
  int total = 0;
  int completed = 0;
  int nested_reap_result = -1;
  uint32_t in_flight_seen = ~0u;
};

TEST_P(BackendConformanceTest, DoneMayQueueAndSubmitTheNextRequest) {
  // Each completion issues the next write from inside `done` (one request
  // object reused), as an event loop issuing follow-up I/O does.
  Chain c;
  c.b = backend_.get();
  c.total = 64;
  c.buf = NewBuffer(kBlock);
  c.req.op = IoOp::kWrite;
  c.req.fd = fd_;
  c.req.length = kBlock;
  c.req.buf = c.buf.get();
  c.req.ctx = &c;
  c.req.done = [](IoRequest* r) {
    auto* ch = static_cast<Chain*>(r->ctx);
    ++ch->completed;
    if (r->result != static_cast<int32_t>(kBlock)) return;
    ch->in_flight_seen = std::min(ch->in_flight_seen, ch->b->InFlight());
    ch->nested_reap_result = ch->b->Reap(1, 0);  // must not recurse
    if (++ch->next < ch->total) {
      r->offset = static_cast<uint64_t>(ch->next) * kBlock;
      FillPattern(ch->buf.get(), kBlock, 900 + ch->next);
      ch->b->Queue(r);
      ch->b->Submit();
    }
  };
  FillPattern(c.buf.get(), kBlock, 900);
  c.req.offset = 0;
  backend_->Queue(&c.req);
  ReapUntil(backend_.get(), &c.completed, c.total);
  EXPECT_EQ(c.completed, c.total);
  EXPECT_EQ(c.nested_reap_result, 0) << "Reap inside done must return 0";
  EXPECT_EQ(c.in_flight_seen, 0u) << "InFlight inside done counts the completing request";
  for (int i = 0; i < c.total; ++i) {
    EXPECT_EQ(ReadBack(static_cast<uint64_t>(i) * kBlock, kBlock), Pattern(kBlock, 900 + i))
        << "block " << i;
  }
}

bool WaitReadable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(kWaitNs / 1'000'000)) == 1 && (p.revents & POLLIN);
}

TEST_P(BackendConformanceTest, CompletionFdSignalsPendingCompletions) {
  const int efd = backend_->CompletionFd();
  ASSERT_GE(efd, 0);
  eventfd_t drained;
  eventfd_read(efd, &drained);  // start from zero

  // A kernel completion.
  Buffer buf = NewBuffer(kBlock);
  FillPattern(buf.get(), kBlock, 91);
  int done = 0;
  IoRequest r;
  r.op = IoOp::kWrite;
  r.fd = fd_;
  r.offset = 0;
  r.length = kBlock;
  r.buf = buf.get();
  r.done = CountDone;
  r.ctx = &done;
  backend_->Queue(&r);
  backend_->Submit();
  ASSERT_TRUE(WaitReadable(efd)) << "completion fd never became readable";
  ASSERT_EQ(eventfd_read(efd, &drained), 0);
  // What an epoll loop does: drain, then Reap(0, 0) finds the completion.
  EXPECT_EQ(backend_->Reap(0, 0), 1);
  EXPECT_EQ(done, 1);
  EXPECT_EQ(r.result, static_cast<int32_t>(kBlock));

  // A completion that never reaches the kernel (rejected request) too.
  r.offset = 100;
  backend_->Queue(&r);
  ASSERT_TRUE(WaitReadable(efd)) << "local completion did not signal the fd";
  ASSERT_EQ(eventfd_read(efd, &drained), 0);
  EXPECT_EQ(backend_->Reap(0, 0), 1);
  EXPECT_EQ(done, 2);
  EXPECT_EQ(r.result, -EINVAL);
}

// What ReplicaServer's loop does with a backend once BeforeWait has submitted
// (the caller's Submit()): epoll sleeps until the completion fd is readable
// (nothing else wakes it here), the handler drains the fd and reaps, then
// BeforeWait submits again. Runs until *count >= n or `max_ns` passes; returns
// how many times the completion fd woke it.
int RunLoop(StorageBackend* b, const int* count, int n, uint64_t max_ns) {
  const uint64_t deadline = MonotonicNanos() + max_ns;
  int wakes = 0;
  while (*count < n) {
    const uint64_t now = MonotonicNanos();
    if (now >= deadline) break;
    pollfd p{b->CompletionFd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>((deadline - now + 999'999) / 1'000'000)) != 1) continue;
    ++wakes;
    eventfd_t drained;
    eventfd_read(b->CompletionFd(), &drained);
    b->Reap(0, 0);
    b->Submit();
  }
  return wakes;
}

// Declared after a test's requests and buffers (so destroyed before them):
// completes whatever is still in flight when the test returns early, so a
// failing test never leaves the backend holding requests that are gone.
struct DrainOnExit {
  StorageBackend* b;
  ~DrainOnExit() {
    b->FailNextSubmitsForTesting(0, 0);
    const uint64_t deadline = MonotonicNanos() + kWaitNs;
    while (b->InFlight() > 0 && MonotonicNanos() < deadline) {
      b->Submit();
      b->Reap(1, 100'000);
    }
  }
};

// A submission the kernel refuses (io_uring_enter -EAGAIN/-EBUSY, io_submit
// -EAGAIN: out of memory) while nothing else is in flight: no completion will
// ever make the completion fd readable, so the backend must arrange a wake-up
// itself, or the request waits until unrelated I/O happens to arrive.
TEST_P(BackendConformanceTest, RefusedSubmitWithNothingInFlightCompletesWithoutOtherIo) {
  std::vector<int> errors = {-EAGAIN};
  if (std::string(GetParam()).starts_with("io_uring")) errors.push_back(-EBUSY);
  for (const int error : errors) {
    eventfd_t drained;
    eventfd_read(backend_->CompletionFd(), &drained);  // start from zero
    Buffer buf = NewBuffer(kBlock);
    FillPattern(buf.get(), kBlock, 101);
    int done = 0;
    IoRequest r;
    r.op = IoOp::kWrite;
    r.fd = fd_;
    r.offset = 5 * kBlock;
    r.length = kBlock;
    r.buf = buf.get();
    r.done = CountDone;
    r.ctx = &done;
    DrainOnExit drain{backend_.get()};
    backend_->FailNextSubmitsForTesting(error, 1);
    backend_->Queue(&r);
    EXPECT_EQ(backend_->Submit(), 0) << "the injected refusal";
    EXPECT_EQ(backend_->InFlight(), 1u);
    const int wakes = RunLoop(backend_.get(), &done, 1, 3'000'000'000ull);
    ASSERT_EQ(done, 1) << "error " << error << ": after a refused submit with nothing in flight "
                       << "the completion fd never became readable (" << wakes
                       << " wake-ups): the request waits for I/O that never comes";
    EXPECT_EQ(r.result, static_cast<int32_t>(kBlock));
    EXPECT_EQ(ReadBack(5 * kBlock, kBlock), Pattern(kBlock, 101));
  }
}

// A kernel that keeps refusing is retried with a backoff, not in a spin (the
// loop would burn a CPU for as long as memory is short), and the request goes
// through once the kernel accepts again.
TEST_P(BackendConformanceTest, PersistentlyRefusedSubmitIsRetriedWithBackoff) {
  eventfd_t drained;
  eventfd_read(backend_->CompletionFd(), &drained);
  Buffer buf = NewBuffer(kBlock);
  FillPattern(buf.get(), kBlock, 102);
  int done = 0;
  IoRequest r;
  r.op = IoOp::kWrite;
  r.fd = fd_;
  r.offset = 6 * kBlock;
  r.length = kBlock;
  r.buf = buf.get();
  r.done = CountDone;
  r.ctx = &done;
  DrainOnExit drain{backend_.get()};
  backend_->FailNextSubmitsForTesting(-EAGAIN, 1 << 30);
  backend_->Queue(&r);
  EXPECT_EQ(backend_->Submit(), 0);
  const int wakes = RunLoop(backend_.get(), &done, 1, 300'000'000ull);
  EXPECT_EQ(done, 0);
  EXPECT_GE(wakes, 2) << "a refused submit is never retried";
  EXPECT_LE(wakes, 40) << "retries spin instead of backing off";
  backend_->FailNextSubmitsForTesting(0, 0);  // the kernel has memory again
  RunLoop(backend_.get(), &done, 1, 3'000'000'000ull);
  ASSERT_EQ(done, 1) << "the request never went through after the kernel accepted again";
  EXPECT_EQ(r.result, static_cast<int32_t>(kBlock));
}

// ReplicaServer's loop since issue 12's profile: the completion fd in epoll
// edge-triggered and never read, and CompletionsReady() checked before every
// sleep. A chain of writes (each `done` queues the next, as QD1 does), the
// first submission refused by the kernel, must all complete: every
// completion, local one and retry is a new edge. On io_uring the check must
// see the completions itself (that is what saves the epoll_wait and the
// eventfd reads per I/O).
TEST_P(BackendConformanceTest, AnEdgeTriggeredLoopThatNeverReadsTheFdSeesEveryCompletion) {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, backend_->CompletionFd(), &ev), 0);
  constexpr int kWrites = 200;
  struct WriteChain {
    StorageBackend* b;
    int fd;
    int done = 0;
    int bad = 0;
    IoRequest r;
  };
  Buffer buf = NewBuffer(kBlock);
  FillPattern(buf.get(), kBlock, 104);
  WriteChain chain{backend_.get(), fd_};
  chain.r.op = IoOp::kWrite;
  chain.r.fd = fd_;
  chain.r.length = kBlock;
  chain.r.buf = buf.get();
  chain.r.ctx = &chain;
  chain.r.done = [](IoRequest* r) {
    WriteChain* c = static_cast<WriteChain*>(r->ctx);
    if (r->result != static_cast<int32_t>(kBlock)) ++c->bad;
    if (++c->done < kWrites) {
      r->offset = static_cast<uint64_t>(c->done % 16) * kBlock;
      c->b->Queue(r);
    }
  };
  DrainOnExit drain{backend_.get()};
  backend_->FailNextSubmitsForTesting(-EAGAIN, 1);
  backend_->Queue(&chain.r);
  int ready_reaps = 0;
  const uint64_t deadline = MonotonicNanos() + kWaitNs;
  while (chain.done < kWrites && MonotonicNanos() < deadline) {
    backend_->Submit();  // BeforeWait
    if (backend_->CompletionsReady()) {
      ++ready_reaps;
      backend_->Reap(0, 0);
      continue;
    }
    epoll_event out{};
    if (::epoll_wait(ep, &out, 1, 1000) == 1) backend_->Reap(0, 0);  // the handler
  }
  ::close(ep);
  ASSERT_EQ(chain.done, kWrites) << "an edge was lost: the loop slept through a completion";
  EXPECT_EQ(chain.bad, 0);
  // A COOP_TASKRUN ring's completion interrupts epoll_wait (EINTR) and is
  // posted on the way out, so CompletionsReady() sees it before the next
  // sleep. A DEFER_TASKRUN ring wakes the loop through the eventfd instead
  // (uring_backend_test.cc counts those wake-ups).
  if (std::string(GetParam()) == "io_uring") {
    EXPECT_GT(ready_reaps, 0) << "CompletionsReady() never saw a completion before the sleep";
  }
}

// A blocking Reap (tools, benchmarks) waits through refusals too.
TEST_P(BackendConformanceTest, BlockingReapWaitsThroughRefusedSubmits) {
  Buffer buf = NewBuffer(kBlock);
  FillPattern(buf.get(), kBlock, 103);
  int done = 0;
  IoRequest r;
  r.op = IoOp::kWrite;
  r.fd = fd_;
  r.offset = 7 * kBlock;
  r.length = kBlock;
  r.buf = buf.get();
  r.done = CountDone;
  r.ctx = &done;
  DrainOnExit drain{backend_.get()};
  backend_->FailNextSubmitsForTesting(-EAGAIN, 3);
  backend_->Queue(&r);
  EXPECT_EQ(backend_->Reap(1, 5'000'000), 1);
  EXPECT_EQ(done, 1);
  EXPECT_EQ(r.result, static_cast<int32_t>(kBlock));
}

// libaio has no usable async flush/fallocate, so the backend runs them on a
// worker thread: a slow fdatasync (a device with a slow cache flush, a
// filesystem committing a big journal) must not hold back the completions of
// other requests on the same loop, i.e. of every other volume of the engine.
TEST_P(BackendConformanceTest, SlowSyncOpDoesNotHoldBackOtherCompletions) {
  if (std::string(GetParam()) != "libaio") {
    GTEST_SKIP() << "io_uring runs fsync and fallocate asynchronously in the kernel";
  }
  auto* aio = static_cast<AioBackend*>(backend_.get());
  WritePattern(0, 8 * kBlock, 111);

  struct Gate {
    const IoRequest* slow = nullptr;
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::atomic<bool> held{false};
    std::atomic<bool> ran_on_owner{false};
    std::thread::id owner = std::this_thread::get_id();
  } gate;
  aio->SetSyncOpHookForTesting(
      [](const IoRequest& req, void* arg) {
        auto* g = static_cast<Gate*>(arg);
        if (std::this_thread::get_id() == g->owner) g->ran_on_owner = true;
        if (&req != g->slow) return;
        g->held = true;
        // Bounded, so that a backend running this on the loop fails the test
        // instead of hanging it.
        g->released.wait_for(std::chrono::seconds(2));
      },
      &gate);

  struct Counter {
    int done = 0;
    bool on_owner = true;
    std::thread::id owner = std::this_thread::get_id();
  };
  auto count = [](IoRequest* r) {
    auto* c = static_cast<Counter*>(r->ctx);
    ++c->done;
    if (std::this_thread::get_id() != c->owner) c->on_owner = false;
  };
  Counter flush_c, other_c;
  IoRequest flush;
  flush.op = IoOp::kFlush;
  flush.fd = fd_;
  flush.done = count;
  flush.ctx = &flush_c;
  gate.slow = &flush;
  constexpr int kReads = 4;
  Buffer rbuf = NewBuffer(kReads * kBlock);
  IoRequest reads[kReads];
  for (int i = 0; i < kReads; ++i) {
    reads[i].op = IoOp::kRead;
    reads[i].fd = fd_;
    reads[i].offset = static_cast<uint64_t>(i) * kBlock;
    reads[i].length = kBlock;
    reads[i].buf = rbuf.get() + i * kBlock;
    reads[i].done = count;
    reads[i].ctx = &other_c;
  }
  // A write-zeroes queued behind the slow flush goes to the second worker.
  IoRequest zeroes;
  zeroes.op = IoOp::kWriteZeroes;
  zeroes.fd = fd_;
  zeroes.offset = 16 * kBlock;
  zeroes.length = 4 * kBlock;
  zeroes.done = count;
  zeroes.ctx = &other_c;
  DrainOnExit drain{backend_.get()};

  const uint64_t start = MonotonicNanos();
  backend_->Queue(&flush);
  for (IoRequest& r : reads) backend_->Queue(&r);
  backend_->Queue(&zeroes);
  backend_->Submit();
  RunLoop(backend_.get(), &other_c.done, kReads + 1, 5'000'000'000ull);
  const uint64_t took = MonotonicNanos() - start;
  EXPECT_EQ(other_c.done, kReads + 1);
  EXPECT_EQ(flush_c.done, 0) << "the reads completed only after the slow flush";
  EXPECT_FALSE(gate.ran_on_owner) << "FLUSH/TRIM/WRITE_ZEROES ran on the loop thread";
  EXPECT_LT(took, 1'000'000'000ull) << "reads waited " << took / 1'000'000 << " ms";
  for (IoRequest& r : reads) EXPECT_EQ(r.result, static_cast<int32_t>(kBlock));
  EXPECT_EQ(zeroes.result, static_cast<int32_t>(4 * kBlock));
  std::vector<uint8_t> want = Pattern(8 * kBlock, 111);
  want.resize(kReads * kBlock);
  EXPECT_EQ(std::vector<uint8_t>(rbuf.get(), rbuf.get() + kReads * kBlock), want);

  // Released, the flush completes through the completion fd, on this thread.
  gate.release.set_value();
  RunLoop(backend_.get(), &flush_c.done, 1, 5'000'000'000ull);
  EXPECT_EQ(flush_c.done, 1);
  EXPECT_EQ(flush.result, 0);
  EXPECT_TRUE(flush_c.on_owner && other_c.on_owner) << "done ran off the owner thread";
  aio->SetSyncOpHookForTesting(nullptr, nullptr);
}

// The one-thread contract, as two replica servers sharing one backend break
// it: a loop thread owns the backend (it made the first call and is still
// running) and another thread reaps. Debug builds abort naming the contract;
// without the check the other thread would silently run the loop's `done`
// callbacks.
TEST_P(BackendConformanceTest, ASecondThreadUsingTheBackendAbortsInDebugBuilds) {
  if (!StorageBackend::ChecksOwnerThread()) {
    GTEST_SKIP() << "built with NDEBUG: the owner-thread check is compiled out";
  }
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto two_threads = [this](bool queue) {
    // This runs in the death test's child, which dies without TearDown: take
    // its temp dir away now (the open file keeps working, unlinked).
    std::filesystem::remove_all(dir_);
    std::promise<void> owned, stop;
    std::future<void> owned_f = owned.get_future();
    std::shared_future<void> stop_f = stop.get_future().share();
    std::thread loop([&] {
      WritePattern(0, kBlock, 1);  // binds the backend to this thread
      owned.set_value();
      stop_f.wait();  // the owner keeps running
    });
    owned_f.wait();
    Buffer buf = NewBuffer(kBlock);
    IoRequest r;
    r.op = IoOp::kRead;
    r.fd = fd_;
    r.length = kBlock;
    r.buf = buf.get();
    if (queue) {
      backend_->Queue(&r);
    } else {
      backend_->Reap(0, 0);
    }
    // Not reached with the check. Without it, leave cleanly so that
    // EXPECT_DEATH reports the missing abort.
    stop.set_value();
    loop.join();
    if (queue) backend_->Reap(1, 1'000'000);
  };
  EXPECT_DEATH(two_threads(/*queue=*/false),
               "one-thread contract violated: .*Reap\\(\\) called on thread");
  EXPECT_DEATH(two_threads(/*queue=*/true),
               "one-thread contract violated: .*Queue\\(\\) called on thread");
}

// Legitimate hand-overs under the same check: a backend created on one thread
// and used only by a loop thread; a loop thread that exits (a server stopped
// and started again) and the next user; an explicit hand-over from an owner
// that keeps running.
TEST_P(BackendConformanceTest, HandingTheBackendToAnotherThreadWorks) {
  // Created (and its file opened) on this thread, first used by a loop thread.
  std::thread first([&] { WritePattern(0, kBlock, 1); });
  first.join();
  // That thread has exited: this one takes over at its first call.
  EXPECT_EQ(ReadBack(0, kBlock), Pattern(kBlock, 1));
  // This thread keeps running: it detaches, and a new loop thread binds.
  backend_->DetachFromThread();
  std::thread second([&] {
    WritePattern(kBlock, kBlock, 2);
    // The new owner pins itself explicitly too (a no-op here).
    backend_->BindToCurrentThread();
    EXPECT_EQ(ReadBack(0, kBlock), Pattern(kBlock, 1));
  });
  second.join();
  // BindToCurrentThread() takes over from a live owner that is done with it.
  std::promise<void> stop;
  std::shared_future<void> stop_f = stop.get_future().share();
  std::promise<void> owned;
  std::thread third([&] {
    WritePattern(2 * kBlock, kBlock, 3);
    owned.set_value();
    stop_f.wait();
  });
  owned.get_future().wait();
  backend_->BindToCurrentThread();
  EXPECT_EQ(ReadBack(kBlock, kBlock), Pattern(kBlock, 2));
  EXPECT_EQ(ReadBack(2 * kBlock, kBlock), Pattern(kBlock, 3));
  stop.set_value();
  third.join();
}

std::string BackendName(const ::testing::TestParamInfo<const char*>& param) { return param.param; }

INSTANTIATE_TEST_SUITE_P(Backends, BackendConformanceTest,
                         ::testing::Values("io_uring", "io_uring_si", "libaio"), BackendName);

}  // namespace
}  // namespace tandem::backend

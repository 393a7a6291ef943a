#include "replica-engine/backend/backend_factory.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "common/clock.h"

namespace tandem::backend {
namespace {

constexpr char kEnv[] = "TANDEM_DISABLE_IO_URING";
constexpr char kSysctl[] = "/proc/sys/kernel/io_uring_disabled";
constexpr char kFallbackLog[] = "falling back to libaio";

// Sets (or unsets) an environment variable for one scope and restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::optional<std::string> ReadSysctl() {
  int fd = ::open(kSysctl, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[32] = {};
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool WriteSysctl(const std::string& value) {
  int fd = ::open(kSysctl, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, value.data(), value.size()) == static_cast<ssize_t>(value.size());
  ::close(fd);
  return ok;
}

// Sets kernel.io_uring_disabled for one scope and restores the previous value
// on every path out of it (the sysctl is machine-wide: keep the scope tiny,
// since other processes cannot create rings while it is set).
class ScopedIoUringDisabledSysctl {
 public:
  explicit ScopedIoUringDisabledSysctl(const char* value) {
    old_ = ReadSysctl();
    if (!old_) {
      why_not_ = std::string(kSysctl) + " does not exist on this kernel";
      return;
    }
    if (!WriteSysctl(value)) {
      why_not_ = std::string("cannot write ") + kSysctl + ": " + std::strerror(errno);
      return;
    }
    active_ = true;
  }
  ~ScopedIoUringDisabledSysctl() { Restore(); }
  ScopedIoUringDisabledSysctl(const ScopedIoUringDisabledSysctl&) = delete;
  ScopedIoUringDisabledSysctl& operator=(const ScopedIoUringDisabledSysctl&) = delete;

  void Restore() {
    if (!active_) return;
    active_ = false;
    // A failed write here would leave io_uring disabled machine-wide; retry.
    for (int i = 0; i < 100 && !WriteSysctl(*old_); ++i) usleep(1000);
  }
  bool active() const { return active_; }
  const std::string& why_not() const { return why_not_; }
  const std::optional<std::string>& old_value() const { return old_; }

 private:
  bool active_ = false;
  std::optional<std::string> old_;
  std::string why_not_;
};

// One 4 KiB write and read back through `b`, so a backend returned by the
// factory is known to do I/O, not only to exist.
void ExpectRoundTrip(StorageBackend* b) {
  char tmpl[] = "/var/tmp/tandem-factory-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string path = dir + "/data";
  auto fd = b->OpenFile(path.c_str(), true);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  ASSERT_EQ(ftruncate(*fd, 1 << 20), 0);
  void* wbuf = std::aligned_alloc(kDirectIoAlignment, 4096);
  void* rbuf = std::aligned_alloc(kDirectIoAlignment, 4096);
  std::memset(wbuf, 0x5a, 4096);
  std::memset(rbuf, 0, 4096);
  int completed = 0;
  IoRequest w;
  w.op = IoOp::kWrite;
  w.fd = *fd;
  w.offset = 8192;
  w.length = 4096;
  w.buf = wbuf;
  w.ctx = &completed;
  w.done = [](IoRequest* r) { ++*static_cast<int*>(r->ctx); };
  b->Queue(&w);
  const uint64_t deadline = MonotonicNanos() + 10'000'000'000ull;
  while (completed < 1 && MonotonicNanos() < deadline) b->Reap(1, 100'000);
  IoRequest r = w;
  r.op = IoOp::kRead;
  r.buf = rbuf;
  b->Queue(&r);
  while (completed < 2 && MonotonicNanos() < deadline) b->Reap(1, 100'000);
  EXPECT_EQ(completed, 2);
  EXPECT_EQ(w.result, 4096);
  EXPECT_EQ(r.result, 4096);
  EXPECT_EQ(std::memcmp(wbuf, rbuf, 4096), 0);
  std::free(wbuf);
  std::free(rbuf);
  b->CloseFile(*fd);
  std::filesystem::remove_all(dir);
}

// Whether this machine can create a ring at all right now (it cannot inside
// some containers, or while kernel.io_uring_disabled is set).
bool UringWorksHere() {
  ScopedEnv env(kEnv, nullptr);
  return NewUringBackend(BackendOptions{}).ok();
}

TEST(BackendFactoryTest, AutoPicksIoUringWhenTheKernelAllowsIt) {
  ScopedEnv env(kEnv, nullptr);
  if (!UringWorksHere()) GTEST_SKIP() << "io_uring_setup fails on this machine";
  testing::internal::CaptureStderr();
  auto b = BackendFactory::Create("auto");
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_STREQ((*b)->Name(), "io_uring");
  EXPECT_EQ(log.find(kFallbackLog), std::string::npos) << log;
  ExpectRoundTrip(b->get());
}

TEST(BackendFactoryTest, ExplicitNamesCreateThatBackend) {
  ScopedEnv env(kEnv, nullptr);
  auto aio = BackendFactory::Create("libaio");
  ASSERT_TRUE(aio.ok()) << aio.status().ToString();
  EXPECT_STREQ((*aio)->Name(), "libaio");
  ExpectRoundTrip(aio->get());
  if (!UringWorksHere()) GTEST_SKIP() << "io_uring_setup fails on this machine";
  auto uring = BackendFactory::Create("io_uring");
  ASSERT_TRUE(uring.ok()) << uring.status().ToString();
  EXPECT_STREQ((*uring)->Name(), "io_uring");
  ExpectRoundTrip(uring->get());
}

TEST(BackendFactoryTest, UnknownNameIsInvalidArgument) {
  for (const char* name : {"", "uring", "IO_URING", "aio", "libaio ", "posix", "auto2"}) {
    auto b = BackendFactory::Create(name);
    ASSERT_FALSE(b.ok()) << "'" << name << "' was accepted";
    EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument) << b.status().ToString();
    EXPECT_NE(b.status().message().find(std::string("'") + name + "'"), std::string::npos)
        << "the error should name what was asked for: " << b.status().ToString();
  }
}

TEST(BackendFactoryTest, InjectedSetupFailureMakesAutoFallBackToLibaioAndSaySo) {
  ScopedEnv env(kEnv, "1");
  testing::internal::CaptureStderr();
  auto b = BackendFactory::Create("auto");
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_STREQ((*b)->Name(), "libaio");
  // One WARNING line that names the reason, e.g.
  // "W backend: io_uring unavailable (io_uring_setup: Operation not permitted
  //  (TANDEM_DISABLE_IO_URING set)), falling back to libaio".
  EXPECT_NE(log.find(" W backend: io_uring unavailable ("), std::string::npos) << log;
  EXPECT_NE(log.find(std::strerror(EPERM)), std::string::npos) << log;
  EXPECT_NE(log.find("), falling back to libaio"), std::string::npos) << log;
  ExpectRoundTrip(b->get());
}

TEST(BackendFactoryTest, InjectedSetupFailureMakesExplicitIoUringUnavailable) {
  ScopedEnv env(kEnv, "1");
  auto b = BackendFactory::Create("io_uring");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(b.status().message().find(std::strerror(EPERM)), std::string::npos)
      << b.status().ToString();
  // An explicit name never falls back silently, and libaio is unaffected.
  auto aio = BackendFactory::Create("libaio");
  ASSERT_TRUE(aio.ok()) << aio.status().ToString();
  EXPECT_STREQ((*aio)->Name(), "libaio");
}

TEST(BackendFactoryTest, InjectionVariableSetToZeroOrEmptyDoesNotDisable) {
  if (!UringWorksHere()) GTEST_SKIP() << "io_uring_setup fails on this machine";
  for (const char* value : {"0", ""}) {
    ScopedEnv env(kEnv, value);
    auto b = BackendFactory::Create("auto");
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_STREQ((*b)->Name(), "io_uring") << kEnv << "='" << value << "'";
  }
}

// The real thing: kernel.io_uring_disabled=2 makes io_uring_setup fail with
// EPERM for every process. Needs root and a 6.6+ kernel; the sysctl is
// restored before any assertion runs, and by the RAII guard on every path.
TEST(BackendFactoryTest, KernelSysctlDisablingIoUringMakesAutoFallBackToLibaio) {
  ScopedEnv env(kEnv, nullptr);
  if (!UringWorksHere()) GTEST_SKIP() << "io_uring_setup already fails on this machine";
  std::optional<std::string> before;
  Result<std::unique_ptr<StorageBackend>> automatic = Status::Internal("not run");
  Result<std::unique_ptr<StorageBackend>> uring = Status::Internal("not run");
  std::string log;
  {
    ScopedIoUringDisabledSysctl sysctl("2");
    if (!sysctl.active()) GTEST_SKIP() << sysctl.why_not();
    before = sysctl.old_value();
    testing::internal::CaptureStderr();
    automatic = BackendFactory::Create("auto");
    uring = BackendFactory::Create("io_uring");
    sysctl.Restore();
    log = testing::internal::GetCapturedStderr();
  }
  EXPECT_EQ(ReadSysctl(), before) << "kernel.io_uring_disabled was not restored";

  ASSERT_TRUE(automatic.ok()) << automatic.status().ToString();
  EXPECT_STREQ((*automatic)->Name(), "libaio");
  EXPECT_NE(log.find("io_uring unavailable (io_uring_setup: "), std::string::npos) << log;
  EXPECT_NE(log.find(kFallbackLog), std::string::npos) << log;
  ASSERT_FALSE(uring.ok());
  EXPECT_EQ(uring.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(uring.status().message().find(std::strerror(EPERM)), std::string::npos)
      << uring.status().ToString();
  ExpectRoundTrip(automatic->get());

  // Restored: rings can be created again.
  auto again = BackendFactory::Create("auto");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_STREQ((*again)->Name(), "io_uring");
}

}  // namespace
}  // namespace tandem::backend

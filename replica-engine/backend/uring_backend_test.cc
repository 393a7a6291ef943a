// What is specific to UringBackend's SINGLE_ISSUER + DEFER_TASKRUN ring (the
// shared contract is in backend_conformance_test.cc): file-table updates from
// other threads reach the ring through its owner, a new owner thread gets a
// new ring, and a loop is woken once per completion, not twice.

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/clock.h"
#include "replica-engine/backend/uring_backend.h"

namespace tandem::backend {
namespace {

constexpr uint32_t kBlock = 4096;
constexpr uint64_t kWaitNs = 20'000'000'000ull;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

Buffer Filled(uint8_t byte) {
  Buffer b(static_cast<uint8_t*>(std::aligned_alloc(kDirectIoAlignment, kBlock)));
  std::memset(b.get(), byte, kBlock);
  return b;
}

// An owner loop as the replica server runs it: epoll on the completion fd
// (edge-triggered, never read), Reap(0, 0) when it fires, and work posted to
// it run between waits. Counts wake-ups that found nothing to reap.
class OwnerLoop {
 public:
  explicit OwnerLoop(UringBackend* b) : b_(b), thread_([this] { Run(); }) {}
  ~OwnerLoop() {
    stop_ = true;
    thread_.join();
  }
  // Runs `fn` on the loop thread and waits for it.
  template <typename F>
  void Do(F fn) {
    std::promise<void> done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      work_ = [&] {
        fn();
        done.set_value();
      };
    }
    done.get_future().wait();
  }
  // Writes one block of `byte` at `offset` of `fd` and waits for it.
  int32_t Write(int fd, uint64_t offset, uint8_t byte) {
    // On the heap: a write that times out is leaked, not freed under the
    // kernel's feet.
    struct Pending {
      Buffer buf;
      IoRequest r;
      std::atomic<bool> finished{false};
    };
    auto p = std::make_unique<Pending>();
    p->buf = Filled(byte);
    p->r.op = IoOp::kWrite;
    p->r.fd = fd;
    p->r.offset = offset;
    p->r.length = kBlock;
    p->r.buf = p->buf.get();
    p->r.ctx = &p->finished;
    p->r.done = [](IoRequest* q) { static_cast<std::atomic<bool>*>(q->ctx)->store(true); };
    Do([&] {
      b_->Queue(&p->r);
      b_->Submit();
    });
    const uint64_t deadline = MonotonicNanos() + kWaitNs;
    while (!p->finished && MonotonicNanos() < deadline) std::this_thread::yield();
    if (!p->finished) {
      p.release();
      return -ETIMEDOUT;
    }
    return p->r.result;
  }
  int empty_wakeups() const { return empty_wakeups_; }
  int wakeups() const { return wakeups_; }

 private:
  void Run() {
    const int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    epoll_ctl(ep, EPOLL_CTL_ADD, b_->CompletionFd(), &ev);
    while (!stop_) {
      std::function<void()> work;
      {
        std::lock_guard<std::mutex> lock(mu_);
        work.swap(work_);
      }
      if (work) work();
      epoll_event out{};
      if (epoll_wait(ep, &out, 1, 1) == 1) {
        ++wakeups_;
        if (b_->Reap(0, 0) == 0) ++empty_wakeups_;
      }
    }
    close(ep);
  }

  UringBackend* b_;
  std::mutex mu_;
  std::function<void()> work_;
  std::atomic<bool> stop_{false};
  std::atomic<int> empty_wakeups_{0};
  std::atomic<int> wakeups_{0};
  std::thread thread_;
};

class UringBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BackendOptions options;
    options.single_issuer = true;
    auto b = UringBackend::Create(options);
    if (!b.ok()) GTEST_SKIP() << "io_uring unavailable here: " << b.status().ToString();
    backend_ = std::move(*b);
    if (!backend_->single_issuer()) GTEST_SKIP() << "this kernel has no SINGLE_ISSUER rings";
    ASSERT_TRUE(backend_->files_registered());
    char tmpl[] = "/var/tmp/tandem-uring-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (int fd : fds_) backend_->CloseFile(fd);
    backend_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  // Opens (creates) `name` through the backend on the calling thread.
  int Open(const std::string& name) {
    auto fd = backend_->OpenFile((dir_ + "/" + name).c_str(), /*create=*/true);
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    if (!fd.ok()) return -1;
    EXPECT_EQ(ftruncate(*fd, 1 << 20), 0);
    fds_.push_back(*fd);
    return *fd;
  }
  void Forget(int fd) { std::erase(fds_, fd); }
  // The first byte of block 0 of `name`, read without the backend.
  int FirstByte(const std::string& name) {
    const int fd = ::open((dir_ + "/" + name).c_str(), O_RDONLY);
    uint8_t byte = 0;
    const ssize_t n = ::pread(fd, &byte, 1, 0);
    ::close(fd);
    return n == 1 ? byte : -1;
  }
  // Waits (bounded) until `fd`'s registered slot satisfies `pred`.
  template <typename P>
  int32_t WaitSlot(int fd, P pred) {
    const uint64_t deadline = MonotonicNanos() + kWaitNs;
    int32_t slot = backend_->RegisteredSlot(fd);
    while (!pred(slot) && MonotonicNanos() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      slot = backend_->RegisteredSlot(fd);
    }
    return slot;
  }

  std::unique_ptr<UringBackend> backend_;
  std::string dir_;
  std::vector<int> fds_;
};

TEST_F(UringBackendTest, AFileOpenedOnAnotherThreadIsRegisteredByTheOwnersLoop) {
  OwnerLoop loop(backend_.get());
  const int first = Open("first");  // before the ring has an issuer: at once
  EXPECT_GE(backend_->RegisteredSlot(first), 0);
  ASSERT_EQ(loop.Write(first, 0, 0x11), static_cast<int32_t>(kBlock));  // the loop adopts the ring

  // Now only the loop may register: this thread's update waits for it, and
  // the loop is woken to apply it.
  const int second = Open("second");
  const int32_t slot = WaitSlot(second, [](int32_t s) { return s >= 0; });
  ASSERT_GE(slot, 0) << "the owner loop never applied the queued registration";
  ASSERT_EQ(loop.Write(second, 0, 0x22), static_cast<int32_t>(kBlock));
  EXPECT_EQ(FirstByte("second"), 0x22);

  // Closing from this thread withdraws the slot at once; the loop clears it
  // in the ring, and only then is it handed out again.
  backend_->CloseFile(second);
  Forget(second);
  EXPECT_EQ(backend_->RegisteredSlot(second), -1);
  const int third = Open("third");
  const int32_t third_slot = WaitSlot(third, [](int32_t s) { return s >= 0; });
  ASSERT_GE(third_slot, 0);
  const uint64_t deadline = MonotonicNanos() + kWaitNs;
  while (backend_->QueuedFileUpdates() > 0 && MonotonicNanos() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(backend_->QueuedFileUpdates(), 0u);
  // The freed slot, once the loop cleared it (the third file may have been
  // queued before or after that clear).
  const int fourth = Open("fourth");
  const int32_t fourth_slot = WaitSlot(fourth, [](int32_t s) { return s >= 0; });
  EXPECT_TRUE(third_slot == slot || fourth_slot == slot)
      << "slot " << slot << " was never handed out again: " << third_slot << ", " << fourth_slot;
  ASSERT_EQ(loop.Write(third, 0, 0x33), static_cast<int32_t>(kBlock));
  ASSERT_EQ(loop.Write(fourth, 0, 0x44), static_cast<int32_t>(kBlock));
  EXPECT_EQ(FirstByte("third"), 0x33);
  EXPECT_EQ(FirstByte("fourth"), 0x44);
  EXPECT_EQ(FirstByte("second"), 0x22);
}

// With the owner parked (adopted, not reaping), updates from this thread
// wait: a closed file's slot is not handed out before the owner cleared it,
// and a registration queued for a file closed before it was applied is
// dropped rather than leaking its slot.
TEST_F(UringBackendTest, QueuedUpdatesWaitForTheOwnerAndAClosedFilesQueuedRegistrationIsDropped) {
  const int first = Open("first");
  const int32_t first_slot = backend_->RegisteredSlot(first);
  ASSERT_GE(first_slot, 0);
  const size_t free_at_start = backend_->FreeFileSlots();
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> adopted;
  std::thread owner([&] {
    backend_->Submit();  // adopts the ring
    adopted.set_value();
    released.wait();
    backend_->Reap(0, 0);  // applies what is queued
  });
  adopted.get_future().wait();

  backend_->CloseFile(first);  // queued clear: the slot stays taken
  Forget(first);
  const int doomed = Open("doomed");  // queued registration
  backend_->CloseFile(doomed);        // before the owner applied it: dropped
  Forget(doomed);
  const int reused = Open("reused");                // queued registration
  EXPECT_EQ(backend_->RegisteredSlot(reused), -1);  // not yet: plain fd meanwhile
  EXPECT_EQ(backend_->QueuedFileUpdates(), 2u);     // the clear and `reused`
  release.set_value();
  owner.join();

  EXPECT_EQ(backend_->QueuedFileUpdates(), 0u);
  const int32_t reused_slot = backend_->RegisteredSlot(reused);
  ASSERT_GE(reused_slot, 0);
  EXPECT_NE(reused_slot, first_slot) << "handed out before the owner cleared it";
  // first's slot is free again, reused's is taken, doomed's never leaked.
  EXPECT_EQ(backend_->FreeFileSlots(), free_at_start);
  // This thread is now the owner (the old one exited): a new ring.
  OwnerLoop loop(backend_.get());
  ASSERT_EQ(loop.Write(reused, 0, 0x44), static_cast<int32_t>(kBlock));
  EXPECT_EQ(FirstByte("reused"), 0x44);
  EXPECT_EQ(FirstByte("doomed"), 0);
}

TEST_F(UringBackendTest, ANewOwnerThreadGetsANewRingWithTheSameFiles) {
  const int fd = Open("data");
  const int32_t slot = backend_->RegisteredSlot(fd);
  ASSERT_GE(slot, 0);
  {
    OwnerLoop first(backend_.get());
    ASSERT_EQ(first.Write(fd, 0, 0x55), static_cast<int32_t>(kBlock));
  }
  // The first owner has exited; a second takes over at its first call. The
  // ring it inherits is the first's (its issuer can never change), so the
  // backend replaces it, keeping the registered file.
  OwnerLoop second(backend_.get());
  ASSERT_EQ(second.Write(fd, kBlock, 0x66), static_cast<int32_t>(kBlock));
  EXPECT_EQ(backend_->RegisteredSlot(fd), slot);
  EXPECT_EQ(FirstByte("data"), 0x55);
}

// The wake-up budget of the issue: one per completion. A reap posts the CQE
// itself with the eventfd quiet, so it leaves no edge behind to wake the loop
// again for nothing (with COOP_TASKRUN every completion wakes the loop twice:
// out of epoll_wait with EINTR, then for the edge its own reap left).
TEST_F(UringBackendTest, EachCompletionWakesTheLoopOnceNotTwice) {
  const int fd = Open("data");
  OwnerLoop loop(backend_.get());
  constexpr int kWrites = 200;
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_EQ(loop.Write(fd, static_cast<uint64_t>(i % 16) * kBlock, static_cast<uint8_t>(i)),
              static_cast<int32_t>(kBlock));
  }
  EXPECT_GE(loop.wakeups(), kWrites);
  // A stray one now and then (a completion racing the quiet window is
  // signalled by hand), never one per write.
  EXPECT_LE(loop.empty_wakeups(), kWrites / 10) << "wake-ups: " << loop.wakeups();
}

}  // namespace
}  // namespace tandem::backend

#include "common/event_loop.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "common/clock.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

struct CountingHandler : EventLoop::Handler {
  int fd;
  int calls = 0;
  void OnEvents(uint32_t) override {
    char b[64];
    while (read(fd, b, sizeof(b)) > 0) {
    }
    ++calls;
  }
};

TEST(EventLoopTest, DispatchesReadyDescriptors) {
  EventLoop loop;
  ASSERT_TRUE(loop.init_status().ok());
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  CountingHandler h;
  h.fd = sv[0];
  ASSERT_TRUE(loop.Add(sv[0], EPOLLIN, &h).ok());
  loop.RunOnce(0);
  EXPECT_EQ(h.calls, 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  loop.RunOnce(1000);
  EXPECT_EQ(h.calls, 1);
  loop.Remove(sv[0]);
  close(sv[0]);
  close(sv[1]);
}

TEST(EventLoopTest, PostRunsOnLoopThreadAndStopEndsRun) {
  EventLoop loop;
  std::atomic<int> ran{0};
  std::thread::id loop_thread;
  std::thread t([&] {
    loop_thread = std::this_thread::get_id();
    loop.Run();
  });
  std::thread::id seen;
  loop.Post([&] {
    seen = std::this_thread::get_id();
    ran = 1;
  });
  while (ran.load() == 0) std::this_thread::yield();
  loop.Stop();
  t.join();
  EXPECT_EQ(seen, loop_thread);
}

struct Tick : EventLoop::Ticker {
  int ticks = 0;
  void OnTick(uint64_t) override { ++ticks; }
};
struct Idle : EventLoop::Idler {
  int runs = 0;
  void BeforeWait() override { ++runs; }
};

TEST(EventLoopTest, TickersFireAndIdlersRunEachIteration) {
  EventLoop loop;
  Tick tick;
  Idle idle;
  loop.AddTicker(&tick, 10);
  loop.AddIdler(&idle);
  uint64_t until = MonotonicNanos() + 200'000'000;
  int iterations = 0;
  while (MonotonicNanos() < until) {
    loop.RunOnce(-1);  // wakes for the ticker; never blocks forever
    ++iterations;
  }
  EXPECT_GE(tick.ticks, 5);
  EXPECT_EQ(idle.runs, iterations);
  loop.RemoveTicker(&tick);
  loop.RemoveIdler(&idle);
}

// Appends its name to a shared log when it runs.
struct Named : EventLoop::Idler {
  Named(std::string* out, char c) : log(out), name(c) {}
  void BeforeWait() override { log->push_back(name); }
  std::string* log;
  char name;
};

TEST(EventLoopTest, LastIdlersRunAfterEveryOtherIdlerWhenEverAdded) {
  EventLoop loop;
  std::string log;
  Named a(&log, 'a'), z(&log, 'z'), b(&log, 'b');
  loop.AddIdler(&a);
  loop.AddIdler(&z, /*last=*/true);
  loop.AddIdler(&b);  // added after the last one, still runs before it
  loop.RunOnce(0);
  EXPECT_EQ(log, "abz");
  loop.RemoveIdler(&z);
  log.clear();
  loop.RunOnce(0);
  EXPECT_EQ(log, "ab");
  loop.RemoveIdler(&a);
  loop.RemoveIdler(&b);
}

// Calls Wake() from inside the loop at a chosen point, then records whether
// the following RunOnce(timeout) came back before its timeout.
struct WakeOnce : EventLoop::Idler, EventLoop::Handler {
  EventLoop* loop = nullptr;
  bool wake_in_idler = false;
  int fd = -1;
  void BeforeWait() override {
    if (wake_in_idler) {
      wake_in_idler = false;
      loop->Wake();
    }
  }
  void OnEvents(uint32_t) override {
    char b[64];
    while (read(fd, b, sizeof(b)) > 0) {
    }
    loop->Wake();  // from a handler: the next iteration must not block
  }
};

uint64_t MillisOfRunOnce(EventLoop* loop, int timeout_ms) {
  uint64_t start = MonotonicNanos();
  loop->RunOnce(timeout_ms);
  return (MonotonicNanos() - start) / 1000000;
}

TEST(EventLoopTest, WakeFromAnIdlerKeepsThisIterationFromBlocking) {
  EventLoop loop;
  WakeOnce w;
  w.loop = &loop;
  loop.AddIdler(&w);
  w.wake_in_idler = true;
  EXPECT_LT(MillisOfRunOnce(&loop, 5000), 4000u);
  loop.RemoveIdler(&w);
}

TEST(EventLoopTest, WakeFromAHandlerKeepsTheNextIterationFromBlocking) {
  EventLoop loop;
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  WakeOnce w;
  w.loop = &loop;
  w.fd = sv[0];
  ASSERT_TRUE(loop.Add(sv[0], EPOLLIN | EPOLLET, &w).ok());
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  loop.RunOnce(5000);  // the handler runs and wakes
  EXPECT_LT(MillisOfRunOnce(&loop, 5000), 4000u);
  loop.Remove(sv[0]);
  close(sv[0]);
  close(sv[1]);
}

TEST(EventLoopTest, WakeOutsideRunOnceStillWorksFromTheSameThread) {
  EventLoop loop;
  loop.Wake();  // not inside RunOnce: goes through the eventfd
  EXPECT_LT(MillisOfRunOnce(&loop, 5000), 4000u);
}

TEST(EventLoopTest, WakeFromAnotherThreadEndsABlockingWait) {
  EventLoop loop;
  std::atomic<bool> returned{false};
  std::thread t([&] {
    loop.RunOnce(10000);
    returned = true;
  });
  uint64_t deadline = MonotonicNanos() + 8'000'000'000ull;
  while (!returned.load() && MonotonicNanos() < deadline) {
    loop.Wake();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  t.join();
  EXPECT_TRUE(returned.load());
}

}  // namespace
}  // namespace tandem

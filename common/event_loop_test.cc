#include "common/event_loop.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
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

}  // namespace
}  // namespace tandem

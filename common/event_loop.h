#pragma once
// EventLoop: a single-threaded epoll reactor. The replica server, the replica
// client and (later) the volume target each run their sockets and their storage
// backend's completion eventfd on one loop, so a request is received, submitted,
// completed and answered on one thread with no cross-thread hand-off (waking a
// thread on the other vCPU costs ~60 us on our VMs).
//
// One iteration: run BeforeWait() of every Idler (flush batched sends, submit
// batched I/O), wait in epoll (optionally busy-polling first), dispatch ready
// handlers, run due Tickers, run posted closures.
//
// Thread-safety: Post() and Stop() may be called from any thread. Everything
// else must be called on the loop thread (or before Run() starts).
// Lifetimes: a registered Handler/Idler/Ticker must outlive its registration.

#include <sys/epoll.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "common/unique_fd.h"

namespace tandem {

class EventLoop {
 public:
  class Handler {
   public:
    // `events` is the epoll event mask (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP...).
    virtual void OnEvents(uint32_t events) = 0;

   protected:
    ~Handler() = default;
  };
  class Idler {
   public:
    // Runs once per iteration before the loop may sleep. Work queued here is
    // seen before the next wait (a handler that needs another pass calls
    // EventLoop::Wake()).
    virtual void BeforeWait() = 0;

   protected:
    ~Idler() = default;
  };
  class Ticker {
   public:
    virtual void OnTick(uint64_t now_ns) = 0;

   protected:
    ~Ticker() = default;
  };

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Non-OK only when epoll/eventfd could not be created.
  const Status& init_status() const { return init_status_; }

  Status Add(int fd, uint32_t events, Handler* handler);
  Status Modify(int fd, uint32_t events, Handler* handler);
  void Remove(int fd);

  // `last`: runs after every other idler of the iteration, whenever either
  // was added (the replica server's backend submit goes after the replica
  // clients' sends, so a write's remote legs leave before the local disk
  // submit's syscall: docs/performance.md, "Where the 3-replica QD1 time
  // goes").
  void AddIdler(Idler* idler, bool last = false);
  void RemoveIdler(Idler* idler);
  // OnTick runs roughly every `period_ms` (checked each iteration).
  void AddTicker(Ticker* ticker, uint32_t period_ms);
  void RemoveTicker(Ticker* ticker);

  // Before blocking in epoll, poll without sleeping for up to `us`
  // microseconds. Trades CPU for wake-up latency; 0 disables.
  void SetBusyPollMicros(uint32_t us) { busy_poll_us_ = us; }

  // Runs `fn` on the loop thread at the next iteration. Thread-safe. Not for
  // the per-I/O path (it allocates and locks).
  void Post(std::function<void()> fn);
  // Makes the next wait return immediately. Thread-safe. Called on the loop
  // thread while it runs this loop (from a handler, idler, ticker or posted
  // closure) it only sets a flag, so the per-I/O "come round before you
  // sleep" costs no syscall; from anywhere else it writes the eventfd.
  void Wake();

  // Runs until Stop().
  void Run();
  // One iteration, waiting at most timeout_ms (-1: until something happens).
  void RunOnce(int timeout_ms);
  void Stop();
  bool stopped() const { return stop_.load(std::memory_order_acquire); }
  // How many times the loop has finished its idlers and gone to wait. An
  // idler that records it in BeforeWait and finds it unchanged later knows
  // the loop has not waited since: work it is handed then (by an idler that
  // runs after it) would otherwise sit until the next iteration. Loop thread.
  uint64_t wait_count() const { return wait_count_; }

 private:
  struct TickerEntry {
    Ticker* ticker;
    uint64_t period_ns;
    uint64_t next_ns;
  };
  class WakeHandler;

  int NextTimeoutMs(int timeout_ms, uint64_t now_ns) const;
  void RunPosted();
  void RunTickers(uint64_t now_ns);

  Status init_status_;
  UniqueFd epfd_;
  UniqueFd wakefd_;
  WakeHandler* wake_handler_;
  uint32_t busy_poll_us_ = 0;
  // Wake() from the loop thread inside RunOnce: the next wait must not block.
  // Loop thread only.
  bool wake_pending_ = false;
  uint64_t wait_count_ = 0;  // loop thread only
  std::atomic<bool> stop_{false};
  std::vector<Idler*> idlers_;
  std::vector<Idler*> last_idlers_;
  std::vector<TickerEntry> tickers_;
  Mutex post_mu_;
  std::vector<std::function<void()>> posted_ GUARDED_BY(post_mu_);
  std::atomic<bool> has_posted_{false};
};

}  // namespace tandem

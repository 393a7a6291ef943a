#include "common/event_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/clock.h"

namespace tandem {

namespace {
// The loop whose RunOnce is on this thread's stack (null outside). Lets
// Wake() tell a call from inside the loop, which needs no syscall, from one
// made by another thread.
thread_local EventLoop* tls_running_loop = nullptr;
}  // namespace

class EventLoop::WakeHandler final : public EventLoop::Handler {
 public:
  explicit WakeHandler(int fd) : fd_(fd) {}
  void OnEvents(uint32_t) override {
    uint64_t v;
    // Drain; the eventfd only says "look at the posted queue / stop flag".
    while (::read(fd_, &v, sizeof(v)) == sizeof(v)) {
    }
  }

 private:
  int fd_;
};

EventLoop::EventLoop() : wake_handler_(nullptr) {
  epfd_.Reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epfd_.valid()) {
    init_status_ = PosixError("epoll_create1", errno);
    return;
  }
  wakefd_.Reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wakefd_.valid()) {
    init_status_ = PosixError("eventfd", errno);
    return;
  }
  wake_handler_ = new WakeHandler(wakefd_.get());
  init_status_ = Add(wakefd_.get(), EPOLLIN, wake_handler_);
}

EventLoop::~EventLoop() { delete wake_handler_; }

Status EventLoop::Add(int fd, uint32_t events, Handler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return PosixError("epoll_ctl ADD", errno);
  return Status::Ok();
}

Status EventLoop::Modify(int fd, uint32_t events, Handler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev) != 0)
    return PosixError("epoll_ctl MOD", errno);
  return Status::Ok();
}

void EventLoop::Remove(int fd) { epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr); }

void EventLoop::AddIdler(Idler* idler, bool last) {
  (last ? last_idlers_ : idlers_).push_back(idler);
}

void EventLoop::RemoveIdler(Idler* idler) {
  idlers_.erase(std::remove(idlers_.begin(), idlers_.end(), idler), idlers_.end());
  last_idlers_.erase(std::remove(last_idlers_.begin(), last_idlers_.end(), idler),
                     last_idlers_.end());
}

void EventLoop::AddTicker(Ticker* ticker, uint32_t period_ms) {
  uint64_t period = static_cast<uint64_t>(std::max<uint32_t>(period_ms, 1)) * 1000000ull;
  tickers_.push_back({ticker, period, MonotonicNanos() + period});
}

void EventLoop::RemoveTicker(Ticker* ticker) {
  tickers_.erase(std::remove_if(tickers_.begin(), tickers_.end(),
                                [ticker](const TickerEntry& e) { return e.ticker == ticker; }),
                 tickers_.end());
}

void EventLoop::Post(std::function<void()> fn) {
  {
    MutexLock lock(&post_mu_);
    posted_.push_back(std::move(fn));
  }
  has_posted_.store(true, std::memory_order_release);
  Wake();
}

void EventLoop::Wake() {
  if (tls_running_loop == this) {
    // On the loop thread, before the wait of this iteration or of the next:
    // RunOnce sees the flag and does not block. Writing the eventfd would
    // cost a write, an epoll wake-up and two reads per call.
    wake_pending_ = true;
    return;
  }
  uint64_t one = 1;
  ssize_t n = ::write(wakefd_.get(), &one, sizeof(one));
  (void)n;  // EAGAIN means the counter is already non-zero: the loop will wake.
}

void EventLoop::Stop() {
  stop_.store(true, std::memory_order_release);
  Wake();
}

void EventLoop::Run() {
  while (!stopped()) RunOnce(-1);
}

int EventLoop::NextTimeoutMs(int timeout_ms, uint64_t now_ns) const {
  int t = timeout_ms;
  for (const TickerEntry& e : tickers_) {
    int until = e.next_ns > now_ns ? static_cast<int>((e.next_ns - now_ns + 999999) / 1000000) : 0;
    if (t < 0 || until < t) t = until;
  }
  return t;
}

void EventLoop::RunPosted() {
  if (!has_posted_.load(std::memory_order_acquire)) return;
  std::vector<std::function<void()>> batch;
  {
    MutexLock lock(&post_mu_);
    batch.swap(posted_);
    has_posted_.store(false, std::memory_order_release);
  }
  for (auto& fn : batch) fn();
}

void EventLoop::RunTickers(uint64_t now_ns) {
  // Index loop: a tick may remove tickers.
  for (size_t i = 0; i < tickers_.size(); ++i) {
    if (tickers_[i].next_ns <= now_ns) {
      tickers_[i].next_ns = now_ns + tickers_[i].period_ns;
      tickers_[i].ticker->OnTick(now_ns);
    }
  }
}

void EventLoop::RunOnce(int timeout_ms) {
  EventLoop* outer = tls_running_loop;
  tls_running_loop = this;
  // Index loop: an idler may add or remove idlers.
  for (size_t i = 0; i < idlers_.size(); ++i) idlers_[i]->BeforeWait();
  for (size_t i = 0; i < last_idlers_.size(); ++i) last_idlers_[i]->BeforeWait();
  ++wait_count_;

  // A Wake() from the loop thread since the last wait (in the handlers,
  // tickers or posted closures of the previous iteration, or in the idlers
  // just run): do not block.
  if (wake_pending_) {
    wake_pending_ = false;
    timeout_ms = 0;
  }
  constexpr int kMaxEvents = 64;
  epoll_event events[kMaxEvents];
  int n = 0;
  if (busy_poll_us_ > 0 && timeout_ms != 0) {
    uint64_t until = MonotonicNanos() + busy_poll_us_ * 1000ull;
    do {
      n = epoll_wait(epfd_.get(), events, kMaxEvents, 0);
    } while (n == 0 && !has_posted_.load(std::memory_order_relaxed) && MonotonicNanos() < until);
  }
  if (n == 0) {
    int wait_ms = has_posted_.load(std::memory_order_acquire) ? 0 : timeout_ms;
    n = epoll_wait(epfd_.get(), events, kMaxEvents, NextTimeoutMs(wait_ms, MonotonicNanos()));
  }
  for (int i = 0; i < n; ++i) {
    static_cast<Handler*>(events[i].data.ptr)->OnEvents(events[i].events);
  }
  if (!tickers_.empty()) RunTickers(MonotonicNanos());
  RunPosted();
  tls_running_loop = outer;
}

}  // namespace tandem

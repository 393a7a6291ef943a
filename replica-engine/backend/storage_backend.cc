#include "replica-engine/backend/storage_backend.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/backend/backend_worker.h"

namespace tandem::backend {

const char* IoOpName(IoOp op) {
  switch (op) {
    case IoOp::kRead:
      return "READ";
    case IoOp::kWrite:
      return "WRITE";
    case IoOp::kFlush:
      return "FLUSH";
    case IoOp::kDiscard:
      return "DISCARD";
    case IoOp::kWriteZeroes:
      return "WRITE_ZEROES";
    case IoOp::kNop:
      return "NOP";
  }
  // Reachable only through a corrupted enum value (e.g. decoded from the wire
  // without validation); a string beats undefined behaviour in a log line.
  return "UNKNOWN";
}

struct StorageBackend::ThreadToken {
  std::atomic<bool> alive{true};
  const pid_t tid = ::gettid();  // for the message only
};

const std::shared_ptr<StorageBackend::ThreadToken>& StorageBackend::CurrentThreadToken() {
  // The token outlives its thread while a backend is bound to it (owner_ref_),
  // so a new thread's token never has a bound owner's address.
  struct Holder {
    std::shared_ptr<ThreadToken> token = std::make_shared<ThreadToken>();
    // Release: the exiting owner's last use of a backend happens-before the
    // next thread's take-over (which loads `alive` with acquire).
    ~Holder() { token->alive.store(false, std::memory_order_release); }
  };
  thread_local Holder holder;
  return holder.token;
}

bool StorageBackend::ChecksOwnerThread() {
#ifndef NDEBUG
  return true;
#else
  return false;
#endif
}

void StorageBackend::BindToCurrentThread() {
  MutexLock lock(&owner_mu_);
  owner_ref_ = CurrentThreadToken();
  owner_.store(owner_ref_.get(), std::memory_order_relaxed);
}

void StorageBackend::DetachFromThread() {
  MutexLock lock(&owner_mu_);
  owner_.store(nullptr, std::memory_order_relaxed);
  owner_ref_.reset();
}

void StorageBackend::OwnerMismatch(const char* call) {
  const std::shared_ptr<ThreadToken>& me = CurrentThreadToken();
  MutexLock lock(&owner_mu_);
  if (owner_ref_ == nullptr || !owner_ref_->alive.load(std::memory_order_acquire)) {
    // First use, after DetachFromThread(), or the owner thread has exited.
    owner_ref_ = me;
    owner_.store(me.get(), std::memory_order_relaxed);
    return;
  }
  if (owner_ref_ == me) return;
  std::fprintf(stderr,
               "FATAL: StorageBackend one-thread contract violated: %s backend %p: %s() called "
               "on thread %d while the backend belongs to thread %d, which is still running. "
               "Queue/Submit/Reap belong to one thread (an event loop): use one backend per "
               "thread, or hand it over with DetachFromThread()/BindToCurrentThread() "
               "(replica-engine/backend/storage_backend.h).\n",
               Name(), static_cast<void*>(this), call, static_cast<int>(me->tid),
               static_cast<int>(owner_ref_->tid));
  std::abort();
}

}  // namespace tandem::backend

// --- BackendWorker (backend_worker.h) ---------------------------------------

namespace tandem::backend {

BackendWorker::~BackendWorker() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

Status BackendWorker::Start(unsigned threads) {
  // Workers take no signals: the daemon takes its own synchronously
  // (sigwait), and a worker must never run a handler meant for the loop.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  Status st;
  while (threads_.size() < threads) {
    try {
      threads_.emplace_back([this] { Run(); });
    } catch (const std::system_error& e) {
      st = Status::Unavailable(std::string("backend worker thread: ") + e.what());
      break;
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return st;
}

void BackendWorker::Post(IoRequest* req) {
  ++outstanding_;
  {
    MutexLock lock(&mu_);
    queue_.PushBack(req);
  }
  cv_.notify_one();
}

void BackendWorker::TakeCompleted(IoRequestQueue* out) {
  IoRequestQueue taken;
  {
    MutexLock lock(&mu_);
    taken.SpliceBack(&done_);
  }
  for (IoRequest* r = taken.front(); r != nullptr; r = r->next_) --outstanding_;
  out->SpliceBack(&taken);
}

void BackendWorker::ArmSubmitRetry() {
  if (threads_.empty()) {
    Status st = Start(1);
    if (threads_.empty()) {
      static std::atomic<bool> logged{false};
      if (!logged.exchange(true)) {
        TLOG_ERROR("backend", "%s; retrying refused submissions without a pause",
                   st.ToString().c_str());
      }
      WriteCompletionFd();
      return;
    }
  }
  {
    MutexLock lock(&mu_);
    if (wake_armed_) return;  // the pending wake-up covers this refusal too
    wake_armed_ = true;
    wake_at_ = std::chrono::steady_clock::now() + backoff_;
  }
  backoff_ = std::min(backoff_ * 2, kMaxRetry);
  cv_.notify_all();  // the waiter on the timer may be any thread
}

void BackendWorker::SetHookForTesting(HookFn hook, void* arg) {
  MutexLock lock(&mu_);
  hook_ = hook;
  hook_arg_ = arg;
}

void BackendWorker::WriteCompletionFd() const { eventfd_write(completion_fd_, 1); }

void BackendWorker::Run() {
  MutexLock lock(&mu_);
  while (!stop_) {
    if (IoRequest* req = queue_.PopFront()) {
      const HookFn hook = hook_;
      void* const hook_arg = hook_arg_;
      lock.Unlock();
      if (hook != nullptr) hook(*req, hook_arg);
      req->result = exec_(*req);
      lock.Lock();
      done_.PushBack(req);
      WriteCompletionFd();
      continue;
    }
    if (wake_armed_) {
      if (std::chrono::steady_clock::now() >= wake_at_) {
        wake_armed_ = false;
        WriteCompletionFd();
        continue;
      }
      lock.WaitUntil(&cv_, wake_at_);
    } else {
      lock.Wait(&cv_);
    }
  }
}

void WaitAndDrainCompletionFd(int fd, uint64_t deadline_ns) {
  pollfd p{fd, POLLIN, 0};
  timespec ts{};
  timespec* tsp = nullptr;
  if (deadline_ns != 0) {
    const uint64_t now = MonotonicNanos();
    const uint64_t left = deadline_ns > now ? deadline_ns - now : 0;
    ts.tv_sec = static_cast<time_t>(left / 1000000000);
    ts.tv_nsec = static_cast<long>(left % 1000000000);
    tsp = &ts;
  }
  if (::ppoll(&p, 1, tsp, nullptr) == 1) {
    eventfd_t drained;
    eventfd_read(fd, &drained);
  }
}

}  // namespace tandem::backend

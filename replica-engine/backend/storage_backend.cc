#include "replica-engine/backend/storage_backend.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

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
  std::lock_guard<std::mutex> lock(owner_mu_);
  owner_ref_ = CurrentThreadToken();
  owner_.store(owner_ref_.get(), std::memory_order_relaxed);
}

void StorageBackend::DetachFromThread() {
  std::lock_guard<std::mutex> lock(owner_mu_);
  owner_.store(nullptr, std::memory_order_relaxed);
  owner_ref_.reset();
}

void StorageBackend::OwnerMismatch(const char* call) {
  const std::shared_ptr<ThreadToken>& me = CurrentThreadToken();
  std::lock_guard<std::mutex> lock(owner_mu_);
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

#pragma once
// BackendWorker: the threads a StorageBackend keeps beside its owner loop.
// Internal to the backends (implemented in storage_backend.cc).
//
// - Offloaded calls. Post() hands a request whose syscall would block the loop
//   (libaio has no usable async fdatasync/fallocate) to a worker thread, which
//   runs `exec(req)`, stores the result in req->result, appends the request to
//   a completed list and writes the completion fd. The owner takes that list
//   with TakeCompleted() from Reap() and runs `done` itself: the workers run
//   the syscall and the hand-over, nothing else, so Queue/Submit/Reap and every
//   `done` stay on the owner thread (the one-thread contract). Both lists are
//   intrusive (IoRequest::next_): nothing is allocated per request.
// - Submit retry. After the kernel refused a submission, ArmSubmitRetry() has
//   a worker write the completion fd after a backoff (1 ms, doubling up to
//   64 ms while refusals continue; SubmitAccepted() resets it), so an owner
//   loop sleeping in epoll comes back and its Reap() submits again even when
//   nothing else is in flight. A backend without offloaded calls (io_uring)
//   starts its one thread at the first refusal; if no thread can be created
//   the fd is written at once (the loop retries without a pause rather than
//   never).
//
// Post/TakeCompleted/outstanding/ArmSubmitRetry/SubmitAccepted run on the
// owner thread.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "replica-engine/backend/storage_backend.h"

namespace tandem::backend {

class BackendWorker {
 public:
  // Runs on a worker thread; returns the request's result (bytes or -errno).
  using ExecFn = int32_t (*)(const IoRequest& req);
  // Test seam: runs on the worker thread just before `exec`.
  using HookFn = void (*)(const IoRequest& req, void* arg);

  static constexpr std::chrono::nanoseconds kFirstRetry = std::chrono::milliseconds(1);
  static constexpr std::chrono::nanoseconds kMaxRetry = std::chrono::milliseconds(64);

  // `exec` may be null when nothing is ever posted (retry only).
  explicit BackendWorker(ExecFn exec = nullptr) : exec_(exec) {}
  // Stops and joins the threads (a call in progress finishes first). Requests
  // posted and not yet taken are abandoned: REQUIRES outstanding() == 0.
  ~BackendWorker();
  BackendWorker(const BackendWorker&) = delete;
  BackendWorker& operator=(const BackendWorker&) = delete;

  // The fd the workers write (the backend's completion eventfd). Before Start.
  void SetCompletionFd(int fd) { completion_fd_ = fd; }
  // Starts threads until `threads` run. UNAVAILABLE when one cannot be created
  // (the ones running keep working).
  Status Start(unsigned threads);
  size_t threads() const { return threads_.size(); }

  // Hands `req` to a worker. REQUIRES threads() > 0 and a non-null `exec`.
  void Post(IoRequest* req);
  // Moves the requests the workers finished since the last call, in
  // completion order, to the back of *out.
  void TakeCompleted(IoRequestQueue* out);
  // Posted and not yet taken.
  uint32_t outstanding() const { return outstanding_; }

  void ArmSubmitRetry();
  void SubmitAccepted() { backoff_ = kFirstRetry; }

  void SetHookForTesting(HookFn hook, void* arg);

 private:
  void Run();
  void WriteCompletionFd() const;

  const ExecFn exec_;
  int completion_fd_ = -1;
  std::vector<std::thread> threads_;

  // Owner thread.
  uint32_t outstanding_ = 0;
  std::chrono::nanoseconds backoff_ = kFirstRetry;

  Mutex mu_;
  std::condition_variable cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  IoRequestQueue queue_ GUARDED_BY(mu_);
  IoRequestQueue done_ GUARDED_BY(mu_);
  bool wake_armed_ GUARDED_BY(mu_) = false;
  std::chrono::steady_clock::time_point wake_at_ GUARDED_BY(mu_);
  HookFn hook_ GUARDED_BY(mu_) = nullptr;
  void* hook_arg_ GUARDED_BY(mu_) = nullptr;
};

// Waits until `fd` (an eventfd) is readable or `deadline_ns` (MonotonicNanos;
// 0: no limit) passes, then drains it. For a blocking Reap whose completions
// do not all come through the kernel's own wait (worker results, retries).
void WaitAndDrainCompletionFd(int fd, uint64_t deadline_ns);

}  // namespace tandem::backend

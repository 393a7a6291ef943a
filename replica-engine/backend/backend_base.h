#pragma once
// BackendBase: what UringBackend and AioBackend share below the kernel
// interface (issue 11: they carried the same code twice): the request FIFO,
// the admission check every queued request passes, requests completed
// without the kernel (a bad request, kNop, a refused submission) and the
// completion of one request. The owner-thread contract is StorageBackend's;
// everything here runs on the owner thread.

#include <cstdint>

#include "common/unique_fd.h"
#include "replica-engine/backend/storage_backend.h"

namespace tandem::backend {

class BackendBase : public StorageBackend {
 public:
  int CompletionFd() const override { return event_fd_.get(); }
  uint32_t InFlight() const override { return in_flight_; }

 protected:
  BackendBase() = default;

  using RequestList = IoRequestQueue;

  // The start of every Queue(): counts the request in flight and resets its
  // scratch. False when it was completed locally instead (invalid: the
  // -errno of the contract in storage_backend.h; kNop: 0); true when it must
  // go to the kernel (or a worker).
  bool Admit(IoRequest* req);
  // Completes `req` with `result` at the next Reap without involving the
  // kernel; signals the completion fd so an epoll owner calls Reap.
  void CompleteLocally(IoRequest* req, int32_t result);
  // Runs the local completions queued so far; returns how many ran.
  int RunLocalCompletions();
  // Sets the result, stops counting the request, runs `done`.
  void Finish(IoRequest* req, int32_t result);

  // The completion eventfd, created by the backend's Init(). Declared here,
  // so it outlives every member of the derived backends (e.g. a worker
  // thread that writes it).
  UniqueFd event_fd_;
  uint32_t in_flight_ = 0;  // queued and not yet completed

 private:
  RequestList local_done_;
};

}  // namespace tandem::backend

#pragma once
// UringBackend: StorageBackend on io_uring (liburing). See storage_backend.h for
// the contract shared with AioBackend; this header adds what is specific here.
//
// - Queue() writes an SQE straight into the submission ring (no syscall);
//   Submit() is one io_uring_submit for the batch; Reap() submits and waits in
//   one io_uring_enter (io_uring_submit_and_wait_timeout).
// - At most queue_depth requests are in the ring at once (SQ + kernel), so the
//   CQ ring (2x) can never overflow. Requests beyond that wait on an intrusive
//   overflow list (IoRequest::next_) and enter the ring as completions free
//   room, from Submit() or Reap().
// - With options.register_files, OpenFile() puts the fd into a sparse
//   registered-file table (IORING_REGISTER_FILES) and requests use
//   IOSQE_FIXED_FILE, saving the per-request fd lookup. Descriptors not opened
//   through OpenFile() still work (they go unregistered).
// - kFlush is IORING_OP_FSYNC(DATASYNC); kDiscard / kWriteZeroes are
//   IORING_OP_FALLOCATE with PUNCH_HOLE / ZERO_RANGE (| KEEP_SIZE), which the
//   kernel implements for block devices too (zero-out with / without unmap).
// - The completion eventfd is registered with the ring (io_uring_register_eventfd)
//   and also signalled when a request completes without reaching the kernel,
//   and by the submit retry (storage_backend.h) after io_uring_enter refused a
//   submission (-EAGAIN/-EBUSY); its BackendWorker thread starts at the first
//   refusal, so a backend that never sees one has no thread of its own.
// - REQUIRES at destruction: InFlight() == 0. The destructor still waits for
//   requests the kernel owns so it never frees a ring with DMA in progress, but
//   their `done` is not called.

#include <liburing.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "replica-engine/backend/backend_base.h"
#include "replica-engine/backend/backend_worker.h"

namespace tandem::backend {

class UringBackend final : public BackendBase {
 public:
  // UNAVAILABLE when the ring cannot be created (EPERM from seccomp or
  // kernel.io_uring_disabled, ENOSYS, or TANDEM_DISABLE_IO_URING=1 in the
  // environment, which tests use to force the libaio fallback).
  static Result<std::unique_ptr<UringBackend>> Create(const BackendOptions& options);
  ~UringBackend() override;

  const char* Name() const override { return "io_uring"; }
  Result<int> OpenFile(const char* path, bool create) override;
  void CloseFile(int fd) override;
  void Queue(IoRequest* req) override;
  int Submit() override;
  int Reap(int min_complete, int64_t timeout_us) override;
  bool CompletionsReady() const override;

  // Whether the sparse file table was registered (false when disabled by
  // options or refused by the kernel). For tests and diagnostics.
  bool files_registered() const { return files_registered_; }

 private:
  // Descriptors below this are looked up in fixed_index_; higher ones run
  // unregistered.
  static constexpr int kFdTableSize = 4096;

  explicit UringBackend(const BackendOptions& options);
  Status Init();

  // One io_uring_enter: submits what the SQ holds and waits for `wait_nr`
  // completions (bounded by `ts`); arms the submit retry when the kernel
  // refuses the submission. Returns the liburing result.
  int Enter(unsigned wait_nr, __kernel_timespec* ts);
  // Puts `req` into the ring if there is room, else on the overflow list.
  void Enqueue(IoRequest* req);
  // Writes one SQE for `req` (the remainder of a short transfer included).
  // REQUIRES: in_ring_ < depth_.
  void PrepSqe(IoRequest* req);
  // Moves overflow requests into the ring while it has room.
  void FillFromOverflow();
  // Consumes every available CQE; returns how many `done` callbacks ran.
  int DrainCompletions();
  // Handles one CQE; returns true when `done` ran (false when resubmitted).
  bool OnCompletion(IoRequest* req, int32_t res);

  io_uring ring_{};
  bool ring_ready_ = false;
  const uint32_t depth_;
  const bool want_registered_files_;
  bool files_registered_ = false;

  // I/O-thread state.
  uint32_t in_ring_ = 0;  // SQE written, CQE not yet consumed
  RequestList overflow_;
  bool in_reap_ = false;

  // fd -> registered-file slot, -1 when unregistered. Written under files_mu_
  // by OpenFile/CloseFile (any thread), read lock-free by the I/O thread.
  std::mutex files_mu_;
  std::vector<int> free_slots_;  // GUARDED_BY(files_mu_)
  std::array<std::atomic<int32_t>, kFdTableSize> fixed_index_;

  // Submit retry only. Destroyed (thread joined) before BackendBase's
  // event_fd_ closes.
  BackendWorker worker_;
};

}  // namespace tandem::backend

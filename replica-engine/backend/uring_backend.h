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
//   through OpenFile() still work (they go unregistered). uring_file_table.h
//   has how updates from other threads reach a SINGLE_ISSUER ring.
// - With options.single_issuer the ring is SINGLE_ISSUER + DEFER_TASKRUN where
//   the kernel has them (6.1+, x86-64; else COOP_TASKRUN): completions
//   are posted only when the owner enters the kernel to reap, so a disk
//   completion never interrupts the loop (no EINTR out of epoll_wait, no task
//   work on every return to user space); the registered eventfd is signalled
//   when the first completion is waiting. Reap() keeps that eventfd quiet
//   while it posts and consumes completions itself, so a reap does not leave
//   behind an edge that wakes the loop for nothing: one wake-up per
//   completion batch. The ring is created disabled and the owner's first
//   Queue/Submit/Reap enables it, making that thread its issuer; an owner
//   that hands the backend to another thread (storage_backend.h) hands over
//   an idle ring, and the new owner's first call replaces it with a new one
//   (same eventfd, same registered files), since an issuer never changes.
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

#include <memory>

#include "common/result.h"
#include "common/unique_fd.h"
#include "replica-engine/backend/backend_base.h"
#include "replica-engine/backend/backend_worker.h"
#include "replica-engine/backend/uring_file_table.h"

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
  bool files_registered() const { return files_.registered(); }
  // The registered slot of `fd` as the owner sees it (-1: none). Tests.
  int32_t RegisteredSlot(int fd) const { return files_.SlotOf(fd); }
  // File-table updates from other threads waiting for the owner. Tests.
  size_t QueuedFileUpdates() { return files_.queued(); }
  size_t FreeFileSlots() { return files_.free_slots(); }
  // Whether the ring is SINGLE_ISSUER + DEFER_TASKRUN. Tests, diagnostics.
  bool single_issuer() const { return single_issuer_; }

 private:
  explicit UringBackend(const BackendOptions& options);
  Status Init();
  // Creates the ring (flags as the kernel allows), registers the eventfd and
  // the file table. A SINGLE_ISSUER ring is left disabled.
  Status SetupRing();
  // First thing in Queue/Submit/Reap on a SINGLE_ISSUER ring: a thread that
  // is not the ring's issuer adopts it (enables it, or replaces it when
  // another thread was the issuer).
  void AdoptIfForeign() {
    if (single_issuer_ && issuer_ != ThreadSerial()) Adopt();
  }
  void Adopt();
  // Turns the ring's signalling of the eventfd off (while Reap posts and
  // takes completions itself) or back on. SINGLE_ISSUER only; a flag in
  // shared memory, no syscall.
  void QuietEventfd(bool quiet);
  // Any thread: makes the completion fd readable, so the owner's loop calls
  // Reap (which applies queued file-table updates).
  void WakeOwner();

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
  const bool want_single_issuer_;
  bool single_issuer_ = false;  // set by SetupRing
  // Owner thread: the ThreadSerial of the ring's issuer, 0 while the ring is
  // not enabled.
  uint64_t issuer_ = 0;

  // I/O-thread state.
  uint32_t in_ring_ = 0;  // SQE written, CQE not yet consumed
  RequestList overflow_;
  bool in_reap_ = false;

  UringFileTable files_;

  // Submit retry only. Destroyed (thread joined) before BackendBase's
  // event_fd_ closes.
  BackendWorker worker_;
};

}  // namespace tandem::backend

#pragma once
// AioBackend: StorageBackend on Linux native AIO (libaio). See storage_backend.h
// for the contract shared with UringBackend; this header adds what is specific.
//
// - A pool of queue_depth iocbs is allocated at construction (free list); a
//   request holds one only while the kernel owns it. Requests beyond that wait
//   on an intrusive list (IoRequest::next_) and are submitted, in order, by a
//   later Submit()/Reap() as completions return iocbs. io_submit -EAGAIN
//   likewise leaves them queued, and arms the submit retry (storage_backend.h).
// - kRead/kWrite are IOCB_CMD_PREAD/PWRITE; kFlagFua sets aio_rw_flags =
//   RWF_DSYNC. Every iocb carries IOCB_FLAG_RESFD, so CompletionFd() is
//   signalled by the kernel per completion.
// - kFlush, kDiscard and kWriteZeroes have no usable async form (most
//   filesystems reject IOCB_CMD_FDSYNC), so Submit() hands them to
//   options.aio_sync_threads worker threads (BackendWorker), which run
//   fdatasync(2) / fallocate(2) and write the completion fd; the owner's next
//   Reap() runs their `done`. A slow fdatasync thus holds up neither the loop
//   nor the other requests, and with two workers not even one other flush.
//   A flush covers every write that completed (in the kernel) before that
//   Submit() — the block-layer guarantee; it does not order against writes
//   still in flight.
// - REQUIRES at destruction: InFlight() == 0. io_destroy waits for requests
//   the kernel still owns, without calling their `done`.

#include <libaio.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "replica-engine/backend/backend_base.h"
#include "replica-engine/backend/backend_worker.h"

namespace tandem::backend {

class AioBackend final : public BackendBase {
 public:
  // UNAVAILABLE when io_setup fails (e.g. EAGAIN: fs.aio-max-nr exhausted).
  static Result<std::unique_ptr<AioBackend>> Create(const BackendOptions& options);
  ~AioBackend() override;

  const char* Name() const override { return "libaio"; }
  Result<int> OpenFile(const char* path, bool create) override;
  void CloseFile(int fd) override;
  void Queue(IoRequest* req) override;
  int Submit() override;
  int Reap(int min_complete, int64_t timeout_us) override;

  // Test seam: `hook` runs on the worker thread before each flush / discard /
  // write-zeroes syscall (e.g. to hold one back, as a slow device would).
  // Null clears it.
  using SyncOpHook = BackendWorker::HookFn;
  void SetSyncOpHookForTesting(SyncOpHook hook, void* arg) { worker_.SetHookForTesting(hook, arg); }

 private:
  explicit AioBackend(const BackendOptions& options);
  Status Init();

  // A flush/discard/write-zeroes, on a worker thread: returns its result.
  static int32_t ExecSyncOp(const IoRequest& req);
  // Runs `done` for what the workers finished; returns how many ran.
  int RunWorkerCompletions();
  void PrepIocb(iocb* cb, IoRequest* req);
  // Handles one io_event; returns true when `done` ran (false when resubmitted).
  bool OnCompletion(iocb* cb, long res);

  io_context_t ctx_ = nullptr;
  const uint32_t depth_;
  const uint32_t sync_threads_;

  std::vector<iocb> iocbs_;        // the pool
  std::vector<iocb*> free_iocbs_;  // stack of unused pool entries
  std::vector<iocb*> batch_;       // io_submit argument
  std::vector<io_event> events_;   // io_getevents result

  uint32_t in_kernel_ = 0;  // iocbs the kernel owns
  RequestList pending_;     // reads/writes waiting for an iocb / io_submit
  RequestList sync_ops_;    // flush/discard/write-zeroes for the next Submit
  bool in_reap_ = false;
  // Destroyed (threads joined) before BackendBase's event_fd_ closes.
  BackendWorker worker_;
};

}  // namespace tandem::backend

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
#include "replica-engine/backend/backend_worker.h"
#include "replica-engine/backend/storage_backend.h"

namespace tandem::backend {

class AioBackend final : public StorageBackend {
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
  int CompletionFd() const override { return event_fd_.get(); }
  uint32_t InFlight() const override { return in_flight_; }

  // Test seam: `hook` runs on the worker thread before each flush / discard /
  // write-zeroes syscall (e.g. to hold one back, as a slow device would).
  // Null clears it.
  using SyncOpHook = BackendWorker::HookFn;
  void SetSyncOpHookForTesting(SyncOpHook hook, void* arg) { worker_.SetHookForTesting(hook, arg); }

 private:
  // FIFO of requests linked through IoRequest::next_.
  struct RequestList {
    IoRequest* head = nullptr;
    IoRequest* tail = nullptr;
    bool empty() const { return head == nullptr; }
    void PushBack(IoRequest* r) {
      r->next_ = nullptr;
      if (tail != nullptr) {
        tail->next_ = r;
      } else {
        head = r;
      }
      tail = r;
    }
    void PushFront(IoRequest* r) {
      r->next_ = head;
      head = r;
      if (tail == nullptr) tail = r;
    }
    IoRequest* PopFront() {
      IoRequest* r = head;
      head = r->next_;
      if (head == nullptr) tail = nullptr;
      r->next_ = nullptr;
      return r;
    }
  };

  explicit AioBackend(const BackendOptions& options);
  Status Init();

  // A flush/discard/write-zeroes, on a worker thread: returns its result.
  static int32_t ExecSyncOp(const IoRequest& req);
  // Runs `done` for what the workers finished; returns how many ran.
  int RunWorkerCompletions();
  void PrepIocb(iocb* cb, IoRequest* req);
  void CompleteLocally(IoRequest* req, int32_t result);
  int RunLocalCompletions();
  // Handles one io_event; returns true when `done` ran (false when resubmitted).
  bool OnCompletion(iocb* cb, long res);
  void Finish(IoRequest* req, int32_t result);

  io_context_t ctx_ = nullptr;
  const uint32_t depth_;
  const uint32_t sync_threads_;
  UniqueFd event_fd_;

  std::vector<iocb> iocbs_;        // the pool
  std::vector<iocb*> free_iocbs_;  // stack of unused pool entries
  std::vector<iocb*> batch_;       // io_submit argument
  std::vector<io_event> events_;   // io_getevents result

  uint32_t in_flight_ = 0;  // queued and not yet completed
  uint32_t in_kernel_ = 0;  // iocbs the kernel owns
  RequestList pending_;     // reads/writes waiting for an iocb / io_submit
  RequestList sync_ops_;    // flush/discard/write-zeroes for the next Submit
  RequestList local_done_;  // completed without the kernel, for the next Reap
  bool in_reap_ = false;
  // After event_fd_: destroyed (threads joined) before the fd closes.
  BackendWorker worker_;
};

}  // namespace tandem::backend

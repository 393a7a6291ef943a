#pragma once
// FuseExport's internals, shared by fuse_export.cc (lifecycle),
// fuse_request_slot.cc (worker <-> loop bridge) and fuse_file_ops.cc (the
// FUSE operations). Not part of the API.

#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/event_loop.h"
#include "common/intrusive_list.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "replica-engine/block_device/block_device.h"
#include "replica-engine/frontend/fuse_export.h"

namespace tandem::frontend {

inline constexpr fuse_ino_t kFileIno = 2;  // FUSE_ROOT_ID (1) is the directory

// One FUSE request on its way to the device. Owned by one worker thread
// (kept in Impl so that it outlives device requests abandoned at teardown).
struct FuseSlot {
  static constexpr uint32_t kParts = 4;
  // state bits: the worker waits (futex) until kDone or kAbandoned is set.
  static constexpr uint32_t kIdle = 0;
  static constexpr uint32_t kQueued = 1;
  static constexpr uint32_t kDone = 2;
  static constexpr uint32_t kAbandoned = 4;

  target::BlockRequest parts[kParts];
  FuseExport::Impl* impl = nullptr;
  // The request (set by the worker before queueing; read on the loop).
  target::BlockOp op = target::BlockOp::kRead;
  uint32_t flags = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint8_t* buf = nullptr;  // kRead: destination; kWrite: source
  // Loop-side progress.
  uint64_t next = 0;        // bytes handed to the device
  uint32_t parts_busy = 0;  // bit i: parts[i] is on the device
  StatusCode status = StatusCode::kOk;
  FuseSlot* next_queued = nullptr;

  std::atomic<uint32_t> state{kIdle};
  uint8_t* read_buf = nullptr;  // max_request + 2 blocks, 4 KiB aligned
  fuse_buf fbuf = {};           // libfuse's receive buffer (malloc'd by libfuse)
};

class FuseExport::Impl final : private EventLoop::Idler {
 public:
  Impl(EventLoop* loop, target::BlockDevice* device, FuseExportOptions options);
  ~Impl();

  Status Prepare();
  Status Start();
  void Shutdown(void (*done)(void*), void* arg);
  ExportDescription Describe() const;
  // The export object goes away (loop thread). Returns true when `this` must
  // be deleted now, false when device requests are in flight (the last
  // completion deletes it).
  bool Destroy();

  std::string file_path() const { return options_.mount_dir + "/" + options_.file_name; }

  // --- worker side (fuse_file_ops.cc / fuse_request_slot.cc) ---
  // A handler that reaches the device brackets its work, up to and
  // including the reply, with BeginRequest/EndRequest: Shutdown aborts the
  // connection only when no handler is inside (a reply not yet written would
  // be lost). BeginRequest returns false once shutting down (answer EIO).
  bool BeginRequest();
  void EndRequest();
  // The write gate: a partial-block write (read-modify-write) must not
  // interleave with any other write, or a write landing between its read and
  // its write would be undone. Whole-block writes, trims and write-zeroes
  // bracket themselves with EnterWrite/ExitWrite (two atomic operations when
  // no partial write runs); a partial write holds ExclusiveWrite for its
  // whole read-modify-write. Worker threads only.
  void EnterWrite();
  void ExitWrite();
  void BeginExclusiveWrite();
  void EndExclusiveWrite();
  // Runs `slot`'s request on the device and waits for it. Returns 0 or a
  // positive errno. Worker thread only, between Begin/EndRequest.
  int Execute(FuseSlot* slot);
  static const fuse_lowlevel_ops& Ops();
  target::BlockDevice* device() const { return device_; }
  const FuseExportOptions& options() const { return options_; }
  uint64_t size() const { return size_.load(std::memory_order_acquire); }
  void SizeChanged();
  uint32_t block_size() const { return block_size_; }
  void CountRequest(bool error, uint64_t read_bytes, uint64_t written_bytes);

 private:
  enum class State { kNew, kPrepared, kRunning, kDraining, kTearingDown, kStopped };

  // Prepare's parts: options and geometry; slots and their read buffers.
  Status CheckOptions();
  Status AllocateSlots();
  Status Mount();
  void StartWorkers();
  void WorkerMain(FuseSlot* slot);
  // Aborts the connection, joins the workers (bounded), unmounts, removes the
  // directory. Any thread; once.
  void Teardown();
  void BeforeWait() override;
  void Finish();
  // Loop side of the bridge (fuse_request_slot.cc).
  void SubmitMore(FuseSlot* slot);
  static void OnPartDone(target::BlockRequest* part);
  void CompleteSlot(FuseSlot* slot);

  EventLoop* loop_;
  target::BlockDevice* device_;
  FuseExportOptions options_;
  std::atomic<uint64_t> size_{0};  // read by the workers
  uint32_t block_size_ = 0;
  // Largest piece handed to the device (max_io_size() in whole blocks); TRIM
  // and WRITE_ZEROES are cut the same way, as the NBD server does.
  uint64_t piece_ = 0;

  // The loop thread's, and Prepare's before Start (the hand-over to the loop
  // orders them).
  State state_ = State::kNew;
  bool idler_added_ = false;
  bool orphaned_ = false;  // the export is gone; delete at inflight_ == 0
  bool leaked_ = false;    // workers could not be stopped: never delete
  std::vector<std::pair<void (*)(void*), void*>> shutdown_done_;

  fuse_session* se_ = nullptr;
  bool mounted_ = false;
  bool created_dir_ = false;
  std::string conn_id_;                // fusectl connection directory name
  std::unique_ptr<FuseSlot[]> slots_;  // one per worker
  uint32_t nslots_ = 0;
  uint8_t* buffers_ = nullptr;  // one MAP_NORESERVE mapping for every read_buf
  size_t buffers_len_ = 0;
  std::vector<std::thread> workers_;
  Mutex exit_mu_;
  std::condition_variable exit_cv_;
  uint32_t workers_live_ GUARDED_BY(exit_mu_) = 0;
  std::thread stopper_;
  std::atomic<bool> teardown_done_{false};

  // Worker -> loop hand-off: a Treiber stack, drained whole by BeforeWait.
  std::atomic<FuseSlot*> queue_{nullptr};
  // Handlers between BeginRequest and EndRequest (Dekker with stopping_: a
  // worker increments, then checks stopping_).
  std::atomic<uint32_t> active_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> abandon_{false};  // Destroy: fail every Execute
  // Slots on the device (loop thread): an orphaned Impl lives until 0.
  uint32_t device_inflight_ = 0;

  std::atomic<uint32_t> writers_{0};    // whole-block writes in the gate
  std::atomic<bool> exclusive_{false};  // a partial write holds the gate
  std::mutex exclusive_mu_;             // one partial write at a time

  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> errors_{0};
  std::atomic<uint64_t> bytes_read_{0};
  std::atomic<uint64_t> bytes_written_{0};
};

// Positive errno for a device status.
int ErrnoForStatus(StatusCode code);

}  // namespace tandem::frontend

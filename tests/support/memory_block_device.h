#pragma once
// MemoryBlockDevice: a BlockDevice backed by anonymous memory, for tests of
// anything that submits to a BlockDevice (the NBD server, FUSE frontend...).
//
// It keeps the BlockDevice contract (block_device/block_device.h): loop-bound;
// `done` runs on the loop exactly once per request and never inside Submit()
// (requests are queued and completed from the loop's BeforeWait, or from a
// 1 ms Ticker when a delay is set); misaligned or out-of-range requests fail
// with INVALID_ARGUMENT / OUT_OF_RANGE, READ/WRITE above max_io_size() with
// INVALID_ARGUMENT. A request takes effect when it completes.
//
// Knobs for fault and timing tests (call on the loop thread, or before the
// loop runs): InjectError, SetDelayMs, Pause/Resume, SetReverseOrder.
//
// Thread-safety: none; everything on the loop thread. data() may be read from
// another thread while the loop is stopped.

#include <cstdint>

#include "common/event_loop.h"
#include "common/intrusive_list.h"
#include "common/status.h"
#include "replica-engine/block_device/block_device.h"

namespace tandem::frontend::testing {

struct MemoryBlockDeviceOptions {
  uint64_t size = 64ull << 20;
  // Memory reserved for SetSize() to grow into; 0: size.
  uint64_t capacity = 0;
  // Submit() wakes the loop so the request completes at the next iteration.
  // false: like a device that batches its sends in BeforeWait (VolumeTarget's
  // replica clients), a request submitted after this device's BeforeWait ran
  // waits until something else wakes the loop.
  bool wake_on_submit = true;
  uint32_t block_size = 512;
  uint32_t max_io_size = 1u << 20;
};

struct MemoryBlockDeviceStats {
  uint64_t submitted = 0;
  uint64_t completed = 0;
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t fua_writes = 0;
  uint64_t flushes = 0;
  uint64_t trims = 0;
  uint64_t write_zeroes = 0;
  uint64_t failed = 0;
  uint64_t max_inflight = 0;
  uint32_t largest_io = 0;
};

class MemoryBlockDevice final : public target::BlockDevice,
                                private EventLoop::Idler,
                                private EventLoop::Ticker {
 public:
  static constexpr uint32_t kForever = UINT32_MAX;

  // REQUIRES: loop outlives the device; size a multiple of block_size.
  MemoryBlockDevice(EventLoop* loop, MemoryBlockDeviceOptions options);
  // Requests still queued are dropped without completing.
  ~MemoryBlockDevice() override;
  MemoryBlockDevice(const MemoryBlockDevice&) = delete;
  MemoryBlockDevice& operator=(const MemoryBlockDevice&) = delete;

  // Non-OK when the memory could not be mapped.
  const Status& init_status() const { return init_status_; }

  uint64_t size() const override { return options_.size; }
  uint32_t block_size() const override { return options_.block_size; }
  uint32_t max_io_size() const override { return options_.max_io_size; }
  EventLoop* loop() override { return loop_; }
  void Submit(target::BlockRequest* req) override;

  // The next `count` requests of type `op` fail with `code` (kForever: until
  // ClearErrors()). One rule at a time; a new call replaces it.
  void InjectError(target::BlockOp op, StatusCode code, uint32_t count = kForever);
  void ClearErrors() { error_count_ = 0; }
  // Every request completes no earlier than `ms` after Submit (0: next
  // iteration).
  void SetDelayMs(uint32_t ms);
  // While paused nothing completes; Resume() lets queued requests complete.
  void Pause() { paused_ = true; }
  void Resume();
  // Grows or shrinks the device (a resized volume). REQUIRES: a multiple of
  // block_size, at most the capacity. Returns false otherwise.
  bool SetSize(uint64_t size);
  // Complete each batch last-submitted first (exercises out-of-order replies).
  void SetReverseOrder(bool reverse) { reverse_ = reverse; }

  uint32_t inflight() const { return inflight_; }
  const MemoryBlockDeviceStats& stats() const { return stats_; }
  uint8_t* data() { return data_; }

 private:
  void BeforeWait() override { CompleteDue(); }
  void OnTick(uint64_t) override { CompleteDue(); }
  void CompleteDue();
  StatusCode Execute(target::BlockRequest* req);

  EventLoop* loop_;
  MemoryBlockDeviceOptions options_;
  Status init_status_;
  uint8_t* data_ = nullptr;
  using RequestQueue = IntrusiveQueue<target::BlockRequest, &target::BlockRequest::next_>;
  RequestQueue queue_;
  uint32_t inflight_ = 0;
  bool paused_ = false;
  bool reverse_ = false;
  bool ticking_ = false;
  uint64_t delay_ns_ = 0;
  target::BlockOp error_op_ = target::BlockOp::kRead;
  StatusCode error_code_ = StatusCode::kOk;
  uint32_t error_count_ = 0;
  MemoryBlockDeviceStats stats_;
};

}  // namespace tandem::frontend::testing

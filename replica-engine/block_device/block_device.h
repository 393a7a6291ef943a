#pragma once
// BlockDevice: what a frontend export (NBD server, FUSE file) submits block
// requests to. The VolumeTarget (the mirror, target/) implements it; tests
// use a memory-backed one (tests/support/memory_block_device.h). A header
// of its own, below both, so that neither frontend/ nor target/ includes
// the other (docs/architecture.md, the link graph).
//
// Contract
// - Loop-bound: Submit() must be called on loop()'s thread, and `done` runs on
//   it, exactly once per request, never inside Submit() (a request that fails
//   immediately completes at the next loop iteration).
// - The BlockRequest and its buffer are owned by the caller until `done`.
//   Nothing is allocated per request: the scratch fields below are the
//   device's, inline.
// - kRead/kWrite: offset and length multiples of block_size(), 0 < length <=
//   max_io_size(); buf 4 KiB aligned is not required (the device copies as
//   needed). Misaligned or out-of-range requests complete with
//   INVALID_ARGUMENT / OUT_OF_RANGE.
// - kFlush: every write that completed before the flush was submitted is
//   durable on every replica that acknowledged it, when the flush completes.
// - kFlagFua on a write: durable when it completes.
// - Status: OK, or an error: the request had no effect that a later read can
//   rely on (UNAVAILABLE when no healthy replica is left, INTERNAL for an I/O
//   error, RESOURCE_EXHAUSTED for no space).

#include <cstdint>

#include "common/event_loop.h"
#include "common/status.h"

namespace tandem {

enum class BlockOp : uint8_t { kRead, kWrite, kFlush, kTrim, kWriteZeroes };

inline constexpr uint32_t kBlockFua = 1u << 0;

struct BlockRequest;
using BlockDoneFn = void (*)(BlockRequest* req);

struct BlockRequest {
  BlockOp op = BlockOp::kRead;
  uint32_t flags = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  void* buf = nullptr;                  // kRead: destination; kWrite: source
  StatusCode status = StatusCode::kOk;  // out
  BlockDoneFn done = nullptr;
  void* ctx = nullptr;

  // Device-private scratch.
  uint64_t scratch_[8] = {};
  BlockRequest* next_ = nullptr;
};

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;
  virtual uint64_t size() const = 0;
  virtual uint32_t block_size() const = 0;
  virtual uint32_t max_io_size() const = 0;
  virtual EventLoop* loop() = 0;
  virtual void Submit(BlockRequest* req) = 0;
};

// The names the device was first declared under (code written as
// target::BlockRequest keeps compiling); new code says tandem::BlockDevice.
namespace target {
using tandem::BlockDevice;
using tandem::BlockDoneFn;
using tandem::BlockOp;
using tandem::BlockRequest;
using tandem::kBlockFua;
}  // namespace target

}  // namespace tandem

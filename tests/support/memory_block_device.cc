#include "tests/support/memory_block_device.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/clock.h"

namespace tandem::frontend::testing {

using target::BlockOp;
using target::BlockRequest;

MemoryBlockDevice::MemoryBlockDevice(EventLoop* loop, MemoryBlockDeviceOptions options)
    : loop_(loop), options_(options) {
  // Anonymous memory reads as zeroes and is committed only where written, so
  // a large sparse test volume is cheap.
  if (options_.capacity < options_.size) options_.capacity = options_.size;
  void* p = mmap(nullptr, std::max<uint64_t>(options_.capacity, 1), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    init_status_ = PosixError("mmap memory block device", errno);
    return;
  }
  data_ = static_cast<uint8_t*>(p);
  loop_->AddIdler(this);
}

MemoryBlockDevice::~MemoryBlockDevice() {
  if (data_ == nullptr) return;
  loop_->RemoveIdler(this);
  if (ticking_) loop_->RemoveTicker(this);
  munmap(data_, std::max<uint64_t>(options_.capacity, 1));
}

void MemoryBlockDevice::InjectError(BlockOp op, StatusCode code, uint32_t count) {
  error_op_ = op;
  error_code_ = code;
  error_count_ = count;
}

void MemoryBlockDevice::SetDelayMs(uint32_t ms) {
  delay_ns_ = static_cast<uint64_t>(ms) * 1000000ull;
  if (ms > 0 && !ticking_) {
    loop_->AddTicker(this, 1);
    ticking_ = true;
  } else if (ms == 0 && ticking_) {
    loop_->RemoveTicker(this);
    ticking_ = false;
  }
}

bool MemoryBlockDevice::SetSize(uint64_t size) {
  if (size > options_.capacity || size % options_.block_size != 0) return false;
  options_.size = size;
  return true;
}

void MemoryBlockDevice::Resume() {
  paused_ = false;
  loop_->Wake();
}

void MemoryBlockDevice::Submit(BlockRequest* req) {
  ++stats_.submitted;
  ++inflight_;
  stats_.max_inflight = std::max<uint64_t>(stats_.max_inflight, inflight_);
  req->scratch_[0] = MonotonicNanos() + delay_ns_;
  bool was_empty = queue_.empty();
  queue_.PushBack(req);
  // Our BeforeWait may already have run in this iteration: make sure the loop
  // comes round again instead of sleeping on a queued request.
  if (was_empty && delay_ns_ == 0 && options_.wake_on_submit) loop_->Wake();
}

StatusCode MemoryBlockDevice::Execute(BlockRequest* req) {
  if (error_count_ > 0 && req->op == error_op_) {
    if (error_count_ != kForever) --error_count_;
    return error_code_;
  }
  if (req->op == BlockOp::kFlush) {
    ++stats_.flushes;
    return StatusCode::kOk;
  }
  uint64_t mask = options_.block_size - 1;
  if (req->length == 0 || (req->offset & mask) != 0 || (req->length & mask) != 0) {
    return StatusCode::kInvalidArgument;
  }
  if (req->offset > options_.size || req->length > options_.size - req->offset) {
    return StatusCode::kOutOfRange;
  }
  stats_.largest_io = std::max(stats_.largest_io, req->length);
  switch (req->op) {
    case BlockOp::kRead:
      if (req->length > options_.max_io_size) return StatusCode::kInvalidArgument;
      ++stats_.reads;
      memcpy(req->buf, data_ + req->offset, req->length);
      return StatusCode::kOk;
    case BlockOp::kWrite:
      if (req->length > options_.max_io_size) return StatusCode::kInvalidArgument;
      ++stats_.writes;
      if (req->flags & target::kBlockFua) ++stats_.fua_writes;
      memcpy(data_ + req->offset, req->buf, req->length);
      return StatusCode::kOk;
    case BlockOp::kTrim:
      ++stats_.trims;
      memset(data_ + req->offset, 0, req->length);
      return StatusCode::kOk;
    case BlockOp::kWriteZeroes:
      ++stats_.write_zeroes;
      memset(data_ + req->offset, 0, req->length);
      return StatusCode::kOk;
    case BlockOp::kFlush:
      break;
  }
  return StatusCode::kInvalidArgument;
}

void MemoryBlockDevice::CompleteDue() {
  if (paused_ || queue_.empty()) return;
  uint64_t now = MonotonicNanos();
  // Detach the due prefix first: `done` may submit new requests.
  RequestQueue batch;
  while (!queue_.empty() && queue_.front()->scratch_[0] <= now) {
    BlockRequest* r = queue_.PopFront();
    if (reverse_) {
      batch.PushFront(r);
    } else {
      batch.PushBack(r);
    }
  }
  while (BlockRequest* r = batch.PopFront()) {
    r->status = Execute(r);
    if (r->status != StatusCode::kOk) ++stats_.failed;
    ++stats_.completed;
    --inflight_;
    r->done(r);
  }
}

}  // namespace tandem::frontend::testing

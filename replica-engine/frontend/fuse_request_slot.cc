// The bridge between FUSE worker threads and the device's loop thread.
//
// A worker fills its slot and pushes it on a lock-free stack; only the push
// that finds the stack empty wakes the loop (one eventfd write per batch, not
// per request). The loop's BeforeWait takes the whole stack, restores FIFO
// order and submits. Completions run on the loop; the last part of a slot
// sets kDone and wakes the worker with a futex (std::atomic::notify_one).
// Large requests are cut into pieces of at most max_io_size() (read/write)
// and handed to the device kParts at a time.

#include <algorithm>
#include <cerrno>
#include <thread>

#include "replica-engine/frontend/fuse_export_impl.h"

namespace tandem::frontend {

int ErrnoForStatus(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 0;
    case StatusCode::kInvalidArgument:
      return EINVAL;
    case StatusCode::kOutOfRange:
    case StatusCode::kResourceExhausted:
      return ENOSPC;
    default:
      return EIO;
  }
}

bool FuseExport::Impl::BeginRequest() {
  // Dekker with Shutdown: count ourselves in first, then look at stopping_.
  // Either the loop sees our count and waits for us, or we see stopping_.
  active_.fetch_add(1, std::memory_order_seq_cst);
  if (stopping_.load(std::memory_order_seq_cst)) {
    EndRequest();
    return false;
  }
  return true;
}

void FuseExport::Impl::EndRequest() {
  if (active_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
      stopping_.load(std::memory_order_seq_cst)) {
    loop_->Wake();  // the drain may be complete
  }
}

void FuseExport::Impl::EnterWrite() {
  for (;;) {
    // Dekker with BeginExclusiveWrite: count in, then look.
    writers_.fetch_add(1, std::memory_order_seq_cst);
    if (!exclusive_.load(std::memory_order_seq_cst)) return;
    writers_.fetch_sub(1, std::memory_order_seq_cst);
    // A partial write runs: wait for it by taking its mutex, then retry.
    std::lock_guard<std::mutex> wait(exclusive_mu_);
  }
}

void FuseExport::Impl::ExitWrite() { writers_.fetch_sub(1, std::memory_order_seq_cst); }

void FuseExport::Impl::BeginExclusiveWrite() {
  exclusive_mu_.lock();
  exclusive_.store(true, std::memory_order_seq_cst);
  // Writes already inside finish (they are on the device: milliseconds);
  // new ones wait on exclusive_mu_. Rare path: a yield loop is enough.
  while (writers_.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
}

void FuseExport::Impl::EndExclusiveWrite() {
  exclusive_.store(false, std::memory_order_seq_cst);
  exclusive_mu_.unlock();
}

int FuseExport::Impl::Execute(FuseSlot* slot) {
  slot->state.store(FuseSlot::kQueued, std::memory_order_seq_cst);
  // Dekker with Destroy, which sets abandon_ and then kAbandoned on every
  // slot: either we see abandon_ or our kQueued is already there when the
  // bit is added (a handler doing several Executes, as a partial write does,
  // would otherwise wait for a loop that no longer serves it).
  if (abandon_.load(std::memory_order_seq_cst)) {
    slot->state.store(FuseSlot::kIdle, std::memory_order_relaxed);
    return EIO;
  }
  FuseSlot* head = queue_.load(std::memory_order_relaxed);
  do {
    slot->next_queued = head;
  } while (!queue_.compare_exchange_weak(head, slot, std::memory_order_release,
                                         std::memory_order_relaxed));
  if (head == nullptr) loop_->Wake();

  uint32_t s;
  while (((s = slot->state.load(std::memory_order_acquire)) &
          (FuseSlot::kDone | FuseSlot::kAbandoned)) == 0) {
    slot->state.wait(s, std::memory_order_acquire);
  }
  slot->state.store(FuseSlot::kIdle, std::memory_order_relaxed);
  if ((s & FuseSlot::kDone) == 0) return EIO;  // abandoned at teardown
  return ErrnoForStatus(slot->status);
}

void FuseExport::Impl::BeforeWait() {
  FuseSlot* list = queue_.exchange(nullptr, std::memory_order_acquire);
  // The stack is newest first: reverse it so requests reach the device in
  // the order the workers queued them.
  IntrusiveQueue<FuseSlot, &FuseSlot::next_queued> fifo;
  while (list != nullptr) {
    FuseSlot* next = list->next_queued;
    fifo.PushFront(list);
    list = next;
  }
  if (!fifo.empty()) {
    // We submit from an idler: a device that batches its own sends in
    // BeforeWait (VolumeTarget's replica clients) may have run that already
    // in this iteration, and would then send only when something else wakes
    // the loop (up to a ticker period, 10 ms). Take one more turn instead of
    // sleeping; on the loop thread Wake() is a flag, not a syscall.
    loop_->Wake();
  }
  while (FuseSlot* slot = fifo.PopFront()) {
    slot->next = 0;
    slot->parts_busy = 0;
    slot->status = StatusCode::kOk;
    ++device_inflight_;
    SubmitMore(slot);
  }
  if (state_ == State::kDraining && active_.load(std::memory_order_seq_cst) == 0) {
    state_ = State::kTearingDown;
    // Teardown waits for threads and the kernel: never on the loop thread.
    stopper_ = std::thread([this] {
      Teardown();
      teardown_done_.store(true, std::memory_order_release);
      loop_->Wake();
    });
  }
  if (state_ == State::kTearingDown && teardown_done_.load(std::memory_order_acquire)) Finish();
}

void FuseExport::Impl::SubmitMore(FuseSlot* slot) {
  const bool is_flush = slot->op == target::BlockOp::kFlush;
  const uint64_t piece = piece_;
  // A flush has no length: it is one part, sent once (next = 1 marks it).
  while ((is_flush ? slot->next == 0 : slot->next < slot->length) &&
         slot->parts_busy != (1u << FuseSlot::kParts) - 1) {
    uint32_t i = 0;
    while (slot->parts_busy & (1u << i)) ++i;
    target::BlockRequest* part = &slot->parts[i];
    part->op = slot->op;
    part->flags = slot->flags;
    part->offset = slot->offset + slot->next;
    part->length = is_flush ? 0 : static_cast<uint32_t>(std::min(piece, slot->length - slot->next));
    part->buf = slot->buf == nullptr ? nullptr : slot->buf + slot->next;
    part->status = StatusCode::kOk;
    part->done = &Impl::OnPartDone;
    part->ctx = slot;
    slot->next += is_flush ? 1 : part->length;
    slot->parts_busy |= 1u << i;
    device_->Submit(part);
  }
}

void FuseExport::Impl::OnPartDone(target::BlockRequest* part) {
  auto* slot = static_cast<FuseSlot*>(part->ctx);
  Impl* self = slot->impl;
  slot->parts_busy &= ~(1u << static_cast<uint32_t>(part - slot->parts));
  if (part->status != StatusCode::kOk && slot->status == StatusCode::kOk) {
    slot->status = part->status;
  }
  const bool is_flush = slot->op == target::BlockOp::kFlush;
  const bool more = !is_flush && slot->next < slot->length;
  if (more && slot->status == StatusCode::kOk && !self->orphaned_) {
    self->SubmitMore(slot);
    return;
  }
  if (slot->parts_busy == 0) self->CompleteSlot(slot);
}

void FuseExport::Impl::CompleteSlot(FuseSlot* slot) {
  // After this store the worker owns the slot again: read nothing from it.
  slot->state.fetch_or(FuseSlot::kDone, std::memory_order_release);
  slot->state.notify_one();
  if (--device_inflight_ == 0 && orphaned_) {
    delete this;  // the export is gone and this was its last request
  }
}

}  // namespace tandem::frontend

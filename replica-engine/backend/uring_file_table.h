#pragma once
// UringFileTable: UringBackend's registered-file table (IORING_REGISTER_FILES,
// sparse), kept apart from the I/O path because its updates come from other
// threads.
//
// OpenFile/CloseFile run on the engine's management threads (replicas are
// created and deleted over gRPC), but a ring set up with SINGLE_ISSUER accepts
// io_uring_register only from its issuer (the loop that submits): any other
// thread gets EEXIST. So once the ring has an issuer, an update from another
// thread is queued here and the issuer applies it at its next Submit/Reap
// (the backend wakes it through the completion eventfd). Until then the fd is
// simply not published: requests use the plain descriptor, which is always
// correct, only a lookup slower. A ring without an issuer (no SINGLE_ISSUER,
// or not yet enabled) is updated at once by whichever thread asks.
//
// Slots are reused only after the ring has dropped its reference, so a fd
// number reused by an unrelated open() never inherits one. An update queued
// while no issuer runs any more (files closed after the server stopped)
// waits for the next owner or the backend's destruction: until then the
// ring keeps that file open.

#include <liburing.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include "common/thread_annotations.h"

namespace tandem::backend {

// A number for the calling thread, never given to another thread of the
// process (pthread_t values and thread ids are reused once a thread exits,
// and a ring's issuer is one thread, not whatever reuses its id).
inline uint64_t ThreadSerial() {
  static std::atomic<uint64_t> next{0};
  thread_local uint64_t serial = 0;
  if (serial == 0) serial = next.fetch_add(1, std::memory_order_relaxed) + 1;
  return serial;
}

class UringFileTable {
 public:
  // Descriptors below this can be registered; higher ones always run plain.
  static constexpr int kMaxFds = 4096;

  UringFileTable();

  // Registers a sparse table on `ring` (at most kMaxFds slots, fewer under a
  // lower RLIMIT_NOFILE) and, on a ring that replaces another, every fd
  // published on the old one. False when the kernel refuses (the table then
  // stays unused: an optimisation, not a requirement).
  bool Register(io_uring* ring);
  bool registered() const { return registered_.load(std::memory_order_acquire); }

  // Any thread. Publishes (Add) or withdraws (Remove) `fd`'s slot, applying
  // the update now when this thread may register on `ring`, else queueing it.
  // Returns true when an update was queued: the caller wakes the issuer.
  // REQUIRES for Remove: no request on `fd` in flight, and `fd` still open
  // (the caller closes it after Remove returns).
  bool Add(io_uring* ring, int fd);
  bool Remove(io_uring* ring, int fd);

  // The calling thread is about to replace the ring (a hand-over): from now
  // on every other thread queues its updates, so none touches the ring
  // while it is closed and set up again.
  void BeginHandOver();
  // Issuer thread. The calling thread becomes the ring's issuer: from now on
  // other threads queue their updates. Applies what is queued.
  void BecomeIssuer(io_uring* ring);
  // Issuer thread: applies queued updates. Cheap when there are none.
  void ApplyQueued(io_uring* ring) {
    if (queued_flag_.load(std::memory_order_acquire)) ApplyQueuedSlow(ring);
  }

  // Updates waiting for the issuer, and slots free to hand out. Tests.
  size_t queued() {
    MutexLock lock(&mu_);
    return queued_.size();
  }
  size_t free_slots() {
    MutexLock lock(&mu_);
    return free_slots_.size();
  }

  // The slot of `fd`, or -1 (not registered). Lock-free; the issuer's view.
  int32_t SlotOf(int fd) const {
    if (fd < 0 || fd >= kMaxFds) return -1;
    return slot_of_[fd].load(std::memory_order_acquire);
  }

 private:
  struct Update {
    int slot;
    int fd;  // -1: clear the slot
  };

  bool MayRegisterNow() const REQUIRES(mu_);
  // Writes one slot of the ring's table; publishes or frees as the update says.
  void Apply(io_uring* ring, const Update& u) REQUIRES(mu_);
  void ApplyQueuedSlow(io_uring* ring);
  // Applies `u` now when this thread may register on `ring`, else queues it
  // for the issuer; true when queued.
  bool ApplyOrQueue(io_uring* ring, const Update& u) REQUIRES(mu_);
  void ApplyAllQueued(io_uring* ring) REQUIRES(mu_);

  std::atomic<bool> registered_{false};
  Mutex mu_;
  uint32_t slots_ GUARDED_BY(mu_) = 0;
  std::vector<int> free_slots_ GUARDED_BY(mu_);
  std::vector<Update> queued_ GUARDED_BY(mu_);
  // The ThreadSerial of the ring's issuer; 0 before the ring has one.
  uint64_t issuer_ GUARDED_BY(mu_) = 0;
  std::atomic<bool> queued_flag_{false};
  // fd -> slot, -1 when unregistered. Written under mu_, read lock-free.
  std::array<std::atomic<int32_t>, kMaxFds> slot_of_;
};

}  // namespace tandem::backend

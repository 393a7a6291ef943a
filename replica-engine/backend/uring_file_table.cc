#include "replica-engine/backend/uring_file_table.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstring>

#include "common/logging.h"

namespace tandem::backend {

UringFileTable::UringFileTable() {
  for (auto& s : slot_of_) s.store(-1, std::memory_order_relaxed);
}

bool UringFileTable::Register(io_uring* ring) {
  MutexLock lock(&mu_);
  if (slots_ == 0) {
    // The kernel refuses a table larger than RLIMIT_NOFILE.
    uint32_t slots = kMaxFds;
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < slots) {
      slots = static_cast<uint32_t>(rl.rlim_cur);
    }
    const int ret = io_uring_register_files_sparse(ring, slots);
    if (ret < 0) {
      TLOG_WARN("backend", "io_uring file registration unavailable (%s); using plain fds",
                std::strerror(-ret));
      return false;
    }
    slots_ = slots;
    free_slots_.reserve(slots);
    for (uint32_t i = slots; i-- > 0;) free_slots_.push_back(static_cast<int>(i));
    registered_.store(true, std::memory_order_release);
    return true;
  }
  if (!registered_.load(std::memory_order_relaxed)) return false;  // failed before: stays off
  // A ring replacing another: same size, and what was published stays so.
  const int ret = io_uring_register_files_sparse(ring, slots_);
  if (ret < 0) {
    // Cannot happen short of memory pressure; withdraw every slot so no
    // request names a slot the new ring lacks.
    TLOG_ERROR("backend", "io_uring file re-registration failed (%s); using plain fds",
               std::strerror(-ret));
    registered_.store(false, std::memory_order_release);
    for (auto& s : slot_of_) s.store(-1, std::memory_order_release);
    free_slots_.clear();
    queued_.clear();
    queued_flag_.store(false, std::memory_order_release);
    return false;
  }
  for (int fd = 0; fd < kMaxFds; ++fd) {
    const int32_t slot = slot_of_[fd].load(std::memory_order_relaxed);
    if (slot < 0) continue;
    int fds[1] = {fd};
    if (io_uring_register_files_update(ring, static_cast<unsigned>(slot), fds, 1) != 1) {
      slot_of_[fd].store(-1, std::memory_order_release);
      free_slots_.push_back(slot);
    }
  }
  return true;
}

bool UringFileTable::MayRegisterNow() const { return issuer_ == 0 || issuer_ == ThreadSerial(); }

void UringFileTable::Apply(io_uring* ring, const Update& u) {
  int fds[1] = {u.fd};
  const int ret = io_uring_register_files_update(ring, static_cast<unsigned>(u.slot), fds, 1);
  if (u.fd < 0) {
    // A slot the ring may still hold a file in is never handed out again.
    if (ret == 1) free_slots_.push_back(u.slot);
    return;
  }
  if (ret == 1) {
    slot_of_[u.fd].store(u.slot, std::memory_order_release);
    return;
  }
  // Still usable through the plain descriptor.
  TLOG_WARN("backend", "registering fd %d with io_uring failed (%s); using the plain fd", u.fd,
            std::strerror(ret < 0 ? -ret : EIO));
  free_slots_.push_back(u.slot);
}

bool UringFileTable::Add(io_uring* ring, int fd) {
  if (!registered() || fd < 0 || fd >= kMaxFds) return false;
  MutexLock lock(&mu_);
  if (free_slots_.empty()) return false;
  const Update u{free_slots_.back(), fd};
  free_slots_.pop_back();
  return ApplyOrQueue(ring, u);
}

bool UringFileTable::Remove(io_uring* ring, int fd) {
  if (!registered() || fd < 0 || fd >= kMaxFds) return false;
  MutexLock lock(&mu_);
  // Registered by nobody yet: the queued Add is dropped, and with it the
  // chance that it registers whatever file reuses this number after close().
  auto pending =
      std::find_if(queued_.begin(), queued_.end(), [fd](const Update& u) { return u.fd == fd; });
  if (pending != queued_.end()) {
    free_slots_.push_back(pending->slot);
    queued_.erase(pending);
    return false;
  }
  // Unpublish before close(): requests queued from now on use the plain fd.
  const int32_t slot = slot_of_[fd].exchange(-1, std::memory_order_acq_rel);
  if (slot < 0) return false;
  // Queued, the slot stays taken (and the ring keeps the file open) until the
  // issuer clears it.
  return ApplyOrQueue(ring, Update{slot, -1});
}

bool UringFileTable::ApplyOrQueue(io_uring* ring, const Update& u) {
  if (MayRegisterNow()) {
    Apply(ring, u);
    return false;
  }
  queued_.push_back(u);
  queued_flag_.store(true, std::memory_order_release);
  return true;
}

void UringFileTable::ApplyAllQueued(io_uring* ring) {
  for (const Update& u : queued_) Apply(ring, u);
  queued_.clear();
  queued_flag_.store(false, std::memory_order_release);
}

void UringFileTable::BeginHandOver() {
  MutexLock lock(&mu_);
  issuer_ = ThreadSerial();
}

void UringFileTable::BecomeIssuer(io_uring* ring) {
  MutexLock lock(&mu_);
  issuer_ = ThreadSerial();
  ApplyAllQueued(ring);
}

void UringFileTable::ApplyQueuedSlow(io_uring* ring) {
  MutexLock lock(&mu_);
  if (!MayRegisterNow()) return;  // a ring not yet adopted by this thread
  ApplyAllQueued(ring);
}

}  // namespace tandem::backend

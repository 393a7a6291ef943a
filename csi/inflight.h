#pragma once
// InFlight: the set of volume ids / names with a CSI call running, so a
// second call for the same key while the first runs is refused with ABORTED
// (the CSI spec's "operation pending for volume"; the CO retries with
// backoff) instead of racing it. aws-ebs-csi-driver's inflight.go shape.
//
//   auto guard = inflight_.TryAcquire("vol:" + req->volume_id());
//   if (!guard.ok()) return guard.status();   // ABORTED
//   ... the call; the key is released when `guard` goes out of scope.
//
// Keys are opaque strings; callers prefix them ("name:", "vol:") so that a
// CreateVolume name never collides with a volume id.
//
// Thread-safety: every method may be called concurrently. A Guard releases
// its key from whatever thread destroys it.

#include <mutex>
#include <set>
#include <string>

#include "common/result.h"

namespace tandem::csi {

class InFlight {
 public:
  // Holds one key; movable, releases on destruction.
  class Guard {
   public:
    Guard(Guard&& other) noexcept : owner_(other.owner_), key_(std::move(other.key_)) {
      other.owner_ = nullptr;
    }
    Guard& operator=(Guard&&) = delete;
    Guard(const Guard&) = delete;
    ~Guard();

   private:
    friend class InFlight;
    Guard(InFlight* owner, std::string key) : owner_(owner), key_(std::move(key)) {}
    InFlight* owner_;
    std::string key_;
  };

  InFlight() = default;
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;
  // REQUIRES: no Guard outlives the InFlight.
  ~InFlight() = default;

  // A guard for `key`, or ABORTED naming `key` when a guard for it exists.
  Result<Guard> TryAcquire(const std::string& key);

  // Whether `key` is held now (for tests and logs).
  bool Contains(const std::string& key) const;

 private:
  void Release(const std::string& key);

  mutable std::mutex mu_;
  std::set<std::string> keys_;  // GUARDED_BY(mu_)
};

}  // namespace tandem::csi

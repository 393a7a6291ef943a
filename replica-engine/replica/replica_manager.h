#pragma once
// ReplicaManager: the replicas stored under one root directory
// (<root>/<volume_id>/...), keyed by volume id (a node holds at most one
// replica of a volume).
//
// Thread-safety: all methods are safe to call concurrently (one mutex, taken on
// create/delete/lookup, never per I/O: sessions resolve their Replica once, at
// HELLO, and hold the shared_ptr).

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "replica-engine/replica/replica.h"

namespace tandem::replica {

class ReplicaManager {
 public:
  // REQUIRES: backend outlives the manager and every Replica it hands out.
  ReplicaManager(backend::StorageBackend* backend, std::string root);
  ~ReplicaManager();

  // Creates root if missing and opens every replica found under it. A replica
  // that fails to open is logged and skipped (the others are served); the
  // returned status says how many failed.
  Status LoadAll();

  // Idempotent: creating a replica that exists with the same config returns it;
  // with a different size/replica id returns ALREADY_EXISTS.
  Result<std::shared_ptr<Replica>> Create(const ReplicaConfig& config);
  // NOT_FOUND if absent.
  Result<std::shared_ptr<Replica>> Get(const std::string& volume_id) const;
  // Removes the replica's files. Deleting an absent replica is OK (idempotent).
  Status Delete(const std::string& volume_id);
  std::vector<std::shared_ptr<Replica>> List() const;
  // Close()s every replica (clean shutdown).
  Status CloseAll();

 private:
  backend::StorageBackend* backend_;
  std::string root_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Replica>> replicas_;  // GUARDED_BY(mu_)
};

}  // namespace tandem::replica

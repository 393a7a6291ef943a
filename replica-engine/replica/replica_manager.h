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
#include <unordered_set>
#include <vector>

#include "common/result.h"
#include "common/thread_annotations.h"
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
  // Ends a BeginDelete() of this volume, whatever the result.
  Status Delete(const std::string& volume_id);
  // Marks the volume as being deleted, before its sessions are detached
  // (ReplicaServer::DetachVolume does it) and until Delete() or EndDelete():
  // meanwhile Get() answers NOT_FOUND (so no new session can bind a replica
  // whose files are about to be closed) and Create() UNAVAILABLE. Idempotent
  // (one mark per volume, not a count).
  void BeginDelete(const std::string& volume_id);
  // Clears the mark without deleting (a delete given up).
  void EndDelete(const std::string& volume_id);
  bool IsDeleting(const std::string& volume_id) const;
  std::vector<std::shared_ptr<Replica>> List() const;
  // Close()s every replica (clean shutdown).
  Status CloseAll();

 private:
  backend::StorageBackend* backend_;
  std::string root_;
  mutable Mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Replica>> replicas_ GUARDED_BY(mu_);
  std::unordered_set<std::string> deleting_ GUARDED_BY(mu_);
};

}  // namespace tandem::replica

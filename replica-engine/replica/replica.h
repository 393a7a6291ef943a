#pragma once
// Replica: one volume's copy on this node: a data file (sparse) or block device,
// opened for direct I/O through a StorageBackend, plus its MetadataFile.
//
// Directory layout (one directory per replica, named after the volume id):
//   <dir>/meta   the MetadataFile
//   <dir>/data   the sparse data file (absent when data_path names a device)
//
// Thread-safety: metadata changes (SetHighestEpoch, SetGeneration, Close) must
// be serialised by the caller; fd() may be used from the backend's thread.

#include <memory>
#include <string>

#include "common/result.h"
#include "replica-engine/backend/storage_backend.h"
#include "replica-engine/replica/replica_metadata.h"

namespace tandem::replica {

struct ReplicaConfig {
  std::string volume_id;   // [A-Za-z0-9._-]{1,128}, not "." or ".."
  std::string replica_id;  // same character set
  uint64_t size = 0;       // > 0, multiple of block_size
  uint32_t block_size = 4096;
  uint32_t dirty_region_size = 64 * 1024;  // power of two >= block_size
  // Empty: a sparse file <dir>/data of `size` bytes. Otherwise an existing block
  // device or file of at least `size` bytes.
  std::string data_path;
};

// INVALID_ARGUMENT naming the field when an id is empty, too long, or has a
// character outside [A-Za-z0-9._-].
Status ValidateId(const char* field, const std::string& id);

class Replica {
 public:
  // Creates `dir` (its parent must exist), the data file and the metadata
  // (generation 0, epoch 0). ALREADY_EXISTS if `dir` already holds a replica.
  // On failure nothing is left behind.
  static Result<std::unique_ptr<Replica>> Create(backend::StorageBackend* backend,
                                                 const std::string& dir,
                                                 const ReplicaConfig& config);
  // Opens an existing replica and persists clean_shutdown = false, so a crash
  // before Close() is visible at the next Open (was_clean()).
  static Result<std::unique_ptr<Replica>> Open(backend::StorageBackend* backend,
                                               const std::string& dir);
  // Closes without Close(): the replica stays marked unclean on disk.
  ~Replica();

  // Flushes the data file and persists clean_shutdown = true.
  Status Close();

  int fd() const { return fd_; }
  const ReplicaMetadata& metadata() const { return meta_->current(); }
  const std::string& dir() const { return dir_; }
  // Whether the previous run ended with Close().
  bool was_clean() const { return was_clean_; }

  // Durable metadata updates (one fdatasync each).
  Status SetHighestEpoch(uint64_t epoch);
  Status SetGeneration(uint64_t generation);

 private:
  Replica(backend::StorageBackend* backend, std::string dir, int fd,
          std::unique_ptr<MetadataFile> meta, bool was_clean);

  backend::StorageBackend* backend_;
  std::string dir_;
  int fd_;
  std::unique_ptr<MetadataFile> meta_;
  bool was_clean_;
  bool closed_ = false;
};

}  // namespace tandem::replica

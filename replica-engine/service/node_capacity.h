#pragma once
// The capacity the engine reports for its node (EngineInfo): the file system
// holding the data directory, where replicas without a data_path live as
// sparse files.

#include <cstdint>
#include <string>

#include "common/result.h"

namespace tandem::service {

struct FileSystemCapacity {
  uint64_t total_bytes = 0;      // f_blocks: the file system's size
  uint64_t free_bytes = 0;       // f_bfree: unused, including root's reserve
  uint64_t available_bytes = 0;  // f_bavail: what an unprivileged user can allocate
};

// statvfs(2) of `path`, in bytes (saturating at 2^64 - 1). PosixError naming
// the path when it fails.
Result<FileSystemCapacity> StatFileSystem(const std::string& path);

}  // namespace tandem::service

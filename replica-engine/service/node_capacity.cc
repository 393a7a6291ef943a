#include "replica-engine/service/node_capacity.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <limits>

namespace tandem::service {
namespace {

uint64_t Bytes(uint64_t blocks, uint64_t block_size) {
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(blocks, block_size, &bytes)) {
    return std::numeric_limits<uint64_t>::max();
  }
  return bytes;
}

}  // namespace

Result<FileSystemCapacity> StatFileSystem(const std::string& path) {
  struct statvfs vfs;
  if (::statvfs(path.c_str(), &vfs) != 0) return PosixError("statvfs " + path, errno);
  FileSystemCapacity c;
  c.total_bytes = Bytes(vfs.f_blocks, vfs.f_frsize);
  c.free_bytes = Bytes(vfs.f_bfree, vfs.f_frsize);
  c.available_bytes = Bytes(vfs.f_bavail, vfs.f_frsize);
  return c;
}

}  // namespace tandem::service

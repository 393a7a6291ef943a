#pragma once
// BufferArena: a connection's data buffers, carved out of one preallocated,
// page-aligned mapping, so the I/O path never calls malloc.
//
// Allocations are contiguous runs of 4 KiB pages, found first-fit in a
// bitmap (one bit per page). First-fit keeps the low pages hot: the mapping
// is reserved with MAP_NORESERVE and only pages ever touched become
// resident, so a 32 MiB arena serving 4 KiB requests costs a few hundred KiB.
//
// Not thread-safe (one connection, one loop thread). Allocate() returns
// nullptr when no run is free; the caller waits for a Free() and retries.
// Since any request fits an empty arena, waiting always ends once in-flight
// requests finish.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/status.h"

namespace tandem::frontend {

class BufferArena {
 public:
  static constexpr size_t kPageSize = 4096;

  BufferArena() = default;
  ~BufferArena();
  BufferArena(const BufferArena&) = delete;
  BufferArena& operator=(const BufferArena&) = delete;

  // Reserves `bytes` (rounded up to pages). Non-OK if mmap fails.
  Status Init(size_t bytes);

  // A 4 KiB-aligned buffer of at least `bytes` (> 0), or nullptr.
  uint8_t* Allocate(size_t bytes);
  // REQUIRES: p came from Allocate(bytes) with the same `bytes`.
  void Free(uint8_t* p, size_t bytes);

  size_t capacity() const { return pages_ * kPageSize; }
  size_t used_bytes() const { return used_pages_ * kPageSize; }

 private:
  size_t PagesFor(size_t bytes) const { return (bytes + kPageSize - 1) / kPageSize; }
  bool TestPage(size_t i) const { return (bits_[i / 64] >> (i % 64)) & 1; }
  void SetRange(size_t first, size_t n, bool used);

  uint8_t* base_ = nullptr;
  size_t pages_ = 0;
  size_t used_pages_ = 0;
  std::vector<uint64_t> bits_;  // 1 = used; bits past pages_ are set
};

}  // namespace tandem::frontend

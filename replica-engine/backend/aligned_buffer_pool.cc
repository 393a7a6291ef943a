#include "replica-engine/backend/aligned_buffer_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "common/logging.h"

namespace tandem::backend {

namespace {

constexpr size_t kMinBufferSize = 4096;

size_t RoundDown(size_t v, size_t align) { return v - v % align; }

}  // namespace

AlignedBufferPool::AlignedBufferPool(size_t arena_bytes, size_t max_buffer_size)
    : max_buffer_size_(max_buffer_size) {
  int num_classes = 0;
  for (size_t s = kMinBufferSize; s <= max_buffer_size; s <<= 1) ++num_classes;
  free_ = std::vector<FreeList>(static_cast<size_t>(num_classes));
  free_count_.assign(num_classes, 0);
  total_count_.assign(num_classes, 0);
  if (num_classes == 0 || arena_bytes == 0) return;

  // Page-rounded so munmap sees the same length; the extra tail stays unused.
  arena_bytes_ = (arena_bytes + kMinBufferSize - 1) / kMinBufferSize * kMinBufferSize;
  // MAP_POPULATE faults the whole arena in now, so the I/O path never takes a
  // page fault (and the memory cost is visible at startup, not under load).
  void* p = mmap(nullptr, arena_bytes_, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    TLOG_ERROR("buffer_pool", "mmap of %zu byte arena failed: %s", arena_bytes_,
               std::strerror(errno));
    arena_bytes_ = 0;
    return;
  }
  arena_ = p;

  // Each class region starts on a 4 KiB boundary; buffers are multiples of
  // their class size from there, so every buffer is O_DIRECT-aligned.
  const size_t per_class = RoundDown(arena_bytes / num_classes, kMinBufferSize);
  auto* base = static_cast<char*>(arena_);
  for (int c = 0; c < num_classes; ++c) {
    const size_t size = kMinBufferSize << c;
    char* region = base + per_class * c;
    const size_t count = per_class / size;
    // Push in reverse so Get() hands out ascending addresses (easier to debug).
    for (size_t i = count; i-- > 0;) {
      free_[c].PushFront(reinterpret_cast<FreeNode*>(region + i * size));
    }
    free_count_[c] = count;
    total_count_[c] = count;
  }
}

AlignedBufferPool::~AlignedBufferPool() {
  if (arena_ != nullptr) munmap(arena_, arena_bytes_);
}

int AlignedBufferPool::ClassOf(size_t size) const {
  if (size > max_buffer_size_) return -1;
  int c = 0;
  for (size_t s = kMinBufferSize; s < size; s <<= 1) ++c;
  return c < static_cast<int>(free_.size()) ? c : -1;
}

void* AlignedBufferPool::Get(size_t size) {
  const int c = ClassOf(size);
  if (c < 0 || free_[c].empty()) return nullptr;
  --free_count_[c];
  return free_[c].PopFront();
}

void AlignedBufferPool::Put(void* buf, size_t size) {
  const int c = ClassOf(size);
  if (buf == nullptr || c < 0) return;
  free_[c].PushFront(static_cast<FreeNode*>(buf));
  ++free_count_[c];
}

size_t AlignedBufferPool::free_buffers(size_t size) const {
  const int c = ClassOf(size);
  return c < 0 ? 0 : free_count_[c];
}

size_t AlignedBufferPool::total_buffers(size_t size) const {
  const int c = ClassOf(size);
  return c < 0 ? 0 : total_count_[c];
}

}  // namespace tandem::backend

#pragma once
// AlignedBufferPool: a bounded pool of O_DIRECT-aligned buffers in power-of-two
// size classes (4 KiB .. max_buffer_size), carved from one mmap'd arena that is
// allocated once. Get/Put are O(1) free-list operations; nothing is allocated
// after construction, so memory stays flat however many I/Os pass through.
//
// The arena is split evenly across the classes up front (each class gets
// arena_bytes / num_classes). Get() of a class that is exhausted returns nullptr:
// callers apply backpressure (stop reading the socket) until a Put().
//
// Not thread-safe: one pool per event-loop thread.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/intrusive_list.h"

namespace tandem::backend {

class AlignedBufferPool {
 public:
  // REQUIRES: max_buffer_size is a power of two >= 4096; arena_bytes is large
  // enough for at least one max_buffer_size buffer per class.
  AlignedBufferPool(size_t arena_bytes, size_t max_buffer_size);
  ~AlignedBufferPool();
  AlignedBufferPool(const AlignedBufferPool&) = delete;
  AlignedBufferPool& operator=(const AlignedBufferPool&) = delete;

  // A buffer of at least `size` bytes (4 KiB aligned), or nullptr if that class
  // is exhausted or size > max_buffer_size.
  void* Get(size_t size);
  // REQUIRES: buf came from Get() with the same size.
  void Put(void* buf, size_t size);

  // The arena, e.g. to register it with io_uring as one fixed buffer.
  void* arena() const { return arena_; }
  size_t arena_bytes() const { return arena_bytes_; }
  size_t max_buffer_size() const { return max_buffer_size_; }
  size_t free_buffers(size_t size) const;
  // Buffers the class of `size` holds in all (free or not); 0 for a size
  // over max_buffer_size. Callers derive per-user quotas from it.
  size_t total_buffers(size_t size) const;
  // The class index of `size` (0 for <= 4 KiB, ...), -1 when size >
  // max_buffer_size; num_classes() classes in all.
  int size_class(size_t size) const { return ClassOf(size); }
  int num_classes() const { return static_cast<int>(free_.size()); }

 private:
  // Overlays a free buffer's first bytes.
  struct FreeNode {
    FreeNode* next;
  };
  using FreeList = IntrusiveQueue<FreeNode, &FreeNode::next>;  // used as a stack
  int ClassOf(size_t size) const;

  void* arena_ = nullptr;
  size_t arena_bytes_ = 0;
  size_t max_buffer_size_ = 0;
  std::vector<FreeList> free_;       // per class
  std::vector<size_t> free_count_;   // per class
  std::vector<size_t> total_count_;  // per class
};

}  // namespace tandem::backend

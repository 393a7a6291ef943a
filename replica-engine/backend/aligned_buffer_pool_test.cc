#include "replica-engine/backend/aligned_buffer_pool.h"

#include <cstdint>
#include <cstring>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "replica-engine/backend/storage_backend.h"

namespace tandem::backend {
namespace {

constexpr size_t kArena = 16u << 20;  // 16 MiB: at least one 1 MiB buffer per class
constexpr size_t kMax = 1u << 20;     // classes 4K, 8K, ..., 1M: 9 classes
constexpr size_t kClasses = 9;

// What the header promises: the arena split evenly, rounded down to 4 KiB.
size_t ExpectedCount(size_t class_size) {
  const size_t per_class = kArena / kClasses / 4096 * 4096;
  return per_class / class_size;
}

bool InArena(const AlignedBufferPool& pool, const void* p, size_t size) {
  auto* base = static_cast<const char*>(pool.arena());
  auto* c = static_cast<const char*>(p);
  return c >= base && c + size <= base + pool.arena_bytes();
}

TEST(AlignedBufferPoolTest, EveryBufferOfEveryClassIsDirectIoAligned) {
  AlignedBufferPool pool(kArena, kMax);
  ASSERT_NE(pool.arena(), nullptr);
  for (size_t size = 4096; size <= kMax; size <<= 1) {
    std::vector<void*> got;
    while (void* p = pool.Get(size)) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kDirectIoAlignment, 0u) << "class " << size;
      EXPECT_TRUE(InArena(pool, p, size)) << "class " << size;
      got.push_back(p);
    }
    for (void* p : got) pool.Put(p, size);
  }
}

TEST(AlignedBufferPoolTest, EachClassIsBoundedAndExhaustionReturnsNull) {
  AlignedBufferPool pool(kArena, kMax);
  for (size_t size = 4096; size <= kMax; size <<= 1) {
    const size_t expected = ExpectedCount(size);
    ASSERT_GE(expected, 1u);
    EXPECT_EQ(pool.free_buffers(size), expected) << "class " << size;
    std::vector<void*> got;
    for (size_t i = 0; i < expected; ++i) {
      void* p = pool.Get(size);
      ASSERT_NE(p, nullptr) << "class " << size << " buffer " << i;
      got.push_back(p);
    }
    EXPECT_EQ(pool.free_buffers(size), 0u);
    EXPECT_EQ(pool.total_buffers(size), expected) << "the total counts buffers handed out";
    EXPECT_EQ(pool.Get(size), nullptr) << "class " << size << " must be exhausted";
    EXPECT_EQ(pool.Get(size), nullptr) << "exhaustion is sticky until a Put";
    for (void* p : got) pool.Put(p, size);
    EXPECT_EQ(pool.free_buffers(size), expected);
  }
}

TEST(AlignedBufferPoolTest, BuffersHandedOutAtOnceNeverOverlap) {
  AlignedBufferPool pool(kArena, kMax);
  struct Held {
    void* p;
    size_t size;
    uint8_t tag;
  };
  std::vector<Held> held;
  uint8_t tag = 1;
  for (size_t size = 4096; size <= kMax; size <<= 1) {
    while (void* p = pool.Get(size)) {
      std::memset(p, tag, size);
      held.push_back({p, size, tag});
      tag = static_cast<uint8_t>(tag == 255 ? 1 : tag + 1);
    }
  }
  // Had any two buffers shared a byte, the later memset would show here.
  for (const Held& h : held) {
    const auto* b = static_cast<const uint8_t*>(h.p);
    for (size_t i = 0; i < h.size; ++i) {
      if (b[i] != h.tag) {
        ADD_FAILURE() << "buffer " << h.p << " of class " << h.size << " overwritten at " << i;
        break;
      }
    }
  }
  for (const Held& h : held) pool.Put(h.p, h.size);
}

TEST(AlignedBufferPoolTest, PutBufferIsReusedByTheNextGet) {
  AlignedBufferPool pool(kArena, kMax);
  void* a = pool.Get(4096);
  void* b = pool.Get(4096);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  pool.Put(a, 4096);
  EXPECT_EQ(pool.Get(4096), a);
  pool.Put(b, 4096);
  pool.Put(a, 4096);

  // Churn: far more Get/Put cycles than buffers, and the pool never grows or
  // hands out anything outside its arena (memory stays flat).
  std::set<void*> seen;
  for (int i = 0; i < 100000; ++i) {
    void* p = pool.Get(65536);
    ASSERT_NE(p, nullptr);
    ASSERT_TRUE(InArena(pool, p, 65536));
    seen.insert(p);
    pool.Put(p, 65536);
  }
  EXPECT_LE(seen.size(), ExpectedCount(65536));
  EXPECT_EQ(pool.free_buffers(65536), ExpectedCount(65536));
}

TEST(AlignedBufferPoolTest, SizesRoundUpToTheirPowerOfTwoClass) {
  AlignedBufferPool pool(kArena, kMax);
  const size_t before_8k = pool.free_buffers(8192);
  void* p = pool.Get(5000);  // needs the 8 KiB class
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(pool.free_buffers(8192), before_8k - 1);
  EXPECT_EQ(pool.free_buffers(5000), before_8k - 1);
  std::memset(p, 0xab, 8192);  // the whole class size is usable
  pool.Put(p, 5000);
  EXPECT_EQ(pool.free_buffers(8192), before_8k);

  const size_t before_4k = pool.free_buffers(4096);
  void* q = pool.Get(1);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(pool.free_buffers(4096), before_4k - 1);
  pool.Put(q, 1);
}

TEST(AlignedBufferPoolTest, ExhaustingOneClassLeavesTheOthersAvailable) {
  AlignedBufferPool pool(kArena, kMax);
  std::vector<void*> got;
  while (void* p = pool.Get(4096)) got.push_back(p);
  EXPECT_EQ(pool.Get(4096), nullptr);
  void* big = pool.Get(8192);
  EXPECT_NE(big, nullptr) << "the 8 KiB class is separate and must not be affected";
  pool.Put(big, 8192);
  for (void* p : got) pool.Put(p, 4096);
}

TEST(AlignedBufferPoolTest, RequestLargerThanMaxReturnsNull) {
  AlignedBufferPool pool(kArena, kMax);
  EXPECT_EQ(pool.Get(kMax + 1), nullptr);
  EXPECT_EQ(pool.Get(2 * kMax), nullptr);
  EXPECT_EQ(pool.free_buffers(2 * kMax), 0u);
  void* p = pool.Get(kMax);
  EXPECT_NE(p, nullptr);
  pool.Put(p, kMax);
}

TEST(AlignedBufferPoolTest, PutOfNullIsIgnored) {
  AlignedBufferPool pool(kArena, kMax);
  const size_t before = pool.free_buffers(4096);
  pool.Put(nullptr, 4096);
  EXPECT_EQ(pool.free_buffers(4096), before);
}

TEST(AlignedBufferPoolTest, ArenaIsPageRoundedAndSingleClassPoolWorks) {
  AlignedBufferPool pool(3 * 4096 + 100, 4096);
  EXPECT_EQ(pool.arena_bytes() % 4096, 0u);
  EXPECT_GE(pool.arena_bytes(), 3u * 4096 + 100);
  EXPECT_EQ(pool.max_buffer_size(), 4096u);
  EXPECT_EQ(pool.free_buffers(4096), 3u);
  void* a = pool.Get(4096);
  void* b = pool.Get(4096);
  void* c = pool.Get(4096);
  EXPECT_NE(a, nullptr);
  EXPECT_NE(b, nullptr);
  EXPECT_NE(c, nullptr);
  EXPECT_EQ(pool.Get(4096), nullptr);
  pool.Put(a, 4096);
  pool.Put(b, 4096);
  pool.Put(c, 4096);
}

}  // namespace
}  // namespace tandem::backend
